// DB-LLM Flexible Dual Binarization (FDB) as a trainable linear base (Chen et al. 2024, "DB-LLM:
// Accurate Dual-Binarization for Efficient LLMs", arXiv 2402.11960, Sec. 3.2).
//
// Per (row, group of `groupSize` input columns) the weight is two binary planes with their own
// learnable scales:
//     ŵ = α1·b1 + α2·b2,   b1, b2 ∈ {0, 1}                                     (paper, FDB)
// The paper's binaries are {0, 1}, not {-1, +1}: that keeps the sparsity of the 2-bit grid (a
// weight with b1 = b2 = 0 is exactly 0), which the paper counts among FDB's advantages.
//
// Initialization: the 2-bit asymmetric min-max quantizer of this project's RTN / GPTQ baseline
// (engine/quant/minmax_grid.h: ŵ = s·(q - z), q ∈ {0..3}, integer zero z ∈ {0..3}). Its four
// levels always contain 0 (q = z), and the other three are {a, b, a + b} for two of them, so the
// grid is FDB exactly. For z = 1 this is the paper's initialization α1 = 2s, α2 = -s; the other
// zero points are the same split with the roles or signs exchanged:
//     z = 0: α1 = s,   α2 = 2s      z = 1: α1 = 2s, α2 = -s
//     z = 2: α1 = -2s, α2 = s       z = 3: α1 = -s, α2 = -2s
// so the initial ŵ equals the RTN 2-bit weight (bit for bit in float).
//
// Training (choice, see docs/FINETUNING.md "DB-LLM and IR-QLoRA: choices"):
//   - α (parameter "<linear>.fdb_alpha", shape {rows, groups, 2}) always trains:
//     dL/dα1 = Σ_group dL/dŵ · b1, dL/dα2 = Σ_group dL/dŵ · b2 (exact: ŵ is linear in α).
//   - trainLatent (default on, the paper's quantization-aware training): the full-precision
//     latent weight (parameter "<linear>.weight", rows*cols) receives dL/dŵ through the
//     straight-through estimator (identity), and refresh() re-derives the binaries as the nearest
//     of the four levels {0, α1, α2, α1 + α2} (ties: that order). For the paper's sign pattern
//     this is its thresholding b1 = H(w - (α1 + α2)/2), b2 = H(-(w - α1·b1 - α2/2)); for the
//     other zero points it is the same rule stated without the sign assumption.
//   - trainLatent off: the binaries stay those of the initialization and only α trains.
// Deployed storage: 2 bits per weight plus two fp16 scales per group: 2 + 32 / groupSize bits.
#pragma once

#include "core/result.h"
#include "core/tensor.h"
#include "quant/quantized_tensor.h"
#include "train/train_types.h"
#include "train/trainable_model.h"

#include <memory>
#include <span>
#include <string>
#include <vector>

namespace lowbit::train {

struct DualBinaryOptions {
    int64_t groupSize = 64;  // input columns per α pair; <= 0 or >= cols: one group per row
    bool trainLatent = true; // QAT of the latent weight through the STE (see above)
};

template <typename Real> class DualBinaryLinear final : public LinearBase<Real> {
public:
    // `name`: the HF tensor name of the linear ("model.layers.0.self_attn.q_proj.weight"); the
    // parameters are named after it. Errors: non-positive shape, non-finite weights.
    static Result<std::unique_ptr<DualBinaryLinear>> create(const std::string &name,
                                                            const float *weight, int64_t rows,
                                                            int64_t cols,
                                                            const DualBinaryOptions &options);

    int64_t rows() const override { return m_rows; }
    int64_t cols() const override { return m_cols; }
    const Real *weight() const override { return m_weight.data(); }
    std::vector<Parameter<Real> *> parameters() override;
    void backward(const Real *dWeight) override;
    void refresh() override;

    int64_t groupSize() const { return m_groupSize; }
    int64_t groups() const { return (m_cols + m_groupSize - 1) / m_groupSize; }
    // The binary planes, rows*cols values in {0, 1}.
    std::span<const uint8_t> plane1() const { return m_b1; }
    std::span<const uint8_t> plane2() const { return m_b2; }
    // α1, α2 of (row, group).
    Real alpha1(int64_t row, int64_t group) const { return m_alpha.value[index(row, group)]; }
    Real alpha2(int64_t row, int64_t group) const { return m_alpha.value[index(row, group) + 1]; }
    Parameter<Real> &alphaParameter() { return m_alpha; }
    Parameter<Real> *latentParameter() { return m_trainLatent ? &m_latent : nullptr; }
    // The current planes and scales in the "fdb" storage layout (engine/quant/fdb.h), e.g. for
    // writing the trained model as a quantized checkpoint; `name` is the tensor name.
    Result<QuantizedTensor> toQuantizedTensor(const std::string &name) const;
    // Deployed bits per weight: 2 + 2·16 / groupSize (codes plus fp16 α pair per group).
    double bitsPerWeight() const { return 2.0 + 32.0 / double(m_groupSize); }

private:
    DualBinaryLinear() = default;
    size_t index(int64_t row, int64_t group) const { return size_t(row * groups() + group) * 2; }
    void rebuildWeight();
    void reassignBinaries();

    int64_t m_rows = 0, m_cols = 0, m_groupSize = 0;
    bool m_trainLatent = true;
    std::vector<uint8_t> m_b1, m_b2;
    Parameter<Real> m_alpha;  // {rows, groups, 2}
    Parameter<Real> m_latent; // {rows, cols}; empty unless trainLatent
    std::vector<Real> m_weight;
};

// A LinearBaseFactory building a DualBinaryLinear for every linear of every layer.
template <typename Real>
LinearBaseFactory<Real> makeDualBinaryFactory(const DualBinaryOptions &options);

extern template class DualBinaryLinear<float>;
extern template class DualBinaryLinear<double>;

} // namespace lowbit::train
