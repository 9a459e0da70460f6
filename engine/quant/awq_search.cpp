#include "quant/awq_search.h"

#include "backend/backend.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace lowbit {

const std::vector<float> &AwqLayerInputs::of(LinearInput input) const {
    switch (input) {
    case LinearInput::Attention: return attention;
    case LinearInput::AttentionOutput: return attentionOutput;
    case LinearInput::Mlp: return mlp;
    case LinearInput::MlpDown: break;
    }
    return mlpDown;
}

std::vector<float> &AwqLayerInputs::of(LinearInput input) {
    return const_cast<std::vector<float> &>(static_cast<const AwqLayerInputs &>(*this).of(input));
}

namespace {

Tensor viewWeight(const float *w, int64_t rows, int64_t cols) {
    Tensor t;
    t.dtype = DType::F32;
    t.shape = {rows, cols};
    t.data = reinterpret_cast<const std::byte *>(w);
    return t;
}

// Copies each linear input of the batch at rows [m_first, m_first + rows) of its buffer.
class CaptureHook final : public LinearHook {
public:
    explicit CaptureHook(AwqLayerInputs &inputs) : m_inputs(inputs) {}
    int64_t first = 0;
    void onLinearInput(int64_t, LinearInput kind, float *input, int64_t rows,
                       int64_t cols) override {
        std::vector<float> &buffer = m_inputs.of(kind);
        const size_t needed = size_t((first + rows) * cols);
        if (buffer.size() < needed)
            buffer.resize(needed);
        std::copy(input, input + rows * cols, buffer.begin() + first * cols);
    }

private:
    AwqLayerInputs &m_inputs;
};

} // namespace

Result<AwqLayerInputs> captureLayerInputs(LayerRunner &runner, int64_t layer,
                                          const LayerWeights &weights, int64_t maxTokens,
                                          int64_t batchTokens) {
    const int64_t t = runner.windowTokens(), hidden = runner.hiddenSize();
    if (t <= 0 || runner.rows() < t)
        return makeError(ErrorCode::InvalidArgument, "awq: no calibration windows to search on");
    const int64_t windows = std::clamp<int64_t>(maxTokens / t, 1, runner.rows() / t);
    const int64_t perBatch = std::clamp<int64_t>(batchTokens / t, 1, windows);
    const ModelConfig &c = runner.model().config();
    AwqLayerInputs inputs;
    inputs.tokens = windows * t;
    inputs.windowTokens = t;
    KvCache cache(1, int(perBatch), t, c.numKvHeads * c.headDim);
    const std::vector<int32_t> tokens(static_cast<size_t>(t),
                                      0); // only the count matters past the embedding
    CaptureHook hook(inputs);
    std::vector<float> x;
    for (int64_t w0 = 0; w0 < windows; w0 += perBatch) {
        const int64_t count = std::min(perBatch, windows - w0);
        std::vector<SequenceInput> batch;
        for (int64_t i = 0; i < count; ++i)
            batch.push_back({int(i), tokens, LogitsWanted::None, 0});
        const float *h = runner.hidden() + w0 * t * hidden;
        x.assign(h, h + count * t * hidden);
        hook.first = w0 * t;
        LOWBIT_CHECK(runner.model().runLayer(layer, cache, 0, batch, x.data(), &weights, &hook));
    }
    return inputs;
}

AwqBlocks::AwqBlocks(const ModelConfig &config, int64_t windowTokens, int64_t batchTokens,
                     int threads)
    : m_config(config), m_windowTokens(windowTokens),
      m_batchTokens(std::max(windowTokens, batchTokens / windowTokens * windowTokens)),
      m_backend(makeCpuBackend(threads)) {
    // RoPE angles of positions 0..T-1, in float64 as the forward pass computes them.
    const std::vector<double> invFreq = config.ropeInverseFrequencies();
    const int64_t hd = config.headDim, half = hd / 2;
    m_cosSin.resize(size_t(windowTokens * hd));
    for (int64_t r = 0; r < windowTokens; ++r)
        for (int64_t j = 0; j < half; ++j) {
            const double angle = double(r) * invFreq[size_t(j)];
            m_cosSin[size_t(r * hd + j)] = float(std::cos(angle));
            m_cosSin[size_t(r * hd + half + j)] = float(std::sin(angle));
        }
}

