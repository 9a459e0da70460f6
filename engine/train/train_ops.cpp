#include "train/train_ops.h"

#include "backend/cpu_simd.h"

#include <algorithm>
#include <cblas.h>
#include <cmath>
#include <limits>
#include <vector>

namespace lowbit::train::ops {

template <>
void gemm<float>(bool transA, bool transB, int64_t m, int64_t n, int64_t k, float alpha,
                 const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c,
                 int64_t ldc) {
    if (m == 0 || n == 0)
        return;
    cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans,
                transB ? CblasTrans : CblasNoTrans, int(m), int(n), int(k), alpha, a, int(lda), b,
                int(ldb), beta, c, int(ldc));
}

template <>
void gemm<double>(bool transA, bool transB, int64_t m, int64_t n, int64_t k, double alpha,
                  const double *a, int64_t lda, const double *b, int64_t ldb, double beta,
                  double *c, int64_t ldc) {
    if (m == 0 || n == 0)
        return;
    cblas_dgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans,
                transB ? CblasTrans : CblasNoTrans, int(m), int(n), int(k), alpha, a, int(lda), b,
                int(ldb), beta, c, int(ldc));
}

template <typename Real>
void rmsnormForward(const Real *x, int64_t rows, int64_t dim, const Real *weight, double eps,
                    Real *y, Real *invRms) {
    for (int64_t r = 0; r < rows; ++r) {
        const Real *xr = x + r * dim;
        double sumSquares = 0;
        for (int64_t i = 0; i < dim; ++i)
            sumSquares += double(xr[i]) * double(xr[i]);
        const Real inv = Real(1.0 / std::sqrt(sumSquares / double(dim) + eps));
        invRms[r] = inv;
        Real *yr = y + r * dim;
        for (int64_t i = 0; i < dim; ++i)
            yr[i] = xr[i] * inv * weight[i];
    }
}

template <typename Real>
void rmsnormBackward(const Real *x, int64_t rows, int64_t dim, const Real *weight,
                     const Real *invRms, const Real *dy, Real *dx) {
    for (int64_t r = 0; r < rows; ++r) {
        const Real *xr = x + r * dim, *dyr = dy + r * dim;
        double dot = 0; // Σ_j dy_j·w_j·x_j
        for (int64_t i = 0; i < dim; ++i)
            dot += double(dyr[i]) * double(weight[i]) * double(xr[i]);
        const double inv = double(invRms[r]);
        const Real coef = Real(inv * inv * inv * dot / double(dim));
        Real *dxr = dx + r * dim;
        for (int64_t i = 0; i < dim; ++i)
            dxr[i] += invRms[r] * weight[i] * dyr[i] - coef * xr[i];
    }
}

namespace {

// Turns each pair by the row's angle times `direction` (+1 forward, −1 = the transpose).
template <typename Real>
void rotate(Real *x, int64_t rows, int64_t rowStride, int64_t heads, int64_t headDim,
            const Real *cosSin, Real direction) {
    const int64_t half = headDim / 2;
    for (int64_t r = 0; r < rows; ++r) {
        const Real *cosines = cosSin + r * headDim;
        const Real *sines = cosines + half;
        for (int64_t h = 0; h < heads; ++h) {
            Real *v = x + r * rowStride + h * headDim;
            for (int64_t j = 0; j < half; ++j) {
                const Real a = v[j], b = v[j + half], s = direction * sines[j];
                v[j] = a * cosines[j] - b * s;
                v[j + half] = b * cosines[j] + a * s;
            }
        }
    }
}

} // namespace

template <typename Real>
void ropeForward(Real *x, int64_t rows, int64_t rowStride, int64_t heads, int64_t headDim,
                 const Real *cosSin) {
    rotate(x, rows, rowStride, heads, headDim, cosSin, Real(1));
}

template <typename Real>
void ropeBackward(Real *dx, int64_t rows, int64_t rowStride, int64_t heads, int64_t headDim,
                  const Real *cosSin) {
    rotate(dx, rows, rowStride, heads, headDim, cosSin, Real(-1));
}

