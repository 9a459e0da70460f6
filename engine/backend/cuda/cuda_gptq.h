// GPTQ's dense linear algebra on the GPU: the calibration Hessian H = 2/N X^T X (cuBLAS SYRK on
// float32 row blocks, summed in float64 on the device, like HessianPrecision::BlockedFloat32 on
// the CPU) and U with H^{-1} = U^T U (cuSOLVER Cholesky + triangular inverse), the drop-in for
// engine/quant/linalg.h's choleskyInverseUpper; and the column sweep with the min-max grid, the
// device twin of quantizeGptq(name, weight, rows, cols, prepared, options). Built without CUDA,
// all return Unsupported. Every call works on the legacy default stream of the calling thread's
// current device (the one the backend selected when created); each waits for the backend's queued
// work first and returns after its own (results are host vectors).
#pragma once

#include "core/result.h"
#include "quant/gptq.h"
#include "quant/quantized_tensor.h"

#include <cstdint>
#include <memory>
#include <span>
#include <stop_token>
#include <vector>

namespace lowbit {

class CudaBackend;

// The running sum X^T X of one linear input (cols wide) over calibration batches, kept on the
// device: add() uploads a batch and adds one float32 SYRK per kHessianBlockRows rows into a
// float64 device sum (the calibration's HessianPrecision::BlockedFloat32 with batches of at most
// that many rows); sum() downloads it. Device memory: cols^2 * 12 bytes + the upload block.
class CudaHessianSum {
public:
    static constexpr int64_t kHessianBlockRows = 4096;
    static Result<std::unique_ptr<CudaHessianSum>> create(CudaBackend &backend, int64_t cols);
    virtual ~CudaHessianSum() = default;
    // x: rows x cols float32, host memory, one token per row.
    virtual Status add(std::span<const float> x, int64_t rows) = 0;
    // sum_t x_t x_t^T over every row added, unscaled: cols*cols, both triangles filled.
    virtual Result<std::vector<double>> sum() = 0;
};

// 2/rows X^T X of x (rows x cols float32, host), one calibration token per row: cols*cols,
// symmetric. One CudaHessianSum, one add().
Result<std::vector<double>> cudaHessian(CudaBackend &backend, std::span<const float> x,
                                        int64_t rows, int64_t cols);

// In place on h (n x n, symmetric positive definite, float32): the upper-triangular U of
// choleskyInverseUpper, via chol(J H J) = L, U = J L^{-1} J. Errors: Internal "not positive
// definite (leading minor k)".
Status cudaCholeskyInverseUpper(CudaBackend &backend, std::vector<float> &h, int64_t n);

// GPTQ with the min-max grid on the GPU: the result of quantizeGptq(name, weight, rows, cols,
// prepared, options) up to float rounding (a code may differ where a value sits on a rounding
// boundary). `prepared` must hold the hinvUpper form (prepareHessian with ldl = false);
// options.blockSize <= kCudaGptqMaxBlock (the block is part of the result, not only of the speed:
// groups a block opens are fitted on weights without that block's in-block updates, as gptq.py
// does). *loss (optional) receives gptq.py's loss. Cancelled when `stop` is requested (checked
// per block).
inline constexpr int64_t kCudaGptqMaxBlock = 128;
Result<QuantizedTensor> cudaGptqSweep(CudaBackend &backend, std::string name,
                                      std::span<const float> weight, int64_t rows, int64_t cols,
                                      const PreparedHessian &prepared, const GptqOptions &options,
                                      double *loss = nullptr, std::stop_token stop = {});

} // namespace lowbit
