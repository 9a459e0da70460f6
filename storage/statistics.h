// Paired statistics for comparing two runs document by document.
#pragma once

#include <cstdint>
#include <span>

namespace lowbit {

// Exact McNemar test (two-sided): of the discordant pairs, b went right->wrong and c
// wrong->right; under H0 each discordant pair is a fair coin, so
// p = min(1, 2 * P[X <= min(b, c)]) with X ~ Binomial(b + c, 1/2). p = 1 when b + c = 0.
double mcnemarExactPValue(int64_t b, int64_t c);

// One document's scored tokens and summed NLL under runs A and B.
struct PairedNll {
    double nllA = 0;
    int64_t tokensA = 0;
    double nllB = 0;
    int64_t tokensB = 0;
};

struct BootstrapInterval {
    double estimate = 0; // on the full sample
    double low = 0;      // percentile interval
    double high = 0;
    int resamples = 0;
};

// Difference of token-weighted mean NLL, B - A (nats per token): sum nllB / sum tokensB -
// sum nllA / sum tokensA. Documents are resampled with replacement as pairs (paired bootstrap),
// `resamples` times with a std::mt19937_64 seeded by `seed`; the interval is the
// ((1-confidence)/2, (1+confidence)/2) percentile range of the resampled differences.
// Also returns the same for the perplexity difference exp(meanB) - exp(meanA) in `pplDelta`.
struct NllComparison {
    BootstrapInterval meanNllDelta;
    BootstrapInterval pplDelta;
};
NllComparison pairedBootstrapNll(std::span<const PairedNll> pairs, int resamples, double confidence,
                                 uint64_t seed);

} // namespace lowbit
