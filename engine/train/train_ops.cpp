#include "train/train_ops.h"

#include "backend/cpu_simd.h"
#include "core/thread_pool.h"

#include <algorithm>
#include <cblas.h>
#include <cmath>
#include <vector>

namespace lowbit::train::ops {

namespace {

void blas(bool transA, bool transB, int64_t m, int64_t n, int64_t k, float alpha, const float *a,
          int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc) {
    cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans,
                transB ? CblasTrans : CblasNoTrans, int(m), int(n), int(k), alpha, a, int(lda), b,
                int(ldb), beta, c, int(ldc));
}

void blas(bool transA, bool transB, int64_t m, int64_t n, int64_t k, double alpha, const double *a,
          int64_t lda, const double *b, int64_t ldb, double beta, double *c, int64_t ldc) {
    cblas_dgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans,
                transB ? CblasTrans : CblasNoTrans, int(m), int(n), int(k), alpha, a, int(lda), b,
                int(ldb), beta, c, int(ldc));
}

// Splits [0, count) into about 4 blocks per thread of at least `minBlock` and runs
// fn(begin, end, thread) on each; serially when there is no pool or too little work.
template <typename Fn> void forBlocks(ThreadPool *pool, int64_t count, int64_t minBlock, Fn &&fn) {
    const int64_t threads = pool ? pool->size() : 1;
    const int64_t blocks =
        std::clamp<int64_t>(count / std::max<int64_t>(minBlock, 1), 1, threads * 4);
    if (blocks == 1 || threads == 1) {
        fn(int64_t(0), count, 0);
        return;
    }
    const int64_t size = (count + blocks - 1) / blocks;
    pool->parallelFor(blocks, [&](int64_t b, int thread) {
        const int64_t begin = b * size, end = std::min(count, begin + size);
        if (begin < end)
            fn(begin, end, thread);
    });
}

} // namespace

// The output is cut along its longer side into blocks, each a single-threaded BLAS call.
template <typename Real>
void gemm(bool transA, bool transB, int64_t m, int64_t n, int64_t k, Real alpha, const Real *a,
          int64_t lda, const Real *b, int64_t ldb, Real beta, Real *c, int64_t ldc,
          ThreadPool *pool) {
    if (m == 0 || n == 0)
        return;
    constexpr int64_t kMinBlockWork = 1 << 16; // multiply-adds per block worth a task
    const int64_t minBlock =
        std::max<int64_t>(8, kMinBlockWork / std::max<int64_t>(1, (m >= n ? n : m) * k));
    if (m >= n)
        forBlocks(pool, m, minBlock, [&](int64_t i0, int64_t i1, int) {
            blas(transA, transB, i1 - i0, n, k, alpha, transA ? a + i0 : a + i0 * lda, lda, b, ldb,
                 beta, c + i0 * ldc, ldc);
        });
    else
        forBlocks(pool, n, minBlock, [&](int64_t j0, int64_t j1, int) {
            blas(transA, transB, m, j1 - j0, k, alpha, a, lda, transB ? b + j0 * ldb : b + j0, ldb,
                 beta, c + j0, ldc);
        });
}

