// Forward and hand-written backward of the ops of the LLaMA decoder, on host memory, templated on
// the scalar type (double for gradient checks, float for training). Conventions match the
// inference backend (engine/backend/backend.h): activations row-major, a linear weight is
// {out, in} (y = x Wᵀ), rotate-half RoPE with per-row cosines/sines.
//
// Backward functions take the forward's inputs (and whatever the forward saved) plus the
// upstream gradient. Unless a comment says "adds", they overwrite their outputs.
//
// Threads: ops with a `pool` argument split their work over it (nullptr: serially on the calling
// thread); BLAS itself must then run single-threaded (openblas_set_num_threads(1), as the CPU
// backend sets it), so that calls from the pool's threads do not oversubscribe the cores.
#pragma once

#include <cstdint>
#include <span>

namespace lowbit {
class ThreadPool;
}

namespace lowbit::train::ops {

// C = alpha · op(A) · op(B) + beta · C, row-major, op = transpose when the flag is set
// (cblas_sgemm / cblas_dgemm). m×k times k×n.
template <typename Real>
void gemm(bool transA, bool transB, int64_t m, int64_t n, int64_t k, Real alpha, const Real *a,
          int64_t lda, const Real *b, int64_t ldb, Real beta, Real *c, int64_t ldc,
          ThreadPool *pool = nullptr);

// y = x · r · w, r = 1/sqrt(mean(x²) + eps) per row (Zhang & Sennrich 2019); invRms[row] = r.
template <typename Real>
void rmsnormForward(const Real *x, int64_t rows, int64_t dim, const Real *weight, double eps,
                    Real *y, Real *invRms, ThreadPool *pool = nullptr);
// Adds dL/dx to dx: dx_i += r·w_i·dy_i − (r³/dim)·x_i·Σ_j dy_j·w_j·x_j. The weight is frozen.
template <typename Real>
void rmsnormBackward(const Real *x, int64_t rows, int64_t dim, const Real *weight,
                     const Real *invRms, const Real *dy, Real *dx, ThreadPool *pool = nullptr);

// Rotate-half RoPE in place, as Backend::rope: pair (j, j+headDim/2) of each head of row r turns
// by the angle with cosine cosSin[r*headDim + j] and sine cosSin[r*headDim + headDim/2 + j].
template <typename Real>
void ropeForward(Real *x, int64_t rows, int64_t rowStride, int64_t heads, int64_t headDim,
                 const Real *cosSin);
// The rotation is orthogonal, so dL/dx = Rᵀ·dL/dy: in place, turn by the opposite angle.
template <typename Real>
void ropeBackward(Real *dx, int64_t rows, int64_t rowStride, int64_t heads, int64_t headDim,
                  const Real *cosSin);

// Causal grouped-query attention over a flattened batch: sequence s holds rows
// [starts[s], starts[s+1]), each attending to the rows of its own sequence up to itself.
// q, out: rows × heads·headDim; k, v: rows × kvHeads·headDim; query head h reads kv head
// h / (heads / kvHeads).
struct AttentionDims {
    int64_t heads, kvHeads, headDim;
    double scale; // usually 1/sqrt(headDim)
};
// lse: rows × heads, the log-sum-exp of each row of scaled scores (kept for backward).
template <typename Real>
void attentionForward(const Real *q, const Real *k, const Real *v, std::span<const int64_t> starts,
                      const AttentionDims &dims, Real *out, Real *lse, ThreadPool *pool = nullptr);
// P recomputed from lse; dS = P ⊙ (dO·Vᵀ − rowsum(dO ⊙ O)); dQ = scale·dS·K, dK = scale·dSᵀ·Q,
// dV = Pᵀ·dO, the dK/dV of a shared kv head summed over its query heads. Overwrites dq, dk, dv.
template <typename Real>
void attentionBackward(const Real *q, const Real *k, const Real *v, const Real *out,
                       const Real *lse, const Real *dOut, std::span<const int64_t> starts,
                       const AttentionDims &dims, Real *dq, Real *dk, Real *dv,
                       ThreadPool *pool = nullptr);

// out = silu(gate) · up (Shazeer 2020), elementwise; out may alias gate.
template <typename Real>
void swigluForward(const Real *gate, const Real *up, int64_t count, Real *out,
                   ThreadPool *pool = nullptr);
// dGate = dOut·up·σ(g)·(1 + g·(1 − σ(g))), dUp = dOut·silu(g). Overwrites.
template <typename Real>
void swigluBackward(const Real *gate, const Real *up, const Real *dOut, int64_t count, Real *dGate,
                    Real *dUp, ThreadPool *pool = nullptr);

// Cross-entropy of one logit row with `target`: returns log Σ exp(z) − z_target and writes
// dL/dz = softmax(z) − onehot(target) into dLogits. Accumulates in double.
template <typename Real>
double crossEntropy(std::span<const Real> logits, int32_t target, std::span<Real> dLogits);

} // namespace lowbit::train::ops
