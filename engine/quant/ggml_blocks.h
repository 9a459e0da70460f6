// GGML tensor element types as GGUF files store them (ids are ggml's `enum ggml_type`), their
// block geometry, and the block codecs lowbit needs: dequantization of the common types to float
// and a Q8_0 quantizer for the GGUF writer. All functions are pure, thread-safe and never read
// outside the span they are given.
#pragma once

#include "core/result.h"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace lowbit {

// Ids as in ggml.h; gaps are ids ggml retired (4, 5, 31-33, 36-38) and are rejected as unknown.
enum class GgmlType : uint32_t {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q8_1 = 9,
    Q2_K = 10,
    Q3_K = 11,
    Q4_K = 12,
    Q5_K = 13,
    Q6_K = 14,
    Q8_K = 15,
    IQ2_XXS = 16,
    IQ2_XS = 17,
    IQ3_XXS = 18,
    IQ1_S = 19,
    IQ4_NL = 20,
    IQ3_S = 21,
    IQ2_S = 22,
    IQ4_XS = 23,
    I8 = 24,
    I16 = 25,
    I32 = 26,
    I64 = 27,
    F64 = 28,
    IQ1_M = 29,
    BF16 = 30,
    TQ1_0 = 34,
    TQ2_0 = 35,
    MXFP4 = 39,
};

struct GgmlTypeInfo {
    GgmlType type;
    std::string_view name; // "Q4_K", as llama.cpp prints it
    int64_t blockSize;     // elements per block (1 for plain types)
    int64_t bytesPerBlock; // bytes per block
    bool canDequantize;    // dequantizeRow() handles it
};

// Geometry of a type id read from a file; nullopt for ids ggml never had or retired.
std::optional<GgmlTypeInfo> ggmlTypeInfo(uint32_t id);
const GgmlTypeInfo &ggmlTypeInfo(GgmlType type);
inline std::string_view ggmlTypeName(GgmlType type) {
    return ggmlTypeInfo(type).name;
}
std::optional<GgmlType> ggmlTypeFromName(std::string_view name); // exact, upper case: "Q8_0"

// Bytes that `elements` values of `type` occupy; nullopt when `elements` is not a whole number of
// blocks or the byte count overflows 64 bits.
std::optional<uint64_t> ggmlBytesFor(GgmlType type, uint64_t elements);

// Decodes `n` values (a whole number of blocks) stored as `type` at `src` into `dst`.
// `src` must hold ggmlBytesFor(type, n) bytes; no alignment is required.
// Unsupported for types without a decoder, InvalidArgument when n is not a multiple of the block.
Status dequantizeRow(GgmlType type, const std::byte *src, float *dst, int64_t n);

// llama.cpp's reference Q8_0 quantizer (bit-identical blocks): per block of 32, d = amax/127
// (stored as F16), q = round-half-away(x / d) with 1/d computed in float. `n` must be a
// multiple of 32; `dst` receives n/32 * 34 bytes.
void quantizeRowQ8_0(const float *src, std::byte *dst, int64_t n);

} // namespace lowbit