AwqBlocks::~AwqBlocks() = default;

void AwqBlocks::attentionCore(const float *x, int64_t tokens, const float *wq, const float *wk,
                              const float *wv, float *out) {
    const ModelConfig &c = m_config;
    const int64_t hidden = c.hiddenSize, hd = c.headDim, t = m_windowTokens;
    const int64_t qDim = c.numHeads * hd, kvDim = c.numKvHeads * hd;
    std::vector<float> q, k, v;
    for (int64_t r0 = 0; r0 < tokens; r0 += m_batchTokens) {
        const int64_t rows = std::min(m_batchTokens, tokens - r0);
        q.resize(size_t(rows * qDim));
        k.resize(size_t(rows * kvDim));
        v.resize(size_t(rows * kvDim));
        m_backend->matmul(x + r0 * hidden, rows, viewWeight(wq, qDim, hidden), q.data());
        m_backend->matmul(x + r0 * hidden, rows, viewWeight(wk, kvDim, hidden), k.data());
        m_backend->matmul(x + r0 * hidden, rows, viewWeight(wv, kvDim, hidden), v.data());
        std::vector<AttentionSequence> sequences;
        for (int64_t w = 0; w < rows / t; ++w) {
            m_backend->rope(q.data() + w * t * qDim, t, qDim, c.numHeads, hd, m_cosSin.data());
            m_backend->rope(k.data() + w * t * kvDim, t, kvDim, c.numKvHeads, hd, m_cosSin.data());
            sequences.push_back({q.data() + w * t * qDim, k.data() + w * t * kvDim,
                                 v.data() + w * t * kvDim, out + (r0 + w * t) * qDim, t, 0});
        }
        m_backend->attention(sequences, {c.numHeads, c.numKvHeads, hd, qDim, kvDim,
                                         float(1.0 / std::sqrt(double(hd)))});
    }
}

void AwqBlocks::attention(const float *x, int64_t tokens, const float *wq, const float *wk,
                          const float *wv, const float *wo, float *out) {
    const int64_t qDim = m_config.numHeads * m_config.headDim;
    std::vector<float> core(static_cast<size_t>(tokens * qDim));
    attentionCore(x, tokens, wq, wk, wv, core.data());
    linear(core.data(), tokens, wo, m_config.hiddenSize, qDim, out);
}

void AwqBlocks::mlp(const float *x, int64_t tokens, const float *wGate, const float *wUp,
                    const float *wDown, float *out) {
    const int64_t hidden = m_config.hiddenSize, ffn = m_config.intermediateSize;
    std::vector<float> gate, up;
    for (int64_t r0 = 0; r0 < tokens; r0 += m_batchTokens) {
        const int64_t rows = std::min(m_batchTokens, tokens - r0);
        gate.resize(size_t(rows * ffn));
        up.resize(size_t(rows * ffn));
        m_backend->matmul(x + r0 * hidden, rows, viewWeight(wGate, ffn, hidden), gate.data());
        m_backend->matmul(x + r0 * hidden, rows, viewWeight(wUp, ffn, hidden), up.data());
        m_backend->swiglu(gate.data(), up.data(), rows * ffn, gate.data());
        m_backend->matmul(gate.data(), rows, viewWeight(wDown, hidden, ffn), out + r0 * hidden);
    }
}

void AwqBlocks::linear(const float *x, int64_t tokens, const float *w, int64_t rows, int64_t cols,
                       float *out) {
    for (int64_t r0 = 0; r0 < tokens; r0 += m_batchTokens) {
        const int64_t n = std::min(m_batchTokens, tokens - r0);
        m_backend->matmul(x + r0 * cols, n, viewWeight(w, rows, cols), out + r0 * rows);
    }
}

std::vector<double> meanAbsColumns(const float *x, int64_t tokens, int64_t cols) {
    std::vector<double> sum(static_cast<size_t>(cols), 0.0);
    for (int64_t r = 0; r < tokens; ++r)
        for (int64_t j = 0; j < cols; ++j)
            sum[size_t(j)] += std::abs(double(x[r * cols + j]));
    for (double &s : sum)
        s /= double(std::max<int64_t>(tokens, 1));
    return sum;
}

