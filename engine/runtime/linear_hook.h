// LinearHook: sees (and may rewrite) the activations entering the linear layers of a decoder
// layer, e.g. to accumulate calibration statistics (GPTQ Hessians, AWQ channel means) or to apply
// per-token activation quantization (SmoothQuant W8A8). One call per distinct input: q/k/v share
// theirs, as do gate/up.
#pragma once

#include <cstdint>

namespace lowbit {

enum class LinearInput {
    Attention,       // normed hidden state entering q_proj, k_proj, v_proj
    AttentionOutput, // attention output entering o_proj
    Mlp,             // normed hidden state entering gate_proj, up_proj
    MlpDown,         // silu(gate) * up entering down_proj
};

class LinearHook {
public:
    virtual ~LinearHook() = default;
    // `input` holds `rows` rows of `cols` floats, row-major; it may be modified in place.
    // Called on the thread running the forward pass.
    virtual void onLinearInput(int64_t layer, LinearInput kind, float *input, int64_t rows,
                               int64_t cols) = 0;
};

} // namespace lowbit
