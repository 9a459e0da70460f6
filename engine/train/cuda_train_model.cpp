// CudaTrainModel's host-side half, compiled in every build: batch layout, option checks, the
// memory plan, and (without CUDA) the factory that says why there is no device training.
#include "train/cuda_train_detail.h"

#include "core/build_info.h"
#include "quant/quantized_tensor.h"
#include "train/decoder_layer.h"

#include <algorithm>
#include <cmath>

namespace lowbit::train::detail {

FlatBatch flattenTrainBatch(const ModelConfig &config, const std::vector<double> &invFreq,
                            std::span<const TrainExample> batch) {
    FlatBatch b;
    const int64_t hd = config.headDim, half = hd / 2;
    b.starts.push_back(0);
    for (size_t e = 0; e < batch.size(); ++e) {
        const TrainExample &ex = batch[e];
        for (size_t i = 0; i < ex.tokens.size(); ++i) {
            const int64_t row = int64_t(b.ids.size());
            b.ids.push_back(ex.tokens[i]);
            if (ex.targets[i] != kIgnoreTarget) {
                b.scoredRows.push_back(row);
                b.scoredExample.push_back(int64_t(e));
                b.scoredPosition.push_back(int64_t(i));
                b.scoredTargets.push_back(ex.targets[i]);
            }
            // Angles in float64, as TrainableModel and the inference engine compute them.
            b.cosSin.resize(size_t((row + 1) * hd));
            for (int64_t j = 0; j < half; ++j) {
                const double angle = double(i) * invFreq[size_t(j)];
                b.cosSin[size_t(row * hd + j)] = float(std::cos(angle));
                b.cosSin[size_t(row * hd + half + j)] = float(std::sin(angle));
            }
        }
        b.starts.push_back(int64_t(b.ids.size()));
    }
    return b;
}

uint64_t packedDeviceBytes(const QuantizedTensor &q) {
    const uint64_t groups = uint64_t(q.groups()), rowGroups = uint64_t(q.rows) * groups;
    return uint64_t(q.packed.size()) + 4 + rowGroups * 8 + uint64_t(q.codebook.size()) * 4 +
           groups * 5;
}

namespace {

const Tensor &projectionWeight(const LayerWeights &w, int projection) {
    const Tensor *const weights[] = {&w.wq, &w.wk, &w.wv, &w.wo, &w.wGate, &w.wUp, &w.wDown};
    return *weights[projection];
}

// Methods whose packed weight is the plain grid value scale·(L(code) − zero) (icq: plus τ̂,
// which create() folds into the zeros).
bool gridMethod(const std::string &method) {
    return method == "nf4" || method == "icq" || method == "rtn" || method == "gptq";
}

Status checkPacked(const QuantizedTensor &q, const Tensor &weight) {
    if (q.rows != weight.rows() || q.cols != weight.cols())
        return makeError(ErrorCode::InvalidArgument,
                         q.name + ": packed tensor is " + std::to_string(q.rows) + "x" +
                             std::to_string(q.cols) + " but the checkpoint weight is " +
                             std::to_string(weight.rows()) + "x" + std::to_string(weight.cols()));
    if (!gridMethod(q.method))
        return makeError(ErrorCode::Unsupported,
                         q.name + ": packed method '" + q.method +
                             "' is not supported by device training (rtn, gptq, nf4, icq)");
    if (!q.permutation.empty())
        return makeError(ErrorCode::Unsupported,
                         q.name + ": act-order (permuted) packed weights are not supported by "
                                  "device training");
    return {};
}

// Floats per batch row of one layer: the forward's activations (decoder_layer.h's
// LayerActivations), the backward's scratch and dL/dx.
int64_t layerRowFloats(const ModelConfig &c, int64_t rankSum, int64_t maxRank) {
    const int64_t h = c.hiddenSize, q = c.numHeads * c.headDim, kv = c.numKvHeads * c.headDim,
                  f = c.intermediateSize;
    const int64_t forward = h + 1 + q + 2 * kv + q + c.numHeads + h + h + 1 + 3 * f + rankSum;
    const int64_t backward = 3 * f + h + q + q + 2 * kv + maxRank + h;
    return forward + backward;
}

} // namespace

Result<TrainPlan> planCudaTraining(const Checkpoint &checkpoint, const LoraOptions &lora,
                                   const CudaTrainOptions &options,
                                   int64_t attentionScratchFloats) {
    const std::string source = checkpoint.path.string();
    const ModelConfig &c = checkpoint.config;
    LOWBIT_CHECK(c.validate(source));
    LOWBIT_CHECK(checkpoint.weights.validate(c, source));
    if (options.makeBase)
        return makeError(ErrorCode::Unsupported,
                         "device training: trainable or custom linear bases (DB-LLM's dual "
                         "binary) are not supported on the GPU yet; train this method on the CPU");
    if (options.maxBatchTokens < 1 || options.headChunkRows < 1)
        return makeError(ErrorCode::InvalidArgument,
                         "device training: maxBatchTokens and headChunkRows must be positive");
    if (lora.rank < 0)
        return makeError(ErrorCode::InvalidArgument, "device training: negative LoRA rank");
    LOWBIT_CHECK(checkLoraTargets(lora));
    const bool fp32 = options.precision == GemmPrecision::Fp32;
    TrainPlan plan;
    const ModelWeights &w = checkpoint.weights;
    // Fp32: every dense matrix widened to float32; Tensor16: kept as stored.
    plan.tableType = fp32 ? DType::F32 : w.tokenEmbedding.dtype;
    const bool tied =
        w.output.data == w.tokenEmbedding.data && w.output.dtype == w.tokenEmbedding.dtype;
    CudaTrainMemory &m = plan.memory;
    const uint64_t table = uint64_t(c.vocabSize * c.hiddenSize);
    m.weightBytes = table * dtypeBytes(plan.tableType) +
                    (tied ? 0 : table * dtypeBytes(fp32 ? DType::F32 : w.output.dtype)) +
                    uint64_t((2 * c.numLayers + 1) * c.hiddenSize) * 4;
    int64_t widestIn = 0;
    for (int64_t l = 0; l < c.numLayers; ++l) {
        int64_t rankSum = 0;
        for (int p = 0; p < kProjectionCount; ++p) {
            const Tensor &weight = projectionWeight(w.layers[size_t(l)], p);
            LinearPlan lp;
            lp.rows = weight.rows(), lp.cols = weight.cols();
            lp.rank = std::find(lora.targets.begin(), lora.targets.end(), projectionName(p)) !=
                              lora.targets.end()
                          ? lora.rank
                          : 0;
            if (options.packed)
                if (auto it = options.packed->find(weight.name); it != options.packed->end()) {
                    LOWBIT_CHECK(checkPacked(it->second, weight));
                    lp.packed = &it->second;
                }
            lp.denseType = fp32 ? DType::F32 : weight.dtype;
            lp.deviceBytes = lp.packed ? packedDeviceBytes(*lp.packed)
                                       : uint64_t(lp.rows * lp.cols) * dtypeBytes(lp.denseType);
            m.weightBytes += lp.deviceBytes;
            if (lp.rank > 0)
                plan.adapterFloats +=
                    int64_t(lp.rank) * (lp.rows + lp.cols) + (lora.elasticConnection ? 2 : 0);
            plan.maxRank = std::max<int64_t>(plan.maxRank, lp.rank);
            rankSum += lp.rank;
            if (lp.packed)
                plan.maxLinearValues = std::max(plan.maxLinearValues, lp.rows * lp.cols);
            widestIn = std::max({widestIn, lp.rows, lp.cols});
            plan.linears.push_back(lp);
        }
        plan.rankSum = std::max(plan.rankSum, rankSum);
    }
    const int64_t n = options.maxBatchTokens, h = c.hiddenSize;
    plan.chunkRows = std::min(options.headChunkRows, n);
    m.adapterBytes = uint64_t(plan.adapterFloats) * 8;
    m.checkpointBytes = uint64_t(c.numLayers + 1) * uint64_t(n * h) * 4;
    // + token ids, RoPE table, scored-row indices, targets and per-row losses; + the 16-bit copy
    // of a GEMM input (Tensor16) and one dequantized packed weight.
    m.layerBytes = uint64_t(n) * uint64_t(layerRowFloats(c, plan.rankSum, plan.maxRank)) * 4 +
                   uint64_t(attentionScratchFloats) * 4 + uint64_t(n) * (4 + 8 + 4 + 8) +
                   uint64_t(n * c.headDim) * 4 + (fp32 ? 0 : uint64_t(n * widestIn) * 2) +
                   uint64_t(plan.maxLinearValues) * (fp32 ? 4 : 2);
    // Logits (dLogits in place), their 16-bit copy (Tensor16), and selected / normed / dNormed /
    // dSelected rows plus 1/rms.
    const uint64_t chunk = uint64_t(plan.chunkRows);
    m.headBytes = chunk * uint64_t(c.vocabSize) * 4 + chunk * uint64_t(h) * 4 * 4 + chunk * 4 +
                  (fp32 ? 0 : chunk * uint64_t(std::max(c.vocabSize, h)) * 2);
    return plan;
}

} // namespace lowbit::train::detail

namespace lowbit::train {

Result<CudaTrainMemory> estimateCudaTrainMemory(const Checkpoint &checkpoint,
                                                const LoraOptions &lora,
                                                const CudaTrainOptions &options) {
    const int64_t scratch = 2 * options.maxBatchTokens * checkpoint.config.numHeads;
    LOWBIT_TRY(detail::TrainPlan plan,
               detail::planCudaTraining(checkpoint, lora, options, scratch));
    return plan.memory;
}

#if !LOWBIT_HAVE_CUDA
Result<std::unique_ptr<CudaTrainModel>>
CudaTrainModel::create(const Checkpoint &, const LoraOptions &, const CudaTrainOptions &options) {
    std::string why;
    cudaDeviceCount(&why);
    return makeError(ErrorCode::Unsupported,
                     "device training on cuda:" + std::to_string(options.device) + ": " + why);
}
#endif

} // namespace lowbit::train
