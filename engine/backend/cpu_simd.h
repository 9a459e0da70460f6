// Small float32 vector kernels for the CPU backend: AVX2/FMA when compiled for it, scalar otherwise.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define LOWBIT_CPU_AVX2 1
#endif

namespace lowbit::cpu {

inline float dot(const float *a, const float *b, int64_t n) {
    int64_t i = 0;
    float sum = 0.0f;
#if LOWBIT_CPU_AVX2
    // Four independent accumulators hide the FMA latency.
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    __m256 acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps();
    for (; i + 32 <= n; i += 32) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
        acc2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), acc2);
        acc3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), acc3);
    }
    for (; i + 8 <= n; i += 8)
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    __m256 acc = _mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3));
    __m128 lo = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    lo = _mm_hadd_ps(lo, lo);
    lo = _mm_hadd_ps(lo, lo);
    sum = _mm_cvtss_f32(lo);
#endif
    for (; i < n; ++i)
        sum += a[i] * b[i];
    return sum;
}

// y = y * scale + alpha * x
inline void scaleAxpy(float *y, float scale, float alpha, const float *x, int64_t n) {
    int64_t i = 0;
#if LOWBIT_CPU_AVX2
    const __m256 s = _mm256_set1_ps(scale), a = _mm256_set1_ps(alpha);
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(a, _mm256_loadu_ps(x + i),
                                                _mm256_mul_ps(s, _mm256_loadu_ps(y + i))));
#endif
    for (; i < n; ++i)
        y[i] = y[i] * scale + alpha * x[i];
}

// y += alpha * x
inline void axpy(float *y, float alpha, const float *x, int64_t n) {
    int64_t i = 0;
#if LOWBIT_CPU_AVX2
    const __m256 a = _mm256_set1_ps(alpha);
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(a, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
#endif
    for (; i < n; ++i)
        y[i] += alpha * x[i];
}

#if LOWBIT_CPU_AVX2
// exp(x) for x <= 0, 8 lanes: x = n*ln2 + r with |r| <= ln2/2, exp(r) by its degree-7 Taylor
// polynomial (truncation error < 6e-9 relative), times 2^n built in the exponent bits.
inline __m256 expNonPositive(__m256 x) {
    x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f)); // below this exp underflows to ~0 anyway
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x); // ln2 split in two
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428606765330187045e-06f), r);
    __m256 p = _mm256_set1_ps(1.0f / 5040);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    const __m256i scale = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(scale));
}
#endif

// x[i] = exp(x[i] - shift) for x[i] <= shift; returns the sum of the results.
inline float expShiftedSum(float *x, int64_t n, float shift) {
    int64_t i = 0;
    float sum = 0.0f;
#if LOWBIT_CPU_AVX2
    const __m256 s = _mm256_set1_ps(shift);
    __m256 acc = _mm256_setzero_ps();
    for (; i + 8 <= n; i += 8) {
        const __m256 e = expNonPositive(_mm256_sub_ps(_mm256_loadu_ps(x + i), s));
        _mm256_storeu_ps(x + i, e);
        acc = _mm256_add_ps(acc, e);
    }
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, acc);
    for (float v : lanes)
        sum += v;
#endif
    for (; i < n; ++i)
        sum += (x[i] = std::exp(x[i] - shift));
    return sum;
}

// sum_i exp(x[i] - shift) for x[i] <= shift, accumulated in float64 (long rows such as a
// 128k-entry logit row stay exact to ~1e-12 relative).
inline double sumExpShifted(const float *x, int64_t n, float shift) {
    int64_t i = 0;
    double sum = 0.0;
#if LOWBIT_CPU_AVX2
    const __m256 s = _mm256_set1_ps(shift);
    __m256d acc0 = _mm256_setzero_pd(), acc1 = _mm256_setzero_pd();
    for (; i + 8 <= n; i += 8) {
        const __m256 e = expNonPositive(_mm256_sub_ps(_mm256_loadu_ps(x + i), s));
        acc0 = _mm256_add_pd(acc0, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
        acc1 = _mm256_add_pd(acc1, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
    }
    alignas(32) double lanes[4];
    _mm256_store_pd(lanes, _mm256_add_pd(acc0, acc1));
    sum = lanes[0] + lanes[1] + lanes[2] + lanes[3];
#endif
    for (; i < n; ++i)
        sum += double(std::exp(x[i] - shift));
    return sum;
}

// out[i] = silu(gate[i]) * up[i], silu(g) = g * sigmoid(g); out may alias gate.
inline void siluMultiply(const float *gate, const float *up, float *out, int64_t n) {
    int64_t i = 0;
#if LOWBIT_CPU_AVX2
    // sigmoid(g) from e = exp(-|g|) <= 1: 1/(1+e) for g >= 0, e/(1+e) for g < 0 (no overflow).
    const __m256 signMask = _mm256_set1_ps(-0.0f), one = _mm256_set1_ps(1.0f);
    for (; i + 8 <= n; i += 8) {
        const __m256 g = _mm256_loadu_ps(gate + i);
        const __m256 e = expNonPositive(_mm256_or_ps(g, signMask)); // exp(-|g|)
        const __m256 numerator = _mm256_blendv_ps(one, e, g);        // sign bit of g selects
        const __m256 sig = _mm256_div_ps(numerator, _mm256_add_ps(one, e));
        _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_mul_ps(g, sig), _mm256_loadu_ps(up + i)));
    }
#endif
    for (; i < n; ++i)
        out[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

inline float maxValue(const float *x, int64_t n, float init) {
    int64_t i = 0;
#if LOWBIT_CPU_AVX2
    if (n >= 8) {
        __m256 m = _mm256_loadu_ps(x);
        for (i = 8; i + 8 <= n; i += 8)
            m = _mm256_max_ps(m, _mm256_loadu_ps(x + i));
        alignas(32) float lanes[8];
        _mm256_store_ps(lanes, m);
        for (float v : lanes)
            init = v > init ? v : init;
    }
#endif
    for (; i < n; ++i)
        init = x[i] > init ? x[i] : init;
    return init;
}

} // namespace lowbit::cpu
