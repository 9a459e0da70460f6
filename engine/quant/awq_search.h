// AWQ's per-layer scale search (engine/quant/awq.h, step 1): the layer's linear inputs on the
// search windows, the blocks whose outputs judge a candidate (attention, MLP, single linears) run
// through the CPU backend's ops, the grid search over a, and the exact folding of the winners.
// Single-threaded API; BLAS and the backend use `threads` inside.
#pragma once

#include "quant/awq.h"
#include "quant/calibration.h"

#include <functional>
#include <memory>
#include <stop_token>

namespace lowbit {

class Backend;

// The four linear inputs of one decoder layer on the first calibration windows (whole windows,
// at most maxTokens tokens, at least one window), each tokens x width, row-major.
struct AwqLayerInputs {
    int64_t tokens = 0;
    int64_t windowTokens = 0;
    std::vector<float> attention, attentionOutput, mlp, mlpDown;

    const std::vector<float> &of(LinearInput input) const;
    std::vector<float> &of(LinearInput input);
};

// Runs decoder layer `layer` with `weights` over those windows (from the runner's current hidden
// states) and keeps its linear inputs.
Result<AwqLayerInputs> captureLayerInputs(LayerRunner &runner, int64_t layer,
                                          const LayerWeights &weights, int64_t maxTokens,
                                          int64_t batchTokens);

// The blocks of one decoder layer over whole windows of `windowTokens` tokens (positions 0..T-1,
// causal), written with the same backend ops as the forward pass. Weights are row-major floats
// {out, in}. Outputs are tokens x hidden.
class AwqBlocks {
public:
    AwqBlocks(const ModelConfig &config, int64_t windowTokens, int64_t batchTokens, int threads);
    ~AwqBlocks();
    // self_attn: o_proj(attention(rope(X Wq^T), rope(X Wk^T), X Wv^T)).
    void attention(const float *x, int64_t tokens, const float *wq, const float *wk,
                   const float *wv, const float *wo, float *out);
    // The attention output before o_proj (tokens x heads*headDim), for tests.
    void attentionCore(const float *x, int64_t tokens, const float *wq, const float *wk,
                       const float *wv, float *out);
    // mlp: down(silu(X Wgate^T) * (X Wup^T)).
    void mlp(const float *x, int64_t tokens, const float *wGate, const float *wUp,
             const float *wDown, float *out);
    // X W^T for W rows x cols.
    void linear(const float *x, int64_t tokens, const float *w, int64_t rows, int64_t cols,
                float *out);

private:
    const ModelConfig &m_config;
    int64_t m_windowTokens, m_batchTokens;
    std::unique_ptr<Backend> m_backend;
    std::vector<float> m_cosSin;
};

// The search of one block: for each a on the grid, s = mean|x|^a / sqrt(max min), each weight
// (rows[k] x cols) becomes Q(W diag s) / s, and loss(candidates) judges them. Returns the best s;
// bestRatio and bestLoss receive a and its loss. Cancelled when `stop` is requested.
using AwqLossFn = std::function<double(const std::vector<std::vector<float>> &candidates)>;
Result<std::vector<float>> awqScaleSearch(std::span<const double> meanAbs,
                                          const std::vector<const std::vector<float> *> &weights,
                                          const std::vector<int64_t> &rows, int64_t cols,
                                          const AwqOptions &options, const AwqLossFn &loss,
                                          double *bestRatio = nullptr, double *bestLoss = nullptr,
                                          std::stop_token stop = {});

// mean |x_j| over `tokens` rows of width cols.
std::vector<double> meanAbsColumns(const float *x, int64_t tokens, int64_t cols);

// The scales of one layer (empty: that block was not searched) and the winning a of each.
struct AwqLayerScales {
    std::vector<float> qkv, vo, mlp, down;
    nlohmann::json notes = nlohmann::json::object();
};

// auto_scale_block for a LLaMA layer, on the original weights and inputs.
Result<AwqLayerScales> searchLayerScales(const FloatLayer &layer, const AwqLayerInputs &inputs,
                                         const ModelConfig &config, const AwqOptions &options,
                                         std::stop_token stop = {});

// apply_scale: folds the scales into the norms and the linears (exact in real arithmetic).
void foldLayerScales(FloatLayer &layer, const AwqLayerScales &scales);

} // namespace lowbit
