#include "runtime/model.h"

#include "backend/backend.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace lowbit {

struct BatchLayout;

struct Model::Impl {
    std::unique_ptr<Backend> backend;
    std::vector<double> invFreq;
    // Activations of one forward, reused across calls.
    std::vector<float> x, normed, q, k, v, attn, gate, up, selected;

    // One decoder layer over the batch, in place on x (rows of hiddenSize).
    void layer(const ModelConfig &c, const LayerWeights &lw, int64_t layerIndex, KvCache &cache,
               int64_t cacheLayer, std::span<const SequenceInput> inputs, const BatchLayout &batch,
               float *x, LinearHook *hook);
};

Model::~Model() = default;

Result<std::unique_ptr<Model>> Model::create(std::shared_ptr<const Checkpoint> checkpoint,
                                             const RuntimeOptions &options) {
    if (!checkpoint)
        return makeError(ErrorCode::InvalidArgument, "Model::create: no checkpoint");
    const std::string source = checkpoint->path.string();
    LOWBIT_CHECK(checkpoint->config.validate(source));
    LOWBIT_CHECK(checkpoint->weights.validate(checkpoint->config, source));
    std::unique_ptr<Model> model(new Model());
    model->m_checkpoint = std::move(checkpoint);
    model->m_impl = std::make_unique<Impl>();
    model->m_impl->backend = makeCpuBackend(options.threads);
    model->m_impl->invFreq = model->config().ropeInverseFrequencies();
    return model;
}

int Model::threads() const { return m_impl->backend->threads(); }

std::string Model::deviceDescription() const {
    return "cpu (" + std::to_string(threads()) + " threads)";
}

KvCache Model::makeCache(int slots, int64_t capacityTokens) const {
    const ModelConfig &c = config();
    return KvCache(c.numLayers, slots, capacityTokens, c.numKvHeads * c.headDim);
}

Result<std::unique_ptr<SequenceCache>> Model::allocateCache(int slots, int64_t capacityTokens) {
    if (slots < 0 || capacityTokens < 0)
        return makeError(ErrorCode::InvalidArgument,
                         "cpu cache: " + std::to_string(slots) + " slots of " +
                             std::to_string(capacityTokens) + " tokens");
    return std::unique_ptr<SequenceCache>(std::make_unique<KvCache>(makeCache(slots, capacityTokens)));
}

namespace {

Status checkInputs(const ModelConfig &c, const KvCache &cache, std::span<const SequenceInput> inputs) {
    std::vector<bool> used(size_t(cache.slotCount()), false);
    for (const SequenceInput &in : inputs) {
        if (in.slot < 0 || in.slot >= cache.slotCount())
            return makeError(ErrorCode::InvalidArgument,
                             "forward: slot " + std::to_string(in.slot) + " out of range (cache has " +
                                 std::to_string(cache.slotCount()) + ")");
        if (used[size_t(in.slot)])
            return makeError(ErrorCode::InvalidArgument,
                             "forward: slot " + std::to_string(in.slot) + " used twice in one batch");
        used[size_t(in.slot)] = true;
        if (cache.length(in.slot) + int64_t(in.tokens.size()) > cache.capacity())
            return makeError(ErrorCode::InvalidArgument,
                             "forward: slot " + std::to_string(in.slot) + " would hold " +
                                 std::to_string(cache.length(in.slot) + int64_t(in.tokens.size())) +
                                 " tokens, cache capacity is " + std::to_string(cache.capacity()));
        for (int32_t id : in.tokens)
            if (id < 0 || id >= c.vocabSize)
                return makeError(ErrorCode::InvalidArgument,
                                 "forward: token id " + std::to_string(id) + " out of range (vocab " +
                                     std::to_string(c.vocabSize) + ")");
    }
    return {};
}

void resize(std::vector<float> &buffer, int64_t n) {
    if (buffer.size() < size_t(n))
        buffer.resize(size_t(n));
}

} // namespace

// The flattened batch: row r is token ids[r] at position positions[r]; input i starts at
// firstRow[i]; cosSin holds each row's RoPE cosines and sines (headDim floats a row).
struct BatchLayout {
    std::vector<int32_t> ids, positions;
    std::vector<int64_t> firstRow;
    std::vector<float> cosSin;
    int64_t rows() const { return int64_t(ids.size()); }
};

