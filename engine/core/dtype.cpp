#include "core/dtype.h"

#include "core/result.h"

#include <cmath>

#if defined(__F16C__)
#include <immintrin.h>
#endif

namespace lowbit {

const char *errorCodeName(ErrorCode code) {
    switch (code) {
    case ErrorCode::InvalidArgument: return "invalid argument";
    case ErrorCode::NotFound: return "not found";
    case ErrorCode::Io: return "i/o";
    case ErrorCode::Format: return "format";
    case ErrorCode::Unsupported: return "unsupported";
    case ErrorCode::OutOfMemory: return "out of memory";
    case ErrorCode::Cancelled: return "cancelled";
    case ErrorCode::Internal: return "internal";
    }
    return "error";
}

std::string_view dtypeName(DType type) {
    switch (type) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    }
    return "?";
}

std::optional<DType> dtypeFromName(std::string_view name) {
    if (name == "F32") return DType::F32;
    if (name == "F16") return DType::F16;
    if (name == "BF16") return DType::BF16;
    return std::nullopt;
}

float f16ToFloat(uint16_t h) {
    const uint32_t sign = uint32_t(h & 0x8000u) << 16;
    const uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else { // subnormal: normalize
            int e = -1;
            do {
                ++e;
                mant <<= 1;
            } while ((mant & 0x400u) == 0);
            bits = sign | uint32_t(127 - 15 - e) << 23 | (mant & 0x3ffu) << 13;
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | mant << 13;
    } else {
        bits = sign | (exp + 127 - 15) << 23 | mant << 13;
    }
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

uint16_t floatToF16(float f) {
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    const uint16_t sign = uint16_t((bits >> 16) & 0x8000u);
    const uint32_t absBits = bits & 0x7fffffffu;
    if (absBits > 0x7f800000u)
        return sign | 0x7e00u;
    if (absBits >= 0x477ff000u) // rounds to >= 65520: inf
        return sign | 0x7c00u;
    if (absBits < 0x38800000u) { // below the smallest normal half: subnormal half or zero
        float magnitude;
        std::memcpy(&magnitude, &absBits, 4);
        // Exact scaling by 2^24 puts the half's subnormal unit at 1; rint rounds to even.
        return sign | uint16_t(std::nearbyint(magnitude * 16777216.0f));
    }
    uint32_t v = absBits - (112u << 23); // rebias exponent 127 -> 15
    v += 0xfffu + ((v >> 13) & 1u);
    return sign | uint16_t(v >> 13);
}

void convertToFloat(DType type, const void *src, float *dst, size_t n) {
    if (n == 0) // empty tensors may come with null pointers
        return;
    switch (type) {
    case DType::F32:
        std::memcpy(dst, src, n * 4);
        return;
    case DType::BF16: {
        const auto *s = static_cast<const uint16_t *>(src);
        for (size_t i = 0; i < n; ++i)
            dst[i] = bf16ToFloat(s[i]);
        return;
    }
    case DType::F16: {
        const auto *s = static_cast<const uint16_t *>(src);
        size_t i = 0;
#if defined(__F16C__)
        for (; i + 8 <= n; i += 8) {
            __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i *>(s + i));
            _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
        }
#endif
        for (; i < n; ++i)
            dst[i] = f16ToFloat(s[i]);
        return;
    }
    }
}

} // namespace lowbit
