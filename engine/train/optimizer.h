// AdamW, global-norm gradient clipping and learning-rate schedules for the trainer.
//
// AdamW (Loshchilov & Hutter 2019, Alg. 2), as torch.optim.AdamW computes it: per element
//   θ ← θ·(1 − lr·λ)                       decoupled weight decay
//   m ← β1·m + (1 − β1)·g,  v ← β2·v + (1 − β2)·g²
//   θ ← θ − lr/(1 − β1^t) · m / (√v/√(1 − β2^t) + ε)      bias-corrected, t = 1, 2, ...
// Moments are kept in the parameter's scalar type, one pair per parameter, in parameters() order.
//
// Schedules follow transformers' get_{constant,cosine}_schedule_with_warmup: the multiplier of
// optimizer step s (0-based, the number of steps already taken) is s/warmup during warmup, then
// constant 1 or 0.5·(1 + cos(π·progress)), progress = min(1, (s − warmup)/(total − warmup)).
#pragma once

#include "core/result.h"
#include "train/train_types.h"

#include <span>
#include <string_view>
#include <vector>

namespace lowbit::train {

struct AdamWOptions {
    double beta1 = 0.9;
    double beta2 = 0.999;
    double eps = 1e-8;
    double weightDecay = 0.0; // QLoRA's default
};

enum class LrScheduleKind { Constant, Cosine };
Result<LrScheduleKind> parseLrSchedule(std::string_view name); // "constant", "cosine"
const char *lrScheduleName(LrScheduleKind kind);

struct LrSchedule {
    LrScheduleKind kind = LrScheduleKind::Constant;
    double peak = 2e-4; // QLoRA --learning_rate
    int64_t warmupSteps = 0;
    int64_t totalSteps = 0; // cosine: where it reaches 0
    double at(int64_t step) const;
};

// sqrt(sum of squares) over every gradient element, accumulated in double.
template <typename Real> double gradNorm(std::span<Parameter<Real> *const> params);
// Scales every gradient by `factor`.
template <typename Real> void scaleGrads(std::span<Parameter<Real> *const> params, double factor);
// torch.nn.utils.clip_grad_norm_: if the norm exceeds maxNorm > 0, scales the gradients by
// maxNorm / (norm + 1e-6). Returns the norm before clipping.
template <typename Real>
double clipGradNorm(std::span<Parameter<Real> *const> params, double maxNorm);

template <typename Real> class AdamW {
public:
    explicit AdamW(AdamWOptions options = {}) : m_options(options) {}

    // One update of every parameter from its grad, learning rate `lr`. The first call sizes the
    // moments; later calls must pass the same parameters (names and sizes checked).
    Status step(std::span<Parameter<Real> *const> params, double lr);

    int64_t steps() const { return m_steps; }
    const AdamWOptions &options() const { return m_options; }
    // State for checkpoints: moments in parameter order (exp_avg, exp_avg_sq).
    const std::vector<std::vector<Real>> &firstMoments() const { return m_m; }
    const std::vector<std::vector<Real>> &secondMoments() const { return m_v; }
    // Restores a saved state; sizes are checked by the next step().
    void restore(int64_t steps, std::vector<std::vector<Real>> m, std::vector<std::vector<Real>> v);

private:
    AdamWOptions m_options;
    int64_t m_steps = 0;
    std::vector<std::vector<Real>> m_m, m_v;
};

extern template class AdamW<float>;
extern template class AdamW<double>;

} // namespace lowbit::train
