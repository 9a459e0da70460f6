// CUDA, cuBLAS and cuSOLVER status codes as lowbit errors (engine/core/result.h), and device memory
// that reports out-of-memory as a value naming what was asked and what is free.
// Only the CUDA backend's own sources include this header (it pulls in the CUDA headers).
#pragma once

#include "core/result.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cusolverDn.h>

#include <cstddef>
#include <string>

namespace lowbit::cuda {

// "cuda: <what>: <error name> (<description>)"; ok for cudaSuccess.
Status check(cudaError_t status, const char *what);
Status check(cublasStatus_t status, const char *what);
Status check(cusolverStatus_t status, const char *what);

// The launch error of the kernel just queued on this thread (cudaGetLastError), as a Status.
Status lastLaunch(const char *kernel);

std::string mebibytes(size_t bytes);

// Owning device allocation (cudaMalloc / cudaFree); move-only.
class DeviceBuffer {
public:
    DeviceBuffer() = default;
    ~DeviceBuffer() { reset(); }
    DeviceBuffer(DeviceBuffer &&other) noexcept { *this = std::move(other); }
    DeviceBuffer &operator=(DeviceBuffer &&other) noexcept;
    DeviceBuffer(const DeviceBuffer &) = delete;
    DeviceBuffer &operator=(const DeviceBuffer &) = delete;

    // Out of memory: OutOfMemory "cuda: out of memory allocating 512.0 MiB for <what> (free
    // 120.0 MiB of 79.2 GiB)".
    static Result<DeviceBuffer> allocate(size_t bytes, const std::string &what);

    void *data() const { return m_data; }
    template <typename T> T *as() const { return static_cast<T *>(m_data); }
    size_t bytes() const { return m_bytes; }
    void reset();

private:
    void *m_data = nullptr;
    size_t m_bytes = 0;
};

// Grows `buffer` to at least `bytes` (contents are not kept).
Status ensure(DeviceBuffer &buffer, size_t bytes, const std::string &what);

} // namespace lowbit::cuda

#define LOWBIT_CUDA_CHECK(expr, what) LOWBIT_CHECK(::lowbit::cuda::check((expr), (what)))
