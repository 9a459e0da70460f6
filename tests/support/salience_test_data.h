// Test data for the salience-driven quantizers (PB-LLM, BiLLM, SliM-LLM): random linear layers
// with LLM-like activations, the real stories260K layers with their calibration activations, and
// the float64 references the tests compare against (layer-output error, plain sign binarization).
#pragma once

#include "shared_data.h"

#include "model/checkpoint.h"
#include "quant/calibration.h"
#include "quant/quantizer.h"
#include "runtime/model.h"

#include <cmath>
#include <memory>
#include <random>
#include <vector>

namespace lowbit::test {

// One linear layer: weights (rows x cols) and its input statistics, whose sampleRows are the
// activations the output error is measured on.
struct LinearProblem {
    std::string name;
    int64_t rows = 0, cols = 0;
    std::vector<float> w;
    LinearStats stats;
};

// Heavy-tailed weights (a Gaussian with a few large entries per row, as trained LLM weights) and
// activations with correlated channels (a random mixing) and outlier channels; H = 2 X^T X / N in
// float64 over all `tokens` rows, the first min(tokens, 256) of which are kept as sampleRows.
inline LinearProblem randomProblem(uint32_t seed, int64_t rows, int64_t cols, int64_t tokens) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> n01(0, 1);
    std::uniform_real_distribution<float> u01(0, 1);
    LinearProblem p;
    p.name = "random";
    p.rows = rows;
    p.cols = cols;
    p.w.resize(size_t(rows * cols));
    for (float &v : p.w)
        v = n01(rng) * 0.05f * (u01(rng) < 0.02f ? 6.0f : 1.0f);
    std::vector<float> mix(size_t(cols * cols)), z(static_cast<size_t>(cols));
    for (float &v : mix)
        v = n01(rng) / std::sqrt(float(cols));
    std::vector<float> x(size_t(tokens * cols));
    for (int64_t t = 0; t < tokens; ++t) {
        for (float &v : z)
            v = n01(rng);
        for (int64_t j = 0; j < cols; ++j) {
            float s = z[size_t(j)] * 0.3f;
            for (int64_t k = 0; k < cols; ++k)
                s += mix[size_t(j * cols + k)] * z[size_t(k)];
            x[size_t(t * cols + j)] = s * (j % 13 == 0 ? 6.0f : 1.0f);
        }
    }
    LinearStats &s = p.stats;
    s.cols = cols;
    s.tokens = tokens;
    s.hessian.assign(size_t(cols * cols), 0);
    for (int64_t t = 0; t < tokens; ++t)
        for (int64_t i = 0; i < cols; ++i)
            for (int64_t j = 0; j < cols; ++j)
                s.hessian[size_t(i * cols + j)] +=
                    2.0 * x[size_t(t * cols + i)] * x[size_t(t * cols + j)] / double(tokens);
    s.sampleCount = std::min<int64_t>(tokens, kStatsSampleRows);
    s.sampleRows.assign(x.begin(), x.begin() + s.sampleCount * cols);
    return p;
}

// H = I: no correlations, nothing for an OBS sweep to compensate.
inline std::vector<double> identityHessian(int64_t cols) {
    std::vector<double> h(size_t(cols * cols), 0.0);
    for (int64_t j = 0; j < cols; ++j)
        h[size_t(j * cols + j)] = 1;
    return h;
}

// ||(W - Q) X^T||_F^2 over the problem's sample rows, float64.
inline double outputError(const LinearProblem &p, const std::vector<float> &q) {
    double e = 0;
    for (int64_t t = 0; t < p.stats.sampleCount; ++t)
        for (int64_t r = 0; r < p.rows; ++r) {
            double d = 0;
            for (int64_t j = 0; j < p.cols; ++j)
                d += (double(p.w[size_t(r * p.cols + j)]) - q[size_t(r * p.cols + j)]) *
                     p.stats.sampleRows[size_t(t * p.cols + j)];
            e += d * d;
        }
    return e;
}

// Plain sign binarization, the baseline of the binarization papers: per row, mean|w| * sign(w).
inline std::vector<float> signBinarize(const std::vector<float> &w, int64_t rows, int64_t cols) {
    std::vector<float> q(w.size());
    for (int64_t r = 0; r < rows; ++r) {
        double alpha = 0;
        for (int64_t j = 0; j < cols; ++j)
            alpha += std::abs(w[size_t(r * cols + j)]);
        alpha /= double(cols);
        for (int64_t j = 0; j < cols; ++j)
            q[size_t(r * cols + j)] = float(w[size_t(r * cols + j)] >= 0 ? alpha : -alpha);
    }
    return q;
}

// Every linear of every stories260K layer with that layer's calibration inputs from the FP model
// (WikiText-2 train prefix, 8 windows of 256 tokens; sampleRows are 256 of those inputs). Empty
// when the shared files are absent (the caller skips).
inline std::vector<LinearProblem> stories260kProblems() {
    const auto model = sharedPath("data/llama2c/stories260K.bin");
    const auto tokenizer = sharedPath("data/llama2c/tok512.bin");
    const auto calib = sharedPath("data/wikitext2/wiki.train.raw.prefix");
    if (!std::filesystem::exists(model) || !std::filesystem::exists(tokenizer) ||
        !std::filesystem::exists(calib))
        return {};
    auto checkpoint = loadCheckpoint(model, {tokenizer});
    if (!checkpoint.ok())
        return {};
    auto fp = std::make_shared<const Checkpoint>(std::move(*checkpoint));
    auto m = Model::create(fp, {2});
    CalibrationOptions co;
    co.textPath = calib;
    co.samples = 8;
    co.tokens = 256;
    auto set = loadCalibration(*fp->tokenizer, co);
    if (!m.ok() || !set.ok())
        return {};
    LayerRunner runner(**m, *set, 4096);
    if (!runner.embed().ok())
        return {};
    std::vector<LinearProblem> out;
    for (int64_t layer = 0; layer < fp->config.numLayers; ++layer) {
        const LayerWeights &lw = fp->weights.layers[size_t(layer)];
        StatsHook hook({LinearInput::Attention, LinearInput::AttentionOutput, LinearInput::Mlp,
                        LinearInput::MlpDown},
                       {true, false, true}, HessianPrecision::Float64, 2);
        if (!runner.run(layer, lw, &hook).ok())
            return {};
        LayerStatistics stats = hook.finish();
        for (LinearKind kind : kAllLinearKinds) {
            const Tensor &t = linearWeight(lw, kind);
            LinearProblem p;
            p.name = linearTensorName(layer, kind);
            p.rows = t.rows();
            p.cols = t.cols();
            p.w = tensorToFloats(t);
            p.stats = stats.at(linearInputOf(kind));
            out.push_back(std::move(p));
        }
        if (!runner.advance(layer, lw).ok())
            return {};
    }
    return out;
}

} // namespace lowbit::test
