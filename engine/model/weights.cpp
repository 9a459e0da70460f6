#include "model/weights.h"

#include <cstring>

namespace lowbit {

namespace {

Status checkTensor(const Tensor &t, const char *role, std::vector<int64_t> expected,
                   const std::string &source) {
    auto shapeText = [](const std::vector<int64_t> &s) {
        std::string out = "[";
        for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
        return out + "]";
    };
    if (t.empty())
        return makeError(ErrorCode::NotFound, source + ": missing tensor for " + role);
    // A {n} vector may be stored as {1, n} by some writers; compare element layouts.
    std::vector<int64_t> actual;
    for (int64_t d : t.shape)
        if (d != 1 || t.shape.size() == 1) actual.push_back(d);
    if (actual != expected && t.shape != expected)
        return makeError(ErrorCode::Format, source + ": tensor '" + t.name + "' (" + role +
                                                ") has shape " + shapeText(t.shape) +
                                                ", expected " + shapeText(expected));
    return {};
}

} // namespace

Status ModelWeights::validate(const ModelConfig &c, const std::string &source) const {
    const int64_t qDim = c.numHeads * c.headDim, kvDim = c.numKvHeads * c.headDim;
    LOWBIT_CHECK(checkTensor(tokenEmbedding, "token embedding", {c.vocabSize, c.hiddenSize}, source));
    LOWBIT_CHECK(checkTensor(finalNorm, "final norm", {c.hiddenSize}, source));
    LOWBIT_CHECK(checkTensor(output, "output head", {c.vocabSize, c.hiddenSize}, source));
    if (int64_t(layers.size()) != c.numLayers)
        return makeError(ErrorCode::Format, source + ": " + std::to_string(layers.size()) +
                                                " layers found, config says " +
                                                std::to_string(c.numLayers));
    for (const LayerWeights &l : layers) {
        LOWBIT_CHECK(checkTensor(l.attnNorm, "attention norm", {c.hiddenSize}, source));
        LOWBIT_CHECK(checkTensor(l.wq, "q projection", {qDim, c.hiddenSize}, source));
        LOWBIT_CHECK(checkTensor(l.wk, "k projection", {kvDim, c.hiddenSize}, source));
        LOWBIT_CHECK(checkTensor(l.wv, "v projection", {kvDim, c.hiddenSize}, source));
        LOWBIT_CHECK(checkTensor(l.wo, "o projection", {c.hiddenSize, qDim}, source));
        LOWBIT_CHECK(checkTensor(l.ffnNorm, "ffn norm", {c.hiddenSize}, source));
        LOWBIT_CHECK(checkTensor(l.wGate, "gate projection", {c.intermediateSize, c.hiddenSize}, source));
        LOWBIT_CHECK(checkTensor(l.wUp, "up projection", {c.intermediateSize, c.hiddenSize}, source));
        LOWBIT_CHECK(checkTensor(l.wDown, "down projection", {c.hiddenSize, c.intermediateSize}, source));
    }
    return {};
}

namespace {

Tensor moveRopeRows(const Tensor &weight, int64_t numHeads, int64_t headDim, bool toRotateHalf) {
    const size_t rowBytes = size_t(weight.cols()) * dtypeBytes(weight.dtype);
    std::vector<std::byte> out(weight.bytes());
    const int64_t half = headDim / 2;
    for (int64_t h = 0; h < numHeads; ++h)
        for (int64_t s = 0; s < 2; ++s)
            for (int64_t j = 0; j < half; ++j) {
                const int64_t rotateHalf = h * headDim + s * half + j;
                const int64_t interleaved = h * headDim + 2 * j + s;
                const int64_t dst = toRotateHalf ? rotateHalf : interleaved;
                const int64_t src = toRotateHalf ? interleaved : rotateHalf;
                std::memcpy(out.data() + size_t(dst) * rowBytes, weight.row(src), rowBytes);
            }
    return Tensor::fromBytes(weight.name, weight.dtype, weight.shape, std::move(out));
}

} // namespace

Tensor permuteRopeRows(const Tensor &weight, int64_t numHeads, int64_t headDim) {
    return moveRopeRows(weight, numHeads, headDim, true);
}

Tensor permuteRopeRowsInverse(const Tensor &weight, int64_t numHeads, int64_t headDim) {
    return moveRopeRows(weight, numHeads, headDim, false);
}

} // namespace lowbit
