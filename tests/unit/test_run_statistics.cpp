// Paired statistics for `lowbit compare`: the exact McNemar test against hand-computed binomial
// tails and the normal approximation; the paired bootstrap against closed-form cases and the
// normal-theory interval of a mean difference.
#include "statistics.h"

#include <QtTest>

#include <cmath>
#include <random>

using namespace lowbit;

class TestRunStatistics : public QObject {
    Q_OBJECT
private slots:
    void mcnemarSmallExact();
    void mcnemarAgainstRecurrence();
    void mcnemarLargeAgainstNormal();
    void bootstrapIdenticalRuns();
    void bootstrapConstantShift();
    void bootstrapAgainstNormalTheory();
};

void TestRunStatistics::mcnemarSmallExact() {
    QCOMPARE(mcnemarExactPValue(0, 0), 1.0);
    QCOMPARE(mcnemarExactPValue(10, 0), 2.0 / 1024.0);
    QCOMPARE(mcnemarExactPValue(0, 10), 2.0 / 1024.0);
    // n = 8, k = 3: P[X <= 3] = (1 + 8 + 28 + 56) / 256.
    QVERIFY(std::abs(mcnemarExactPValue(3, 5) - 2.0 * 93.0 / 256.0) < 1e-15);
    QCOMPARE(mcnemarExactPValue(4, 4), 1.0);
}

void TestRunStatistics::mcnemarAgainstRecurrence() {
    // Binomial(n, 1/2) tail by the term recurrence C(n, i+1) = C(n, i) (n - i) / (i + 1), in long
    // double.
    std::mt19937 rng(std::random_device{}());
    for (int trial = 0; trial < 20; ++trial) {
        const int64_t b = rng() % 300, c = rng() % 300;
        const int64_t n = b + c, k = std::min(b, c);
        long double term = std::pow(0.5L, (long double)n), tail = 0;
        for (int64_t i = 0; i <= k; ++i) {
            tail += term;
            term = term * (long double)(n - i) / (long double)(i + 1);
        }
        const double expected = double(std::min<long double>(1.0L, 2.0L * tail));
        const double got = mcnemarExactPValue(b, c);
        QVERIFY2(std::abs(got - expected) <= 1e-9 * std::max(expected, 1e-300) + 1e-300,
                 qPrintable(QString("b=%1 c=%2: %3 vs %4").arg(b).arg(c).arg(got).arg(expected)));
    }
}

void TestRunStatistics::mcnemarLargeAgainstNormal() {
    // For large b + c the exact p approaches the continuity-corrected normal one.
    const int64_t b = 2000, c = 2200;
    const double z = (std::abs(double(b - c)) - 1.0) / std::sqrt(double(b + c));
    const double normal = std::erfc(z / std::sqrt(2.0));
    const double exact = mcnemarExactPValue(b, c);
    QVERIFY2(std::abs(exact - normal) / normal < 0.02,
             qPrintable(QString("%1 vs %2").arg(exact).arg(normal)));
}

void TestRunStatistics::bootstrapIdenticalRuns() {
    std::mt19937_64 rng(std::random_device{}());
    std::vector<PairedNll> pairs;
    for (int i = 0; i < 50; ++i) {
        const int64_t tokens = 1 + int64_t(rng() % 300);
        const double nll = double(tokens) * std::uniform_real_distribution<double>(1, 4)(rng);
        pairs.push_back({nll, tokens, nll, tokens});
    }
    const NllComparison result = pairedBootstrapNll(pairs, 500, 0.95, 1);
    QCOMPARE(result.meanNllDelta.estimate, 0.0);
    QCOMPARE(result.meanNllDelta.low, 0.0);
    QCOMPARE(result.meanNllDelta.high, 0.0);
    QCOMPARE(result.pplDelta.estimate, 0.0);
    QCOMPARE(result.meanNllDelta.resamples, 500);
}

void TestRunStatistics::bootstrapConstantShift() {
    // B = A + d nats on every token: every resample has mean difference d.
    std::mt19937_64 rng(std::random_device{}());
    const double d = 0.0375;
    std::vector<PairedNll> pairs;
    double nllA = 0, tokensA = 0;
    for (int i = 0; i < 80; ++i) {
        const int64_t tokens = 1 + int64_t(rng() % 500);
        const double nll = double(tokens) * std::uniform_real_distribution<double>(0.5, 5)(rng);
        pairs.push_back({nll, tokens, nll + d * double(tokens), tokens});
        nllA += nll;
        tokensA += double(tokens);
    }
    const NllComparison result = pairedBootstrapNll(pairs, 400, 0.9, 7);
    QVERIFY(std::abs(result.meanNllDelta.estimate - d) < 1e-12);
    QVERIFY(std::abs(result.meanNllDelta.low - d) < 1e-12);
    QVERIFY(std::abs(result.meanNllDelta.high - d) < 1e-12);
    const double meanA = nllA / tokensA;
    QVERIFY(std::abs(result.pplDelta.estimate - (std::exp(meanA + d) - std::exp(meanA))) < 1e-9);
    QVERIFY(result.pplDelta.low <= result.pplDelta.estimate &&
            result.pplDelta.estimate <= result.pplDelta.high);
}

void TestRunStatistics::bootstrapAgainstNormalTheory() {
    // Equal token counts: the difference of means is the mean of per-document differences / tokens,
    // whose 95% interval is about estimate +- 1.96 sd / sqrt(n).
    std::mt19937_64 rng(std::random_device{}());
    std::normal_distribution<double> noise(0.02, 0.05);
    const int n = 400;
    const int64_t tokens = 128;
    std::vector<PairedNll> pairs;
    std::vector<double> diffs;
    for (int i = 0; i < n; ++i) {
        const double a = 2.0 + std::uniform_real_distribution<double>(-0.5, 0.5)(rng);
        const double delta = noise(rng);
        pairs.push_back({a * tokens, tokens, (a + delta) * tokens, tokens});
        diffs.push_back(delta);
    }
    double mean = 0, var = 0;
    for (double x : diffs)
        mean += x / n;
    for (double x : diffs)
        var += (x - mean) * (x - mean) / (n - 1);
    const double halfWidth = 1.96 * std::sqrt(var / n);
    const NllComparison result = pairedBootstrapNll(pairs, 4000, 0.95, 11);
    QVERIFY(std::abs(result.meanNllDelta.estimate - mean) < 1e-12);
    const double bootHalf = (result.meanNllDelta.high - result.meanNllDelta.low) / 2;
    QVERIFY2(
        std::abs(bootHalf - halfWidth) / halfWidth < 0.1,
        qPrintable(QString("bootstrap half width %1, normal %2").arg(bootHalf).arg(halfWidth)));
    QVERIFY(result.meanNllDelta.low < mean && mean < result.meanNllDelta.high);
}

QTEST_APPLESS_MAIN(TestRunStatistics)
#include "test_run_statistics.moc"
