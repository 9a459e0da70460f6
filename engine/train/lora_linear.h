// LoraLinear: one linear layer of the trainable model — a base weight W (LinearBase, frozen or
// trainable) plus an optional LoRA adapter, optionally with IR-QLoRA's Information Elastic
// Connection (IEC). Used by TrainableModel; exposed for the gradient tests.
//
//   H = X·Aᵀ + βA·groupMean(X)               (n × r)
//   Y = X·Wᵀ + s·(H·Bᵀ + βB·repeat(H))       (n × out), s = alpha / r
//
// groupMean averages the input features in r contiguous groups of in/r; repeat copies hidden
// feature g to the out/r contiguous outputs of group g (repeat_interleave). This is the
// IR-QLoRA reference forward (htqin/IR-QLoRA, irlora.py: `x.reshape(..., r, -1).mean(-1)` added
// to lora_A's output scaled by lora_default_A_scale; lora_B's output reshaped to (r, out/r) plus
// lora_default_B_scale · x.unsqueeze(-1)); paper: Qin et al. 2024, arXiv 2402.05445, Sec. 3.2.
// The reference needs r to divide in and out; here any shape works, identical to it when r
// divides: group g is features [⌊g·in/r⌋, ⌊(g+1)·in/r⌋) (at least the first when in < r), output
// j repeats hidden ⌊j·r/out⌋. (stories260K's 32-wide k/v and 172-wide MLP would otherwise
// allow no rank above 4.)
// Without IEC (or with βA = βB = 0) it is plain LoRA (Hu et al. 2021).
#pragma once

#include "core/result.h"
#include "train/train_types.h"

#include <algorithm>
#include <memory>
#include <string>

namespace lowbit {
class ThreadPool;
}

namespace lowbit::train {

// A frozen dense weight (the default base): a copy converted to Real.
template <typename Real> class DenseLinearBase final : public LinearBase<Real> {
public:
    DenseLinearBase(int64_t rows, int64_t cols, std::vector<Real> weight)
        : m_rows(rows), m_cols(cols), m_weight(std::move(weight)) {}
    int64_t rows() const override { return m_rows; }
    int64_t cols() const override { return m_cols; }
    const Real *weight() const override { return m_weight.data(); }

private:
    int64_t m_rows, m_cols;
    std::vector<Real> m_weight;
};

template <typename Real> class LoraLinear {
public:
    // prefix: the PEFT module path ("base_model.model.model.layers.0.self_attn.q_proj");
    // rank 0: no adapter. Errors: no base, negative rank.
    static Result<std::unique_ptr<LoraLinear>> create(std::unique_ptr<LinearBase<Real>> base,
                                                      const std::string &prefix, int rank,
                                                      double alpha, bool elasticConnection,
                                                      uint64_t seed);

    int64_t in() const { return m_base->cols(); }
    int64_t out() const { return m_base->rows(); }
    int64_t rank() const { return m_rank; }
    LinearBase<Real> &base() { return *m_base; }

    // y (n × out) = the forward above; hidden (n × rank) receives H for backward. The GEMMs
    // split over `pool` (nullptr: serial).
    void forward(const Real *x, int64_t n, Real *y, Real *hidden, ThreadPool *pool = nullptr) const;
    // From dY: writes dL/dX into dx (adds when `accumulate`), adds dL/dA, dL/dB, dL/dβ to the
    // adapter grads and hands dL/dW = dYᵀ·X to a trainable base.
    void backward(const Real *x, const Real *hidden, const Real *dy, int64_t n, Real *dx,
                  bool accumulate, ThreadPool *pool = nullptr);

    // A, B (then βA, βB with IEC); empty without adapter.
    std::vector<Parameter<Real> *> adapterParameters();
    // W + s·(B + βB·R)(A + βA·G): the adapter folded into the base, rows*cols values.
    std::vector<Real> merged() const;

private:
    LoraLinear() = default;
    void addGroupMean(const Real *x, int64_t n, Real beta, Real *hidden) const;
    // The IEC index maps (see the top of this file).
    int64_t poolBegin(int64_t g) const { return g * in() / m_rank; }
    int64_t poolEnd(int64_t g) const { return std::max((g + 1) * in() / m_rank, poolBegin(g) + 1); }
    int64_t repeatSource(int64_t j) const { return j * m_rank / out(); }

    std::unique_ptr<LinearBase<Real>> m_base;
    int64_t m_rank = 0;
    Real m_scale = 0;
    bool m_elastic = false;
    Parameter<Real> m_a, m_b, m_betaA, m_betaB;
};

extern template class LoraLinear<float>;
extern template class LoraLinear<double>;

} // namespace lowbit::train
