#include "runtime/cuda_model.h"

#include "quant/quantized_tensor.h"

#include <algorithm>
#include <cmath>

namespace lowbit {

struct CudaModel::Buffers {
    float *x, *normed, *q, *k, *v, *attn, *gate, *up, *cosSin, *logits, *keys, *values;
};

CudaModel::~CudaModel() = default; // the backend frees every buffer

namespace {

double weightBits(const Checkpoint &checkpoint, const CudaModelOptions &options) {
    const DType type =
        checkpoint.weights.layers.empty() ? DType::F32 : checkpoint.weights.layers[0].wq.dtype;
    if (options.backend.precision == GemmPrecision::Fp32 || type == DType::F32)
        return 32;
    if (!options.quantized || options.quantized->empty())
        return 16;
    double bits = 0; // the widest packed weight: an upper bound for every linear layer
    for (const auto &[name, q] : *options.quantized)
        bits = std::max(bits, q.bitsPerWeight());
    return bits;
}

} // namespace

Result<std::unique_ptr<CudaModel>> CudaModel::create(std::shared_ptr<const Checkpoint> checkpoint,
                                                     const CudaModelOptions &options) {
    if (!checkpoint)
        return makeError(ErrorCode::InvalidArgument, "CudaModel::create: no checkpoint");
    const std::string source = checkpoint->path.string();
    LOWBIT_CHECK(checkpoint->config.validate(source));
    LOWBIT_CHECK(checkpoint->weights.validate(checkpoint->config, source));
    if (options.slotCount < 1 || options.capacityTokens < 1 || options.maxBatchTokens < 1)
        return makeError(ErrorCode::InvalidArgument,
                         "CudaModel::create: slots, capacity and batch must be positive");
    std::unique_ptr<CudaModel> m(new CudaModel());
    m->m_checkpoint = std::move(checkpoint);
    m->m_options = options;
    LOWBIT_TRY(m->m_backend, makeCudaBackend(options.backend));
    const ModelConfig &c = m->config();
    m->m_logitRows = std::min<int64_t>(options.maxBatchTokens, 256);
    m->m_estimate =
        estimateDeviceMemory(c, weightBits(*m->m_checkpoint, options), options.slotCount,
                             options.capacityTokens, options.maxBatchTokens, m->m_logitRows);
    LOWBIT_TRY(uint64_t freeBytes, m->m_backend->freeBytes());
    LOWBIT_CHECK(checkFits(m->m_estimate, freeBytes,
                           "cuda:" + std::to_string(options.backend.device) + " (" +
                               m->m_backend->deviceInfo().name + ")"));

    const int64_t n = options.maxBatchTokens, qDim = c.numHeads * c.headDim,
                  kvDim = c.numKvHeads * c.headDim;
    const size_t cache = size_t(c.numLayers) * size_t(options.slotCount) *
                         size_t(options.capacityTokens) * size_t(kvDim);
    CudaBackend &be = *m->m_backend;
    auto buffers = std::make_unique<Buffers>();
    LOWBIT_TRY(buffers->x, be.allocate(size_t(n * c.hiddenSize), "hidden states"));
    LOWBIT_TRY(buffers->normed,
               be.allocate(size_t(n * std::max(c.hiddenSize, qDim)), "normed states"));
    LOWBIT_TRY(buffers->q, be.allocate(size_t(n * qDim), "queries"));
    LOWBIT_TRY(buffers->k, be.allocate(size_t(n * kvDim), "keys"));
    LOWBIT_TRY(buffers->v, be.allocate(size_t(n * kvDim), "values"));
    LOWBIT_TRY(buffers->attn, be.allocate(size_t(n * qDim), "attention output"));
    LOWBIT_TRY(buffers->gate, be.allocate(size_t(n * c.intermediateSize), "MLP gate"));
    LOWBIT_TRY(buffers->up, be.allocate(size_t(n * c.intermediateSize), "MLP up"));
    LOWBIT_TRY(buffers->cosSin, be.allocate(size_t(n * c.headDim), "RoPE table"));
    LOWBIT_TRY(buffers->logits, be.allocate(size_t(m->m_logitRows * c.vocabSize), "logits"));
    LOWBIT_TRY(buffers->keys, be.allocate(cache, "KV cache keys"));
    LOWBIT_TRY(buffers->values, be.allocate(cache, "KV cache values"));
    m->m_buffers = std::move(buffers);
    // Every weight now, so that running out of memory is an error of create(), not of a forward.
    const ModelWeights &w = m->m_checkpoint->weights;
    for (const Tensor *t : {&w.tokenEmbedding, &w.finalNorm, &w.output})
        LOWBIT_CHECK(be.prepareWeight(*t));
    for (const LayerWeights &lw : w.layers)
        for (const Tensor *t : {&lw.attnNorm, &lw.ffnNorm, &lw.wq, &lw.wk, &lw.wv, &lw.wo,
                                &lw.wGate, &lw.wUp, &lw.wDown})
            if (!options.quantized || !options.quantized->count(t->name))
                LOWBIT_CHECK(be.prepareWeight(*t));
    m->m_invFreq = c.ropeInverseFrequencies();
    m->m_lengths.assign(size_t(options.slotCount), 0);
    LOWBIT_CHECK(be.synchronize());
    return m;
}

void CudaModel::linear(const Tensor &weight, const float *x, int64_t rows, float *y) {
    if (m_options.quantized)
        if (auto it = m_options.quantized->find(weight.name); it != m_options.quantized->end()) {
            // Its error is kept by the backend and returned at the next synchronize().
            (void)m_backend->quantizedMatmul(x, rows, it->second, y);
            return;
        }
    m_backend->matmul(x, rows, weight, y);
}

Status CudaModel::layer(int64_t index, std::span<const SequenceInput> inputs,
                        const std::vector<int64_t> &firstRow, int64_t n) {
    const ModelConfig &c = config();
    const LayerWeights &lw = m_checkpoint->weights.layers[size_t(index)];
    const Buffers &b = *m_buffers;
    CudaBackend &be = *m_backend;
    const int64_t hidden = c.hiddenSize, hd = c.headDim, qDim = c.numHeads * hd,
                  kvDim = c.numKvHeads * hd;
    const float eps = float(c.rmsNormEps);
    be.rmsnorm(b.x, n, hidden, lw.attnNorm, eps, b.normed);
    linear(lw.wq, b.normed, n, b.q);
    linear(lw.wk, b.normed, n, b.k);
    linear(lw.wv, b.normed, n, b.v);
    be.rope(b.q, n, qDim, c.numHeads, hd, b.cosSin);
    be.rope(b.k, n, kvDim, c.numKvHeads, hd, b.cosSin);
    std::vector<AttentionSequence> sequences(inputs.size());
    const size_t slotFloats = size_t(m_options.capacityTokens) * size_t(kvDim);
    for (size_t i = 0; i < inputs.size(); ++i) {
        const SequenceInput &in = inputs[i];
        const int64_t len = int64_t(in.tokens.size()), start = m_lengths[size_t(in.slot)];
        const size_t slotOffset =
            (size_t(index) * size_t(m_options.slotCount) + size_t(in.slot)) * slotFloats;
        float *keys = b.keys + slotOffset, *values = b.values + slotOffset;
        LOWBIT_CHECK(be.copy(keys + start * kvDim, b.k + firstRow[i] * kvDim, size_t(len * kvDim)));
        LOWBIT_CHECK(
            be.copy(values + start * kvDim, b.v + firstRow[i] * kvDim, size_t(len * kvDim)));
        sequences[i] = {b.q + firstRow[i] * qDim,    keys, values,
                        b.attn + firstRow[i] * qDim, len,  start};
    }
    be.attention(sequences,
                 {c.numHeads, c.numKvHeads, hd, qDim, kvDim, float(1.0 / std::sqrt(double(hd)))});
    linear(lw.wo, b.attn, n, b.normed);
    be.add(b.x, b.normed, n * hidden);
    be.rmsnorm(b.x, n, hidden, lw.ffnNorm, eps, b.normed);
    linear(lw.wGate, b.normed, n, b.gate);
    linear(lw.wUp, b.normed, n, b.up);
    be.swiglu(b.gate, b.up, n * c.intermediateSize, b.gate);
    linear(lw.wDown, b.gate, n, b.normed);
    be.add(b.x, b.normed, n * hidden);
    return {};
}

Status CudaModel::run(std::span<const SequenceInput> inputs, std::vector<int64_t> &firstRow) {
    const ModelConfig &c = config();
    std::vector<bool> used(size_t(m_options.slotCount), false);
    std::vector<int32_t> ids;
    std::vector<float> cosSin;
    const int64_t half = c.headDim / 2;
    for (const SequenceInput &in : inputs) {
        if (in.slot < 0 || in.slot >= m_options.slotCount || used[size_t(in.slot)])
            return makeError(ErrorCode::InvalidArgument,
                             "CudaModel: slot " + std::to_string(in.slot) +
                                 " out of range or used twice in one batch");
        used[size_t(in.slot)] = true;
        const int64_t start = m_lengths[size_t(in.slot)];
        if (start + int64_t(in.tokens.size()) > m_options.capacityTokens)
            return makeError(ErrorCode::InvalidArgument,
                             "CudaModel: slot " + std::to_string(in.slot) +
                                 " would exceed the cache capacity " +
                                 std::to_string(m_options.capacityTokens));
        firstRow.push_back(int64_t(ids.size()));
        for (size_t t = 0; t < in.tokens.size(); ++t) {
            if (in.tokens[t] < 0 || in.tokens[t] >= c.vocabSize)
                return makeError(ErrorCode::InvalidArgument,
                                 "CudaModel: token id " + std::to_string(in.tokens[t]) +
                                     " out of range (vocab " + std::to_string(c.vocabSize) + ")");
            ids.push_back(in.tokens[t]);
            const size_t row = cosSin.size();
            cosSin.resize(row + size_t(c.headDim));
            for (int64_t j = 0; j < half; ++j) { // float64 angles, as model.cpp computes them
                const double angle = double(start + int64_t(t)) * m_invFreq[size_t(j)];
                cosSin[row + size_t(j)] = float(std::cos(angle));
                cosSin[row + size_t(half + j)] = float(std::sin(angle));
            }
        }
    }
    const int64_t n = int64_t(ids.size());
    if (n > m_options.maxBatchTokens)
        return makeError(ErrorCode::InvalidArgument, "CudaModel: " + std::to_string(n) +
                                                         " tokens in one batch, maximum " +
                                                         std::to_string(m_options.maxBatchTokens));
    if (n == 0)
        return {};
    LOWBIT_CHECK(m_backend->upload(m_buffers->cosSin, cosSin.data(), cosSin.size()));
    m_backend->embed(m_checkpoint->weights.tokenEmbedding, ids, m_buffers->x);
    for (int64_t l = 0; l < c.numLayers; ++l)
        LOWBIT_CHECK(layer(l, inputs, firstRow, n));
    LOWBIT_CHECK(m_backend->synchronize());
    for (const SequenceInput &in : inputs)
        m_lengths[size_t(in.slot)] += int64_t(in.tokens.size());
    return {};
}

void CudaModel::head(int64_t from, int64_t rows) {
    const ModelConfig &c = config();
    float *normed = m_buffers->normed;
    m_backend->rmsnorm(m_buffers->x + from * c.hiddenSize, rows, c.hiddenSize,
                       m_checkpoint->weights.finalNorm, float(c.rmsNormEps), normed);
    m_backend->matmul(normed, rows, m_checkpoint->weights.output, m_buffers->logits);
}

Result<Logits> CudaModel::forward(std::span<const SequenceInput> inputs) {
    std::vector<int64_t> firstRow;
    LOWBIT_CHECK(run(inputs, firstRow));
    const int64_t vocab = config().vocabSize;
    Logits logits;
    logits.vocab = vocab;
    for (size_t i = 0; i < inputs.size(); ++i) {
        const int64_t len = int64_t(inputs[i].tokens.size());
        if (len == 0 || inputs[i].logits == LogitsWanted::None)
            continue;
        int64_t from = inputs[i].logits == LogitsWanted::Last
                           ? len - 1
                           : std::clamp<int64_t>(inputs[i].logitsFrom, 0, len);
        // Wanted rows of one input are contiguous: the head runs on them in place, a chunk at a
        // time.
        while (from < len) {
            const int64_t rows = std::min(m_logitRows, len - from);
            head(firstRow[i] + from, rows);
            logits.values.resize(size_t((logits.rows + rows) * vocab));
            LOWBIT_CHECK(m_backend->download(logits.values.data() + logits.rows * vocab,
                                             m_buffers->logits, size_t(rows * vocab)));
            logits.rows += rows;
            from += rows;
        }
    }
    return logits;
}

Result<std::vector<double>> CudaModel::logProbs(int slot, std::span<const int32_t> tokens) {
    SequenceInput in{slot, tokens, LogitsWanted::None};
    std::vector<int64_t> firstRow;
    LOWBIT_CHECK(run({&in, 1}, firstRow));
    const int64_t predicted = std::max<int64_t>(0, int64_t(tokens.size()) - 1);
    std::vector<double> out(static_cast<size_t>(predicted));
    for (int64_t t = 0; t < predicted; t += m_logitRows) {
        const int64_t rows = std::min(m_logitRows, predicted - t);
        head(t, rows);
        LOWBIT_CHECK(m_backend->tokenLogProbs(m_buffers->logits, rows, config().vocabSize,
                                              tokens.subspan(size_t(t + 1), size_t(rows)),
                                              {out.data() + t, size_t(rows)}));
    }
    return out;
}

Result<CudaModel::TopK> CudaModel::next(int slot, std::span<const int32_t> tokens, int k) {
    if (tokens.empty())
        return makeError(ErrorCode::InvalidArgument, "CudaModel::next: no tokens");
    SequenceInput in{slot, tokens, LogitsWanted::None};
    std::vector<int64_t> firstRow;
    LOWBIT_CHECK(run({&in, 1}, firstRow));
    head(int64_t(tokens.size()) - 1, 1);
    TopK top{std::vector<int32_t>(size_t(std::max(k, 0))),
             std::vector<float>(size_t(std::max(k, 0)))};
    LOWBIT_CHECK(m_backend->topK(m_buffers->logits, 1, config().vocabSize, k, top.ids, top.logits));
    return top;
}

} // namespace lowbit
