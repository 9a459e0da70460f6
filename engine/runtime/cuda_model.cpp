#include "runtime/cuda_model.h"

#include "quant/quantized_tensor.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <thread>

namespace lowbit {

struct CudaModel::Buffers {
    float *x, *normed, *q, *k, *v, *attn, *gate, *up, *cosSin, *logits;
};

CudaModel::~CudaModel() {
    if (m_buffers) // the caches may keep the backend alive: give the activations back now
        for (float *p : {m_buffers->x, m_buffers->normed, m_buffers->q, m_buffers->k, m_buffers->v,
                         m_buffers->attn, m_buffers->gate, m_buffers->up, m_buffers->cosSin,
                         m_buffers->logits})
            if (p)
                m_backend->release(p);
}

namespace {

double weightBits(const Checkpoint &checkpoint, const CudaModelOptions &options,
                  GemmPrecision precision) {
    const DType type =
        checkpoint.weights.layers.empty() ? DType::F32 : checkpoint.weights.layers[0].wq.dtype;
    if (precision == GemmPrecision::Fp32 || type == DType::F32)
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
    LOWBIT_TRY(std::unique_ptr<CudaBackend> backend, makeCudaBackend(options.backend));
    return create(std::move(checkpoint), options, std::shared_ptr<CudaBackend>(std::move(backend)));
}

Result<std::unique_ptr<CudaModel>> CudaModel::create(std::shared_ptr<const Checkpoint> checkpoint,
                                                     const CudaModelOptions &options,
                                                     std::shared_ptr<CudaBackend> backend) {
    if (!checkpoint || !backend)
        return makeError(ErrorCode::InvalidArgument, "CudaModel::create: no checkpoint or backend");
    const std::string source = checkpoint->path.string();
    LOWBIT_CHECK(checkpoint->config.validate(source));
    LOWBIT_CHECK(checkpoint->weights.validate(checkpoint->config, source));
    if (options.maxBatchTokens < 1 || options.threads < 0)
        return makeError(ErrorCode::InvalidArgument,
                         "CudaModel::create: the batch must be positive, threads >= 0");
    std::unique_ptr<CudaModel> m(new CudaModel());
    m->m_checkpoint = std::move(checkpoint);
    m->m_options = options;
    m->m_threads = options.threads > 0 ? options.threads
                                       : std::max(1, int(std::thread::hardware_concurrency()));
    m->m_backend = std::move(backend);
    const ModelConfig &c = m->config();
    m->m_logitRows = std::min<int64_t>(options.maxBatchTokens, 256);
    m->m_weightBits = weightBits(*m->m_checkpoint, options, m->m_backend->precision());
    // No cache yet: allocateCache() checks its own.
    m->m_estimate =
        estimateDeviceMemory(c, m->m_weightBits, 0, 0, options.maxBatchTokens, m->m_logitRows);
    LOWBIT_TRY(uint64_t freeBytes, m->m_backend->freeBytes());
    LOWBIT_CHECK(checkFits(m->m_estimate, freeBytes, m->deviceDescription()));

    const int64_t n = options.maxBatchTokens, qDim = c.numHeads * c.headDim,
                  kvDim = c.numKvHeads * c.headDim;
    CudaBackend &be = *m->m_backend;
    m->m_buffers = std::make_unique<Buffers>(Buffers{});
    Buffers &b = *m->m_buffers;
    LOWBIT_TRY(b.x, be.allocate(size_t(n * c.hiddenSize), "hidden states"));
    LOWBIT_TRY(b.normed, be.allocate(size_t(n * std::max(c.hiddenSize, qDim)), "normed states"));
    LOWBIT_TRY(b.q, be.allocate(size_t(n * qDim), "queries"));
    LOWBIT_TRY(b.k, be.allocate(size_t(n * kvDim), "keys"));
    LOWBIT_TRY(b.v, be.allocate(size_t(n * kvDim), "values"));
    LOWBIT_TRY(b.attn, be.allocate(size_t(n * qDim), "attention output"));
    LOWBIT_TRY(b.gate, be.allocate(size_t(n * c.intermediateSize), "MLP gate"));
    LOWBIT_TRY(b.up, be.allocate(size_t(n * c.intermediateSize), "MLP up"));
    LOWBIT_TRY(b.cosSin, be.allocate(size_t(n * c.headDim), "RoPE table"));
    LOWBIT_TRY(b.logits, be.allocate(size_t(m->m_logitRows * c.vocabSize), "logits"));
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
    LOWBIT_CHECK(be.synchronize());
    return m;
}

DeviceSpec CudaModel::device() const {
    return {DeviceSpec::Kind::Cuda, m_options.backend.device};
}

std::string CudaModel::deviceDescription() const {
    return device().toString() + " (" + m_backend->deviceInfo().name + ", " +
           (m_backend->precision() == GemmPrecision::Fp32 ? "float32" : "16-bit tensor-core") +
           " GEMMs)";
}

Result<std::unique_ptr<SequenceCache>> CudaModel::allocateCache(int slots, int64_t capacityTokens) {
    if (slots < 0 || capacityTokens < 0)
        return makeError(ErrorCode::InvalidArgument,
                         "cuda cache: " + std::to_string(slots) + " slots of " +
                             std::to_string(capacityTokens) + " tokens");
    const ModelConfig &c = config();
    // The weights are resident already; the scratch allowance (cuBLAS, attention partials, a
    // dequantized weight) may still be taken lazily by the first forward, so it stays reserved.
    MemoryEstimate need = estimateDeviceMemory(c, m_weightBits, slots, capacityTokens, 0, 0);
    need.weightBytes = 0;
    LOWBIT_TRY(uint64_t freeBytes, m_backend->freeBytes());
    LOWBIT_CHECK(checkFits(need, freeBytes, deviceDescription()));
    LOWBIT_TRY(auto cache, CudaKvCache::create(m_backend, c.numLayers, slots, capacityTokens,
                                               c.numKvHeads * c.headDim));
    return std::unique_ptr<SequenceCache>(std::move(cache));
}

Result<CudaKvCache *> CudaModel::ownCache(SequenceCache &cache) const {
    auto *own = dynamic_cast<CudaKvCache *>(&cache);
    if (!own || own->backend() != m_backend.get())
        return makeError(ErrorCode::InvalidArgument,
                         "forward: the cache was not allocated by this model (" +
                             deviceDescription() + ")");
    const ModelConfig &c = config();
    if (own->layers() != c.numLayers || own->kvDim() != c.numKvHeads * c.headDim)
        return makeError(ErrorCode::InvalidArgument, "forward: the cache does not fit the model");
    LOWBIT_CHECK(own->takeError());
    return own;
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

Status CudaModel::layer(int64_t index, CudaKvCache &cache, std::span<const SequenceInput> inputs,
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
    for (size_t i = 0; i < inputs.size(); ++i) {
        const SequenceInput &in = inputs[i];
        const int64_t len = int64_t(in.tokens.size()), start = cache.length(in.slot);
        float *keys = cache.keys(index, in.slot), *values = cache.values(index, in.slot);
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

// The checks of Model's checkInputs, before any device work, so that a refused batch leaves the
// cache as it was.
Status CudaModel::checkInputs(const CudaKvCache &cache,
                              std::span<const SequenceInput> inputs) const {
    const ModelConfig &c = config();
    std::vector<bool> used(size_t(cache.slotCount()), false);
    for (const SequenceInput &in : inputs) {
        if (in.slot < 0 || in.slot >= cache.slotCount())
            return makeError(ErrorCode::InvalidArgument,
                             "forward: slot " + std::to_string(in.slot) +
                                 " out of range (cache has " + std::to_string(cache.slotCount()) +
                                 ")");
        if (used[size_t(in.slot)])
            return makeError(ErrorCode::InvalidArgument, "forward: slot " +
                                                             std::to_string(in.slot) +
                                                             " used twice in one batch");
        used[size_t(in.slot)] = true;
        const int64_t end = cache.length(in.slot) + int64_t(in.tokens.size());
        if (end > cache.capacity())
            return makeError(ErrorCode::InvalidArgument,
                             "forward: slot " + std::to_string(in.slot) + " would hold " +
                                 std::to_string(end) + " tokens, cache capacity is " +
                                 std::to_string(cache.capacity()));
        for (int32_t id : in.tokens)
            if (id < 0 || id >= c.vocabSize)
                return makeError(ErrorCode::InvalidArgument,
                                 "forward: token id " + std::to_string(id) +
                                     " out of range (vocab " + std::to_string(c.vocabSize) + ")");
    }
    return {};
}

Status CudaModel::run(CudaKvCache &cache, std::span<const SequenceInput> inputs,
                      std::vector<int64_t> &firstRow) {
    const ModelConfig &c = config();
    std::vector<int32_t> ids;
    std::vector<float> cosSin;
    const int64_t half = c.headDim / 2;
    firstRow.clear();
    for (const SequenceInput &in : inputs) {
        const int64_t start = cache.length(in.slot);
        firstRow.push_back(int64_t(ids.size()));
        for (size_t t = 0; t < in.tokens.size(); ++t) {
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
                                                         " tokens in one pass, maximum " +
                                                         std::to_string(m_options.maxBatchTokens));
    if (n == 0)
        return {};
    LOWBIT_CHECK(m_backend->upload(m_buffers->cosSin, cosSin.data(), cosSin.size()));
    m_backend->embed(m_checkpoint->weights.tokenEmbedding, ids, m_buffers->x);
    for (int64_t l = 0; l < c.numLayers; ++l)
        if (Status status = layer(l, cache, inputs, firstRow, n); !status.ok()) {
            (void)m_backend->synchronize(); // drain, and forget a kept op error behind this one
            return status;
        }
    LOWBIT_CHECK(m_backend->synchronize());
    for (const SequenceInput &in : inputs)
        cache.setLength(in.slot, cache.length(in.slot) + int64_t(in.tokens.size()));
    return {};
}

void CudaModel::head(int64_t from, int64_t rows) {
    const ModelConfig &c = config();
    float *normed = m_buffers->normed;
    m_backend->rmsnorm(m_buffers->x + from * c.hiddenSize, rows, c.hiddenSize,
                       m_checkpoint->weights.finalNorm, float(c.rmsNormEps), normed);
    m_backend->matmul(normed, rows, m_checkpoint->weights.output, m_buffers->logits);
}

Status CudaModel::headChunks(std::span<const SequenceInput> inputs,
                             const std::vector<int64_t> &firstRow,
                             const std::function<Status(int64_t rows)> &use) {
    for (size_t i = 0; i < inputs.size(); ++i) {
        const int64_t len = int64_t(inputs[i].tokens.size());
        if (len == 0 || inputs[i].logits == LogitsWanted::None)
            continue;
        int64_t from = inputs[i].logits == LogitsWanted::Last
                           ? len - 1
                           : std::clamp<int64_t>(inputs[i].logitsFrom, 0, len);
        // Wanted rows of one input are contiguous: the head runs on them in place, a chunk at a
        // time (head() overwrites `normed`, free once the pass is over).
        while (from < len) {
            const int64_t rows = std::min(m_logitRows, len - from);
            head(firstRow[i] + from, rows);
            LOWBIT_CHECK(use(rows));
            from += rows;
        }
    }
    return {};
}

Status CudaModel::collectLogits(std::span<const SequenceInput> inputs,
                                const std::vector<int64_t> &firstRow, Logits &logits) {
    const int64_t vocab = config().vocabSize;
    return headChunks(inputs, firstRow, [&](int64_t rows) -> Status {
        logits.values.resize(size_t((logits.rows + rows) * vocab));
        LOWBIT_CHECK(m_backend->download(logits.values.data() + logits.rows * vocab,
                                         m_buffers->logits, size_t(rows * vocab)));
        logits.rows += rows;
        m_downloadedRows += rows;
        return {};
    });
}

Result<Logits> CudaModel::forward(SequenceCache &anyCache, std::span<const SequenceInput> inputs) {
    LOWBIT_TRY(CudaKvCache * cache, ownCache(anyCache));
    LOWBIT_CHECK(checkInputs(*cache, inputs));
    Logits logits;
    logits.vocab = config().vocabSize;
    std::vector<int64_t> firstRow;
    for (const auto &pass : splitIntoPasses(inputs, m_options.maxBatchTokens)) {
        LOWBIT_CHECK(run(*cache, pass, firstRow));
        LOWBIT_CHECK(collectLogits(pass, firstRow, logits));
    }
    return logits;
}

Status CudaModel::scoreChunk(std::span<const TokenTarget> targets, std::span<const size_t> sorted,
                             int64_t base, std::vector<double> &logProbs) {
    const int64_t vocab = config().vocabSize;
    // A row may carry several targets: "layer" j holds each row's j-th one, and each layer is
    // one tokenLogProbs call over the rows it spans (a row without a j-th target gets token 0,
    // whose result is dropped). Perplexity's and the members' rows are one layer.
    std::vector<int> rank(sorted.size());
    int layers = 0;
    for (size_t e = 0; e < sorted.size(); ++e) {
        rank[e] = e > 0 && targets[sorted[e]].row == targets[sorted[e - 1]].row ? rank[e - 1] + 1 : 0;
        layers = std::max(layers, rank[e] + 1);
    }
    std::vector<int32_t> tokens;
    std::vector<double> out;
    for (int j = 0; j < layers; ++j) {
        int64_t lo = -1, hi = -1;
        for (size_t e = 0; e < sorted.size(); ++e)
            if (rank[e] == j) {
                lo = lo < 0 ? targets[sorted[e]].row : lo;
                hi = targets[sorted[e]].row;
            }
        tokens.assign(size_t(hi - lo + 1), 0);
        out.assign(tokens.size(), 0.0);
        for (size_t e = 0; e < sorted.size(); ++e)
            if (rank[e] == j)
                tokens[size_t(targets[sorted[e]].row - lo)] = targets[sorted[e]].token;
        LOWBIT_CHECK(m_backend->tokenLogProbs(m_buffers->logits + (lo - base) * vocab,
                                              hi - lo + 1, vocab, tokens, out));
        for (size_t e = 0; e < sorted.size(); ++e)
            if (rank[e] == j)
                logProbs[sorted[e]] = out[size_t(targets[sorted[e]].row - lo)];
    }
    return {};
}

Result<TokenScores> CudaModel::score(SequenceCache &anyCache, std::span<const SequenceInput> inputs,
                                     const ScoreRequest &request) {
    LOWBIT_TRY(CudaKvCache * cache, ownCache(anyCache));
    LOWBIT_CHECK(checkInputs(*cache, inputs));
    const int64_t vocab = config().vocabSize, k = request.topK;
    LOWBIT_CHECK(checkScoreRequest(inputs, request, vocab));
    TokenScores out;
    out.rows = wantedRows(inputs);
    out.topK = request.topK;
    out.logProbs.resize(request.targets.size());
    out.topIds.resize(size_t(out.rows * k));
    out.topLogits.resize(out.topIds.size());
    const auto &targets = request.targets;
    std::vector<size_t> sorted(targets.size());
    std::iota(sorted.begin(), sorted.end(), size_t(0));
    std::stable_sort(sorted.begin(), sorted.end(),
                     [&](size_t a, size_t b) { return targets[a].row < targets[b].row; });
    int64_t base = 0; // wanted rows scored so far, over all passes
    size_t next = 0;  // first entry of `sorted` not scored yet
    std::vector<int64_t> firstRow;
    for (const auto &pass : splitIntoPasses(inputs, m_options.maxBatchTokens)) {
        LOWBIT_CHECK(run(*cache, pass, firstRow));
        LOWBIT_CHECK(headChunks(pass, firstRow, [&](int64_t rows) -> Status {
            size_t end = next;
            while (end < sorted.size() && targets[sorted[end]].row < base + rows)
                ++end;
            if (end > next)
                LOWBIT_CHECK(
                    scoreChunk(targets, {sorted.data() + next, end - next}, base, out.logProbs));
            next = end;
            if (k > 0)
                LOWBIT_CHECK(m_backend->topK(m_buffers->logits, rows, vocab, int(k),
                                             {out.topIds.data() + base * k, size_t(rows * k)},
                                             {out.topLogits.data() + base * k, size_t(rows * k)}));
            base += rows;
            return {};
        }));
    }
    LOWBIT_CHECK(m_backend->synchronize()); // a head chunk nothing was read from may have failed
    return out;
}

Result<std::vector<double>> CudaModel::logProbs(SequenceCache &anyCache, int slot,
                                                std::span<const int32_t> tokens) {
    LOWBIT_TRY(CudaKvCache * cache, ownCache(anyCache));
    SequenceInput in{slot, tokens, LogitsWanted::None};
    LOWBIT_CHECK(checkInputs(*cache, {&in, 1}));
    std::vector<int64_t> firstRow;
    LOWBIT_CHECK(run(*cache, {&in, 1}, firstRow));
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

Result<CudaModel::TopK> CudaModel::next(SequenceCache &anyCache, int slot,
                                        std::span<const int32_t> tokens, int k) {
    if (tokens.empty())
        return makeError(ErrorCode::InvalidArgument, "CudaModel::next: no tokens");
    if (k < 1 || k > config().vocabSize)
        return makeError(ErrorCode::InvalidArgument,
                         "CudaModel::next: k must be in 1.." + std::to_string(config().vocabSize));
    LOWBIT_TRY(CudaKvCache * cache, ownCache(anyCache));
    SequenceInput in{slot, tokens, LogitsWanted::None};
    LOWBIT_CHECK(checkInputs(*cache, {&in, 1}));
    std::vector<int64_t> firstRow;
    LOWBIT_CHECK(run(*cache, {&in, 1}, firstRow));
    head(int64_t(tokens.size()) - 1, 1);
    TopK top{std::vector<int32_t>(size_t(k)), std::vector<float>(size_t(k))};
    LOWBIT_CHECK(m_backend->topK(m_buffers->logits, 1, config().vocabSize, k, top.ids, top.logits));
    return top;
}

} // namespace lowbit
