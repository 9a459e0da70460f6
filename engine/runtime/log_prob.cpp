#include "runtime/log_prob.h"

#include "backend/cpu_simd.h"

#include <algorithm>
#include <cmath>

namespace lowbit {

double logSumExp(const float *row, int64_t vocab) {
    const float maxValue = cpu::maxValue(row, vocab, row[0]);
    // Terms are in (0, 1]; float exp is exact enough per term, the sum is kept in double.
    return double(maxValue) + std::log(cpu::sumExpShifted(row, vocab, maxValue));
}

} // namespace lowbit
