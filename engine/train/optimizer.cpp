#include "train/optimizer.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace lowbit::train {

Result<LrScheduleKind> parseLrSchedule(std::string_view name) {
    if (name == "constant")
        return LrScheduleKind::Constant;
    if (name == "cosine")
        return LrScheduleKind::Cosine;
    return makeError(ErrorCode::InvalidArgument, "unknown learning-rate schedule '" +
                                                     std::string(name) + "' (constant, cosine)");
}

const char *lrScheduleName(LrScheduleKind kind) {
    return kind == LrScheduleKind::Cosine ? "cosine" : "constant";
}

double LrSchedule::at(int64_t step) const {
    if (step < warmupSteps)
        return peak * double(step) / double(std::max<int64_t>(1, warmupSteps));
    if (kind == LrScheduleKind::Constant)
        return peak;
    // Clamped at 1: past totalSteps the rate stays 0 (transformers' would rise again).
    const double progress = std::min(
        1.0, double(step - warmupSteps) / double(std::max<int64_t>(1, totalSteps - warmupSteps)));
    return peak * std::max(0.0, 0.5 * (1.0 + std::cos(std::numbers::pi * progress)));
}

template <typename Real> double gradNorm(std::span<Parameter<Real> *const> params) {
    double sum = 0;
    for (const Parameter<Real> *p : params)
        for (Real g : p->grad)
            sum += double(g) * double(g);
    return std::sqrt(sum);
}

template <typename Real> void scaleGrads(std::span<Parameter<Real> *const> params, double factor) {
    for (Parameter<Real> *p : params)
        for (Real &g : p->grad)
            g = Real(double(g) * factor);
}

template <typename Real>
double clipGradNorm(std::span<Parameter<Real> *const> params, double maxNorm) {
    const double norm = gradNorm(params);
    if (maxNorm > 0 && norm > maxNorm)
        scaleGrads(params, maxNorm / (norm + 1e-6));
    return norm;
}

template <typename Real>
Status AdamW<Real>::step(std::span<Parameter<Real> *const> params, double lr) {
    if (m_m.empty() && !params.empty()) {
        for (const Parameter<Real> *p : params) {
            m_m.emplace_back(p->value.size(), Real(0));
            m_v.emplace_back(p->value.size(), Real(0));
        }
    }
    if (m_m.size() != params.size())
        return makeError(ErrorCode::InvalidArgument, "AdamW: " + std::to_string(params.size()) +
                                                         " parameters, state holds " +
                                                         std::to_string(m_m.size()));
    for (size_t i = 0; i < params.size(); ++i)
        if (params[i]->value.size() != m_m[i].size() || params[i]->grad.size() != m_m[i].size() ||
            m_v[i].size() != m_m[i].size())
            return makeError(ErrorCode::InvalidArgument,
                             "AdamW: parameter '" + params[i]->name +
                                 "' does not match the optimizer state's size");
    ++m_steps;
    const double b1 = m_options.beta1, b2 = m_options.beta2;
    const double bc1 = 1.0 - std::pow(b1, double(m_steps));
    const double bc2Sqrt = std::sqrt(1.0 - std::pow(b2, double(m_steps)));
    const double stepSize = lr / bc1;
    const double decay = 1.0 - lr * m_options.weightDecay;
    for (size_t i = 0; i < params.size(); ++i) {
        Real *value = params[i]->value.data();
        const Real *grad = params[i]->grad.data();
        Real *m = m_m[i].data(), *v = m_v[i].data();
        for (size_t j = 0; j < m_m[i].size(); ++j) {
            const double g = double(grad[j]);
            const double mj = b1 * double(m[j]) + (1.0 - b1) * g;
            const double vj = b2 * double(v[j]) + (1.0 - b2) * g * g;
            m[j] = Real(mj);
            v[j] = Real(vj);
            const double denom = std::sqrt(double(v[j])) / bc2Sqrt + m_options.eps;
            value[j] = Real(double(value[j]) * decay - stepSize * double(m[j]) / denom);
        }
    }
    return {};
}

template <typename Real>
void AdamW<Real>::restore(int64_t steps, std::vector<std::vector<Real>> m,
                          std::vector<std::vector<Real>> v) {
    m_steps = steps;
    m_m = std::move(m);
    m_v = std::move(v);
}

template class AdamW<float>;
template class AdamW<double>;
template double gradNorm<float>(std::span<Parameter<float> *const>);
template double gradNorm<double>(std::span<Parameter<double> *const>);
template void scaleGrads<float>(std::span<Parameter<float> *const>, double);
template void scaleGrads<double>(std::span<Parameter<double> *const>, double);
template double clipGradNorm<float>(std::span<Parameter<float> *const>, double);
template double clipGradNorm<double>(std::span<Parameter<double> *const>, double);

} // namespace lowbit::train
