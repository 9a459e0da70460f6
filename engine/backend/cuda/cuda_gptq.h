// GPTQ's dense linear algebra on the GPU: the calibration Hessian H = 2/N X^T X (cuBLAS SYRK on
// float32 row blocks, summed in float64 on the device, like HessianPrecision::BlockedFloat32 on
// the CPU) and U with H^{-1} = U^T U (cuSOLVER Cholesky + triangular inverse), the drop-in for
// engine/quant/linalg.h's choleskyInverseUpper; and the column sweep with the min-max grid, the
// device twin of quantizeGptq(name, weight, rows, cols, prepared, options). Built without CUDA,
// all return Unsupported.
#pragma once

#include "core/result.h"
#include "quant/gptq.h"
#include "quant/quantized_tensor.h"

#include <cstdint>
#include <span>
#include <vector>

namespace lowbit {

class CudaBackend;

// x: rows x cols float32 (host), one calibration token per row. Returns cols*cols, symmetric.
Result<std::vector<double>> cudaHessian(CudaBackend &backend, std::span<const float> x,
                                        int64_t rows, int64_t cols);

// In place on h (n x n, symmetric positive definite, float32): the upper-triangular U of
// choleskyInverseUpper, via chol(J H J) = L, U = J L^{-1} J. Errors: Internal "not positive
// definite (leading minor k)".
Status cudaCholeskyInverseUpper(CudaBackend &backend, std::vector<float> &h, int64_t n);

// GPTQ with the min-max grid on the GPU: the result of quantizeGptq(name, weight, rows, cols,
// prepared, options) up to float rounding (a code may differ where a value sits on a rounding
// boundary). `prepared` must hold the hinvUpper form (prepareHessian with ldl = false); blocks of
// options.blockSize <= 128 columns. *loss (optional) receives gptq.py's loss.
Result<QuantizedTensor> cudaGptqSweep(CudaBackend &backend, std::string name,
                                      std::span<const float> weight, int64_t rows, int64_t cols,
                                      const PreparedHessian &prepared, const GptqOptions &options,
                                      double *loss = nullptr);

} // namespace lowbit
