#include "train/dual_binary.h"

#include "quant/fdb.h"

#include <array>
#include <cmath>

namespace lowbit::train {

namespace {

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
    // DB-LLM Sec. 3.2: the initial planes and scales are those of the 2-bit uniform quantizer
    // (quant/fdb.h: RTN 2-bit written as two {0, 1} planes). Validates shape and values.
    LOWBIT_TRY(QuantizedTensor init, quantizeFdb(name, weight, rows, cols, options.groupSize));
    std::unique_ptr<DualBinaryLinear> l(new DualBinaryLinear());
    l->m_rows = rows;
    l->m_cols = cols;
    l->m_groupSize = init.groupSize;
    l->m_trainLatent = options.trainLatent;
    const std::vector<uint8_t> codes = init.codes();
    l->m_b1.resize(codes.size());
    l->m_b2.resize(codes.size());
    for (size_t i = 0; i < codes.size(); ++i) {
        l->m_b1[i] = codes[i] & 1;
        l->m_b2[i] = (codes[i] >> 1) & 1;
    }
    const std::span<const float> alpha = init.extra.at("fdb_alpha").f32();
    l->m_alpha = {stem(name) + ".fdb_alpha",
                  {rows, l->groups(), 2},
                  std::vector<Real>(alpha.begin(), alpha.end()),
                  std::vector<Real>(alpha.size())};
    if (options.trainLatent)
        l->m_latent = {name,
                       {rows, cols},
                       std::vector<Real>(weight, weight + rows * cols),
                       std::vector<Real>(static_cast<size_t>(rows * cols))};
    l->rebuildWeight();
    return l;
}

template <typename Real>
Result<QuantizedTensor> DualBinaryLinear<Real>::toQuantizedTensor(const std::string &name) const {
    const std::vector<float> alpha(m_alpha.value.begin(), m_alpha.value.end());
    return packFdb(name, m_rows, m_cols, m_groupSize, m_b1, m_b2, alpha);
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
