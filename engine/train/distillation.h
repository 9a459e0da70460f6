// DB-LLM Deviation-Aware Distillation (DAD) (Chen et al. 2024, "DB-LLM: Accurate
// Dual-Binarization for Efficient LLMs", arXiv 2402.11960, Sec. 3.3) as a train::LossFunction,
// the teacher-logit table it reads, and the data-free distillation text the FP model writes
// itself (DB-LLM follows LLM-QAT, Liu et al. 2023, arXiv 2305.17888, Sec. 2.1).
//
// Loss of one scored position (choice, see docs/FINETUNING.md "DB-LLM and IR-QLoRA: choices"):
//     p = softmax(t / T) (teacher, full-precision model), q = softmax(z / T) (student)
//     KL = Σ_v p_v (log p_v - log q_v)                       token-level KL(teacher ‖ student)
//     ĥ_T = H(p) / log V, ĥ_S = H(q) / log V                  normalized entropies in [0, 1]
//     loss = T² · w(ĥ_T, ĥ_S) · KL + ceWeight · CE(softmax(z), target)
// The paper re-weights the KL by the teacher's and the student's uncertainty so that ambiguous
// (high-entropy) tokens, where the quantized model deviates most, count more; it leaves the exact
// function open. The weighting modes (γ = strength ≥ 0):
//     Uniform:    w = 1                          (plain KD, the ablation baseline)
//     Teacher:    w = 1 + γ·ĥ_T                  (ambiguity as the FP model sees it)
//     Ambiguity:  w = 1 + γ·(ĥ_T + ĥ_S) / 2      (default: either model uncertain)
//     Deviation:  w = 1 + γ·|ĥ_T - ĥ_S|          (the uncertainties disagree)
// w is increasing in ĥ_T (Teacher, Ambiguity), in ĥ_S (Ambiguity) and in |ĥ_T - ĥ_S|
// (Deviation), and w ≥ 1 so no token is dropped. T² keeps the gradient scale independent of T
// (Hinton et al. 2015).
// Gradient: by default w is a constant of the position (stop-gradient), so the student cannot
// lower its loss by changing its own entropy; weightGradient = true returns the exact gradient
// of the loss above including dw/dz (then the loss is a plain function of z).
#pragma once

#include "core/result.h"
#include "runtime/generator.h"
#include "runtime/model.h"
#include "train/train_types.h"

#include <functional>
#include <span>
#include <stop_token>
#include <string>
#include <vector>

namespace lowbit::train {

enum class DistillWeighting : uint8_t { Uniform, Teacher, Ambiguity, Deviation };

// "uniform", "teacher", "ambiguity", "deviation"; InvalidArgument names the known ones.
Result<DistillWeighting> parseDistillWeighting(std::string_view name);
const char *distillWeightingName(DistillWeighting weighting);

struct DistillationOptions {
    DistillWeighting weighting = DistillWeighting::Ambiguity;
    double strength = 1.0;       // γ
    double temperature = 1.0;    // T > 0
    double ceWeight = 0.0;       // cross-entropy with the data's target on top (0: pure KD)
    bool weightGradient = false; // see the header comment
};

// The weight w for normalized entropies in [0, 1].
double distillWeight(const DistillationOptions &options, double teacherEntropy,
                     double studentEntropy);

// Teacher logits (vocab floats) of position `position` of batch example `example`, or an empty
// span when there are none. The span must stay valid until the next call.
using TeacherLogitsFn = std::function<std::span<const float>(int64_t example, int64_t position)>;

template <typename Real> class DistillationLoss final : public LossFunction<Real> {
public:
    DistillationLoss(TeacherLogitsFn teacher, const DistillationOptions &options);
    // Per LossFunction. A position without teacher logits, or with a different vocabulary size,
    // scores 0 with a zero gradient and records an error in status() (score cannot fail).
    double score(int64_t example, int64_t position, int32_t target, std::span<const Real> logits,
                 std::span<Real> dLogits) override;

    // The first error since construction or clearStatus(); check it after each accumulate().
    const Status &status() const { return m_status; }
    void clearStatus() { m_status = {}; }
    // Sums over the positions scored so far (for progress events); reset with clearStatus().
    double klSum() const { return m_klSum; }
    double weightSum() const { return m_weightSum; }
    int64_t positions() const { return m_positions; }

private:
    TeacherLogitsFn m_teacher;
    DistillationOptions m_options;
    Status m_status;
    double m_klSum = 0, m_weightSum = 0;
    int64_t m_positions = 0;
    std::vector<double> m_logP, m_logQ;
};

// The FP model's logits at every scored position (target != kIgnoreTarget) of a batch, computed
// once before the student's accumulate() on the same batch.
class TeacherTable {
public:
    // Errors: a sequence longer than the model's context, token ids out of range.
    static Result<TeacherTable> compute(Model &teacher, std::span<const TrainExample> batch);
    std::span<const float> logits(int64_t example, int64_t position) const;
    int64_t vocab() const { return m_vocab; }
    // A TeacherLogitsFn reading this table (which must outlive it).
    TeacherLogitsFn source() const;

private:
    int64_t m_vocab = 0;
    std::vector<std::vector<int64_t>> m_rowOf; // [example][position] -> row, -1: not scored
    std::vector<float> m_values;
};

struct DistillDataOptions {
    int64_t sequences = 64;
    int tokensPerSequence = 256; // generated tokens after the prompt
    // Seed prompts, used in turn; empty: BOS only (the data-free setting).
    std::vector<std::string> prompts;
    // LLM-QAT: the first few tokens top-1, the rest sampled, so that sequences differ but start
    // plausibly. 0: sample from the first token on.
    int greedyPrefixTokens = 0;
    SamplingOptions sampling{.temperature = 1.0, .topK = 0, .topP = 1.0, .seed = 0};
};

// Sequences the FP model writes itself: BOS (+ prompt) + generated tokens, as language-modelling
// examples (targets[i] = tokens[i + 1], the last position unscored). Sequence i samples with
// seed sampling.seed + i, so the set is reproducible. Errors: no tokenizer, cancellation.
Result<std::vector<TrainExample>> generateDistillationData(Model &model,
                                                           const DistillDataOptions &options,
                                                           std::stop_token stop = {});

extern template class DistillationLoss<float>;
extern template class DistillationLoss<double>;

} // namespace lowbit::train
