// SmoothQuant (Xiao, Lin, Seznec, Wu, Demouth, Han 2022, "SmoothQuant: Accurate and Efficient
// Post-Training Quantization for Large Language Models"), as the reference
// (mit-han-lab/smoothquant: smooth.py smooth_ln_fcs_llama_like, fake_quant.py W8A8Linear) does it
// for LLaMA:
//
//   - smoothing (Sec. 4, Eq. 4): for the linears reading one normed input,
//       s_j = max(max|X_j|^alpha / max(max_i |W_ij| over those linears, 1e-5)^(1-alpha), 1e-5),
//     folded exactly into the preceding RMSNorm (gamma_j /= s_j) and the linears (W_:j *= s_j):
//     input_layernorm -> q/k/v and post_attention_layernorm -> gate/up. For LLaMA the reference
//     smooths nothing else (no v_proj -> o_proj, no up_proj -> down_proj);
//   - weights: per output channel (or per group) symmetric absmax,
//       w^ = s * round(w / s), s = max(max|w|, 1e-5) / (2^(b-1) - 1);
//   - activations: per-token dynamic absmax at `activationBits` in the forward pass, on the inputs
//     of all seven linears (engine/quant/activation_quant.h); the width is recorded in the
//     checkpoint's layer notes so that loading it installs the same quantization.
// W8A8 is --bits 8 (activation bits default to the weight bits); W6A6, W4A4 likewise;
// {"act_bits": 16} gives weight-only smoothing.
#pragma once

#include "quant/quantizer.h"

#include <nlohmann/json.hpp>

#include <span>

namespace lowbit {

// Eq. 4 for one group of linears sharing an input of `cols` channels: `actMax` = max|X_j| over
// the calibration tokens, `weights` = each linear's rows x cols weights (row-major), `rows` their
// row counts.
std::vector<float> smoothingFactors(std::span<const double> actMax,
                                    const std::vector<std::span<const float>> &weights,
                                    const std::vector<int64_t> &rows, int64_t cols, double alpha);

// Folds factors into the layer: norm /= s, each listed linear's columns *= s.
void foldSmoothing(std::vector<float> &norm, const std::vector<LinearKind> &linears,
                   FloatLayer &layer, std::span<const float> factors);

// Smooths both normed inputs of a decoder layer from its calibration statistics (max |x| of
// LinearInput::Attention and ::Mlp). Errors: missing statistics or a width mismatch.
Status smoothLayer(FloatLayer &layer, const LayerStatistics &stats, double alpha,
                   nlohmann::json *notes = nullptr);

// Per-channel (groupSize 0) or per-group symmetric absmax, codes c = q + 2^(b-1), zero 2^(b-1).
Result<QuantizedTensor> quantizeAbsmax(std::string name, const float *weight, int64_t rows,
                                       int64_t cols, int bits, int64_t groupSize,
                                       std::string method = "smoothquant");

// Method "smoothquant"; --bits 2..8 (weights); method options: alpha (0.5), act_bits (= --bits;
// 16: no activation quantization).
Result<std::unique_ptr<Quantizer>> makeSmoothQuantQuantizer(const QuantizeOptions &options);

} // namespace lowbit
