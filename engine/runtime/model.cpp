#include "runtime/model.h"

#include "backend/backend.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace lowbit {

struct Model::Impl {
    std::unique_ptr<Backend> backend;
    std::vector<double> invFreq;
    // Activations of one forward, reused across calls.
    std::vector<float> x, normed, q, k, v, attn, gate, up, selected, cosSin;
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

KvCache Model::makeCache(int slots, int64_t capacityTokens) const {
    const ModelConfig &c = config();
    return KvCache(c.numLayers, slots, capacityTokens, c.numKvHeads * c.headDim);
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

Result<Logits> Model::forward(KvCache &cache, std::span<const SequenceInput> inputs) {
    const ModelConfig &c = config();
    LOWBIT_CHECK(checkInputs(c, cache, inputs));
    const ModelWeights &w = m_checkpoint->weights;
    Backend &be = *m_impl->backend;
    Impl &s = *m_impl;

    // Flatten the batch: row r is token ids[r] of input rowInput[r] at position positions[r].
    std::vector<int32_t> ids, positions;
    std::vector<int64_t> firstRow;
    for (const SequenceInput &in : inputs) {
        firstRow.push_back(int64_t(ids.size()));
        for (size_t i = 0; i < in.tokens.size(); ++i) {
            ids.push_back(in.tokens[i]);
            positions.push_back(int32_t(cache.length(in.slot) + int64_t(i)));
        }
    }
    const int64_t n = int64_t(ids.size());
    const int64_t hidden = c.hiddenSize, hd = c.headDim, half = hd / 2;
    const int64_t qDim = c.numHeads * hd, kvDim = c.numKvHeads * hd, ffn = c.intermediateSize;
    resize(s.x, n * hidden);
    resize(s.normed, n * hidden);
    resize(s.q, n * qDim);
    resize(s.k, n * kvDim);
    resize(s.v, n * kvDim);
    resize(s.attn, n * qDim);
    resize(s.gate, n * ffn);
    resize(s.up, n * ffn);
    resize(s.cosSin, n * hd);
    for (int64_t r = 0; r < n; ++r)
        for (int64_t j = 0; j < half; ++j) {
            const double angle = double(positions[size_t(r)]) * s.invFreq[size_t(j)];
            s.cosSin[size_t(r * hd + j)] = float(std::cos(angle));
            s.cosSin[size_t(r * hd + half + j)] = float(std::sin(angle));
        }

    be.embed(w.tokenEmbedding, ids, s.x.data());
    const float eps = float(c.rmsNormEps);
    const AttentionShape shape{c.numHeads, c.numKvHeads, hd, qDim, kvDim, float(1.0 / std::sqrt(double(hd)))};
    std::vector<AttentionSequence> sequences(inputs.size());
    for (int64_t layer = 0; layer < c.numLayers; ++layer) {
        const LayerWeights &lw = w.layers[size_t(layer)];
        be.rmsnorm(s.x.data(), n, hidden, lw.attnNorm, eps, s.normed.data());
        be.matmul(s.normed.data(), n, lw.wq, s.q.data());
        be.matmul(s.normed.data(), n, lw.wk, s.k.data());
        be.matmul(s.normed.data(), n, lw.wv, s.v.data());
        be.rope(s.q.data(), n, qDim, c.numHeads, hd, s.cosSin.data());
        be.rope(s.k.data(), n, kvDim, c.numKvHeads, hd, s.cosSin.data());
        for (size_t i = 0; i < inputs.size(); ++i) {
            const SequenceInput &in = inputs[i];
            const int64_t len = int64_t(in.tokens.size()), start = cache.length(in.slot);
            float *keys = cache.keys(layer, in.slot), *values = cache.values(layer, in.slot);
            std::memcpy(keys + start * kvDim, s.k.data() + firstRow[i] * kvDim, size_t(len * kvDim) * 4);
            std::memcpy(values + start * kvDim, s.v.data() + firstRow[i] * kvDim, size_t(len * kvDim) * 4);
            sequences[i] = {s.q.data() + firstRow[i] * qDim, keys, values,
                            s.attn.data() + firstRow[i] * qDim, len, start};
        }
        be.attention(sequences, shape);
        be.matmul(s.attn.data(), n, lw.wo, s.normed.data());
        be.add(s.x.data(), s.normed.data(), n * hidden);
        be.rmsnorm(s.x.data(), n, hidden, lw.ffnNorm, eps, s.normed.data());
        be.matmul(s.normed.data(), n, lw.wGate, s.gate.data());
        be.matmul(s.normed.data(), n, lw.wUp, s.up.data());
        be.swiglu(s.gate.data(), s.up.data(), n * ffn, s.gate.data());
        be.matmul(s.gate.data(), n, lw.wDown, s.normed.data());
        be.add(s.x.data(), s.normed.data(), n * hidden);
    }
    for (const SequenceInput &in : inputs)
        cache.setLength(in.slot, cache.length(in.slot) + int64_t(in.tokens.size()));

    // Only the rows whose logits are wanted go through the final norm and the head.
    std::vector<int64_t> rows;
    for (size_t i = 0; i < inputs.size(); ++i) {
        const int64_t len = int64_t(inputs[i].tokens.size());
        if (len == 0 || inputs[i].logits == LogitsWanted::None)
            continue;
        const int64_t from = inputs[i].logits == LogitsWanted::Last ? len - 1
                                                                    : std::clamp<int64_t>(inputs[i].logitsFrom, 0, len);
        for (int64_t t = from; t < len; ++t)
            rows.push_back(firstRow[i] + t);
    }
    Logits logits;
    logits.rows = int64_t(rows.size());
    logits.vocab = c.vocabSize;
    if (rows.empty())
        return logits;
    resize(s.selected, logits.rows * hidden);
    for (size_t r = 0; r < rows.size(); ++r)
        std::memcpy(s.selected.data() + r * size_t(hidden), s.x.data() + rows[r] * hidden, size_t(hidden) * 4);
    be.rmsnorm(s.selected.data(), logits.rows, hidden, w.finalNorm, eps, s.selected.data());
    logits.values.resize(size_t(logits.rows * logits.vocab));
    be.matmul(s.selected.data(), logits.rows, w.output, logits.values.data());
    return logits;
}

} // namespace lowbit
