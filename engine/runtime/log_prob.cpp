#include "runtime/log_prob.h"

#include <algorithm>
#include <cmath>

namespace lowbit {

double logSumExp(const float *row, int64_t vocab) {
    const float maxValue = *std::max_element(row, row + vocab);
    // Terms are in (0, 1]; float exp is exact enough per term, the sum is kept in double.
    double sum = 0;
    for (int64_t j = 0; j < vocab; ++j)
        sum += double(std::exp(row[j] - maxValue));
    return double(maxValue) + std::log(sum);
}

} // namespace lowbit