namespace {

// Row-major T×T scores of one (sequence, head): S = scale · Q_h K_gᵀ, causal mask above the
// diagonal to −inf (those entries are never read as probabilities: exp gives 0).
template <typename Real>
void scores(const Real *q, const Real *k, int64_t len, int64_t qStride, int64_t kvStride,
            const AttentionDims &d, Real *s) {
    gemm<Real>(false, true, len, len, d.headDim, Real(d.scale), q, qStride, k, kvStride, Real(0), s,
               len);
}

// x[i] = exp(x[i] − shift) for x[i] ≤ shift, returning Σ x[i]: float uses the inference
// backend's AVX2 kernel (its exp is within 6e-9 relative, below float rounding).
double expShifted(float *x, int64_t n, float shift) {
    return cpu::expShiftedSum(x, n, shift);
}
double expShifted(double *x, int64_t n, double shift) {
    double sum = 0;
    for (int64_t i = 0; i < n; ++i)
        sum += (x[i] = std::exp(x[i] - shift));
    return sum;
}
float rowMax(const float *x, int64_t n) {
    return cpu::maxValue(x, n, x[0]);
}
double rowMax(const double *x, int64_t n) {
    return *std::max_element(x, x + n);
}

// P_ij = exp(S_ij − lse_i) for j ≤ i, 0 above the diagonal (in place on S).
template <typename Real>
void probabilities(Real *s, int64_t len, const Real *lse, int64_t lseStride) {
    for (int64_t i = 0; i < len; ++i) {
        Real *row = s + i * len;
        expShifted(row, i + 1, lse[i * lseStride]);
        std::fill(row + i + 1, row + len, Real(0));
    }
}

// Softmax over the causal prefix of each row, in place, keeping the row log-sum-exp: one exp
// per entry, max subtracted for range.
template <typename Real> void softmaxRows(Real *s, int64_t len, Real *lse, int64_t lseStride) {
    for (int64_t i = 0; i < len; ++i) {
        Real *row = s + i * len;
        const Real m = rowMax(row, i + 1);
        const double sum = expShifted(row, i + 1, m);
        lse[i * lseStride] = Real(double(m) + std::log(sum));
        const Real inv = Real(1.0 / sum);
        for (int64_t j = 0; j <= i; ++j)
            row[j] *= inv;
        std::fill(row + i + 1, row + len, Real(0));
    }
}

// Σ exp(x[i] − shift) accumulated in double (a 128k-entry logit row).
double sumExp(const float *x, int64_t n, float shift) {
    return cpu::sumExpShifted(x, n, shift);
}
double sumExp(const double *x, int64_t n, double shift) {
    double sum = 0;
    for (int64_t i = 0; i < n; ++i)
        sum += std::exp(x[i] - shift);
    return sum;
}

} // namespace

template <typename Real>
void attentionForward(const Real *q, const Real *k, const Real *v, std::span<const int64_t> starts,
                      const AttentionDims &d, Real *out, Real *lse) {
    const int64_t qStride = d.heads * d.headDim, kvStride = d.kvHeads * d.headDim;
    const int64_t group = d.heads / d.kvHeads;
    std::vector<Real> s;
    for (size_t seq = 0; seq + 1 < starts.size(); ++seq) {
        const int64_t r0 = starts[seq], len = starts[seq + 1] - r0;
        if (len == 0)
            continue;
        s.resize(size_t(len * len));
        for (int64_t h = 0; h < d.heads; ++h) {
            const int64_t g = h / group;
            scores(q + r0 * qStride + h * d.headDim, k + r0 * kvStride + g * d.headDim, len,
                   qStride, kvStride, d, s.data());
            softmaxRows(s.data(), len, lse + r0 * d.heads + h, d.heads);
            gemm<Real>(false, false, len, d.headDim, len, Real(1), s.data(), len,
                       v + r0 * kvStride + g * d.headDim, kvStride, Real(0),
                       out + r0 * qStride + h * d.headDim, qStride);
        }
    }
}

