#include "model/config.h"

#include <cmath>
#include <numbers>

namespace lowbit {

Status ModelConfig::validate(const std::string &source) const {
    auto bad = [&](const char *field, const std::string &why) {
        return makeError(ErrorCode::Format, source + ": " + field + " " + why);
    };
    if (vocabSize <= 0) return bad("vocab_size", "must be positive");
    if (hiddenSize <= 0) return bad("hidden_size", "must be positive");
    if (intermediateSize <= 0) return bad("intermediate_size", "must be positive");
    if (numLayers <= 0) return bad("num_hidden_layers", "must be positive");
    if (numHeads <= 0) return bad("num_attention_heads", "must be positive");
    if (numKvHeads <= 0 || numHeads % numKvHeads != 0)
        return bad("num_key_value_heads", "must be positive and divide num_attention_heads");
    if (headDim <= 0 || headDim % 2 != 0) return bad("head_dim", "must be positive and even");
    if (!(rmsNormEps > 0) || !std::isfinite(rmsNormEps)) return bad("rms_norm_eps", "must be > 0");
    if (!(ropeTheta > 0) || !std::isfinite(ropeTheta)) return bad("rope_theta", "must be > 0");
    if (ropeScaling.type != RopeScaling::Type::None && !(ropeScaling.factor > 0))
        return bad("rope_scaling.factor", "must be > 0");
    if (ropeScaling.type == RopeScaling::Type::Llama3 &&
        !(ropeScaling.highFreqFactor > ropeScaling.lowFreqFactor))
        return bad("rope_scaling.high_freq_factor", "must exceed low_freq_factor");
    // Guard against sizes whose products overflow 64-bit arithmetic downstream.
    constexpr int64_t kMaxDim = int64_t(1) << 24;
    if (vocabSize > kMaxDim || hiddenSize > kMaxDim || intermediateSize > kMaxDim ||
        numLayers > 4096 || numHeads > 4096 || headDim > 4096)
        return bad("dimensions", "are implausibly large");
    return {};
}

int64_t ModelConfig::parameterCount() const {
    const int64_t attn = hiddenSize * headDim * (2 * numHeads + 2 * numKvHeads);
    const int64_t mlp = 3 * hiddenSize * intermediateSize;
    const int64_t perLayer = attn + mlp + 2 * hiddenSize;
    const int64_t embed = vocabSize * hiddenSize;
    return embed + (tieWordEmbeddings ? 0 : embed) + numLayers * perLayer + hiddenSize;
}

std::vector<double> ModelConfig::ropeInverseFrequencies() const {
    const int64_t half = headDim / 2;
    std::vector<double> inv(static_cast<size_t>(half));
    for (int64_t i = 0; i < half; ++i)
        inv[size_t(i)] = 1.0 / std::pow(ropeTheta, double(2 * i) / double(headDim));
    if (ropeScaling.type == RopeScaling::Type::Linear) {
        for (double &f : inv) f /= ropeScaling.factor;
    } else if (ropeScaling.type == RopeScaling::Type::Llama3) {
        // Llama 3.1 frequency scaling (HF _compute_llama3_parameters): long wavelengths are
        // divided by `factor`, short ones kept, and the band between interpolated smoothly.
        const double lowWavelen = double(ropeScaling.originalMaxPositions) / ropeScaling.lowFreqFactor;
        const double highWavelen = double(ropeScaling.originalMaxPositions) / ropeScaling.highFreqFactor;
        for (double &f : inv) {
            const double wavelen = 2.0 * std::numbers::pi / f;
            if (wavelen > lowWavelen) {
                f /= ropeScaling.factor;
            } else if (wavelen >= highWavelen) {
                const double smooth = (double(ropeScaling.originalMaxPositions) / wavelen -
                                       ropeScaling.lowFreqFactor) /
                                      (ropeScaling.highFreqFactor - ropeScaling.lowFreqFactor);
                f = (1.0 - smooth) * f / ropeScaling.factor + smooth * f;
            }
        }
    }
    return inv;
}

} // namespace lowbit
