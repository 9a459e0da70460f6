// The uniform min-max grid shared by RTN, GPTQ and the methods built on them (AWQ, SliM-LLM):
// GPTQ's Quantizer.find_params / quantize (gptq/quant.py) for weights.
//   - the range [xmin, xmax] is widened to include 0;
//   - symmetric: xmax = max(|xmin|, xmax), xmin = -xmax, zero = (maxq + 1) / 2;
//   - asymmetric: zero = round(-xmin / scale);
//   - scale = (xmax - xmin) / maxq with maxq = 2^bits - 1; an all-zero range becomes [-1, 1];
//   - code = clamp(round(w / scale) + zero, 0, maxq), w^ = scale * (code - zero).
// round() is round-half-to-even, as torch.round.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace lowbit {

struct GridParams {
    float scale = 1;
    float zero = 0;
    int maxq = 15;

    uint8_t code(float w) const {
        const float q = std::nearbyint(w / scale) + zero;
        return uint8_t(std::clamp(q, 0.0f, float(maxq)));
    }
    float value(uint8_t code) const { return scale * (float(code) - zero); }
    float fakeQuant(float w) const { return value(code(w)); }
};

// Parameters of the grid for values x[0], x[stride], ... (n of them).
inline GridParams minMaxGrid(const float *x, int64_t n, int64_t stride, int bits, bool symmetric) {
    GridParams p;
    p.maxq = (1 << bits) - 1;
    float xmin = 0, xmax = 0;
    for (int64_t i = 0; i < n; ++i) {
        xmin = std::min(xmin, x[i * stride]);
        xmax = std::max(xmax, x[i * stride]);
    }
    if (symmetric) {
        xmax = std::max(-xmin, xmax);
        if (xmin < 0)
            xmin = -xmax;
    }
    if (xmin == 0 && xmax == 0) {
        xmin = -1;
        xmax = 1;
    }
    p.scale = (xmax - xmin) / float(p.maxq);
    p.zero = symmetric ? float(p.maxq + 1) / 2 : std::nearbyint(-xmin / p.scale);
    return p;
}

} // namespace lowbit
