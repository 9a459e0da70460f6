// libFuzzer target: arbitrary bytes as a whole safetensors file. Every tensor the parser accepts is
// read end to end, so an offset or length check that lets a view escape the input shows up under
// ASan as an out-of-bounds read.
#include "io/safetensors.h"

#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const std::span<const std::byte> bytes(reinterpret_cast<const std::byte *>(data), size);
    auto parsed = lowbit::parseSafetensors(bytes, "fuzz.safetensors");
    if (!parsed.ok())
        return 0;
    volatile float sink = 0.0f;
    for (const auto &[name, tensor] : parsed->tensors) {
        if (tensor.numel() == 0)
            continue; // convertToFloat(n = 0) would memcpy into a null vector buffer
        const std::vector<float> values = lowbit::tensorToFloats(tensor);
        for (float v : values)
            sink = sink + v;
    }
    return 0;
}
