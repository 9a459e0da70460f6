#include "train/dual_binary.h"

#include "quant/minmax_grid.h"

#include <array>
#include <cmath>

namespace lowbit::train {

namespace {

// For RTN zero point z: the codes q whose level s·(q - z) is α1, α2 and α1 + α2 (header table).
struct Split {
    uint8_t alpha1, alpha2, both;
};
constexpr std::array<Split, 4> kSplits = {{{1, 2, 3}, {3, 0, 2}, {0, 3, 1}, {2, 1, 0}}};

std::string stem(const std::string &name) {
    const std::string suffix = ".weight";
    if (name.size() > suffix.size() &&
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0)
        return name.substr(0, name.size() - suffix.size());
    return name;
}

} // namespace

template <typename Real>
Result<std::unique_ptr<DualBinaryLinear<Real>>>
DualBinaryLinear<Real>::create(const std::string &name, const float *weight, int64_t rows,
                               int64_t cols, const DualBinaryOptions &options) {
    if (rows <= 0 || cols <= 0)
        return makeError(ErrorCode::InvalidArgument,
                         name + ": dual binarization of an empty weight");
    for (int64_t i = 0; i < rows * cols; ++i)
        if (!std::isfinite(weight[i]))
            return makeError(ErrorCode::InvalidArgument,
                             name + ": non-finite weight at index " + std::to_string(i));
    std::unique_ptr<DualBinaryLinear> l(new DualBinaryLinear());
    l->m_rows = rows;
    l->m_cols = cols;
    l->m_groupSize = options.groupSize <= 0 || options.groupSize >= cols ? cols : options.groupSize;
    l->m_trainLatent = options.trainLatent;
    const int64_t groups = l->groups();
    l->m_b1.assign(size_t(rows * cols), 0);
    l->m_b2.assign(size_t(rows * cols), 0);
    l->m_alpha = {stem(name) + ".fdb_alpha",
                  {rows, groups, 2},
                  std::vector<Real>(size_t(rows * groups * 2)),
                  std::vector<Real>(size_t(rows * groups * 2))};
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t g = 0; g < groups; ++g) {
            const int64_t begin = g * l->m_groupSize, end = std::min(cols, begin + l->m_groupSize);
            const float *x = weight + r * cols + begin;
            // DB-LLM Sec. 3.2: FDB starts from the 2-bit uniform quantizer (here RTN's grid).
            const GridParams grid = minMaxGrid(x, end - begin, 1, 2, false);
            const Split split = kSplits[size_t(std::clamp(int(grid.zero), 0, 3))];
            l->m_alpha.value[l->index(r, g)] = Real(grid.value(split.alpha1));
            l->m_alpha.value[l->index(r, g) + 1] = Real(grid.value(split.alpha2));
            for (int64_t j = begin; j < end; ++j) {
                const uint8_t q = grid.code(weight[r * cols + j]);
                const size_t i = size_t(r * cols + j);
                l->m_b1[i] = q == split.alpha1 || q == split.both;
                l->m_b2[i] = q == split.alpha2 || q == split.both;
            }
        }
    if (options.trainLatent)
        l->m_latent = {name,
                       {rows, cols},
                       std::vector<Real>(weight, weight + rows * cols),
                       std::vector<Real>(size_t(rows * cols))};
    l->rebuildWeight();
    return l;
}

template <typename Real> std::vector<Parameter<Real> *> DualBinaryLinear<Real>::parameters() {
    if (m_trainLatent)
        return {&m_alpha, &m_latent};
    return {&m_alpha};
}

template <typename Real> void DualBinaryLinear<Real>::backward(const Real *dWeight) {
    const int64_t groups = this->groups();
    for (int64_t r = 0; r < m_rows; ++r)
        for (int64_t g = 0; g < groups; ++g) {
            const int64_t begin = g * m_groupSize, end = std::min(m_cols, begin + m_groupSize);
            Real d1 = 0, d2 = 0;
            for (int64_t j = begin; j < end; ++j) {
                const size_t i = size_t(r * m_cols + j);
                d1 += m_b1[i] ? dWeight[i] : Real(0);
                d2 += m_b2[i] ? dWeight[i] : Real(0);
            }
            m_alpha.grad[index(r, g)] += d1;
            m_alpha.grad[index(r, g) + 1] += d2;
        }
    if (m_trainLatent) // straight-through estimator: dL/dw := dL/dŵ
        for (size_t i = 0; i < m_latent.grad.size(); ++i)
            m_latent.grad[i] += dWeight[i];
}

template <typename Real> void DualBinaryLinear<Real>::refresh() {
    if (m_trainLatent)
        reassignBinaries();
    rebuildWeight();
}

template <typename Real> void DualBinaryLinear<Real>::reassignBinaries() {
    const int64_t groups = this->groups();
    for (int64_t r = 0; r < m_rows; ++r)
        for (int64_t g = 0; g < groups; ++g) {
            const Real a1 = alpha1(r, g), a2 = alpha2(r, g);
            const std::array<Real, 4> levels = {Real(0), a1, a2, a1 + a2};
            const int64_t begin = g * m_groupSize, end = std::min(m_cols, begin + m_groupSize);
            for (int64_t j = begin; j < end; ++j) {
                const size_t i = size_t(r * m_cols + j);
                const Real w = m_latent.value[i];
                size_t best = 0;
                for (size_t k = 1; k < 4; ++k)
                    if (std::abs(w - levels[k]) < std::abs(w - levels[best]))
                        best = k;
                m_b1[i] = best == 1 || best == 3;
                m_b2[i] = best == 2 || best == 3;
            }
        }
}

template <typename Real> void DualBinaryLinear<Real>::rebuildWeight() {
    m_weight.resize(size_t(m_rows * m_cols));
    for (int64_t r = 0; r < m_rows; ++r)
        for (int64_t j = 0; j < m_cols; ++j) {
            const size_t i = size_t(r * m_cols + j), a = index(r, j / m_groupSize);
            m_weight[i] =
                (m_b1[i] ? m_alpha.value[a] : Real(0)) + (m_b2[i] ? m_alpha.value[a + 1] : Real(0));
        }
}

template <typename Real>
LinearBaseFactory<Real> makeDualBinaryFactory(const DualBinaryOptions &options) {
    return [options](int64_t layer, std::string_view proj,
                     const Tensor &weight) -> Result<std::unique_ptr<LinearBase<Real>>> {
        if (weight.shape.size() != 2)
            return makeError(ErrorCode::InvalidArgument,
                             weight.name + ": dual binarization needs a 2-D weight");
        const bool attention =
            proj == "q_proj" || proj == "k_proj" || proj == "v_proj" || proj == "o_proj";
        const std::string name = "model.layers." + std::to_string(layer) +
                                 (attention ? ".self_attn." : ".mlp.") + std::string(proj) +
                                 ".weight";
        const std::vector<float> values = tensorToFloats(weight);
        LOWBIT_TRY(auto base, DualBinaryLinear<Real>::create(name, values.data(), weight.rows(),
                                                             weight.cols(), options));
        return std::unique_ptr<LinearBase<Real>>(std::move(base));
    };
}

template class DualBinaryLinear<float>;
template class DualBinaryLinear<double>;
template LinearBaseFactory<float> makeDualBinaryFactory<float>(const DualBinaryOptions &);
template LinearBaseFactory<double> makeDualBinaryFactory<double>(const DualBinaryOptions &);

} // namespace lowbit::train
