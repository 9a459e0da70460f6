#include "quant/random_butterfly.h"

#include "quant/linalg.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <numbers>
#include <random>
#include <tuple>

// LAPACK (OpenBLAS exports the Fortran entry points).
extern "C" {
void dgeqrf_(const int *m, const int *n, double *a, const int *lda, double *tau, double *work,
             const int *lwork, int *info);
void dorgqr_(const int *m, const int *n, const int *k, double *a, const int *lda, const double *tau,
             double *work, const int *lwork, int *info);
}

namespace lowbit {

std::pair<int64_t, int64_t> butterflyFactors(int64_t n) {
    std::vector<int64_t> primes; // ascending, with multiplicity (primefac's order)
    for (int64_t p = 2; p * p <= n; ++p)
        while (n % p == 0) {
            primes.push_back(p);
            n /= p;
        }
    if (n > 1)
        primes.push_back(n);
    int64_t p1 = 1, p2 = 1;
    for (size_t i = 0; i < primes.size(); ++i)
        (i % 2 == 0 ? p1 : p2) *= primes[i];
    return {p1, p2};
}

namespace {

// Platform-independent draws from mt19937_64.
class Draws {
public:
    explicit Draws(uint64_t seed) : m_rng(seed) {}
    double uniform() { return double(m_rng() >> 11) * 0x1.0p-53; } // [0, 1)
    double normal() {                                              // Box-Muller
        if (m_haveSpare) {
            m_haveSpare = false;
            return m_spare;
        }
        const double u1 = 1.0 - uniform(), u2 = uniform();
        const double r = std::sqrt(-2.0 * std::log(u1)), theta = 2.0 * std::numbers::pi * u2;
        m_spare = r * std::sin(theta);
        m_haveSpare = true;
        return r * std::cos(theta);
    }
    std::vector<int32_t> permutation(int64_t n) { // Fisher-Yates
        std::vector<int32_t> p(static_cast<size_t>(n));
        for (int64_t i = 0; i < n; ++i)
            p[size_t(i)] = int32_t(i);
        for (int64_t i = n - 1; i > 0; --i)
            std::swap(p[size_t(i)], p[size_t(m_rng() % uint64_t(i + 1))]);
        return p;
    }

private:
    std::mt19937_64 m_rng;
    bool m_haveSpare = false;
    double m_spare = 0;
};

// A Haar-random matrix of SO(p), row-major, appended to `out`: the Q of a Gaussian matrix's QR
// with the signs of R's diagonal moved into Q (Mezzadri 2007, Haar on O(p)), then one column
// negated when det = -1 (scipy's special_ortho_group, the reference's choice).
Status appendSpecialOrthogonal(Draws &draws, int64_t p, std::vector<double> &out) {
    const int n = int(p);
    std::vector<double> a(static_cast<size_t>(p * p)), tau(static_cast<size_t>(p));
    for (double &v : a)
        v = draws.normal();
    int info = 0, lwork = -1;
    double query = 0;
    dgeqrf_(&n, &n, a.data(), &n, tau.data(), &query, &lwork, &info);
    lwork = std::max(1, int(query));
    std::vector<double> work(static_cast<size_t>(lwork));
    dgeqrf_(&n, &n, a.data(), &n, tau.data(), work.data(), &lwork, &info);
    if (info != 0)
        return makeError(ErrorCode::Internal,
                         "random orthogonal: dgeqrf info " + std::to_string(info));
    // det Q = (-1)^(reflectors with tau != 0); det(Q diag(sign R_ii)) adds the signs.
    std::vector<double> sign(static_cast<size_t>(p));
    bool negative = false;
    for (int64_t i = 0; i < p; ++i) {
        sign[size_t(i)] = a[size_t(i * p + i)] < 0 ? -1.0 : 1.0; // column-major R_ii
        negative ^= (sign[size_t(i)] < 0) != (tau[size_t(i)] != 0);
    }
    dorgqr_(&n, &n, &n, a.data(), &n, tau.data(), work.data(), &lwork, &info);
    if (info != 0)
        return makeError(ErrorCode::Internal,
                         "random orthogonal: dorgqr info " + std::to_string(info));
    if (negative)
        sign[0] = -sign[0];
    const size_t base = out.size();
    out.resize(base + size_t(p * p));
    for (int64_t r = 0; r < p; ++r)
        for (int64_t c = 0; c < p; ++c) // Q column-major: Q[r][c] = a[c * p + r]
            out[base + size_t(r * p + c)] = a[size_t(c * p + r)] * sign[size_t(c)];
    return {};
}

// C[m x p] = A[m x p] * B^T (transB) or A * B, with B p x p; leading dimensions lda, ldc.
void blockGemm(bool transB, int64_t m, int64_t p, const float *a, int64_t lda, const float *b,
               float *c, int64_t ldc) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, transB ? CblasTrans : CblasNoTrans, int(m), int(p),
                int(p), 1.0f, a, int(lda), b, int(p), 0.0f, c, int(ldc));
}
void blockGemm(bool transB, int64_t m, int64_t p, const double *a, int64_t lda, const double *b,
               double *c, int64_t ldc) {
    cblas_dgemm(CblasRowMajor, CblasNoTrans, transB ? CblasTrans : CblasNoTrans, int(m), int(p),
                int(p), 1.0, a, int(lda), b, int(p), 0.0, c, int(ldc));
}

} // namespace