Result<std::vector<float>> awqScaleSearch(std::span<const double> meanAbs,
                                          const std::vector<const std::vector<float> *> &weights,
                                          const std::vector<int64_t> &rows, int64_t cols,
                                          const AwqOptions &options, const AwqLossFn &loss,
                                          double *bestRatio, double *bestLoss,
                                          std::stop_token stop) {
    double best = std::numeric_limits<double>::infinity(), bestA = -1;
    std::vector<float> bestScales;
    std::vector<std::vector<float>> candidates(weights.size());
    std::vector<float> s(static_cast<size_t>(cols));
    for (int64_t i = 0; i < options.scaleGrid; ++i) {
        if (stop.stop_requested())
            return makeError(ErrorCode::Cancelled, "quantization cancelled");
        const double a = double(i) / double(options.scaleGrid);
        float lo = std::numeric_limits<float>::max(), hi = 0;
        for (int64_t j = 0; j < cols; ++j) {
            s[size_t(j)] = std::max(float(std::pow(meanAbs[size_t(j)], a)), 1e-4f);
            lo = std::min(lo, s[size_t(j)]);
            hi = std::max(hi, s[size_t(j)]);
        }
        const float norm = std::sqrt(lo * hi);
        for (float &v : s)
            v /= norm;
        for (size_t k = 0; k < weights.size(); ++k) {
            std::vector<float> &w = candidates[k];
            w = *weights[k];
            for (int64_t r = 0; r < rows[k]; ++r)
                for (int64_t j = 0; j < cols; ++j)
                    w[size_t(r * cols + j)] *= s[size_t(j)];
            awqFakeQuantize(w.data(), rows[k], cols, options.bits, options.groupSize,
                            options.symmetric);
            for (int64_t r = 0; r < rows[k]; ++r)
                for (int64_t j = 0; j < cols; ++j)
                    w[size_t(r * cols + j)] /= s[size_t(j)];
        }
        const double l = loss(candidates);
        if (l < best) { // strict, as the reference: ties keep the smaller a
            best = l;
            bestA = a;
            bestScales = s;
        }
    }
    if (bestScales.empty()) // every loss NaN: no scaling
        bestScales.assign(size_t(cols), 1.0f);
    if (bestRatio)
        *bestRatio = bestA;
    if (bestLoss)
        *bestLoss = best;
    return bestScales;
}

namespace {

double squaredDiff(const std::vector<float> &a, const std::vector<float> &b) {
    double sum = 0;
    for (size_t i = 0; i < a.size(); ++i) {
        const double d = double(a[i]) - double(b[i]);
        sum += d * d;
    }
    return sum / double(std::max<size_t>(a.size(), 1));
}

} // namespace

