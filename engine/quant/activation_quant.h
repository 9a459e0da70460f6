// Dynamic per-token activation quantization inside the forward pass (SmoothQuant's W8A8
// simulation: smoothquant/fake_quant.py, quantize_activation_per_token_absmax): every row x of a
// linear input becomes  s * round(x / s)  with  s = max(max_j |x_j|, 1e-5) / (2^(b-1) - 1),
// round half to even (torch.round). As quantize_llama_like(quantize_bmm_input=False) does, the
// inputs of all seven linears of every decoder layer are quantized (q/k/v share theirs, as do
// gate/up); the attention products are not.
//
// A quantized checkpoint records the activation width in quantization_config.json (each entry of
// "layer_notes" carries "activation_bits"); commands that build a Model from a checkpoint call
// installActivationQuant(model) right after Model::create, so the model evaluates as the method
// meant.
#pragma once

#include "core/result.h"
#include "runtime/linear_hook.h"
#include "runtime/model.h"

#include <cstdint>
#include <filesystem>

namespace lowbit {

inline constexpr int kNoActivationQuant = 0;

// In place, `rows` rows of `cols` floats; bits 2..8.
void quantizeActivationsPerToken(float *x, int64_t rows, int64_t cols, int bits);

// The hook for `bits` (2..8): stateless, shared by every model and thread, never freed; nullptr
// for any other width.
LinearHook *activationQuantHook(int bits);

// The activation width a quantized checkpoint directory records (kNoActivationQuant when it has
// no quantization_config.json or records none). Errors: an unreadable or malformed config, widths
// outside 2..8, or layers that disagree.
Result<int> recordedActivationBits(const std::filesystem::path &checkpointDir);

// Installs activationQuantHook(bits) on `model` when its checkpoint (model.checkpoint().path)
// records activation quantization; returns the width (kNoActivationQuant: nothing installed).
// Replaces any hook set before.
Result<int> installActivationQuant(Model &model);

} // namespace lowbit
