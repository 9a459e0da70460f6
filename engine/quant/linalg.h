// Dense linear algebra for the quantizers, through BLAS/LAPACK (OpenBLAS): thread control and the
// factorizations GPTQ-style methods need. Matrices are row-major float32 unless stated.
#pragma once

#include "core/result.h"

#include <cstdint>
#include <vector>

namespace lowbit {

// RAII: OpenBLAS uses `threads` threads (<= 0: every hardware thread) while alive, then 1 again,
// the setting the CPU backend relies on (its own pool calls single-threaded sgemm tiles).
class BlasThreads {
public:
    explicit BlasThreads(int threads);
    ~BlasThreads();
    BlasThreads(const BlasThreads &) = delete;
    BlasThreads &operator=(const BlasThreads &) = delete;
};

// In place: h (n x n, symmetric positive definite) becomes the upper-triangular U with
// H^{-1} = U^T U (the strictly lower part is zeroed), i.e. torch's
// cholesky(cholesky_inverse(cholesky(H)), upper=True) as GPTQ computes Hinv. Done with one
// Cholesky and one triangular inverse of the reversed matrix (2/3 n^3 flops instead of 4/3):
// with J the reversal, chol(J H J) = L gives H^{-1} = (J L^{-1} J)^T (J L^{-1} J).
// Errors: Internal "not positive definite (leading minor k)" when spotrf fails.
Status choleskyInverseUpper(std::vector<float> &h, int64_t n);

// In place: h (n x n, symmetric positive definite) becomes the upper-triangular V with H = V V^T
// (strictly lower part zeroed): V = J chol(J H J) J, one Cholesky (n^3/3 flops). V = U^{-1} for the
// U above, which lets GPTQ run on V without any inverse (engine/quant/obs_sweep.h, LDL form).
Status reverseCholeskyUpper(std::vector<float> &h, int64_t n);

} // namespace lowbit
