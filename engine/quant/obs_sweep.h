// The column sweep of GPTQ (Frantar et al. 2022, Algorithm 1), with the per-column quantizer left
// open, so that GPTQ, PB-LLM, BiLLM, SliM-LLM and QuIP's LDLQ (equivalent to GPTQ's update, QuIP
// Thm. 6) share one implementation:
//
//   for each block of B columns (B = 128):                           // Alg. 1, "lazy batch"
//       for each column j of the block:
//           q_j = quant(w_j)                                         // line 8
//           e_j = (w_j - q_j) / [H^-1]_jj                            // line 9 (U = chol(H^-1)^T)
//           W[:, j:block end] -= e_j * U[j, j:block end]             // line 10
//       W[:, block end:] -= E * U[block, block end:]                 // line 13, one GEMM
//
// Rows are independent, so the in-block loop runs over row ranges on a thread pool; the lazy
// update is one sgemm.
//
// LDL form (QuIP's LDLQ, Chee et al. 2023, Thm. 6: the same rounding as GPTQ): with H = V V^T,
// V upper (V = U^{-1}), A_jk = V_jk / V_kk (j < k), the column to quantize is
//   w~_k = W_k + sum_{j<k} (W_j - q_j) A_jk,
// so one Cholesky (n^3/3) replaces GPTQ's Cholesky + triangular inverse (2n^3/3), and the sweep
// keeps the same blocked shape (in-block rank-1 updates, one GEMM per block).
#pragma once

#include "core/result.h"

#include <cstdint>
#include <stop_token>
#include <vector>

namespace lowbit {

class QuantDevice;

// The matrices a sweep needs, prepared from a calibration Hessian as gptq.py's fasterquant does.
struct PreparedHessian {
    int64_t cols = 0;
    std::vector<float> hinvUpper;     // U, upper triangular, H'^{-1} = U^T U (H' damped, permuted)
    std::vector<float> ldlUpper;      // LDL form instead of U: A (strictly upper, zero diagonal)
    std::vector<float> ldlScale;      // LDL form: V_jj = 1 / U_jj
    std::vector<int32_t> permutation; // empty, or act-order: position j holds original column p[j]
    std::vector<bool> deadColumns;    // original columns with H_jj == 0 (weights forced to 0)
    double dampUsed = 0;              // the damping factor that made H' positive definite
    std::vector<double> diagonal;     // diag(H) of the original columns, undamped
};

struct HessianOptions {
    double damp = 0.01;    // percdamp: H += damp * mean(diag H) * I
    bool actOrder = false; // sort columns by decreasing diag(H) (GPTQ "act-order")
    int threads = 0;       // BLAS/LAPACK threads
    bool ldl = false;      // prepare the LDL form (ldlUpper/ldlScale) instead of hinvUpper
    // Factor on this GPU (cuSOLVER) instead of LAPACK. It makes the hinvUpper form even when ldl
    // is asked: the LDL form only saves CPU flops, and both forms round alike (QuIP Thm. 6).
    QuantDevice *device = nullptr;
};

// Dead columns get H_jj = 1; damping is added; columns are permuted when actOrder; then U is
// computed in float32 (engine/quant/linalg.h, or the device's cuSOLVER). If the Cholesky fails
// the damping is multiplied by 10, up to three times (the reference would stop with an error),
// and dampUsed records it; any other device failure is returned as it is.
Result<PreparedHessian> prepareHessian(const std::vector<double> &hessian, int64_t cols,
                                       const HessianOptions &options);

// The quantizer of one sweep. beginBlock runs on the calling thread; quantizeColumn runs on
// worker threads, concurrently for disjoint row ranges of the same column.
class SweepQuantizer {
public:
    virtual ~SweepQuantizer() = default;
    // Block [first, first + count) starts. `w` is the whole rows x cols matrix (row-major, stored
    // column order): columns before `first` hold quantized values, the rest carry every earlier
    // block's lazy update but not yet this block's in-block updates (what gptq.py's find_params
    // sees at a group start).
    virtual void beginBlock(int64_t first, int64_t count, const float *w) {}
    // Column `col` of rows [r0, r1): current values w[0 .. r1-r0) -> quantized values q[...].
    virtual void quantizeColumn(int64_t col, int64_t r0, int64_t r1, const float *w, float *q) = 0;
};

struct SweepResult {
    double loss = 0; // sum over weights of (w - q)^2 / [H^-1]_jj^2 / 2, gptq.py's Losses
};

// Runs the sweep in place: on return `w` (rows x cols, stored column order) holds the quantized
// values. blockSize: B (128 in the reference). Returns Cancelled when `stop` is requested
// (checked once per block).
Result<SweepResult> obsSweep(std::vector<float> &w, int64_t rows, int64_t cols,
                             const std::vector<float> &hinvUpper, int64_t blockSize,
                             SweepQuantizer &quantizer, int threads, std::stop_token stop = {});

// The same on a prepared Hessian of either form (GPTQ's fast path uses the LDL form).
Result<SweepResult> obsSweep(std::vector<float> &w, int64_t rows, int64_t cols,
                             const PreparedHessian &prepared, int64_t blockSize,
                             SweepQuantizer &quantizer, int threads, std::stop_token stop = {});

// Zeroes the columns of rows x cols weights whose input never varied (H_jj == 0), as gptq.py and
// every method built on its sweep do (W[:, dead] = 0): nothing can compensate their error.
void zeroDeadColumns(std::vector<float> &w, int64_t rows, int64_t cols,
                     const PreparedHessian &prepared);

// Columns of a rows x cols row-major matrix reordered: out[:, j] = in[:, perm[j]].
std::vector<float> permuteColumns(const std::vector<float> &in, int64_t rows, int64_t cols,
                                  const std::vector<int32_t> &perm);

} // namespace lowbit
