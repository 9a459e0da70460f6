// Mean-shifted sign binarization, shared by PB-LLM, BiLLM and SliM-LLM's 1-bit groups.
//
// A set S of weights of one row is approximated by
//     w^ = mu + alpha * sign(w - mu),   mu = mean_S(w),   alpha = mean_S |w - mu|
// For fixed signs alpha is the L2-optimal scale (BiLLM, Huang et al. 2024, Eq. 2: alpha =
// ||W||_l1 / m, XNOR-Net's scale) once the mean is taken out; the mean shift is what the
// reference implementations do (PB-LLM's "xnor" low quantizer, BiLLM's high_order_residual).
// Residual binarization of order 2 (BiLLM Eq. 6-7) binarizes W, then binarizes the residual
// W - B1 again with its own mu and alpha: w^ = B1 + B2.
//
// sign(0) is taken as +1 (a 1-bit code has no zero level). A binarizer with alpha == 0 (a set of
// equal values, or an empty one) has the single value mu: it always gives code 1, so that its
// tensor form can be exact (binaryScaleZero).
#pragma once

#include <cstdint>
#include <vector>

namespace lowbit {

struct BinaryParams {
    float alpha = 0;
    float mean = 0;

    bool positive(float w) const { return alpha == 0 || w >= mean; }
    float value(bool positive) const { return positive ? mean + alpha : mean - alpha; }
    float fakeQuant(float w) const { return value(positive(w)); }
};

// mu and alpha over the n values x[i * stride] whose mask[i] is non-zero (mask null: all of
// them). An empty set gives {0, 0}. Float64 sums.
BinaryParams fitBinary(const float *x, int64_t n, const uint8_t *mask = nullptr,
                       int64_t stride = 1);

// Order-2 residual binarization of one set: first and second binarizers.
struct ResidualBinary {
    BinaryParams first, second;
    float fakeQuant(float w) const {
        const float b1 = first.fakeQuant(w);
        return b1 + second.fakeQuant(w - b1);
    }
};
ResidualBinary fitResidualBinary(const float *x, int64_t n, const uint8_t *mask = nullptr);

// A binarizer as the (scale, zero) of QuantizedTensor's w = scale * (level - zero):
//  - signLevels: levels {-1, +1} (the codebook kSignLevels): scale = alpha, zero = -mu / alpha;
//  - else codes {0, 1} as plain levels: scale = 2 alpha, zero = 1/2 - mu / (2 alpha).
// alpha == 0: code 1 stands for mu (signLevels: scale mu/2, zero -1; else scale mu, zero 0).
struct ScaleZero {
    float scale = 0;
    float zero = 0;
};
ScaleZero binaryScaleZero(const BinaryParams &p, bool signLevels);

// The codebook of sign-coded tensors: code 0 -> -1, code 1 -> +1.
inline const std::vector<float> kSignLevels = {-1.0f, 1.0f};

} // namespace lowbit
