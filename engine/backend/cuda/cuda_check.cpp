#include "backend/cuda/cuda_check.h"

#include <cstdio>

namespace lowbit::cuda {

namespace {

const char *cusolverName(cusolverStatus_t status) {
    switch (status) {
    case CUSOLVER_STATUS_NOT_INITIALIZED: return "CUSOLVER_STATUS_NOT_INITIALIZED";
    case CUSOLVER_STATUS_ALLOC_FAILED: return "CUSOLVER_STATUS_ALLOC_FAILED";
    case CUSOLVER_STATUS_INVALID_VALUE: return "CUSOLVER_STATUS_INVALID_VALUE";
    case CUSOLVER_STATUS_ARCH_MISMATCH: return "CUSOLVER_STATUS_ARCH_MISMATCH";
    case CUSOLVER_STATUS_EXECUTION_FAILED: return "CUSOLVER_STATUS_EXECUTION_FAILED";
    case CUSOLVER_STATUS_INTERNAL_ERROR: return "CUSOLVER_STATUS_INTERNAL_ERROR";
    case CUSOLVER_STATUS_NOT_SUPPORTED: return "CUSOLVER_STATUS_NOT_SUPPORTED";
    default: return "cusolver error";
    }
}

ErrorCode codeOf(bool outOfMemory) {
    return outOfMemory ? ErrorCode::OutOfMemory : ErrorCode::Internal;
}

} // namespace

Status check(cudaError_t status, const char *what) {
    if (status == cudaSuccess)
        return {};
    const bool noDevice = status == cudaErrorNoDevice || status == cudaErrorInsufficientDriver;
    return makeError(noDevice ? ErrorCode::Unsupported
                              : codeOf(status == cudaErrorMemoryAllocation),
                     std::string("cuda: ") + what + ": " + cudaGetErrorName(status) + " (" +
                         cudaGetErrorString(status) + ")");
}

Status check(cublasStatus_t status, const char *what) {
    if (status == CUBLAS_STATUS_SUCCESS)
        return {};
    return makeError(codeOf(status == CUBLAS_STATUS_ALLOC_FAILED),
                     std::string("cublas: ") + what + ": " + cublasGetStatusName(status) + " (" +
                         cublasGetStatusString(status) + ")");
}

Status check(cusolverStatus_t status, const char *what) {
    if (status == CUSOLVER_STATUS_SUCCESS)
        return {};
    return makeError(codeOf(status == CUSOLVER_STATUS_ALLOC_FAILED),
                     std::string("cusolver: ") + what + ": " + cusolverName(status));
}

Status lastLaunch(const char *kernel) {
    return check(cudaGetLastError(), kernel);
}

std::string mebibytes(size_t bytes) {
    char text[64];
    if (bytes >= (size_t(1) << 30))
        std::snprintf(text, sizeof text, "%.1f GiB", double(bytes) / double(1 << 30));
    else
        std::snprintf(text, sizeof text, "%.1f MiB", double(bytes) / double(1 << 20));
    return text;
}

DeviceBuffer &DeviceBuffer::operator=(DeviceBuffer &&other) noexcept {
    if (this != &other) {
        reset();
        m_data = other.m_data;
        m_bytes = other.m_bytes;
        other.m_data = nullptr;
        other.m_bytes = 0;
    }
    return *this;
}

void DeviceBuffer::reset() {
    if (m_data)
        cudaFree(m_data);
    m_data = nullptr;
    m_bytes = 0;
}

Result<DeviceBuffer> DeviceBuffer::allocate(size_t bytes, const std::string &what) {
    DeviceBuffer buffer;
    if (bytes == 0)
        return buffer;
    const cudaError_t status = cudaMalloc(&buffer.m_data, bytes);
    if (status == cudaErrorMemoryAllocation) {
        cudaGetLastError(); // clear the sticky-free error so later calls are not blamed for it
        size_t freeBytes = 0, totalBytes = 0;
        cudaMemGetInfo(&freeBytes, &totalBytes);
        buffer.m_data = nullptr;
        return makeError(ErrorCode::OutOfMemory, "cuda: out of memory allocating " +
                                                     mebibytes(bytes) + " for " + what + " (free " +
                                                     mebibytes(freeBytes) + " of " +
                                                     mebibytes(totalBytes) + ")");
    }
    if (status != cudaSuccess) {
        buffer.m_data = nullptr;
        return check(status, ("cudaMalloc for " + what).c_str()).error();
    }
    buffer.m_bytes = bytes;
    return buffer;
}

Status ensure(DeviceBuffer &buffer, size_t bytes, const std::string &what) {
    if (buffer.bytes() >= bytes)
        return {};
    buffer.reset();
    LOWBIT_TRY(buffer, DeviceBuffer::allocate(bytes, what));
    return {};
}

} // namespace lowbit::cuda
