// Sampler: picks the next token from a logit row. Greedy when temperature is 0; otherwise
// softmax(logits / T), restricted to the top-k, then to the smallest set whose probability
// reaches top-p (the llama.cpp / HF order: top-k, top-p, then temperature-scaled draw).
#pragma once

#include "runtime/generator.h"

#include <random>
#include <span>

namespace lowbit {

class Sampler {
public:
    explicit Sampler(const SamplingOptions &options);
    int32_t sample(std::span<const float> logits);

private:
    SamplingOptions m_options;
    std::mt19937_64 m_rng;
    std::vector<std::pair<float, int32_t>> m_candidates;
};

int32_t argmax(std::span<const float> values);

} // namespace lowbit