template <typename Real>
void rmsnormForward(const Real *x, int64_t rows, int64_t dim, const Real *weight, double eps,
                    Real *y, Real *invRms, ThreadPool *pool) {
    forBlocks(pool, rows, 4096 / std::max<int64_t>(dim, 1) + 1, [&](int64_t r0, int64_t r1, int) {
        for (int64_t r = r0; r < r1; ++r) {
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
    });
}

template <typename Real>
void rmsnormBackward(const Real *x, int64_t rows, int64_t dim, const Real *weight,
                     const Real *invRms, const Real *dy, Real *dx, ThreadPool *pool) {
    forBlocks(pool, rows, 4096 / std::max<int64_t>(dim, 1) + 1, [&](int64_t r0, int64_t r1, int) {
        for (int64_t r = r0; r < r1; ++r) {
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
    });
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

// Query rows per block of scores: block [i0, i1) attends to keys [0, i1) only, so most of the
// masked upper triangle is never computed, and scratch stays kQueryBlock × length.
constexpr int64_t kQueryBlock = 64;

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

// fn(task, thread) for task in [0, count), on the pool or serially.
template <typename Fn> void forTasks(ThreadPool *pool, int64_t count, Fn &&fn) {
    if (!pool || pool->size() == 1 || count == 1) {
        for (int64_t t = 0; t < count; ++t)
            fn(t, 0);
        return;
    }
    pool->parallelFor(count, fn);
}

// The pointers of one (sequence, head) in the flattened batch.
template <typename Real> struct HeadView {
    int64_t len, qStride, kvStride;
    const Real *q, *k, *v;
    Real *lse; // stride `heads`
    int64_t lseStride;
};

template <typename Real>
HeadView<Real> headView(const Real *q, const Real *k, const Real *v, Real *lse,
                        std::span<const int64_t> starts, const AttentionDims &d, int64_t seq,
                        int64_t h) {
    const int64_t qStride = d.heads * d.headDim, kvStride = d.kvHeads * d.headDim;
    const int64_t r0 = starts[size_t(seq)], g = h / (d.heads / d.kvHeads);
    return {starts[size_t(seq) + 1] - r0,
            qStride,
            kvStride,
            q + r0 * qStride + h * d.headDim,
            k + r0 * kvStride + g * d.headDim,
            v + r0 * kvStride + g * d.headDim,
            lse + r0 * d.heads + h,
            d.heads};
}

// Scores of query rows [i0, i0+rows) against keys [0, i0+rows): s = scale · Q Kᵀ.
template <typename Real>
void blockScores(const HeadView<Real> &hv, const AttentionDims &d, int64_t i0, int64_t rows,
                 Real *s) {
    blas(false, true, rows, i0 + rows, d.headDim, Real(d.scale), hv.q + i0 * hv.qStride, hv.qStride,
         hv.k, hv.kvStride, Real(0), s, i0 + rows);
}

template <typename Real>
void attendHead(const HeadView<Real> &hv, const AttentionDims &d, Real *out, std::vector<Real> &s) {
    for (int64_t i0 = 0; i0 < hv.len; i0 += kQueryBlock) {
        const int64_t rows = std::min(kQueryBlock, hv.len - i0), keys = i0 + rows;
        s.resize(size_t(rows * keys));
        blockScores(hv, d, i0, rows, s.data());
        for (int64_t r = 0; r < rows; ++r) { // softmax over the causal prefix, one exp per entry
            Real *row = s.data() + r * keys;
            const int64_t visible = i0 + r + 1;
            const Real m = rowMax(row, visible);
            const double sum = expShifted(row, visible, m);
            hv.lse[(i0 + r) * hv.lseStride] = Real(double(m) + std::log(sum));
            const Real inv = Real(1.0 / sum);
            for (int64_t j = 0; j < visible; ++j)
                row[j] *= inv;
            std::fill(row + visible, row + keys, Real(0));
        }
        blas(false, false, rows, d.headDim, keys, Real(1), s.data(), keys, hv.v, hv.kvStride,
             Real(0), out + i0 * hv.qStride, hv.qStride);
    }
}

// Backward of one head; dq of the head overwritten, dk/dv of its kv head added to.
template <typename Real>
void attendHeadBackward(const HeadView<Real> &hv, const AttentionDims &d, const Real *out,
                        const Real *dOut, Real *dq, Real *dk, Real *dv, std::vector<Real> &p,
                        std::vector<Real> &dp) {
    for (int64_t i0 = 0; i0 < hv.len; i0 += kQueryBlock) {
        const int64_t rows = std::min(kQueryBlock, hv.len - i0), keys = i0 + rows;
        p.resize(size_t(rows * keys));
        dp.resize(size_t(rows * keys));
        blockScores(hv, d, i0, rows, p.data());
        for (int64_t r = 0; r < rows; ++r) { // P recomputed from the stored log-sum-exp
            Real *row = p.data() + r * keys;
            expShifted(row, i0 + r + 1, hv.lse[(i0 + r) * hv.lseStride]);
            std::fill(row + i0 + r + 1, row + keys, Real(0));
        }
        const Real *dob = dOut + i0 * hv.qStride;
        // dV += Pᵀ·dO (summed over the query heads sharing this kv head)
        blas(true, false, keys, d.headDim, rows, Real(1), p.data(), keys, dob, hv.qStride, Real(1),
             dv, hv.kvStride);
        // dP = dO·Vᵀ; dS = P ⊙ (dP − D), D_i = Σ_c dO_ic·O_ic (softmax Jacobian)
        blas(false, true, rows, keys, d.headDim, Real(1), dob, hv.qStride, hv.v, hv.kvStride,
             Real(0), dp.data(), keys);
        for (int64_t r = 0; r < rows; ++r) {
            const Real *o = out + (i0 + r) * hv.qStride, *dor = dob + r * hv.qStride;
            double di = 0;
            for (int64_t c = 0; c < d.headDim; ++c)
                di += double(dor[c]) * double(o[c]);
            Real *ds = dp.data() + r * keys;
            const Real *pr = p.data() + r * keys;
            for (int64_t j = 0; j < keys; ++j)
                ds[j] = pr[j] * (ds[j] - Real(di)); // P is 0 above the diagonal
        }
        // S = scale·Q Kᵀ: dQ = scale·dS·K, dK += scale·dSᵀ·Q
        blas(false, false, rows, d.headDim, keys, Real(d.scale), dp.data(), keys, hv.k, hv.kvStride,
             Real(0), dq + i0 * hv.qStride, hv.qStride);
        blas(true, false, keys, d.headDim, rows, Real(d.scale), dp.data(), keys,
             hv.q + i0 * hv.qStride, hv.qStride, Real(1), dk, hv.kvStride);
    }
}

} // namespace

// One task per (sequence, head).
template <typename Real>
void attentionForward(const Real *q, const Real *k, const Real *v, std::span<const int64_t> starts,
                      const AttentionDims &d, Real *out, Real *lse, ThreadPool *pool) {
    const int64_t sequences = int64_t(starts.size()) - 1, qStride = d.heads * d.headDim;
    if (sequences <= 0)
        return;
    std::vector<std::vector<Real>> scratch(size_t(pool ? pool->size() : 1));
    forTasks(pool, sequences * d.heads, [&](int64_t task, int thread) {
        const int64_t seq = task / d.heads, h = task % d.heads;
        const HeadView<Real> hv = headView(q, k, v, lse, starts, d, seq, h);
        attendHead(hv, d, out + starts[size_t(seq)] * qStride + h * d.headDim,
                   scratch[size_t(thread)]);
    });
}

// One task per (sequence, kv head): the query heads sharing a kv head add to the same dK/dV.
template <typename Real>
void attentionBackward(const Real *q, const Real *k, const Real *v, const Real *out,
                       const Real *lse, const Real *dOut, std::span<const int64_t> starts,
                       const AttentionDims &d, Real *dq, Real *dk, Real *dv, ThreadPool *pool) {
    const int64_t sequences = int64_t(starts.size()) - 1;
    if (sequences <= 0)
        return;
    const int64_t qStride = d.heads * d.headDim, kvStride = d.kvHeads * d.headDim;
    const int64_t group = d.heads / d.kvHeads;
    std::fill(dk, dk + starts.back() * kvStride, Real(0));
    std::fill(dv, dv + starts.back() * kvStride, Real(0));
    const size_t threads = size_t(pool ? pool->size() : 1);
    std::vector<std::vector<Real>> p(threads), dp(threads);
    forTasks(pool, sequences * d.kvHeads, [&](int64_t task, int thread) {
        const int64_t seq = task / d.kvHeads, g = task % d.kvHeads, r0 = starts[size_t(seq)];
        for (int64_t h = g * group; h < (g + 1) * group; ++h) {
            // lse is only read here; headView takes it mutable for the forward's sake
            const HeadView<Real> hv = headView(q, k, v, const_cast<Real *>(lse), starts, d, seq, h);
            const int64_t qOffset = r0 * qStride + h * d.headDim;
            const int64_t kvOffset = r0 * kvStride + g * d.headDim;
            attendHeadBackward(hv, d, out + qOffset, dOut + qOffset, dq + qOffset, dk + kvOffset,
                               dv + kvOffset, p[size_t(thread)], dp[size_t(thread)]);
        }
    });
}

template <typename Real>
void swigluForward(const Real *gate, const Real *up, int64_t count, Real *out, ThreadPool *pool) {
    forBlocks(pool, count, 16384, [&](int64_t i0, int64_t i1, int) {
        for (int64_t i = i0; i < i1; ++i) {
            const Real g = gate[i];
            out[i] = g / (Real(1) + std::exp(-g)) * up[i];
        }
    });
}

template <typename Real>
void swigluBackward(const Real *gate, const Real *up, const Real *dOut, int64_t count, Real *dGate,
                    Real *dUp, ThreadPool *pool) {
    forBlocks(pool, count, 16384, [&](int64_t i0, int64_t i1, int) {
        for (int64_t i = i0; i < i1; ++i) {
            const Real g = gate[i], sigma = Real(1) / (Real(1) + std::exp(-g));
            const Real d = dOut[i];
            // d silu/dg = σ(g) + g·σ(g)(1 − σ(g))
            dGate[i] = d * up[i] * sigma * (Real(1) + g * (Real(1) - sigma));
            dUp[i] = d * g * sigma;
        }
    });
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
    template void gemm<Real>(bool, bool, int64_t, int64_t, int64_t, Real, const Real *, int64_t,   \
                             const Real *, int64_t, Real, Real *, int64_t, ThreadPool *);          \
    template void rmsnormForward<Real>(const Real *, int64_t, int64_t, const Real *, double,       \
                                       Real *, Real *, ThreadPool *);                              \
    template void rmsnormBackward<Real>(const Real *, int64_t, int64_t, const Real *,              \
                                        const Real *, const Real *, Real *, ThreadPool *);         \
    template void ropeForward<Real>(Real *, int64_t, int64_t, int64_t, int64_t, const Real *);     \
    template void ropeBackward<Real>(Real *, int64_t, int64_t, int64_t, int64_t, const Real *);    \
    template void attentionForward<Real>(const Real *, const Real *, const Real *,                 \
                                         std::span<const int64_t>, const AttentionDims &, Real *,  \
                                         Real *, ThreadPool *);                                    \
    template void attentionBackward<Real>(                                                         \
        const Real *, const Real *, const Real *, const Real *, const Real *, const Real *,        \
        std::span<const int64_t>, const AttentionDims &, Real *, Real *, Real *, ThreadPool *);    \
    template void swigluForward<Real>(const Real *, const Real *, int64_t, Real *, ThreadPool *);  \
    template void swigluBackward<Real>(const Real *, const Real *, const Real *, int64_t, Real *,  \
                                       Real *, ThreadPool *);                                      \
    template double crossEntropy<Real>(std::span<const Real>, int32_t, std::span<Real>);

LOWBIT_TRAIN_OPS_INSTANTIATE(float)
LOWBIT_TRAIN_OPS_INSTANTIATE(double)

} // namespace lowbit::train::ops