Result<RandomButterfly> RandomButterfly::create(int64_t n, uint64_t seed) {
    if (n < 1 || n > int64_t(INT32_MAX))
        return makeError(ErrorCode::InvalidArgument, "random butterfly: size must be positive");
    RandomButterfly b;
    b.m_n = n;
    std::tie(b.m_p1, b.m_p2) = butterflyFactors(n);
    Draws draws(seed);
    b.m_permIn = draws.permutation(n);
    b.m_permOut = draws.permutation(n);
    for (int64_t j = 0; j < b.m_p2 && b.m_p1 > 1; ++j)
        LOWBIT_CHECK(appendSpecialOrthogonal(draws, b.m_p1, b.m_first));
    for (int64_t a = 0; a < b.m_p1 && b.m_p2 > 1; ++a)
        LOWBIT_CHECK(appendSpecialOrthogonal(draws, b.m_p2, b.m_second));
    b.m_firstF.assign(b.m_first.begin(), b.m_first.end());
    b.m_secondF.assign(b.m_second.begin(), b.m_second.end());
    return b;
}

template <typename T>
void RandomButterfly::apply(T *x, int64_t count, bool inverse, int threads) const {
    const int64_t n = m_n, p1 = m_p1, p2 = m_p2;
    const T *first, *second;
    if constexpr (std::is_same_v<T, float>) {
        first = m_firstF.data();
        second = m_secondF.data();
    } else {
        first = m_first.data();
        second = m_second.data();
    }
    BlasThreads blas(threads);
    const int64_t chunk = std::max<int64_t>(1, (int64_t(1) << 21) / n);
    std::vector<T> t(static_cast<size_t>(std::min(chunk, count) * n)), z(t.size());
    // z[r][j*p1 + a] = t[r][a*p2 + j] (the p1 x p2 view transposed), and back.
    auto transpose = [&](const T *from, T *to, int64_t rows, bool back) {
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t a = 0; a < p1; ++a)
                for (int64_t j = 0; j < p2; ++j) {
                    const int64_t viewed = r * n + a * p2 + j, transposed = r * n + j * p1 + a;
                    to[back ? viewed : transposed] = from[back ? transposed : viewed];
                }
    };
    // Block products on column slices: out[:, b*p .. +p] = in[:, b*p .. +p] * M_b^T (or M_b).
    auto blocks = [&](const T *in, T *out, int64_t rows, const T *mats, int64_t p, bool transB) {
        for (int64_t b = 0; b < n / p; ++b)
            blockGemm(transB, rows, p, in + b * p, n, mats + b * p * p, out + b * p, n);
    };
    for (int64_t r0 = 0; r0 < count; r0 += chunk) {
        const int64_t rows = std::min(chunk, count - r0);
        T *xs = x + r0 * n;
        if (!inverse) { // B x = P_out F2 F1 P_in x
            for (int64_t r = 0; r < rows; ++r)
                for (int64_t k = 0; k < n; ++k)
                    t[size_t(r * n + k)] = xs[r * n + m_permIn[size_t(k)]];
            if (p1 > 1) {
                transpose(t.data(), z.data(), rows, false);
                blocks(z.data(), xs, rows, first, p1, true);
                transpose(xs, t.data(), rows, true);
            }
            if (p2 > 1)
                blocks(t.data(), z.data(), rows, second, p2, true);
            else
                std::copy(t.begin(), t.begin() + rows * n, z.begin());
            for (int64_t r = 0; r < rows; ++r)
                for (int64_t k = 0; k < n; ++k)
                    xs[r * n + k] = z[size_t(r * n + m_permOut[size_t(k)])];
        } else { // B^T x = P_in^T F1^T F2^T P_out^T x
            for (int64_t r = 0; r < rows; ++r)
                for (int64_t k = 0; k < n; ++k)
                    t[size_t(r * n + m_permOut[size_t(k)])] = xs[r * n + k];
            if (p2 > 1)
                blocks(t.data(), z.data(), rows, second, p2, false);
            else
                std::copy(t.begin(), t.begin() + rows * n, z.begin());
            if (p1 > 1) {
                transpose(z.data(), t.data(), rows, false);
                blocks(t.data(), z.data(), rows, first, p1, false);
                transpose(z.data(), t.data(), rows, true);
            } else {
                std::copy(z.begin(), z.begin() + rows * n, t.begin());
            }
            for (int64_t r = 0; r < rows; ++r)
                for (int64_t k = 0; k < n; ++k)
                    xs[r * n + m_permIn[size_t(k)]] = t[size_t(r * n + k)];
        }
    }
}

void RandomButterfly::applyRows(float *x, int64_t count, bool inverse, int threads) const {
    apply(x, count, inverse, threads);
}

void RandomButterfly::applyRows(double *x, int64_t count, bool inverse, int threads) const {
    apply(x, count, inverse, threads);
}

std::vector<double> RandomButterfly::dense() const {
    // Rows of I through X <- X B^T give B^T; transposed, B.
    std::vector<double> bt(static_cast<size_t>(m_n * m_n), 0.0), b(bt.size());
    for (int64_t i = 0; i < m_n; ++i)
        bt[size_t(i * m_n + i)] = 1.0;
    applyRows(bt.data(), m_n, false);
    for (int64_t i = 0; i < m_n; ++i)
        for (int64_t j = 0; j < m_n; ++j)
            b[size_t(i * m_n + j)] = bt[size_t(j * m_n + i)];
    return b;
}

} // namespace lowbit
