// AWQ: activation-aware weight quantization (Lin, Tang, Tang, Yang, Dang, Gan, Han 2023, "AWQ:
// Activation-aware Weight Quantization for LLM Compression and Acceleration"), as the reference
// (mit-han-lab/llm-awq: awq/quantize/auto_scale.py, auto_clip.py, quantizer.py) does it:
//
//   1. scale search (Sec. 3.2, Eq. 4-5; auto_scale_block): for each group of linears reading one
//      input X, s = mean|X|^a, normalized by sqrt(max(s) min(s)), for a in {0, 1/20, ..., 19/20};
//      each candidate quantizes W diag(s) and divides by s again, runs the block that the linears
//      feed (LLaMA: the whole attention for q/k/v, the whole MLP for gate/up, down_proj alone for
//      down, o_proj alone for v -> o when v_proj and o_proj have the same shape, i.e. no GQA), and
//      keeps the a with the lowest output MSE against the unquantized block. Every search uses the
//      original weights and inputs; the scales are then folded exactly: input_layernorm /= s with
//      q/k/v columns *= s, v_proj rows /= s with o_proj columns *= s, post_attention_layernorm /= s
//      with gate/up columns *= s, up_proj rows /= s with down_proj columns *= s;
//   2. clip search (auto_clip_layer): for every linear but q_proj and k_proj, per (row, group) the
//      clip max|w| * (1 - i/20), i = 0..9, minimizing the MSE of that group's partial outputs on
//      512 strided input rows (divided by the folded scales); the weights are clamped to it;
//   3. RTN with AWQ's grid (pseudo_quantize_tensor): asymmetric min = min(w), max = max(w) (the
//      range is not widened to include 0), scale = max(max - min, 1e-5) / (2^b - 1),
//      zero = clamp(-round(min / scale), 0, 2^b - 1); symmetric scale = max(max|w|, 1e-5) /
//      (2^(b-1) - 1), zero = 2^(b-1).
//
// The search runs on the first calibration windows holding at most `searchTokens` tokens (the
// reference calibrates on 128 x 512 = 65536 tokens of the Pile) and keeps their four linear inputs
// and two block outputs in memory: about 4 * tokens * (5 hidden + ffn) bytes per layer.
#pragma once

#include "quant/minmax_grid.h"
#include "quant/quantizer.h"

#include <nlohmann/json.hpp>

#include <span>

namespace lowbit {

struct AwqOptions {
    int bits = 4;
    int64_t groupSize = 0;  // 0: per output channel; the reference default is 128
    bool symmetric = false; // the reference: zero_point = True (asymmetric)
    bool scaleSearch = true;
    bool clipSearch = true;
    int64_t scaleGrid = 20; // n_grid
    int64_t clipGrid = 20;  // n_grid of auto_clip_layer
    double maxShrink = 0.5; // max_shrink: candidates (1 - i/clipGrid) for i < maxShrink * clipGrid
    int64_t clipTokens = 512;     // n_sample_token
    int64_t searchTokens = 65536; // calibration tokens the scale search runs on
    int64_t batchTokens = 4096;   // tokens per block evaluation
    int threads = 0;
};

// AWQ's grid for x[0..n) (pseudo_quantize_tensor); symmetric needs bits >= 2.
GridParams awqGrid(const float *x, int64_t n, int bits, bool symmetric);

// In place: every (row, group) of w replaced by its AWQ-grid value (w_quantize_func).
void awqFakeQuantize(float *w, int64_t rows, int64_t cols, int bits, int64_t groupSize,
                     bool symmetric);

// RTN on AWQ's grid, as a QuantizedTensor.
Result<QuantizedTensor> quantizeAwqGrid(std::string name, const float *weight, int64_t rows,
                                        int64_t cols, int bits, int64_t groupSize, bool symmetric);

// auto_clip_layer: the best clip max per (row, group) (rows x groups, row-major) for weights w
// (rows x cols) on input rows x (tokens x cols), and applyAwqClip clamps w to them.
std::vector<float> awqClipSearch(const float *w, int64_t rows, int64_t cols, const float *x,
                                 int64_t tokens, const AwqOptions &options);
void applyAwqClip(float *w, int64_t rows, int64_t cols, int64_t groupSize,
                  std::span<const float> maxVal);

// Scale search for one linear on its own (the block is the linear): s = mean|x|^a over the grid,
// best by || X W^T - X (Q(W diag s) / s)^T ||^2. Returns s (cols values; all 1 when a = 0 wins).
std::vector<float> awqSearchLinearScales(const float *w, int64_t rows, int64_t cols, const float *x,
                                         int64_t tokens, const AwqOptions &options,
                                         double *bestRatio = nullptr);

// Scale search (single linear, as above), scaling, clip search and quantization of one linear on
// its inputs x: the result's dequantization approximates W (scales divided back out), for tests
// and single-matrix use. `scalesOut`, when set, receives s.
Result<std::vector<float>> awqQuantizeLinear(const float *w, int64_t rows, int64_t cols,
                                             const float *x, int64_t tokens,
                                             const AwqOptions &options,
                                             std::vector<float> *scalesOut = nullptr);

// Method "awq"; --bits 1..8 (symmetric: 2..8); method options: scale (true), clip (true),
// grid (20), clip_grid (20), max_shrink (0.5), clip_tokens (512), search_tokens (65536).
Result<std::unique_ptr<Quantizer>> makeAwqQuantizer(const QuantizeOptions &options);

} // namespace lowbit
