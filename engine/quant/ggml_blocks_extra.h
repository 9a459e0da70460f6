// Decoders for GGUF block types beyond engine/quant/ggml_blocks.h's list: Q2_K, Q3_K and IQ4_NL
// (layouts from ggml-common.h / ggml-quants.c dequantize_row_*). Kept apart from ggml_blocks.cpp
// so the GGUF loader (engine/io/gguf_checkpoint.cpp) consults them for types that table cannot
// decode. Pure, thread-safe, never read outside `src`'s ggmlBytesFor(type, n) bytes.
//   Q2_K   {u8 scales[16]; u8 qs[64]; f16 d, dmin}     256 values, 16 sub-blocks of 16:
//          sub-block s: scale d * (scales[s] & 15), min dmin * (scales[s] >> 4);
//          x = scale * q2 - min, q2 = 2-bit field of qs (see the .cpp for the order)
//   Q3_K   {u8 hmask[32]; u8 qs[64]; u8 scales[12]; f16 d}  256 values, 16 sub-blocks of 16:
//          x = d * (scale6 - 32) * (q2 - (hmask bit ? 0 : 4)), 6-bit scales packed in 12 bytes
//   IQ4_NL {f16 d; u8 qs[16]}  32 values: x = d * kIq4nlValues[nibble] (byte j: low nibble
//          element j, high nibble element j + 16)
#pragma once

#include "core/result.h"
#include "quant/ggml_blocks.h"

#include <array>
#include <cstdint>

namespace lowbit {

inline constexpr std::array<int8_t, 16> kIq4nlValues = {-127, -104, -83, -65, -49, -35, -22, -10,
                                                        1,    13,   25,  38,  53,  69,  89,  113};

bool canDequantizeExtra(GgmlType type);
// As dequantizeRow (ggml_blocks.h) for Q2_K, Q3_K and IQ4_NL; Unsupported for other types.
Status dequantizeRowExtra(GgmlType type, const std::byte *src, float *dst, int64_t n);

} // namespace lowbit
