// Log-probabilities from a logit row, with the log-sum-exp accumulated in float64.
#pragma once

#include <cstdint>

namespace lowbit {

// log(sum_j exp(row[j])), stable (max subtracted).
double logSumExp(const float *row, int64_t vocab);
// log softmax(row)[target].
inline double logProbability(const float *row, int64_t vocab, int32_t target) {
    return double(row[target]) - logSumExp(row, vocab);
}

} // namespace lowbit