template <typename Real>
void attentionBackward(const Real *q, const Real *k, const Real *v, const Real *out,
                       const Real *lse, const Real *dOut, std::span<const int64_t> starts,
                       const AttentionDims &d, Real *dq, Real *dk, Real *dv) {
    const int64_t qStride = d.heads * d.headDim, kvStride = d.kvHeads * d.headDim;
    const int64_t group = d.heads / d.kvHeads;
    const int64_t rows = starts.empty() ? 0 : starts.back();
    std::fill(dk, dk + rows * kvStride, Real(0));
    std::fill(dv, dv + rows * kvStride, Real(0));
    std::vector<Real> p, dp;
    for (size_t seq = 0; seq + 1 < starts.size(); ++seq) {
        const int64_t r0 = starts[seq], len = starts[seq + 1] - r0;
        if (len == 0)
            continue;
        p.resize(size_t(len * len));
        dp.resize(size_t(len * len));
        for (int64_t h = 0; h < d.heads; ++h) {
            const int64_t g = h / group;
            const Real *qh = q + r0 * qStride + h * d.headDim;
            const Real *kg = k + r0 * kvStride + g * d.headDim;
            const Real *vg = v + r0 * kvStride + g * d.headDim;
            const Real *oh = out + r0 * qStride + h * d.headDim;
            const Real *doh = dOut + r0 * qStride + h * d.headDim;
            scores(qh, kg, len, qStride, kvStride, d, p.data());
            probabilities(p.data(), len, lse + r0 * d.heads + h, d.heads);
            // dV_g += Pᵀ·dO_h (summed over the query heads of group g)
            gemm<Real>(true, false, len, d.headDim, len, Real(1), p.data(), len, doh, qStride,
                       Real(1), dv + r0 * kvStride + g * d.headDim, kvStride);
            // dP = dO_h·V_gᵀ; dS = P ⊙ (dP − D), D_i = Σ_c dO_ic·O_ic (softmax Jacobian)
            gemm<Real>(false, true, len, len, d.headDim, Real(1), doh, qStride, vg, kvStride,
                       Real(0), dp.data(), len);
            for (int64_t i = 0; i < len; ++i) {
                double di = 0;
                for (int64_t c = 0; c < d.headDim; ++c)
                    di += double(doh[i * qStride + c]) * double(oh[i * qStride + c]);
                Real *dsRow = dp.data() + i * len;
                const Real *pRow = p.data() + i * len;
                for (int64_t j = 0; j < len; ++j)
                    dsRow[j] = j <= i ? pRow[j] * (dsRow[j] - Real(di)) : Real(0);
            }
            // S = scale·Q Kᵀ: dQ_h = scale·dS·K_g, dK_g += scale·dSᵀ·Q_h
            gemm<Real>(false, false, len, d.headDim, len, Real(d.scale), dp.data(), len, kg,
                       kvStride, Real(0), dq + r0 * qStride + h * d.headDim, qStride);
            gemm<Real>(true, false, len, d.headDim, len, Real(d.scale), dp.data(), len, qh, qStride,
                       Real(1), dk + r0 * kvStride + g * d.headDim, kvStride);
        }
    }
}

template <typename Real>
void swigluForward(const Real *gate, const Real *up, int64_t count, Real *out) {
    for (int64_t i = 0; i < count; ++i) {
        const Real g = gate[i];
        out[i] = g / (Real(1) + std::exp(-g)) * up[i];
    }
}

template <typename Real>
void swigluBackward(const Real *gate, const Real *up, const Real *dOut, int64_t count, Real *dGate,
                    Real *dUp) {
    for (int64_t i = 0; i < count; ++i) {
        const Real g = gate[i], sigma = Real(1) / (Real(1) + std::exp(-g));
        const Real d = dOut[i];
        // d silu/dg = σ(g) + g·σ(g)(1 − σ(g))
        dGate[i] = d * up[i] * sigma * (Real(1) + g * (Real(1) - sigma));
        dUp[i] = d * g * sigma;
    }
}

template <typename Real>
double crossEntropy(std::span<const Real> logits, int32_t target, std::span<Real> dLogits) {
    const int64_t n = int64_t(logits.size());
    const Real m = rowMax(logits.data(), n);
    const double lse = double(m) + std::log(sumExp(logits.data(), n, m));
    std::copy(logits.begin(), logits.end(), dLogits.begin());
    expShifted(dLogits.data(), n, Real(lse)); // softmax = exp(z − lse)
    dLogits[size_t(target)] -= Real(1);
    return lse - double(logits[size_t(target)]);
}

#define LOWBIT_TRAIN_OPS_INSTANTIATE(Real)                                                         \
    template void rmsnormForward<Real>(const Real *, int64_t, int64_t, const Real *, double,       \
                                       Real *, Real *);                                            \
    template void rmsnormBackward<Real>(const Real *, int64_t, int64_t, const Real *,              \
                                        const Real *, const Real *, Real *);                       \
    template void ropeForward<Real>(Real *, int64_t, int64_t, int64_t, int64_t, const Real *);     \
    template void ropeBackward<Real>(Real *, int64_t, int64_t, int64_t, int64_t, const Real *);    \
    template void attentionForward<Real>(const Real *, const Real *, const Real *,                 \
                                         std::span<const int64_t>, const AttentionDims &, Real *,  \
                                         Real *);                                                  \
    template void attentionBackward<Real>(const Real *, const Real *, const Real *, const Real *,  \
                                          const Real *, const Real *, std::span<const int64_t>,    \
                                          const AttentionDims &, Real *, Real *, Real *);          \
    template void swigluForward<Real>(const Real *, const Real *, int64_t, Real *);                \
    template void swigluBackward<Real>(const Real *, const Real *, const Real *, int64_t, Real *,  \
                                       Real *);                                                    \
    template double crossEntropy<Real>(std::span<const Real>, int32_t, std::span<Real>);

LOWBIT_TRAIN_OPS_INSTANTIATE(float)
LOWBIT_TRAIN_OPS_INSTANTIATE(double)

} // namespace lowbit::train::ops
