// Small float32 vector kernels for the CPU backend: AVX2/FMA when compiled for it, scalar otherwise.
#pragma once

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

} // namespace lowbit::cpu
