// Sampler against closed-form distributions: softmax(logits/T), top-k and top-p truncation.
#include "runtime/sampler.h"

#include <QtTest>
#include <cmath>

using namespace lowbit;

namespace {

std::vector<double> frequencies(Sampler &sampler, const std::vector<float> &logits, int draws) {
    std::vector<double> counts(logits.size(), 0);
    for (int i = 0; i < draws; ++i)
        counts[size_t(sampler.sample(logits))] += 1.0 / draws;
    return counts;
}

// Each frequency within 4 standard errors of its probability.
bool matches(const std::vector<double> &freq, const std::vector<double> &prob, int draws) {
    for (size_t i = 0; i < prob.size(); ++i) {
        const double se = std::sqrt(std::max(prob[i] * (1 - prob[i]), 1e-12) / draws);
        if (std::abs(freq[i] - prob[i]) > 4 * se + 1e-12)
            return false;
    }
    return true;
}

const std::vector<float> kLogits = {std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)};
constexpr int kDraws = 20000;

} // namespace

class TestSampler : public QObject {
    Q_OBJECT
private slots:
    void greedyIsArgmax() {
        Sampler s({0.0, 0, 1.0, 1});
        QCOMPARE(s.sample(std::vector<float>{0.1f, 3.0f, -2.0f, 2.9f}), 1);
        Sampler topOne({1.5, 1, 1.0, 7}); // top-k 1 leaves only the argmax
        for (int i = 0; i < 100; ++i)
            QCOMPARE(topOne.sample(std::vector<float>{0.1f, 3.0f, -2.0f, 2.9f}), 1);
    }
    void temperatureOne() {
        Sampler s({1.0, 0, 1.0, 42});
        QVERIFY(matches(frequencies(s, kLogits, kDraws), {0.5, 0.3, 0.15, 0.05}, kDraws));
    }
    void temperatureTwo() { // p_i^(1/2), renormalised
        Sampler s({2.0, 0, 1.0, 43});
        std::vector<double> p = {std::sqrt(0.5), std::sqrt(0.3), std::sqrt(0.15), std::sqrt(0.05)};
        double total = 0;
        for (double v : p) total += v;
        for (double &v : p) v /= total;
        QVERIFY(matches(frequencies(s, kLogits, kDraws), p, kDraws));
    }
    void topK() {
        Sampler s({1.0, 2, 1.0, 44});
        QVERIFY(matches(frequencies(s, kLogits, kDraws), {0.625, 0.375, 0, 0}, kDraws));
    }
    void topP() { // 0.5 < 0.9 <= 0.5+0.3+0.15: the first three survive
        Sampler s({1.0, 0, 0.9, 45});
        QVERIFY(matches(frequencies(s, kLogits, kDraws), {0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0}, kDraws));
    }
    void seeded() {
        Sampler a({1.0, 0, 1.0, 9}), b({1.0, 0, 1.0, 9}), c({1.0, 0, 1.0, 10});
        std::vector<int32_t> ra, rb, rc;
        for (int i = 0; i < 64; ++i) {
            ra.push_back(a.sample(kLogits));
            rb.push_back(b.sample(kLogits));
            rc.push_back(c.sample(kLogits));
        }
        QCOMPARE(ra, rb);
        QVERIFY(ra != rc);
    }
};

QTEST_APPLESS_MAIN(TestSampler)
#include "test_sampler.moc"
