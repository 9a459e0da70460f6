// Host-side pieces of CudaTrainModel that need no CUDA (compiled in every build, tested on the
// CPU): the flattened batch (TrainableModel's layout, float cos/sin) and the memory plan that
// create() checks before allocating. Internal to train/ and backend/cuda/cuda_train_*.
#pragma once

#include "train/cuda_train_model.h"
#include "train/trainable_model.h"

#include <array>
#include <cstdint>
#include <span>
#include <vector>

namespace lowbit::train::detail {

// The batch as TrainableModel lays it out: sequence s holds rows [starts[s], starts[s+1]);
// cosSin per row (cos then sin, headDim floats, angles in float64); scored rows in batch order.
struct FlatBatch {
    std::vector<int32_t> ids;
    std::vector<int64_t> starts;
    std::vector<float> cosSin;
    std::vector<int64_t> scoredRows, scoredExample, scoredPosition;
    std::vector<int32_t> scoredTargets;
    int64_t rows() const { return int64_t(ids.size()); }
};

FlatBatch flattenTrainBatch(const ModelConfig &config, const std::vector<double> &invFreq,
                            std::span<const TrainExample> batch);

// The per-linear facts create() and the estimate share. Index = layer * kProjectionCount + p.
struct LinearPlan {
    int64_t rows = 0, cols = 0; // out, in
    int rank = 0;               // 0: not a LoRA target
    const QuantizedTensor *packed = nullptr;
    DType denseType = DType::F32; // dense: the type kept on the device
    uint64_t deviceBytes = 0;     // of the base
};

struct TrainPlan {
    std::vector<LinearPlan> linears;
    DType tableType = DType::F32; // embedding / head on the device
    int64_t adapterFloats = 0;
    int64_t maxRank = 0, rankSum = 0; // rankSum: the largest per-layer sum of ranks
    int64_t maxLinearValues = 0;      // largest rows × cols (the dequantization workspace)
    int64_t chunkRows = 0;            // min(headChunkRows, maxBatchTokens)
    CudaTrainMemory memory;
};

// Validates the options and the packed tensors (shape, method, no permutation) and computes the
// memory. attentionScratchFloats: attentionBackwardWorkspaceFloats for maxBatchTokens rows (the
// public estimate, which cannot ask the device code, allows 2 floats per row and head).
Result<TrainPlan> planCudaTraining(const Checkpoint &checkpoint, const LoraOptions &lora,
                                   const CudaTrainOptions &options, int64_t attentionScratchFloats);

// A row-major GEMM as the column-major BLAS call that computes it (cuBLAS is column-major):
// row-major C (m×n) = op(A)·op(B) is column-major Cᵀ = op(B)ᵀ·op(A)ᵀ, and a row-major X with
// leading dimension ld is the column-major Xᵀ with the same ld. So the call takes B first, with
// the same transpose flags and leading dimensions, and swaps m and n:
//   gemm_colmajor(transB, transA, n, m, k, alpha, B, ldb, A, lda, beta, C, ldc).
struct ColumnMajorGemm {
    bool transFirst = false, transSecond = false;
    int64_t m = 0, n = 0, k = 0;
    const void *first = nullptr; // B of the row-major product
    int64_t ldFirst = 0;
    const void *second = nullptr; // A of the row-major product
    int64_t ldSecond = 0;
};
inline ColumnMajorGemm columnMajorOf(bool transA, bool transB, int64_t m, int64_t n, int64_t k,
                                     const void *a, int64_t lda, const void *b, int64_t ldb) {
    return {transB, transA, n, m, k, b, ldb, a, lda};
}

// Bytes one packed tensor takes on the device (codes + 4 padding bytes, scales, zeros, codebook,
// per-group bit offsets and widths), as uploadPacked allocates them.
uint64_t packedDeviceBytes(const QuantizedTensor &q);

} // namespace lowbit::train::detail
