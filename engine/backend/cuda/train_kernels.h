// Host entries of the training kernels (issue 8): the backward of every op of the LLaMA decoder on
// the device, the device twins of engine/train/train_ops.h (same formulas, same conventions, same
// "adds" / "overwrites" contracts, float32 only). Conventions of kernels.h: each entry validates
// its shapes, launches on `stream`, returns the launch error; every pointer is device memory
// unless its comment says host. GEMMs are not here: the caller runs them through cuBLAS.
//
// The forward ops that inference already has are reused as they are (kernels.h: embedRows,
// ropeRows, swigluValues, addValues, packedDequantize); those listed here are the ones training
// needs in a different form (RMSNorm keeping 1/rms, attention keeping the row log-sum-exp).
#pragma once

#include "core/result.h"

#include <cuda_runtime_api.h>

#include <cstdint>

namespace lowbit::cuda::train {

// --- train_ops.cu (the small ops: norm, RoPE, SwiGLU, cross-entropy, row gather/scatter) ---
// ops::rmsnormForward: y = x·r·w per row, invRms[row] = r = 1/sqrt(mean(x²) + eps). y may alias x.
Status rmsnormForward(const float *x, int64_t rows, int64_t dim, const float *weight, float eps,
                      float *y, float *invRms, cudaStream_t stream);
// ops::rmsnormBackward, ADDS to dx: dx_i += r·w_i·dy_i − (r³/dim)·x_i·Σ_j dy_j·w_j·x_j.
Status rmsnormBackward(const float *x, int64_t rows, int64_t dim, const float *weight,
                       const float *invRms, const float *dy, float *dx, cudaStream_t stream);
// ops::ropeBackward: in place, each pair turned by the opposite angle of ropeRows (Rᵀ·dy).
Status ropeBackward(float *dx, int64_t rows, int64_t rowStride, int64_t heads, int64_t headDim,
                    const float *cosSin, cudaStream_t stream);

// ops::swigluBackward, overwrites: dGate = dOut·up·σ(g)·(1 + g·(1 − σ(g))), dUp = dOut·silu(g).
Status swigluBackward(const float *gate, const float *up, const float *dOut, int64_t count,
                      float *dGate, float *dUp, cudaStream_t stream);

// --- train_attention.cu ---
// Causal grouped-query attention over a flattened batch, as ops::attentionForward/Backward:
// sequence s holds rows [starts[s], starts[s+1]) (starts: sequences + 1 values, DEVICE memory),
// each row attending to the rows of its own sequence up to itself. q, out, dq: rows ×
// heads·headDim; k, v, dk, dv: rows × kvHeads·headDim; query head h reads kv head
// h / (heads / kvHeads). headDim <= 128 (LLaMA-3's).
struct AttentionDims {
    int64_t heads, kvHeads, headDim;
    float scale; // usually 1/sqrt(headDim)
};
// Overwrites out and lse (rows × heads: the log-sum-exp of each row of scaled scores).
Status attentionForward(const float *q, const float *k, const float *v, const int64_t *starts,
                        int64_t sequences, int64_t rows, const AttentionDims &dims, float *out,
                        float *lse, cudaStream_t stream);
// Floats of scratch attentionBackward needs (e.g. rowsum(dO ⊙ O) per row and head).
int64_t attentionBackwardWorkspaceFloats(int64_t rows, const AttentionDims &dims);
// P recomputed from lse; dS = P ⊙ (dO·Vᵀ − rowsum(dO ⊙ O)); dQ = scale·dS·K, dK = scale·dSᵀ·Q,
// dV = Pᵀ·dO, a shared kv head's dK/dV summed over its query heads. Overwrites dq, dk, dv.
// Deterministic (no floating-point atomics), so two runs give identical gradients.
Status attentionBackward(const float *q, const float *k, const float *v, const float *out,
                         const float *lse, const float *dOut, const int64_t *starts,
                         int64_t sequences, int64_t rows, const AttentionDims &dims, float *dq,
                         float *dk, float *dv, float *workspace, cudaStream_t stream);

// Cross-entropy of each logit row with its target (ops::crossEntropy): loss[r] = log Σ exp(z) −
// z_target (float64, accumulated in float64), and dLogits[r] = softmax(z) − onehot(target),
// which may alias logits (computed in place). targets in [0, vocab).
Status crossEntropyRows(float *logits, int64_t rows, int64_t vocab, const int32_t *targets,
                        float *dLogits, double *loss, cudaStream_t stream);
// out[i] = x[rowIndex[i]] for i < count (rows of dim floats): the scored rows of a batch.
Status gatherRows(const float *x, int64_t dim, const int64_t *rowIndex, int64_t count, float *out,
                  cudaStream_t stream);
// x[rowIndex[i]] += y[i] (row indices distinct).
Status scatterAddRows(float *x, int64_t dim, const int64_t *rowIndex, int64_t count,
                      const float *y, cudaStream_t stream);

// --- train_lora.cu --- IR-QLoRA's Information Elastic Connection (train/lora_linear.h has the
// formulas and the index maps: group g of the input is features [⌊g·in/r⌋, max(⌊(g+1)·in/r⌋,
// ⌊g·in/r⌋ + 1)), output j repeats hidden ⌊j·r/out⌋). beta: ONE device float (the parameter).
// hidden[n × r] += beta · groupMean(x[n × in]).
Status elasticGroupMeanAdd(const float *x, int64_t n, int64_t in, int64_t rank, const float *beta,
                           float *hidden, cudaStream_t stream);
// y[n × out] += scale · beta · repeat(hidden[n × r]).
Status elasticRepeatAdd(const float *hidden, int64_t n, int64_t rank, int64_t out, float scale,
                        const float *beta, float *y, cudaStream_t stream);
// Backward of the two: dx[n × in] += beta·groupMeanᵀ(dHidden); *dBeta += Σ dHidden ⊙ groupMean(x)
// (dBetaA), and dHidden[n × r] += scale·beta·repeatᵀ(dy); *dBeta += scale·Σ dy ⊙ repeat(hidden)
// (dBetaB). dBeta: one device float, ADDED to. Deterministic reductions.
Status elasticGroupMeanBackward(const float *x, const float *dHidden, int64_t n, int64_t in,
                                int64_t rank, const float *beta, float *dx, float *dBeta,
                                cudaStream_t stream);
Status elasticRepeatBackward(const float *hidden, const float *dy, int64_t n, int64_t rank,
                             int64_t out, float scale, const float *beta, float *dHidden,
                             float *dBeta, cudaStream_t stream);

} // namespace lowbit::cuda::train
