// Host entries of the CUDA backend's kernels. Each validates its shapes, launches a raw-pointer
// kernel on `stream` and returns the launch error as a Status; it does not synchronize, so an
// execution fault surfaces at the caller's next synchronizing call. Every pointer is device
// memory unless its comment says host. Activations are float32, row-major.
#pragma once

#include "backend/backend.h"
#include "core/dtype.h"
#include "core/result.h"

#include <cuda_runtime_api.h>

#include <cstdint>

namespace lowbit::cuda {

// --- elementwise.cu ---
// out[r] = float(table[ids[r]]), table {vocab, dim} of F32/F16/BF16.
Status embedRows(const void *table, DType type, int64_t dim, const int32_t *ids, int64_t rows,
                 float *out, cudaStream_t stream);
// y[r] = x[r] / sqrt(mean(x[r]^2) + eps) * weight (weight: dim floats); y may alias x.
Status rmsnormRows(const float *x, int64_t rows, int64_t dim, const float *weight, float eps,
                   float *y, cudaStream_t stream);
// Rotate-half RoPE in place, the contract of Backend::rope (cosSin: rows*headDim floats).
Status ropeRows(float *x, int64_t rows, int64_t rowStride, int64_t heads, int64_t headDim,
                const float *cosSin, cudaStream_t stream);
Status swigluValues(const float *gate, const float *up, int64_t count, float *out,
                    cudaStream_t stream);
Status addValues(float *x, const float *y, int64_t count, cudaStream_t stream);
// out = x rounded to `to` (F16 or BF16), count values.
Status floatsToHalf(const float *x, int64_t count, DType to, void *out, cudaStream_t stream);
// out = float(x) for F16/BF16/F32 input, count values.
Status halfToFloats(const void *x, DType from, int64_t count, float *out, cudaStream_t stream);
// acc[i] += scale * x[i] in float64 (GPTQ Hessian accumulation across row blocks).
Status accumulateScaled(double *acc, const float *x, int64_t count, double scale,
                        cudaStream_t stream);

// --- gemv.cu ---
// Decode-sized GEMM: y[rows x out] = x[rows x in] W^T, W {out, in} dense F32/F16/BF16, read once
// for all rows (bandwidth-bound; exact float32 products, unlike a 16-bit tensor-core GEMM).
constexpr int64_t kGemvMaxRows = 8;
Status denseGemv(const float *x, int64_t rows, const void *weight, DType type, int64_t out,
                 int64_t in, float *y, cudaStream_t stream);

// --- quant_gemv.cu ---
// A QuantizedTensor on the device (engine/quant/quantized_tensor.h's layout: LSB-first code stream,
// row-major over stored columns, w = scale * (level(code) - zero)).
struct PackedView {
    const uint8_t *codes = nullptr;           // the bit stream, padded with 4 zero bytes
    const float *scales = nullptr;            // rows * groups
    const float *zeros = nullptr;             // rows * groups
    const float *codebook = nullptr;          // nullptr: level(c) = c
    const uint32_t *groupBitOffset = nullptr; // per group: first bit within a row
    const uint8_t *groupWidth = nullptr;      // per group: code width
    int64_t rows = 0, cols = 0, groupSize = 0, groups = 0, rowBits = 0;
    int bits = 0;         // the width when uniform
    bool uniform = false; // one width for every group (enables the word-at-a-time path)
};
// out[r][j] = x[r][perm[j]] (act-order: inputs into stored column order).
Status permuteColumns(const float *x, int64_t rows, int64_t cols, const int32_t *perm, float *out,
                      cudaStream_t stream);
// y[rows x w.rows] = xStored W_stored^T, rows <= kGemvMaxRows; xStored in stored column order.
Status packedGemv(const float *xStored, int64_t rows, const PackedView &w, float *y,
                  cudaStream_t stream);
// The dequantized weights, stored column order, rows x cols of `to` (F32 or BF16).
Status packedDequantize(const PackedView &w, DType to, void *out, cudaStream_t stream);

// --- attention.cu ---
// Backend::attention on the device. `sequences` is a device copy of the host descriptors (their
// pointers are device pointers). queryPairs[s] = queries of sequence s * heads/kvHeads.
// workspace: attentionWorkspaceFloats(...) floats for split-key (decode) partial results.
struct AttentionPlan {
    int64_t tasks = 0;  // blocks of kAttentionPairsPerBlock (query row, head) pairs
    int64_t splits = 1; // key ranges per task (flash-decoding); 1 for long query runs
};
constexpr int kAttentionWarps = 8;
constexpr int kAttentionPairsPerBlock = 32; // 4 per warp
constexpr int64_t kAttentionMaxHeadDim = 128;
struct AttentionTask {
    int32_t sequence, kvHead, pair0, keyEnd; // keyEnd: keys the task's last row sees
};
AttentionPlan planAttention(int64_t tasks, int64_t maxKeys, int multiprocessors);
size_t attentionWorkspaceFloats(const AttentionPlan &plan, int64_t headDim);
Status attention(const AttentionSequence *sequences, const AttentionTask *tasks,
                 const AttentionPlan &plan, const AttentionShape &shape, float *workspace,
                 cudaStream_t stream);

// --- loss.cu ---
// out[r] = log softmax(logits[r])[targets[r]] in float64, targets in [0, vocab).
Status tokenLogProbs(const float *logits, int64_t rows, int64_t vocab, const int32_t *targets,
                     double *out, cudaStream_t stream);
// The k (1..kTopKMax) largest logits of each row, descending (ties: lower id first); NaN ignored.
constexpr int kTopKMax = 64;
Status topK(const float *logits, int64_t rows, int64_t vocab, int k, int32_t *ids, float *values,
            cudaStream_t stream);

// --- gptq_sweep.cu ---
// One block [b0, b0+count) of GPTQ's sweep over w (rows x cols, row-major, stored column order)
// with U = chol(H^-1) upper (cols x cols): first the min-max grids of the groups whose first
// column lies in the block (scales/zeros: rows x groups), then the in-block sweep, which writes
// the quantized values into w, the codes, err (rows x count: (w - q) / U_jj for the lazy update)
// and adds each row's loss. The caller applies w[:, b0+count:] -= err * U[block, b0+count:].
constexpr int kGptqBlock = 128;
Status gptqBlockGrids(const float *w, int64_t rows, int64_t cols, int64_t groupSize, int64_t b0,
                      int64_t count, int bits, bool symmetric, float *scales, float *zeros,
                      cudaStream_t stream);
Status gptqBlockSweep(float *w, int64_t rows, int64_t cols, int64_t b0, int64_t count,
                      const float *hinvUpper, int64_t groupSize, int bits, const float *scales,
                      const float *zeros, uint8_t *codes, float *err, double *loss,
                      cudaStream_t stream);

} // namespace lowbit::cuda
