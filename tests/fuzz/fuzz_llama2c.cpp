// libFuzzer target: arbitrary bytes as a llama2.c checkpoint. An accepted model has every weight
// read end to end (ASan reports a view that escapes the input).
#include "io/llama2c.h"

#include <cstddef>
#include <cstdint>

namespace {

void touch(const lowbit::Tensor &tensor, volatile float &sink) {
    for (float v : lowbit::tensorToFloats(tensor))
        sink = sink + v;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const std::span<const std::byte> bytes(reinterpret_cast<const std::byte *>(data), size);
    auto parsed = lowbit::parseLlama2c(bytes, "fuzz.bin");
    if (!parsed.ok())
        return 0;
    volatile float sink = 0.0f;
    const lowbit::ModelWeights &w = parsed->weights;
    touch(w.tokenEmbedding, sink);
    touch(w.finalNorm, sink);
    touch(w.output, sink);
    for (const lowbit::LayerWeights &l : w.layers)
        for (const lowbit::Tensor *t :
             {&l.attnNorm, &l.wq, &l.wk, &l.wv, &l.wo, &l.ffnNorm, &l.wGate, &l.wUp, &l.wDown})
            touch(*t, sink);
    return 0;
}
