#include "train/lora_linear.h"

#include "train/train_ops.h"

#include <cmath>

namespace lowbit::train {

namespace {

// splitmix64 (Steele et al. 2014): a portable stream, so that a seed gives the same adapters
// with every standard library.
uint64_t splitmix64(uint64_t &state) {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

template <typename Real>
Parameter<Real> makeParameter(std::string name, std::vector<int64_t> shape) {
    int64_t count = 1;
    for (int64_t d : shape)
        count *= d;
    return {std::move(name), std::move(shape), std::vector<Real>(size_t(count), Real(0)),
            std::vector<Real>(size_t(count), Real(0))};
}

} // namespace

template <typename Real>
Result<std::unique_ptr<LoraLinear<Real>>>
LoraLinear<Real>::create(std::unique_ptr<LinearBase<Real>> base, const std::string &prefix,
                         int rank, double alpha, bool elasticConnection, uint64_t seed) {
    if (!base)
        return makeError(ErrorCode::InvalidArgument, prefix + ": no base weight");
    if (rank < 0)
        return makeError(ErrorCode::InvalidArgument, prefix + ": negative LoRA rank");
    std::unique_ptr<LoraLinear> linear(new LoraLinear());
    const int64_t in = base->cols(), out = base->rows();
    linear->m_base = std::move(base);
    linear->m_rank = rank;
    if (rank == 0)
        return linear;
    linear->m_scale = Real(alpha / double(rank));
    linear->m_elastic = elasticConnection;
    linear->m_a = makeParameter<Real>(prefix + ".lora_A.weight", {rank, in});
    linear->m_b = makeParameter<Real>(prefix + ".lora_B.weight", {out, rank});
    // PEFT: kaiming_uniform_(A, a=√5) → gain √(2/(1+5)), bound = gain·√(3/fan_in) = 1/√in.
    const double bound = 1.0 / std::sqrt(double(in));
    uint64_t state = seed;
    for (Real &a : linear->m_a.value)
        a = Real((double(splitmix64(state) >> 11) * 0x1.0p-53 * 2.0 - 1.0) * bound);
    if (elasticConnection) { // names of the IR-QLoRA reference (lora_default_{A,B}_scale)
        linear->m_betaA = makeParameter<Real>(prefix + ".lora_default_A_scale", {1});
        linear->m_betaB = makeParameter<Real>(prefix + ".lora_default_B_scale", {1});
    }
    return linear;
}

template <typename Real> std::vector<Parameter<Real> *> LoraLinear<Real>::adapterParameters() {
    if (m_rank == 0)
        return {};
    if (!m_elastic)
        return {&m_a, &m_b};
    return {&m_a, &m_b, &m_betaA, &m_betaB};
}

template <typename Real>
void LoraLinear<Real>::addGroupMean(const Real *x, int64_t n, Real beta, Real *hidden) const {
    for (int64_t row = 0; row < n; ++row)
        for (int64_t g = 0; g < m_rank; ++g) {
            const int64_t begin = poolBegin(g), end = poolEnd(g);
            double sum = 0;
            for (int64_t j = begin; j < end; ++j)
                sum += double(x[row * in() + j]);
            hidden[row * m_rank + g] += beta * Real(sum / double(end - begin));
        }
}

template <typename Real>
void LoraLinear<Real>::forward(const Real *x, int64_t n, Real *y, Real *hidden,
                               ThreadPool *pool) const {
    const int64_t i = in(), o = out(), r = m_rank;
    ops::gemm<Real>(false, true, n, o, i, Real(1), x, i, m_base->weight(), i, Real(0), y, o, pool);
    if (r == 0)
        return;
    ops::gemm<Real>(false, true, n, r, i, Real(1), x, i, m_a.value.data(), i, Real(0), hidden, r,
                    pool);
    if (m_elastic)
        addGroupMean(x, n, m_betaA.value[0], hidden);
    ops::gemm<Real>(false, true, n, o, r, m_scale, hidden, r, m_b.value.data(), r, Real(1), y, o,
                    pool);
    if (m_elastic) {
        const Real c = m_scale * m_betaB.value[0];
        for (int64_t row = 0; row < n; ++row)
            for (int64_t j = 0; j < o; ++j)
                y[row * o + j] += c * hidden[row * r + repeatSource(j)];
    }
}

template <typename Real>
void LoraLinear<Real>::backward(const Real *x, const Real *hidden, const Real *dy, int64_t n,
                                Real *dx, bool accumulate, ThreadPool *pool) {
    const int64_t i = in(), o = out(), r = m_rank;
    // dX = dY·Ŵ (+ the adapter's share below, without forming B·A)
    ops::gemm<Real>(false, false, n, i, o, Real(1), dy, o, m_base->weight(), i,
                    accumulate ? Real(1) : Real(0), dx, i, pool);
    if (!m_base->parameters().empty()) {
        std::vector<Real> dWeight(size_t(o * i));
        ops::gemm<Real>(true, false, o, i, n, Real(1), dy, o, x, i, Real(0), dWeight.data(), i,
                        pool);
        m_base->backward(dWeight.data());
    }
    if (r == 0)
        return;
    // dH = s·dY·B (+ s·βB·repeatᵀ(dY)); dB += s·dYᵀ·H; dβB += s·Σ dY ⊙ repeat(H)
    std::vector<Real> dHidden(size_t(n * r));
    ops::gemm<Real>(false, false, n, r, o, m_scale, dy, o, m_b.value.data(), r, Real(0),
                    dHidden.data(), r, pool);
    ops::gemm<Real>(true, false, o, r, n, m_scale, dy, o, hidden, r, Real(1), m_b.grad.data(), r,
                    pool);
    if (m_elastic) {
        const Real c = m_scale * m_betaB.value[0];
        double dBeta = 0;
        for (int64_t row = 0; row < n; ++row)
            for (int64_t j = 0; j < o; ++j) {
                const int64_t g = repeatSource(j);
                dHidden[size_t(row * r + g)] += c * dy[row * o + j];
                dBeta += double(dy[row * o + j]) * double(hidden[row * r + g]);
            }
        m_betaB.grad[0] += Real(double(m_scale) * dBeta);
    }
    // dA += dHᵀ·X; dX += dH·A (+ βA·groupMeanᵀ(dH)); dβA += Σ dH ⊙ groupMean(X)
    ops::gemm<Real>(true, false, r, i, n, Real(1), dHidden.data(), r, x, i, Real(1),
                    m_a.grad.data(), i, pool);
    ops::gemm<Real>(false, false, n, i, r, Real(1), dHidden.data(), r, m_a.value.data(), i, Real(1),
                    dx, i, pool);
    if (m_elastic) {
        const Real betaA = m_betaA.value[0];
        double dBeta = 0;
        for (int64_t row = 0; row < n; ++row)
            for (int64_t g = 0; g < r; ++g) {
                const int64_t begin = poolBegin(g), end = poolEnd(g);
                const Real dh = dHidden[size_t(row * r + g)] / Real(end - begin);
                double sum = 0;
                for (int64_t j = begin; j < end; ++j) {
                    sum += double(x[row * i + j]);
                    dx[row * i + j] += betaA * dh;
                }
                dBeta += double(dh) * sum;
            }
        m_betaA.grad[0] += Real(dBeta);
    }
}

template <typename Real> std::vector<Real> LoraLinear<Real>::merged() const {
    const int64_t i = in(), o = out(), r = m_rank;
    std::vector<Real> w(m_base->weight(), m_base->weight() + o * i);
    if (r == 0)
        return w;
    std::vector<Real> a = m_a.value, b = m_b.value;
    if (m_elastic) { // A + βA·P, P[g][j] = 1/|group g| on group g; B + βB·R, R[j][source(j)] = 1
        for (int64_t g = 0; g < r; ++g)
            for (int64_t j = poolBegin(g); j < poolEnd(g); ++j)
                a[size_t(g * i + j)] += m_betaA.value[0] / Real(poolEnd(g) - poolBegin(g));
        for (int64_t j = 0; j < o; ++j)
            b[size_t(j * r + repeatSource(j))] += m_betaB.value[0];
    }
    ops::gemm<Real>(false, false, o, i, r, m_scale, b.data(), r, a.data(), i, Real(1), w.data(), i);
    return w;
}

template class LoraLinear<float>;
template class LoraLinear<double>;

} // namespace lowbit::train
