// CUDA emulator (tests/cuda_emu): IEEE half with the bit casts and round-to-nearest-even
// conversions the kernels use.
#pragma once
#include <cstdint>
#include <cstring>

struct __half { uint16_t __x; };

inline __half __ushort_as_half(unsigned short bits) { return __half{bits}; }
inline unsigned short __half_as_ushort(__half h) { return h.__x; }

inline float __half2float(__half h) {
    const uint32_t sign = uint32_t(h.__x & 0x8000u) << 16;
    uint32_t exp = (h.__x >> 10) & 0x1fu, man = h.__x & 0x3ffu, bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13);
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    } else if (man == 0) {
        bits = sign;
    } else { // subnormal: normalise
        int e = -1;
        do { ++e; man <<= 1; } while ((man & 0x400u) == 0);
        bits = sign | (uint32_t(112 - e) << 23) | ((man & 0x3ffu) << 13);
    }
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

inline __half __float2half_rn(float f) {
    uint32_t x;
    std::memcpy(&x, &f, 4);
    const uint16_t sign = uint16_t((x >> 16) & 0x8000u);
    const uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return __half{uint16_t(sign | 0x7e00u)}; // NaN
    if (ax >= 0x477ff000u) return __half{uint16_t(sign | 0x7c00u)}; // rounds to inf
    if (ax < 0x38800000u) { // subnormal half (or zero): value / 2^-24, rounded to even
        float a;
        std::memcpy(&a, &ax, 4);
        const float scaled = a * 16777216.0f; // exact
        uint32_t q = uint32_t(scaled);
        const float rest = scaled - float(q);
        if (rest > 0.5f || (rest == 0.5f && (q & 1u))) ++q;
        return __half{uint16_t(sign | q)};
    }
    uint32_t r = ax + 0x0fffu + ((ax >> 13) & 1u); // round mantissa to 10 bits, ties to even
    r -= 112u << 23;
    return __half{uint16_t(sign | (r >> 13))};
}
inline __half __float2half(float f) { return __float2half_rn(f); }
