// CudaBackend: the Backend ops on one NVIDIA GPU, plus what a device-resident forward needs
// (device buffers, loss-side reductions, packed quantized weights).
//
// Memory contract: every float pointer passed to an op (activations, AttentionSequence pointers,
// RoPE cos/sin) is DEVICE memory, e.g. from allocate(); token ids and the AttentionSequence array
// itself are host memory. Weight Tensors are host memory (usually a mapped checkpoint): each is
// uploaded on first use and cached by (data pointer, dtype, size) for the backend's lifetime, so
// that memory must outlive the backend and not change. Dense weights keep their 16-bit dtype on the
// device under GemmPrecision::Tensor16 (tensor-core GEMMs on 16-bit-rounded activations, fp32
// accumulation; decode-sized products stay exact float32) and are widened to float32 under Fp32
// (exact float32 products everywhere, twice the memory: for checking against the CPU).
//
// Errors: the Backend ops return void, so the first failure (a CUDA, cuBLAS or shape error) is
// kept, later ops are skipped, and synchronize() returns it (and clears it). Every other call
// returns its error directly. One thread at a time, like every Backend; the backend makes its
// device current (cudaSetDevice) when created, so use one CUDA device per host thread.
//
// Built without CUDA, makeCudaBackend() returns Unsupported.
#pragma once

#include "backend/backend.h"
#include "backend/device.h"
#include "core/result.h"

#include <memory>
#include <span>
#include <string>

namespace lowbit {

struct QuantizedTensor;

enum class GemmPrecision { Fp32, Tensor16 };

struct CudaOptions {
    int device = 0;
    GemmPrecision precision = GemmPrecision::Tensor16;
};

struct CudaDeviceInfo {
    int index = 0;
    std::string name;
    int computeMajor = 0, computeMinor = 0;
    int multiprocessors = 0;
    uint64_t totalBytes = 0;
};

class CudaBackend : public Backend {
public:
    virtual const CudaDeviceInfo &deviceInfo() const = 0;
    virtual GemmPrecision precision() const = 0;
    // Free device memory now (cudaMemGetInfo).
    virtual Result<uint64_t> freeBytes() const = 0;

    // Waits for queued work; returns the first error since the last call (and forgets it).
    virtual Status synchronize() = 0;

    // Device float buffers owned by the backend (freed by release() or with the backend).
    virtual Result<float *> allocate(size_t floats, const std::string &what) = 0;
    virtual void release(float *buffer) = 0;
    virtual Status upload(float *device, const float *host, size_t floats) = 0;
    virtual Status download(float *host, const float *device, size_t floats) = 0;
    virtual Status copy(float *deviceTo, const float *deviceFrom, size_t floats) = 0;

    // Uploads a weight now instead of at first use (errors early, e.g. out of memory).
    virtual Status prepareWeight(const Tensor &weight) = 0;
    virtual uint64_t weightBytes() const = 0; // device bytes held by cached weights

    // out[r] = log softmax(logits[r])[targets[r]] (float64), logits rows x vocab on the device.
    virtual Status tokenLogProbs(const float *logits, int64_t rows, int64_t vocab,
                                 std::span<const int32_t> targets, std::span<double> out) = 0;
    // The k largest logits of each row (rows*k ids and values, descending, ties by lower id).
    virtual Status topK(const float *logits, int64_t rows, int64_t vocab, int k,
                        std::span<int32_t> ids, std::span<float> values) = 0;
    // y[rows x w.rows] = x W^T for a packed quantized weight (w = QuantizedTensor::dequantize(),
    // `extra` ignored as there), cached by its code buffer like a dense weight.
    virtual Status quantizedMatmul(const float *x, int64_t rows, const QuantizedTensor &weight,
                                   float *y) = 0;
};

Result<std::unique_ptr<CudaBackend>> makeCudaBackend(const CudaOptions &options = {});

} // namespace lowbit