namespace {

BatchLayout layoutBatch(const KvCache &cache, std::span<const SequenceInput> inputs,
                        const std::vector<double> &invFreq, int64_t headDim) {
    BatchLayout b;
    for (const SequenceInput &in : inputs) {
        b.firstRow.push_back(b.rows());
        for (size_t i = 0; i < in.tokens.size(); ++i) {
            b.ids.push_back(in.tokens[i]);
            b.positions.push_back(int32_t(cache.length(in.slot) + int64_t(i)));
        }
    }
    const int64_t half = headDim / 2;
    b.cosSin.resize(size_t(b.rows() * headDim));
    for (int64_t r = 0; r < b.rows(); ++r)
        for (int64_t j = 0; j < half; ++j) {
            const double angle = double(b.positions[size_t(r)]) * invFreq[size_t(j)];
            b.cosSin[size_t(r * headDim + j)] = float(std::cos(angle));
            b.cosSin[size_t(r * headDim + half + j)] = float(std::sin(angle));
        }
    return b;
}

} // namespace

void Model::Impl::layer(const ModelConfig &c, const LayerWeights &lw, int64_t layerIndex,
                        KvCache &cache, int64_t cacheLayer, std::span<const SequenceInput> inputs,
                        const BatchLayout &batch, float *x, LinearHook *hook) {
    Backend &be = *backend;
    const int64_t n = batch.rows(), hidden = c.hiddenSize, hd = c.headDim;
    const int64_t qDim = c.numHeads * hd, kvDim = c.numKvHeads * hd, ffn = c.intermediateSize;
    resize(normed, n * hidden);
    resize(q, n * qDim);
    resize(k, n * kvDim);
    resize(v, n * kvDim);
    resize(attn, n * qDim);
    resize(gate, n * ffn);
    resize(up, n * ffn);
    const float eps = float(c.rmsNormEps);
    auto observe = [&](LinearInput kind, float *data, int64_t cols) {
        if (hook)
            hook->onLinearInput(layerIndex, kind, data, n, cols);
    };

    be.rmsnorm(x, n, hidden, lw.attnNorm, eps, normed.data());
    observe(LinearInput::Attention, normed.data(), hidden);
    be.matmul(normed.data(), n, lw.wq, q.data());
    be.matmul(normed.data(), n, lw.wk, k.data());
    be.matmul(normed.data(), n, lw.wv, v.data());
    be.rope(q.data(), n, qDim, c.numHeads, hd, batch.cosSin.data());
    be.rope(k.data(), n, kvDim, c.numKvHeads, hd, batch.cosSin.data());
    std::vector<AttentionSequence> sequences(inputs.size());
    for (size_t i = 0; i < inputs.size(); ++i) {
        const SequenceInput &in = inputs[i];
        const int64_t len = int64_t(in.tokens.size()), start = cache.length(in.slot);
        float *keys = cache.keys(cacheLayer, in.slot), *values = cache.values(cacheLayer, in.slot);
        std::memcpy(keys + start * kvDim, k.data() + batch.firstRow[i] * kvDim, size_t(len * kvDim) * 4);
        std::memcpy(values + start * kvDim, v.data() + batch.firstRow[i] * kvDim, size_t(len * kvDim) * 4);
        sequences[i] = {q.data() + batch.firstRow[i] * qDim, keys, values,
                        attn.data() + batch.firstRow[i] * qDim, len, start};
    }
    be.attention(sequences, {c.numHeads, c.numKvHeads, hd, qDim, kvDim, float(1.0 / std::sqrt(double(hd)))});
    observe(LinearInput::AttentionOutput, attn.data(), qDim);
    be.matmul(attn.data(), n, lw.wo, normed.data());
    be.add(x, normed.data(), n * hidden);

    be.rmsnorm(x, n, hidden, lw.ffnNorm, eps, normed.data());
    observe(LinearInput::Mlp, normed.data(), hidden);
    be.matmul(normed.data(), n, lw.wGate, gate.data());
    be.matmul(normed.data(), n, lw.wUp, up.data());
    be.swiglu(gate.data(), up.data(), n * ffn, gate.data());
    observe(LinearInput::MlpDown, gate.data(), ffn);
    be.matmul(gate.data(), n, lw.wDown, normed.data());
    be.add(x, normed.data(), n * hidden);
}

Status Model::embed(std::span<const SequenceInput> inputs, float *hidden) {
    std::vector<int32_t> ids;
    for (const SequenceInput &in : inputs)
        for (int32_t id : in.tokens) {
            if (id < 0 || id >= config().vocabSize)
                return makeError(ErrorCode::InvalidArgument,
                                 "embed: token id " + std::to_string(id) + " out of range (vocab " +
                                     std::to_string(config().vocabSize) + ")");
            ids.push_back(id);
        }
    m_impl->backend->embed(m_checkpoint->weights.tokenEmbedding, ids, hidden);
    return {};
}

