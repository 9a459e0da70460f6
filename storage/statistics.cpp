#include "statistics.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

namespace lowbit {

double mcnemarExactPValue(int64_t b, int64_t c) {
    const int64_t n = b + c;
    if (n <= 0)
        return 1.0;
    const int64_t k = std::min(b, c);
    // P[X <= k] summed in log space: C(n, i) 2^-n underflows double for n > ~1070.
    const double logHalfN = -double(n) * std::log(2.0);
    const double logNFact = std::lgamma(double(n) + 1);
    double tail = 0;
    for (int64_t i = 0; i <= k; ++i)
        tail += std::exp(logNFact - std::lgamma(double(i) + 1) - std::lgamma(double(n - i) + 1) +
                         logHalfN);
    return std::min(1.0, 2.0 * tail);
}

namespace {

struct Sums {
    double nllA = 0, nllB = 0;
    double tokensA = 0, tokensB = 0;
    double meanDelta() const { return nllB / tokensB - nllA / tokensA; }
    double pplDelta() const { return std::exp(nllB / tokensB) - std::exp(nllA / tokensA); }
    void add(const PairedNll &p) {
        nllA += p.nllA;
        nllB += p.nllB;
        tokensA += double(p.tokensA);
        tokensB += double(p.tokensB);
    }
};

BootstrapInterval interval(double estimate, std::vector<double> &values, double confidence) {
    BootstrapInterval out;
    out.estimate = estimate;
    out.resamples = int(values.size());
    if (values.empty()) {
        out.low = out.high = estimate;
        return out;
    }
    std::sort(values.begin(), values.end());
    const double alpha = (1.0 - confidence) / 2.0;
    // Nearest-rank percentiles.
    const auto rank = [&](double q) {
        const double position = std::ceil(q * double(values.size())) - 1;
        return values[size_t(std::clamp(position, 0.0, double(values.size() - 1)))];
    };
    out.low = rank(alpha);
    out.high = rank(1.0 - alpha);
    return out;
}

} // namespace

NllComparison pairedBootstrapNll(std::span<const PairedNll> pairs, int resamples, double confidence,
                                 uint64_t seed) {
    Sums full;
    for (const PairedNll &p : pairs)
        full.add(p);
    std::vector<double> meanDeltas, pplDeltas;
    if (!pairs.empty() && resamples > 0) {
        std::mt19937_64 rng(seed);
        std::uniform_int_distribution<size_t> pick(0, pairs.size() - 1);
        meanDeltas.reserve(size_t(resamples));
        pplDeltas.reserve(size_t(resamples));
        for (int r = 0; r < resamples; ++r) {
            Sums sums;
            for (size_t i = 0; i < pairs.size(); ++i)
                sums.add(pairs[pick(rng)]);
            if (sums.tokensA <= 0 || sums.tokensB <= 0)
                continue;
            meanDeltas.push_back(sums.meanDelta());
            pplDeltas.push_back(sums.pplDelta());
        }
    }
    NllComparison out;
    const bool defined = full.tokensA > 0 && full.tokensB > 0;
    out.meanNllDelta = interval(defined ? full.meanDelta() : NAN, meanDeltas, confidence);
    out.pplDelta = interval(defined ? full.pplDelta() : NAN, pplDeltas, confidence);
    return out;
}

} // namespace lowbit