Result<AwqLayerScales> searchLayerScales(const FloatLayer &layer, const AwqLayerInputs &inputs,
                                         const ModelConfig &config, const AwqOptions &options,
                                         std::stop_token stop) {
    using K = LinearKind;
    const int64_t n = inputs.tokens, hidden = config.hiddenSize, ffn = config.intermediateSize;
    const int64_t qDim = config.numHeads * config.headDim;
    AwqBlocks blocks(config, inputs.windowTokens, options.batchTokens, options.threads);
    auto w = [&](K kind) { return &layer.weight(kind); };
    auto rows = [&](K kind) { return layer.rows[size_t(kind)]; };
    AwqLayerScales out;
    std::vector<float> reference(static_cast<size_t>(n * hidden)), candidate(reference.size());
    double a = 0, l = 0;

    // q/k/v, judged by the attention output.
    blocks.attention(inputs.attention.data(), n, w(K::Q)->data(), w(K::K)->data(), w(K::V)->data(),
                     w(K::O)->data(), reference.data());
    LOWBIT_TRY(out.qkv,
               awqScaleSearch(
                   meanAbsColumns(inputs.attention.data(), n, hidden), {w(K::Q), w(K::K), w(K::V)},
                   {rows(K::Q), rows(K::K), rows(K::V)}, hidden, options,
                   [&](const auto &c) {
                       blocks.attention(inputs.attention.data(), n, c[0].data(), c[1].data(),
                                        c[2].data(), w(K::O)->data(), candidate.data());
                       return squaredDiff(reference, candidate);
                   },
                   &a, &l, stop));
    out.notes["qkv"] = {{"ratio", a}, {"loss", l}};

    // v -> o only when v_proj and o_proj have the same shape (llm-awq PR #67: not under GQA).
    if (rows(K::V) == rows(K::O) && layer.cols[size_t(K::V)] == layer.cols[size_t(K::O)]) {
        const float *x = inputs.attentionOutput.data();
        blocks.linear(x, n, w(K::O)->data(), hidden, qDim, reference.data());
        LOWBIT_TRY(out.vo, awqScaleSearch(
                               meanAbsColumns(x, n, qDim), {w(K::O)}, {hidden}, qDim, options,
                               [&](const auto &c) {
                                   blocks.linear(x, n, c[0].data(), hidden, qDim, candidate.data());
                                   return squaredDiff(reference, candidate);
                               },
                               &a, &l, stop));
        out.notes["vo"] = {{"ratio", a}, {"loss", l}};
    }

    // gate/up, judged by the MLP output.
    blocks.mlp(inputs.mlp.data(), n, w(K::Gate)->data(), w(K::Up)->data(), w(K::Down)->data(),
               reference.data());
    LOWBIT_TRY(out.mlp, awqScaleSearch(
                            meanAbsColumns(inputs.mlp.data(), n, hidden), {w(K::Gate), w(K::Up)},
                            {rows(K::Gate), rows(K::Up)}, hidden, options,
                            [&](const auto &c) {
                                blocks.mlp(inputs.mlp.data(), n, c[0].data(), c[1].data(),
                                           w(K::Down)->data(), candidate.data());
                                return squaredDiff(reference, candidate);
                            },
                            &a, &l, stop));
    out.notes["mlp"] = {{"ratio", a}, {"loss", l}};

    // down, judged by its own output.
    const float *x = inputs.mlpDown.data();
    blocks.linear(x, n, w(K::Down)->data(), hidden, ffn, reference.data());
    LOWBIT_TRY(out.down, awqScaleSearch(
                             meanAbsColumns(x, n, ffn), {w(K::Down)}, {hidden}, ffn, options,
                             [&](const auto &c) {
                                 blocks.linear(x, n, c[0].data(), hidden, ffn, candidate.data());
                                 return squaredDiff(reference, candidate);
                             },
                             &a, &l, stop));
    out.notes["down"] = {{"ratio", a}, {"loss", l}};
    return out;
}

namespace {

void scaleColumns(std::vector<float> &w, int64_t rows, int64_t cols, const std::vector<float> &s) {
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < cols; ++j)
            w[size_t(r * cols + j)] *= s[size_t(j)];
}

// fc1.weight[-s.size():] /= s[:, None]: the last s.size() output rows of the previous linear.
void divideRows(std::vector<float> &w, int64_t rows, int64_t cols, const std::vector<float> &s) {
    const int64_t first = rows - int64_t(s.size());
    for (int64_t r = first; r < rows; ++r)
        for (int64_t j = 0; j < cols; ++j)
            w[size_t(r * cols + j)] /= s[size_t(r - first)];
}

} // namespace

void foldLayerScales(FloatLayer &layer, const AwqLayerScales &scales) {
    using K = LinearKind;
    auto cols = [&](K kind) { return layer.cols[size_t(kind)]; };
    auto rows = [&](K kind) { return layer.rows[size_t(kind)]; };
    if (!scales.qkv.empty()) {
        for (size_t j = 0; j < scales.qkv.size(); ++j)
            layer.attnNorm[j] /= scales.qkv[j];
        for (K kind : {K::Q, K::K, K::V})
            scaleColumns(layer.weight(kind), rows(kind), cols(kind), scales.qkv);
    }
    if (!scales.vo.empty()) {
        divideRows(layer.weight(K::V), rows(K::V), cols(K::V), scales.vo);
        scaleColumns(layer.weight(K::O), rows(K::O), cols(K::O), scales.vo);
    }
    if (!scales.mlp.empty()) {
        for (size_t j = 0; j < scales.mlp.size(); ++j)
            layer.ffnNorm[j] /= scales.mlp[j];
        for (K kind : {K::Gate, K::Up})
            scaleColumns(layer.weight(kind), rows(kind), cols(kind), scales.mlp);
    }
    if (!scales.down.empty()) {
        divideRows(layer.weight(K::Up), rows(K::Up), cols(K::Up), scales.down);
        scaleColumns(layer.weight(K::Down), rows(K::Down), cols(K::Down), scales.down);
    }
}

} // namespace lowbit
