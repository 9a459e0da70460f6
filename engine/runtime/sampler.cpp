#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>

namespace lowbit {

int32_t argmax(std::span<const float> values) {
    return int32_t(std::max_element(values.begin(), values.end()) - values.begin());
}

Sampler::Sampler(const SamplingOptions &options) : m_options(options), m_rng(options.seed) {}

int32_t Sampler::sample(std::span<const float> logits) {
    if (m_options.temperature <= 0.0)
        return argmax(logits);
    m_candidates.clear();
    for (size_t i = 0; i < logits.size(); ++i)
        m_candidates.emplace_back(logits[i], int32_t(i));
    auto byLogit = [](const auto &a, const auto &b) { return a.first > b.first; };
    size_t keep = m_candidates.size();
    if (m_options.topK > 0 && size_t(m_options.topK) < keep) {
        keep = size_t(m_options.topK);
        std::partial_sort(m_candidates.begin(), m_candidates.begin() + long(keep), m_candidates.end(), byLogit);
    } else {
        std::sort(m_candidates.begin(), m_candidates.end(), byLogit);
    }
    // Probabilities of the kept candidates at temperature T (float64 for the normalisation).
    const double maxLogit = m_candidates.front().first;
    std::vector<double> probs(keep);
    double total = 0;
    for (size_t i = 0; i < keep; ++i) {
        probs[i] = std::exp((double(m_candidates[i].first) - maxLogit) / m_options.temperature);
        total += probs[i];
    }
    if (m_options.topP < 1.0) {
        double cumulative = 0;
        size_t cut = keep;
        for (size_t i = 0; i < keep; ++i) {
            cumulative += probs[i] / total;
            if (cumulative >= m_options.topP) {
                cut = i + 1;
                break;
            }
        }
        keep = cut;
        total = 0;
        for (size_t i = 0; i < keep; ++i)
            total += probs[i];
    }
    std::uniform_real_distribution<double> uniform(0.0, total);
    double r = uniform(m_rng);
    for (size_t i = 0; i < keep; ++i) {
        r -= probs[i];
        if (r <= 0)
            return m_candidates[i].second;
    }
    return m_candidates[keep - 1].second;
}

} // namespace lowbit
