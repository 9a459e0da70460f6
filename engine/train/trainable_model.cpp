#include "train/trainable_model.h"

#include "core/thread_pool.h"
#include "train/decoder_layer.h"
#include "train/train_ops.h"

#include <algorithm>
#include <cblas.h>
#include <cmath>
#include <cstring>

namespace lowbit::train {

namespace {

template <typename Real> std::vector<Real> toReal(const Tensor &tensor) {
    const std::vector<float> values = tensorToFloats(tensor);
    return std::vector<Real>(values.begin(), values.end());
}

const Tensor &projectionWeight(const LayerWeights &w, int projection) {
    const Tensor *const weights[] = {&w.wq, &w.wk, &w.wv, &w.wo, &w.wGate, &w.wUp, &w.wDown};
    return *weights[projection];
}

// One scored position of the flattened batch.
struct ScoredRow {
    int64_t row, example, position;
    int32_t target;
};

template <typename Real> class CrossEntropyLoss final : public LossFunction<Real> {
public:
    double score(int64_t, int64_t, int32_t target, std::span<const Real> logits,
                 std::span<Real> dLogits) override {
        return ops::crossEntropy(logits, target, dLogits);
    }
};

// Logits are formed for this many scored rows at a time, so that memory stays rows × vocab.
constexpr int64_t kHeadChunkRows = 64;

} // namespace

Status checkLoraTargets(const LoraOptions &lora) {
    for (const std::string &target : lora.targets) {
        bool known = false;
        for (int p = 0; p < kProjectionCount; ++p)
            known = known || target == projectionName(p);
        if (!known)
            return makeError(ErrorCode::InvalidArgument,
                             "LoRA target '" + target +
                                 "' is not one of q_proj, k_proj, v_proj, "
                                 "o_proj, gate_proj, up_proj, down_proj");
    }
    return {};
}

Status checkTrainBatch(const ModelConfig &config, std::span<const TrainExample> batch) {
    for (size_t e = 0; e < batch.size(); ++e) {
        const TrainExample &ex = batch[e];
        const std::string where = "training example " + std::to_string(e);
        if (ex.tokens.size() != ex.targets.size())
            return makeError(ErrorCode::InvalidArgument,
                             where + ": " + std::to_string(ex.tokens.size()) + " tokens but " +
                                 std::to_string(ex.targets.size()) + " targets");
        if (int64_t(ex.tokens.size()) > config.maxPositions)
            return makeError(ErrorCode::InvalidArgument,
                             where + ": " + std::to_string(ex.tokens.size()) +
                                 " tokens, longer than the model's context of " +
                                 std::to_string(config.maxPositions));
        for (size_t i = 0; i < ex.tokens.size(); ++i) {
            if (ex.tokens[i] < 0 || ex.tokens[i] >= config.vocabSize)
                return makeError(ErrorCode::InvalidArgument,
                                 where + ": token " + std::to_string(ex.tokens[i]) +
                                     " out of range (vocab " + std::to_string(config.vocabSize) +
                                     ")");
            const int32_t t = ex.targets[i];
            if (t != kIgnoreTarget && (t < 0 || t >= config.vocabSize))
                return makeError(ErrorCode::InvalidArgument,
                                 where + ": target " + std::to_string(t) + " out of range (vocab " +
                                     std::to_string(config.vocabSize) + ")");
        }
    }
    return {};
}

template <typename Real> struct TrainableModel<Real>::Impl {
    ModelConfig config;
    std::vector<Real> embedding, outputOwned, finalNorm;
    const Real *output = nullptr; // embedding.data() when the head is tied
    std::vector<DecoderLayer<Real>> layers;
    std::vector<double> invFreq;
    std::vector<Parameter<Real> *> parameters;
    std::unique_ptr<ThreadPool> pool;
    LayerActivations<Real> acts; // one layer's, reused by every layer and call

    Status buildLayer(const Checkpoint &checkpoint, const LoraOptions &lora,
                      const LinearBaseFactory<Real> &makeBase, int64_t index);
    BatchRows<Real> layout(std::span<const TrainExample> batch, std::vector<int32_t> &ids,
                           std::vector<ScoredRow> &scored) const;
    double head(const std::vector<Real> &x, const std::vector<ScoredRow> &scored,
                LossFunction<Real> &loss, std::vector<Real> *dx) const;
    Result<LossStats> run(std::span<const TrainExample> batch, LossFunction<Real> *loss,
                          bool backward);
};

template <typename Real>
Status TrainableModel<Real>::Impl::buildLayer(const Checkpoint &checkpoint, const LoraOptions &lora,
                                              const LinearBaseFactory<Real> &makeBase,
                                              int64_t index) {
    const LayerWeights &w = checkpoint.weights.layers[size_t(index)];
    DecoderLayer<Real> &layer = layers[size_t(index)];
    layer.attnNorm = toReal<Real>(w.attnNorm);
    layer.ffnNorm = toReal<Real>(w.ffnNorm);
    for (int p = 0; p < kProjectionCount; ++p) {
        const Tensor &weight = projectionWeight(w, p);
        const std::string prefix = "base_model.model.model.layers." + std::to_string(index) + "." +
                                   projectionModule(p) + "." + projectionName(p);
        std::unique_ptr<LinearBase<Real>> base;
        if (makeBase) {
            LOWBIT_TRY(base, makeBase(index, projectionName(p), weight));
        } else {
            base = std::make_unique<DenseLinearBase<Real>>(weight.rows(), weight.cols(),
                                                           toReal<Real>(weight));
        }
        if (!base || base->rows() != weight.rows() || base->cols() != weight.cols())
            return makeError(ErrorCode::InvalidArgument,
                             prefix + ": the linear base does not have the checkpoint's shape");
        const bool adapted = std::find(lora.targets.begin(), lora.targets.end(),
                                       projectionName(p)) != lora.targets.end();
        // Each linear's adapter has its own stream, so one's init does not depend on the others.
        const uint64_t seed =
            lora.seed ^ (uint64_t(index * kProjectionCount + p + 1) * 0xd1b54a32d192ed03ull);
        LOWBIT_TRY(layer.linears[size_t(p)],
                   LoraLinear<Real>::create(std::move(base), prefix, adapted ? lora.rank : 0,
                                            lora.alpha, lora.elasticConnection, seed));
    }
    return {};
}

template <typename Real>
Result<std::unique_ptr<TrainableModel<Real>>>
TrainableModel<Real>::create(const Checkpoint &checkpoint, const LoraOptions &lora,
                             LinearBaseFactory<Real> makeBase, int threads) {
    const std::string source = checkpoint.path.string();
    LOWBIT_CHECK(checkpoint.config.validate(source));
    LOWBIT_CHECK(checkpoint.weights.validate(checkpoint.config, source));
    LOWBIT_CHECK(checkLoraTargets(lora));
    std::unique_ptr<TrainableModel> model(new TrainableModel());
    model->m_impl = std::make_unique<Impl>();
    Impl &s = *model->m_impl;
    // The pool owns the parallelism, each BLAS call runs on one thread (as in CpuBackend):
    // OpenBLAS's own threads on these small GEMMs oversubscribe the cores (measured 6× slower).
    openblas_set_num_threads(1);
    s.pool = std::make_unique<ThreadPool>(threads);
    s.config = checkpoint.config;
    s.invFreq = s.config.ropeInverseFrequencies();
    const ModelWeights &w = checkpoint.weights;
    s.embedding = toReal<Real>(w.tokenEmbedding);
    s.finalNorm = toReal<Real>(w.finalNorm);
    if (w.output.data == w.tokenEmbedding.data && w.output.dtype == w.tokenEmbedding.dtype) {
        s.output = s.embedding.data();
    } else {
        s.outputOwned = toReal<Real>(w.output);
        s.output = s.outputOwned.data();
    }
    s.layers.resize(size_t(s.config.numLayers));
    for (int64_t layer = 0; layer < s.config.numLayers; ++layer)
        LOWBIT_CHECK(s.buildLayer(checkpoint, lora, makeBase, layer));
    for (DecoderLayer<Real> &layer : s.layers)
        for (auto &linear : layer.linears)
            for (Parameter<Real> *p : linear->adapterParameters())
                s.parameters.push_back(p);
    for (DecoderLayer<Real> &layer : s.layers)
        for (auto &linear : layer.linears)
            for (Parameter<Real> *p : linear->base().parameters())
                s.parameters.push_back(p);
    return model;
}

template <typename Real> TrainableModel<Real>::TrainableModel() = default;
template <typename Real> TrainableModel<Real>::~TrainableModel() = default;

template <typename Real> const ModelConfig &TrainableModel<Real>::config() const {
    return m_impl->config;
}

template <typename Real> std::vector<Parameter<Real> *> TrainableModel<Real>::parameters() {
    return m_impl->parameters;
}

template <typename Real> void TrainableModel<Real>::zeroGrad() {
    for (Parameter<Real> *p : m_impl->parameters)
        std::fill(p->grad.begin(), p->grad.end(), Real(0));
}

template <typename Real>
BatchRows<Real> TrainableModel<Real>::Impl::layout(std::span<const TrainExample> batch,
                                                   std::vector<int32_t> &ids,
                                                   std::vector<ScoredRow> &scored) const {
    BatchRows<Real> b;
    const int64_t hd = config.headDim, half = hd / 2;
    b.starts.push_back(0);
    for (size_t e = 0; e < batch.size(); ++e) {
        const TrainExample &ex = batch[e];
        for (size_t i = 0; i < ex.tokens.size(); ++i) {
            const int64_t row = int64_t(ids.size());
            ids.push_back(ex.tokens[i]);
            if (ex.targets[i] != kIgnoreTarget)
                scored.push_back({row, int64_t(e), int64_t(i), ex.targets[i]});
            // Angles in float64 as the inference engine computes them (runtime/model.cpp).
            b.cosSin.resize(size_t((row + 1) * hd));
            for (int64_t j = 0; j < half; ++j) {
                const double angle = double(i) * invFreq[size_t(j)];
                b.cosSin[size_t(row * hd + j)] = Real(std::cos(angle));
                b.cosSin[size_t(row * hd + half + j)] = Real(std::sin(angle));
            }
        }
        b.starts.push_back(int64_t(ids.size()));
    }
    return b;
}

// Final norm + head + loss at the scored rows of x, a chunk of rows at a time. With dx (rows ×
// hidden, zeroed), writes dL/dx at the scored rows. Returns the summed loss.
template <typename Real>
double TrainableModel<Real>::Impl::head(const std::vector<Real> &x,
                                        const std::vector<ScoredRow> &scored,
                                        LossFunction<Real> &loss, std::vector<Real> *dx) const {
    const int64_t hidden = config.hiddenSize, vocab = config.vocabSize;
    double total = 0;
    std::vector<Real> selected, normed, invRms, logits, dLogits, dNormed;
    for (size_t c0 = 0; c0 < scored.size(); c0 += size_t(kHeadChunkRows)) {
        const int64_t m = std::min<int64_t>(kHeadChunkRows, int64_t(scored.size() - c0));
        selected.resize(size_t(m * hidden)), normed.resize(size_t(m * hidden));
        invRms.resize(size_t(m)), logits.resize(size_t(m * vocab)),
            dLogits.resize(size_t(m * vocab));
        for (int64_t r = 0; r < m; ++r)
            std::copy_n(x.data() + scored[c0 + size_t(r)].row * hidden, hidden,
                        selected.data() + r * hidden);
        ops::rmsnormForward(selected.data(), m, hidden, finalNorm.data(), config.rmsNormEps,
                            normed.data(), invRms.data(), pool.get());
        ops::gemm<Real>(false, true, m, vocab, hidden, Real(1), normed.data(), hidden, output,
                        hidden, Real(0), logits.data(), vocab, pool.get());
        std::fill(dLogits.begin(), dLogits.end(), Real(0)); // a loss may write only some entries
        for (int64_t r = 0; r < m; ++r) {
            const ScoredRow &s = scored[c0 + size_t(r)];
            total += loss.score(s.example, s.position, s.target,
                                {logits.data() + r * vocab, size_t(vocab)},
                                {dLogits.data() + r * vocab, size_t(vocab)});
        }
        if (!dx)
            continue;
        // logits = n·Outᵀ → dn = dLogits·Out (the head is frozen: no dOut)
        dNormed.resize(size_t(m * hidden));
        ops::gemm<Real>(false, false, m, hidden, vocab, Real(1), dLogits.data(), vocab, output,
                        hidden, Real(0), dNormed.data(), hidden, pool.get());
        std::vector<Real> dSelected(size_t(m * hidden), Real(0));
        ops::rmsnormBackward(selected.data(), m, hidden, finalNorm.data(), invRms.data(),
                             dNormed.data(), dSelected.data());
        for (int64_t r = 0; r < m; ++r) {
            Real *target = dx->data() + scored[c0 + size_t(r)].row * hidden;
            for (int64_t i = 0; i < hidden; ++i)
                target[i] += dSelected[size_t(r * hidden + i)];
        }
    }
    return total;
}

template <typename Real>
Result<LossStats> TrainableModel<Real>::Impl::run(std::span<const TrainExample> batch,
                                                  LossFunction<Real> *loss, bool backward) {
    LOWBIT_CHECK(checkTrainBatch(config, batch));
    std::vector<int32_t> ids;
    std::vector<ScoredRow> scored;
    const BatchRows<Real> rows = layout(batch, ids, scored);
    const int64_t n = rows.rows(), hidden = config.hiddenSize;
    LossStats stats;
    stats.scored = int64_t(scored.size());
    if (scored.empty())
        return stats;
    // Activation checkpointing: inputs[l] is the input of layer l; inputs[L] the final hidden.
    // Forward-only keeps just two (the input and output of the running layer).
    const size_t kept = backward ? layers.size() + 1 : 2;
    std::vector<std::vector<Real>> inputs(kept);
    for (std::vector<Real> &buffer : inputs)
        buffer.resize(size_t(n * hidden));
    for (int64_t r = 0; r < n; ++r)
        std::copy_n(embedding.data() + int64_t(ids[size_t(r)]) * hidden, hidden,
                    inputs[0].data() + r * hidden);
    for (size_t l = 0; l < layers.size(); ++l) {
        std::vector<Real> &in = inputs[backward ? l : l % 2],
                          &out = inputs[backward ? l + 1 : (l + 1) % 2];
        decoderLayerForward(config, layers[l], rows, in.data(), out.data(), acts, pool.get());
    }
    const std::vector<Real> &lastHidden = inputs[backward ? layers.size() : layers.size() % 2];
    CrossEntropyLoss<Real> crossEntropy;
    LossFunction<Real> &scorer = loss ? *loss : crossEntropy;
    if (!backward) {
        stats.lossSum = head(lastHidden, scored, scorer, nullptr);
        return stats;
    }
    std::vector<Real> dx(size_t(n * hidden), Real(0)), recomputed(size_t(n * hidden));
    stats.lossSum = head(lastHidden, scored, scorer, &dx);
    inputs.pop_back();
    for (size_t l = layers.size(); l-- > 0;) {
        if (l + 1 < layers.size()) // the last layer's activations are still those of the forward
            decoderLayerForward(config, layers[l], rows, inputs[l].data(), recomputed.data(), acts,
                                pool.get());
        decoderLayerBackward(config, layers[l], rows, inputs[l].data(), acts, dx.data(),
                             pool.get());
        std::vector<Real>().swap(inputs[l]);
    }
    return stats;
}

template <typename Real>
Result<LossStats> TrainableModel<Real>::accumulate(std::span<const TrainExample> batch,
                                                   LossFunction<Real> *loss) {
    return m_impl->run(batch, loss, true);
}

template <typename Real>
Result<LossStats> TrainableModel<Real>::evaluate(std::span<const TrainExample> batch,
                                                 LossFunction<Real> *loss) {
    return m_impl->run(batch, loss, false);
}

template <typename Real> void TrainableModel<Real>::afterStep() {
    for (DecoderLayer<Real> &layer : m_impl->layers)
        for (auto &linear : layer.linears)
            if (!linear->base().parameters().empty())
                linear->base().refresh();
}

template <typename Real>
Result<std::vector<Real>> TrainableModel<Real>::mergedWeight(int64_t layer,
                                                             std::string_view proj) const {
    if (layer < 0 || layer >= int64_t(m_impl->layers.size()))
        return makeError(ErrorCode::InvalidArgument,
                         "mergedWeight: layer " + std::to_string(layer) + " out of range");
    for (int p = 0; p < kProjectionCount; ++p)
        if (proj == projectionName(p))
            return m_impl->layers[size_t(layer)].linears[size_t(p)]->merged();
    return makeError(ErrorCode::InvalidArgument,
                     "mergedWeight: unknown projection '" + std::string(proj) + "'");
}

template class TrainableModel<float>;
template class TrainableModel<double>;

} // namespace lowbit::train
