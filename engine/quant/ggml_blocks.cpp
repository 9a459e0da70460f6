#include "quant/ggml_blocks.h"

#include "core/dtype.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>

// Block layouts follow ggml's ggml-common.h (little-endian, packed, no padding):
//   Q4_0 {f16 d; u8 qs[16]}           x = (nibble - 8) * d
//   Q4_1 {f16 d, m; u8 qs[16]}        x = nibble * d + m
//   Q5_0 {f16 d; u8 qh[4]; u8 qs[16]} x = (nibble | bit4 << 4) - 16) * d
//   Q5_1 {f16 d, m; u8 qh[4]; u8 qs[16]}
//   Q8_0 {f16 d; i8 qs[32]}           x = q * d
//   Q4_K {f16 d, dmin; u8 scales[12]; u8 qs[128]}            256 values, 8 sub-blocks of 32
//   Q5_K {f16 d, dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]}
//   Q6_K {u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d}       256 values, 16 sub-blocks of 16
// In the 32-element types, byte j's low nibble is element j and its high nibble element j + 16.

namespace lowbit {

namespace {

constexpr std::array<GgmlTypeInfo, 32> kTypes = {{
    {GgmlType::F32, "F32", 1, 4, true},
    {GgmlType::F16, "F16", 1, 2, true},
    {GgmlType::Q4_0, "Q4_0", 32, 18, true},
    {GgmlType::Q4_1, "Q4_1", 32, 20, true},
    {GgmlType::Q5_0, "Q5_0", 32, 22, true},
    {GgmlType::Q5_1, "Q5_1", 32, 24, true},
    {GgmlType::Q8_0, "Q8_0", 32, 34, true},
    {GgmlType::Q8_1, "Q8_1", 32, 36, false},
    {GgmlType::Q2_K, "Q2_K", 256, 84, false},
    {GgmlType::Q3_K, "Q3_K", 256, 110, false},
    {GgmlType::Q4_K, "Q4_K", 256, 144, true},
    {GgmlType::Q5_K, "Q5_K", 256, 176, true},
    {GgmlType::Q6_K, "Q6_K", 256, 210, true},
    {GgmlType::Q8_K, "Q8_K", 256, 292, false},
    {GgmlType::IQ2_XXS, "IQ2_XXS", 256, 66, false},
    {GgmlType::IQ2_XS, "IQ2_XS", 256, 74, false},
    {GgmlType::IQ3_XXS, "IQ3_XXS", 256, 98, false},
    {GgmlType::IQ1_S, "IQ1_S", 256, 50, false},
    {GgmlType::IQ4_NL, "IQ4_NL", 32, 18, false},
    {GgmlType::IQ3_S, "IQ3_S", 256, 110, false},
    {GgmlType::IQ2_S, "IQ2_S", 256, 82, false},
    {GgmlType::IQ4_XS, "IQ4_XS", 256, 136, false},
    {GgmlType::I8, "I8", 1, 1, false},
    {GgmlType::I16, "I16", 1, 2, false},
    {GgmlType::I32, "I32", 1, 4, false},
    {GgmlType::I64, "I64", 1, 8, false},
    {GgmlType::F64, "F64", 1, 8, false},
    {GgmlType::IQ1_M, "IQ1_M", 256, 56, false},
    {GgmlType::BF16, "BF16", 1, 2, true},
    {GgmlType::TQ1_0, "TQ1_0", 256, 54, false},
    {GgmlType::TQ2_0, "TQ2_0", 256, 66, false},
    {GgmlType::MXFP4, "MXFP4", 32, 17, false},
}};

uint16_t loadU16(const std::byte *p) {
    uint16_t v;
    std::memcpy(&v, p, 2);
    return v;
}

float loadF16(const std::byte *p) {
    return f16ToFloat(loadU16(p));
}

uint8_t u8(const std::byte *p, size_t i) {
    return uint8_t(p[i]);
}

// Type-0 blocks (no min) compute (q - offset) * d and type-1 blocks q * d + m, as ggml does, so
// that the floats agree with llama.cpp's to the last bit.
void dequantQ4(const std::byte *b, float *y, bool hasMin) {
    const float d = loadF16(b);
    const float m = hasMin ? loadF16(b + 2) : 0.0f;
    const int offset = hasMin ? 0 : 8;
    const std::byte *qs = b + (hasMin ? 4 : 2);
    for (int j = 0; j < 16; ++j) {
        y[j] = float((u8(qs, j) & 0x0f) - offset) * d + m;
        y[j + 16] = float((u8(qs, j) >> 4) - offset) * d + m;
    }
}

void dequantQ5(const std::byte *b, float *y, bool hasMin) {
    const float d = loadF16(b);
    const float m = hasMin ? loadF16(b + 2) : 0.0f;
    const int offset = hasMin ? 0 : 16;
    const std::byte *qhp = b + (hasMin ? 4 : 2);
    uint32_t qh;
    std::memcpy(&qh, qhp, 4);
    const std::byte *qs = qhp + 4;
    for (int j = 0; j < 16; ++j) {
        const int lo = (u8(qs, j) & 0x0f) | int(((qh >> j) & 1u) << 4);
        const int hi = (u8(qs, j) >> 4) | int(((qh >> (j + 16)) & 1u) << 4);
        y[j] = float(lo - offset) * d + m;
        y[j + 16] = float(hi - offset) * d + m;
    }
}

void dequantQ8_0(const std::byte *b, float *y) {
    const float d = loadF16(b);
    for (int j = 0; j < 32; ++j)
        y[j] = float(int8_t(u8(b + 2, j))) * d;
}

// The 12 scale bytes of Q4_K/Q5_K hold eight 6-bit scales and eight 6-bit mins: sub-blocks 0-3
// keep theirs in the low 6 bits of bytes 0-3 (scales) and 4-7 (mins); sub-blocks 4-7 put the
// low 4 bits in the nibbles of bytes 8-11 and the top 2 bits in the spare high bits of 0-7.
void scaleMinK4(int j, const std::byte *q, int &scale, int &min) {
    if (j < 4) {
        scale = u8(q, j) & 63;
        min = u8(q, j + 4) & 63;
    } else {
        scale = (u8(q, j + 4) & 0x0f) | ((u8(q, j - 4) >> 6) << 4);
        min = (u8(q, j + 4) >> 4) | ((u8(q, j) >> 6) << 4);
    }
}

// Q4_K and Q5_K: each 64-value chunk is two sub-blocks sharing 32 bytes of nibbles (low nibbles
// first sub-block, high nibbles second); Q5_K adds bit (2*chunk + half) of qh[l] as bit 4.
void dequantK45(const std::byte *b, float *y, bool fiveBit) {
    const float d = loadF16(b), dmin = loadF16(b + 2);
    const std::byte *scales = b + 4;
    const std::byte *qh = b + 16;
    const std::byte *qs = b + (fiveBit ? 48 : 16);
    for (int chunk = 0; chunk < 4; ++chunk) {
        for (int half = 0; half < 2; ++half) {
            int sc, mn;
            scaleMinK4(2 * chunk + half, scales, sc, mn);
            const float dl = d * float(sc), ml = dmin * float(mn);
            for (int l = 0; l < 32; ++l) {
                int q = half ? (u8(qs, l) >> 4) : (u8(qs, l) & 0x0f);
                if (fiveBit && ((u8(qh, l) >> (2 * chunk + half)) & 1))
                    q += 16;
                y[64 * chunk + 32 * half + l] = dl * float(q) - ml;
            }
        }
        qs += 32;
    }
}

// Q6_K: each 128-value half uses 64 bytes of ql and 32 of qh; value 32*k + l (k = 0..3) takes
// its low nibble from ql[l + 32*(k&1)] (low nibble for k < 2, high for k >= 2) and its top two
// bits from qh[l] >> 2k; sub-block scale index = 8*half + 2*k + l/16.
void dequantQ6_K(const std::byte *b, float *y) {
    const std::byte *ql = b, *qh = b + 128, *scales = b + 192;
    const float d = loadF16(b + 208);
    for (int half = 0; half < 2; ++half) {
        for (int l = 0; l < 32; ++l) {
            for (int k = 0; k < 4; ++k) {
                const uint8_t lowByte = u8(ql, 64 * half + l + 32 * (k & 1));
                const int low = k < 2 ? (lowByte & 0x0f) : (lowByte >> 4);
                const int high = (u8(qh, 32 * half + l) >> (2 * k)) & 3;
                const int q = (low | (high << 4)) - 32;
                const int8_t sc = int8_t(u8(scales, 8 * half + 2 * k + l / 16));
                y[128 * half + 32 * k + l] = d * float(sc) * float(q);
            }
        }
    }
}

} // namespace

std::optional<GgmlTypeInfo> ggmlTypeInfo(uint32_t id) {
    for (const GgmlTypeInfo &info : kTypes)
        if (uint32_t(info.type) == id)
            return info;
    return std::nullopt;
}

const GgmlTypeInfo &ggmlTypeInfo(GgmlType type) {
    for (const GgmlTypeInfo &info : kTypes)
        if (info.type == type)
            return info;
    return kTypes[0]; // unreachable for enum values
}

std::optional<GgmlType> ggmlTypeFromName(std::string_view name) {
    for (const GgmlTypeInfo &info : kTypes)
        if (info.name == name)
            return info.type;
    return std::nullopt;
}

std::optional<uint64_t> ggmlBytesFor(GgmlType type, uint64_t elements) {
    const GgmlTypeInfo &info = ggmlTypeInfo(type);
    const uint64_t blocks = elements / uint64_t(info.blockSize);
    if (blocks * uint64_t(info.blockSize) != elements)
        return std::nullopt;
    if (blocks > UINT64_MAX / uint64_t(info.bytesPerBlock))
        return std::nullopt;
    return blocks * uint64_t(info.bytesPerBlock);
}

Status dequantizeRow(GgmlType type, const std::byte *src, float *dst, int64_t n) {
    const GgmlTypeInfo &info = ggmlTypeInfo(type);
    if (!info.canDequantize)
        return makeError(ErrorCode::Unsupported,
                         "no decoder for GGML type " + std::string(info.name));
    if (n < 0 || n % info.blockSize != 0)
        return makeError(ErrorCode::InvalidArgument, std::to_string(n) +
                                                         " values are not a whole number of " +
                                                         std::string(info.name) + " blocks");
    const int64_t blocks = n / info.blockSize;
    const std::byte *b = src;
    switch (type) {
    case GgmlType::F32: std::memcpy(dst, src, size_t(n) * 4); return {};
    case GgmlType::F16: convertToFloat(DType::F16, src, dst, size_t(n)); return {};
    case GgmlType::BF16: convertToFloat(DType::BF16, src, dst, size_t(n)); return {};
    default: break;
    }
    for (int64_t i = 0; i < blocks; ++i, b += info.bytesPerBlock, dst += info.blockSize) {
        switch (type) {
        case GgmlType::Q4_0: dequantQ4(b, dst, false); break;
        case GgmlType::Q4_1: dequantQ4(b, dst, true); break;
        case GgmlType::Q5_0: dequantQ5(b, dst, false); break;
        case GgmlType::Q5_1: dequantQ5(b, dst, true); break;
        case GgmlType::Q8_0: dequantQ8_0(b, dst); break;
        case GgmlType::Q4_K: dequantK45(b, dst, false); break;
        case GgmlType::Q5_K: dequantK45(b, dst, true); break;
        case GgmlType::Q6_K: dequantQ6_K(b, dst); break;
        default: return makeError(ErrorCode::Internal, "decoder table out of sync");
        }
    }
    return {};
}

void quantizeRowQ8_0(const float *src, std::byte *dst, int64_t n) {
    for (int64_t i = 0; i + 32 <= n; i += 32, src += 32, dst += 34) {
        float amax = 0.0f;
        for (int j = 0; j < 32; ++j)
            amax = std::max(amax, std::fabs(src[j]));
        // As ggml's quantize_row_q8_0_ref: scale by the reciprocal of the unrounded d, then store
        // d rounded to F16 (so files we write match llama-quantize's byte for byte).
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        const uint16_t dh = floatToF16(d);
        std::memcpy(dst, &dh, 2);
        for (int j = 0; j < 32; ++j) {
            float q = std::round(src[j] * id);
            if (std::isnan(q)) // a NaN/inf weight: store 0 rather than cast NaN (undefined)
                q = 0.0f;
            dst[2 + j] = std::byte(uint8_t(int8_t(std::clamp(q, -127.0f, 127.0f))));
        }
    }
}

} // namespace lowbit