Status Model::runLayer(int64_t layer, KvCache &cache, int64_t cacheLayer,
                       std::span<const SequenceInput> inputs, float *hidden,
                       const LayerWeights *weights, LinearHook *hook) {
    const ModelConfig &c = config();
    if (layer < 0 || layer >= c.numLayers)
        return makeError(ErrorCode::InvalidArgument, "runLayer: layer " + std::to_string(layer) + " out of range");
    if (cacheLayer < 0 || cache.kvDim() != c.numKvHeads * c.headDim)
        return makeError(ErrorCode::InvalidArgument, "runLayer: cache does not fit the model");
    LOWBIT_CHECK(checkInputs(c, cache, inputs));
    const LayerWeights &lw = weights ? *weights : m_checkpoint->weights.layers[size_t(layer)];
    const BatchLayout batch = layoutBatch(cache, inputs, m_impl->invFreq, c.headDim);
    m_impl->layer(c, lw, layer, cache, cacheLayer, inputs, batch, hidden, hook);
    return {};
}

void Model::advance(KvCache &cache, std::span<const SequenceInput> inputs) {
    for (const SequenceInput &in : inputs)
        cache.setLength(in.slot, cache.length(in.slot) + int64_t(in.tokens.size()));
}

Result<Logits> Model::forward(SequenceCache &cache, std::span<const SequenceInput> inputs) {
    auto *own = dynamic_cast<KvCache *>(&cache);
    if (!own)
        return makeError(ErrorCode::InvalidArgument,
                         "forward: the cache was not allocated by this (cpu) model");
    return forward(*own, inputs);
}

Result<Logits> Model::forward(KvCache &cache, std::span<const SequenceInput> inputs) {
    const ModelConfig &c = config();
    if (cache.layers() != c.numLayers || cache.kvDim() != c.numKvHeads * c.headDim)
        return makeError(ErrorCode::InvalidArgument,
                         "forward: the cache (" + std::to_string(cache.layers()) + " layers, K/V width " +
                             std::to_string(cache.kvDim()) + ") does not fit the model (" +
                             std::to_string(c.numLayers) + " layers, K/V width " +
                             std::to_string(c.numKvHeads * c.headDim) + ")");
    LOWBIT_CHECK(checkInputs(c, cache, inputs));
    const ModelWeights &w = m_checkpoint->weights;
    Impl &s = *m_impl;
    const BatchLayout batch = layoutBatch(cache, inputs, s.invFreq, c.headDim);
    const int64_t n = batch.rows(), hidden = c.hiddenSize;
    resize(s.x, n * hidden);
    s.backend->embed(w.tokenEmbedding, batch.ids, s.x.data());
    for (int64_t layer = 0; layer < c.numLayers; ++layer)
        s.layer(c, w.layers[size_t(layer)], layer, cache, layer, inputs, batch, s.x.data(), m_hook);
    advance(cache, inputs);

    // Only the rows whose logits are wanted go through the final norm and the head.
    std::vector<int64_t> rows;
    for (size_t i = 0; i < inputs.size(); ++i) {
        const int64_t len = int64_t(inputs[i].tokens.size());
        if (len == 0 || inputs[i].logits == LogitsWanted::None)
            continue;
        const int64_t from = inputs[i].logits == LogitsWanted::Last
                                 ? len - 1
                                 : std::clamp<int64_t>(inputs[i].logitsFrom, 0, len);
        for (int64_t t = from; t < len; ++t)
            rows.push_back(batch.firstRow[i] + t);
    }
    resize(s.selected, int64_t(rows.size()) * hidden);
    for (size_t r = 0; r < rows.size(); ++r)
        std::memcpy(s.selected.data() + r * size_t(hidden), s.x.data() + rows[r] * hidden, size_t(hidden) * 4);
    return head(s.selected.data(), int64_t(rows.size()));
}

Logits Model::head(const float *hidden, int64_t rows) {
    const ModelConfig &c = config();
    Impl &s = *m_impl;
    Logits logits;
    logits.rows = rows;
    logits.vocab = c.vocabSize;
    if (rows == 0)
        return logits;
    std::vector<float> normed(size_t(rows * c.hiddenSize));
    s.backend->rmsnorm(hidden, rows, c.hiddenSize, m_checkpoint->weights.finalNorm, float(c.rmsNormEps), normed.data());
    logits.values.resize(size_t(rows * c.vocabSize));
    s.backend->matmul(normed.data(), rows, m_checkpoint->weights.output, logits.values.data());
    return logits;
}

} // namespace lowbit
