// Element types of stored tensors and the scalar conversions between them.
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

namespace lowbit {

// Types a weight can have in memory once a checkpoint is loaded. Block-quantized file types
// (GGUF Q4_0 etc.) are described in engine/quant/ggml_blocks.h and dequantized on load.
enum class DType : uint8_t { F32, F16, BF16 };

std::string_view dtypeName(DType type);
std::optional<DType> dtypeFromName(std::string_view name); // "F32", "F16", "BF16"
inline constexpr size_t dtypeBytes(DType type) { return type == DType::F32 ? 4 : 2; }

inline float bf16ToFloat(uint16_t h) {
    uint32_t bits = uint32_t(h) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

// Round to nearest even; NaN stays NaN (quiet).
inline uint16_t floatToBf16(float f) {
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    if ((bits & 0x7fffffffu) > 0x7f800000u)
        return uint16_t((bits >> 16) | 0x40u);
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return uint16_t(bits >> 16);
}

float f16ToFloat(uint16_t h);
uint16_t floatToF16(float f); // round to nearest even, overflow to inf

// Convert n stored elements of `type` at `src` to float (vectorized where the CPU allows).
void convertToFloat(DType type, const void *src, float *dst, size_t n);

} // namespace lowbit
