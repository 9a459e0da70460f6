// Q2_K / Q3_K / IQ4_NL decoders, following ggml-quants.c's reference dequantize_row_* loops:
// within a 256-value super-block, two halves of 128 values each use 32 bytes of qs; the 2-bit
// field at shift 2j of byte l (l < 16) / l + 16 is element 32j + l / 32j + 16 + l of the half.
#include "quant/ggml_blocks_extra.h"

#include "core/dtype.h"

#include <cstring>

namespace lowbit {

namespace {

float halfAt(const std::byte *p) {
    uint16_t h;
    std::memcpy(&h, p, 2);
    return f16ToFloat(h);
}

void dequantQ2_K(const std::byte *b, float *y) {
    const uint8_t *scales = reinterpret_cast<const uint8_t *>(b);
    const uint8_t *q = scales + 16;
    const float d = halfAt(b + 80), dmin = halfAt(b + 82);
    int is = 0;
    for (int half = 0; half < 2; ++half, q += 32)
        for (int shift = 0; shift < 8; shift += 2)
            for (int part = 0; part < 2; ++part) {
                const uint8_t sc = scales[is++];
                const float dl = d * float(sc & 15), ml = dmin * float(sc >> 4);
                for (int l = 0; l < 16; ++l)
                    *y++ = dl * float((q[l + 16 * part] >> shift) & 3) - ml;
            }
}

// Sub-block s's 6-bit scale: low 4 bits in byte s (s < 8) or the high nibble of byte s - 8,
// top 2 bits in byte 8 + s % 4 at bit 2 * (s / 4).
int q3Scale(const uint8_t *packed, int s) {
    const int low = s < 8 ? packed[s] & 15 : packed[s - 8] >> 4;
    const int high = (packed[8 + s % 4] >> (2 * (s / 4))) & 3;
    return (low | (high << 4)) - 32;
}

void dequantQ3_K(const std::byte *b, float *y) {
    const uint8_t *hmask = reinterpret_cast<const uint8_t *>(b);
    const uint8_t *q = hmask + 32;
    const uint8_t *scales = hmask + 96;
    const float d = halfAt(b + 108);
    int is = 0;
    uint8_t m = 1;
    for (int half = 0; half < 2; ++half, q += 32)
        for (int shift = 0; shift < 8; shift += 2, m = uint8_t(m << 1))
            for (int part = 0; part < 2; ++part) {
                const float dl = d * float(q3Scale(scales, is++));
                for (int l = 0; l < 16; ++l) {
                    const int i = l + 16 * part;
                    const int v = ((q[i] >> shift) & 3) - ((hmask[i] & m) ? 0 : 4);
                    *y++ = dl * float(v);
                }
            }
}

void dequantIq4nl(const std::byte *b, float *y) {
    const float d = halfAt(b);
    const uint8_t *qs = reinterpret_cast<const uint8_t *>(b + 2);
    for (int j = 0; j < 16; ++j) {
        y[j] = d * float(kIq4nlValues[qs[j] & 15]);
        y[j + 16] = d * float(kIq4nlValues[qs[j] >> 4]);
    }
}

} // namespace

bool canDequantizeExtra(GgmlType type) {
    return type == GgmlType::Q2_K || type == GgmlType::Q3_K || type == GgmlType::IQ4_NL;
}

Status dequantizeRowExtra(GgmlType type, const std::byte *src, float *dst, int64_t n) {
    if (!canDequantizeExtra(type))
        return makeError(ErrorCode::Unsupported,
                         "no decoder for " + std::string(ggmlTypeName(type)));
    const GgmlTypeInfo &info = ggmlTypeInfo(type);
    if (n < 0 || n % info.blockSize != 0)
        return makeError(ErrorCode::InvalidArgument, std::to_string(n) + " values are not whole " +
                                                         std::string(info.name) + " blocks");
    for (int64_t i = 0; i < n / info.blockSize; ++i) {
        const std::byte *b = src + i * info.bytesPerBlock;
        float *y = dst + i * info.blockSize;
        switch (type) {
        case GgmlType::Q2_K: dequantQ2_K(b, y); break;
        case GgmlType::Q3_K: dequantQ3_K(b, y); break;
        default: dequantIq4nl(b, y); break;
        }
    }
    return {};
}

} // namespace lowbit
