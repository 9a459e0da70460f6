// DB-LLM Deviation-Aware Distillation: d(loss)/d(logits) by central differences in double for
// every weighting (exact-gradient mode, temperatures, with and without cross-entropy); the
// stop-gradient mode against w0·T²·KL with w0 recomputed here; KL against a direct float64 sum;
// zero loss and gradient when student == teacher; the weights monotone as documented; a missing
// teacher row is an error, not a crash; on stories260K the self-generated distillation text is
// reproducible and the teacher table matches prefix-by-prefix forward passes.
#include "shared_data.h"

#include "model/checkpoint.h"
#include "train/distillation.h"

#include <QtTest>

#include <cmath>
#include <random>

using namespace lowbit;
using namespace lowbit::train;

namespace {

std::vector<double> randomLogits(uint32_t seed, size_t n, double sd) {
    std::mt19937 rng(seed);
    std::normal_distribution<double> normal(0.0, sd);
    std::vector<double> x(n);
    for (double &v : x)
        v = normal(rng);
    return x;
}

std::vector<double> softmax(const std::vector<double> &x, double T) {
    double top = -1e300, sum = 0;
    for (double v : x)
        top = std::max(top, v / T);
    std::vector<double> p(x.size());
    for (size_t i = 0; i < x.size(); ++i)
        sum += p[i] = std::exp(x[i] / T - top);
    for (double &v : p)
        v /= sum;
    return p;
}

double entropy(const std::vector<double> &p) {
    double h = 0;
    for (double v : p)
        h -= v > 0 ? v * std::log(v) : 0.0;
    return h;
}

double kl(const std::vector<double> &p, const std::vector<double> &q) {
    double s = 0;
    for (size_t i = 0; i < p.size(); ++i)
        s += p[i] * std::log(p[i] / q[i]);
    return s;
}

struct Fixture {
    std::vector<float> teacher;
    TeacherLogitsFn fn() const {
        return [this](int64_t, int64_t) { return std::span<const float>(teacher); };
    }
};

double scoreOf(DistillationLoss<double> &loss, const std::vector<double> &z, int32_t target,
               std::vector<double> &grad) {
    grad.assign(z.size(), 0.0);
    return loss.score(0, 3, target, z, grad);
}

} // namespace

class TestTrainDistillation : public QObject {
    Q_OBJECT
private slots:
    void gradientCentralDifferences();
    void stopGradientMode();
    void klMatchesDirectSum();
    void zeroWhenStudentIsTeacher();
    void weightingMonotone();
    void missingTeacherIsAnError();
    void parseNames();
    void stories260kDataAndTeacherTable();
};

void TestTrainDistillation::gradientCentralDifferences() {
    const size_t vocab = 37;
    Fixture f;
    const auto t = randomLogits(1, vocab, 2.0);
    f.teacher.assign(t.begin(), t.end());
    int checked = 0;
    for (DistillWeighting mode : {DistillWeighting::Uniform, DistillWeighting::Teacher,
                                  DistillWeighting::Ambiguity, DistillWeighting::Deviation})
        for (double T : {1.0, 1.7})
            for (double ce : {0.0, 0.3}) {
                DistillationOptions o{.weighting = mode,
                                      .strength = 0.8,
                                      .temperature = T,
                                      .ceWeight = ce,
                                      .weightGradient = true};
                DistillationLoss<double> loss(f.fn(), o);
                const auto z = randomLogits(2 + checked, vocab, 1.5);
                std::vector<double> grad, scratch;
                scoreOf(loss, z, 5, grad);
                QVERIFY(loss.status().ok());
                const double eps = 1e-6;
                for (size_t v = 0; v < vocab; ++v) {
                    auto up = z, down = z;
                    up[v] += eps;
                    down[v] -= eps;
                    const double numeric =
                        (scoreOf(loss, up, 5, scratch) - scoreOf(loss, down, 5, scratch)) /
                        (2 * eps);
                    QVERIFY2(std::abs(numeric - grad[v]) <= 1e-5 + 1e-3 * std::abs(numeric),
                             qPrintable(QString("%1 T %2 ce %3 v %4: %5 vs %6")
                                            .arg(distillWeightingName(mode))
                                            .arg(T)
                                            .arg(ce)
                                            .arg(v)
                                            .arg(grad[v])
                                            .arg(numeric)));
                }
                ++checked;
            }
    QCOMPARE(checked, 16);
}

void TestTrainDistillation::stopGradientMode() {
    const size_t vocab = 29;
    Fixture f;
    const auto t = randomLogits(40, vocab, 2.0);
    f.teacher.assign(t.begin(), t.end());
    const auto z = randomLogits(41, vocab, 1.0);
    const double T = 1.3, gamma = 1.5;
    DistillationOptions o{
        .weighting = DistillWeighting::Ambiguity, .strength = gamma, .temperature = T};
    DistillationLoss<double> loss(f.fn(), o);
    std::vector<double> grad;
    scoreOf(loss, z, 0, grad);
    // w0 frozen at the unperturbed logits: the gradient is that of w0·T²·KL(p ‖ q(z)).
    const auto p = softmax(t, T);
    const double logV = std::log(double(vocab));
    const double w0 = 1 + gamma * (entropy(p) / logV + entropy(softmax(z, T)) / logV) / 2;
    const double eps = 1e-6;
    for (size_t v = 0; v < vocab; ++v) {
        auto up = z, down = z;
        up[v] += eps;
        down[v] -= eps;
        const double numeric =
            w0 * T * T * (kl(p, softmax(up, T)) - kl(p, softmax(down, T))) / (2 * eps);
        QVERIFY(std::abs(numeric - grad[v]) <= 1e-5 + 1e-3 * std::abs(numeric));
    }
}

void TestTrainDistillation::klMatchesDirectSum() {
    const size_t vocab = 64;
    Fixture f;
    const auto t = randomLogits(50, vocab, 3.0);
    f.teacher.assign(t.begin(), t.end());
    std::vector<double> tf(f.teacher.begin(), f.teacher.end()); // the float-rounded teacher
    const auto z = randomLogits(51, vocab, 3.0);
    DistillationLoss<double> loss(f.fn(), {.weighting = DistillWeighting::Uniform});
    std::vector<double> grad;
    const double got = scoreOf(loss, z, 0, grad);
    const double expected = kl(softmax(tf, 1.0), softmax(z, 1.0));
    QVERIFY(expected > 0.1);
    QVERIFY(std::abs(got - expected) <= 1e-12 * std::max(1.0, expected));
    QCOMPARE(loss.positions(), int64_t(1));
}

void TestTrainDistillation::zeroWhenStudentIsTeacher() {
    const size_t vocab = 50;
    Fixture f;
    const auto t = randomLogits(60, vocab, 2.5);
    f.teacher.assign(t.begin(), t.end());
    const std::vector<double> z(f.teacher.begin(), f.teacher.end());
    for (DistillWeighting mode : {DistillWeighting::Uniform, DistillWeighting::Teacher,
                                  DistillWeighting::Ambiguity, DistillWeighting::Deviation})
        for (bool exact : {false, true}) {
            DistillationLoss<double> loss(
                f.fn(), {.weighting = mode, .temperature = 2.0, .weightGradient = exact});
            std::vector<double> grad;
            QVERIFY(std::abs(scoreOf(loss, z, 1, grad)) < 1e-12);
            for (double g : grad)
                QVERIFY(std::abs(g) < 1e-12);
        }
}

void TestTrainDistillation::weightingMonotone() {
    DistillationOptions o{.strength = 2.0};
    for (double a = 0; a <= 1.0; a += 0.125)
        for (double b = 0; b + 0.125 <= 1.0; b += 0.125) {
            o.weighting = DistillWeighting::Uniform;
            QCOMPARE(distillWeight(o, a, b), 1.0);
            o.weighting = DistillWeighting::Teacher;
            QVERIFY(distillWeight(o, b + 0.125, a) > distillWeight(o, b, a));
            QCOMPARE(distillWeight(o, b, a), distillWeight(o, b, 1 - a)); // student-blind
            o.weighting = DistillWeighting::Ambiguity;
            QVERIFY(distillWeight(o, b + 0.125, a) > distillWeight(o, b, a));
            QVERIFY(distillWeight(o, a, b + 0.125) > distillWeight(o, a, b));
            o.weighting = DistillWeighting::Deviation;
            QVERIFY(distillWeight(o, a, a) == 1.0);
            const double gap = std::abs(a - b);
            QVERIFY(distillWeight(o, 0.0, gap + 0.1) > distillWeight(o, 0.0, gap));
            QVERIFY(distillWeight(o, gap + 0.1, 0.0) > distillWeight(o, gap, 0.0));
            QVERIFY(distillWeight(o, a, b) >= 1.0);
        }
}

void TestTrainDistillation::missingTeacherIsAnError() {
    DistillationLoss<float> loss([](int64_t, int64_t) { return std::span<const float>(); }, {});
    std::vector<float> z(8, 0.5f), grad(8, 7.0f);
    z[2] = 3;
    QCOMPARE(loss.score(4, 9, 0, z, grad), 0.0);
    for (float g : grad)
        QCOMPARE(g, 0.0f);
    QVERIFY(!loss.status().ok());
    QVERIFY(loss.status().error().message.find("example 4 position 9") != std::string::npos);
    DistillationLoss<float> badT([](int64_t, int64_t) { return std::span<const float>(); },
                                 {.temperature = 0});
    QVERIFY(!badT.status().ok());
}

void TestTrainDistillation::parseNames() {
    for (DistillWeighting w : {DistillWeighting::Uniform, DistillWeighting::Teacher,
                               DistillWeighting::Ambiguity, DistillWeighting::Deviation}) {
        auto parsed = parseDistillWeighting(distillWeightingName(w));
        QVERIFY(parsed.ok() && *parsed == w);
    }
    auto bad = parseDistillWeighting("entropy");
    QVERIFY(!bad.ok());
    QVERIFY(bad.error().message.find("ambiguity") != std::string::npos);
}

void TestTrainDistillation::stories260kDataAndTeacherTable() {
    LOWBIT_REQUIRE_SHARED_FILE(path, "data/llama2c/stories260K.bin");
    LOWBIT_REQUIRE_SHARED_FILE(tok, "data/llama2c/tok512.bin");
    auto ckpt = loadCheckpoint(path, {.tokenizerPath = tok});
    QVERIFY(ckpt.ok());
    auto model =
        Model::create(std::make_shared<const Checkpoint>(std::move(ckpt.value())), {.threads = 1});
    QVERIFY(model.ok());
    DistillDataOptions d;
    d.sequences = 3;
    d.tokensPerSequence = 24;
    d.greedyPrefixTokens = 2;
    d.sampling.seed = 11;
    auto data = generateDistillationData(**model, d);
    auto again = generateDistillationData(**model, d);
    QVERIFY(data.ok() && again.ok());
    QCOMPARE(data->size(), size_t(3));
    for (size_t s = 0; s < data->size(); ++s) {
        const TrainExample &ex = (*data)[s];
        QVERIFY(ex.tokens == (*again)[s].tokens); // seeded: reproducible
        QCOMPARE(ex.tokens.size(), ex.targets.size());
        QCOMPARE(ex.targets.back(), kIgnoreTarget);
        for (size_t i = 0; i + 1 < ex.tokens.size(); ++i)
            QCOMPARE(ex.targets[i], ex.tokens[i + 1]);
    }
    QVERIFY((*data)[0].tokens != (*data)[1].tokens); // different seeds, different text

    auto table = TeacherTable::compute(**model, *data);
    QVERIFY(table.ok());
    const TrainExample &ex = (*data)[1];
    for (size_t i = 0; i + 1 < ex.tokens.size(); i += 5) {
        KvCache cache = (*model)->makeCache(1, int64_t(i + 1));
        const SequenceInput in{.slot = 0,
                               .tokens = std::span<const int32_t>(ex.tokens.data(), i + 1)};
        auto direct = (*model)->forward(cache, {&in, 1});
        QVERIFY(direct.ok());
        const auto row = table->logits(1, int64_t(i));
        QCOMPARE(int64_t(row.size()), direct->vocab);
        for (size_t v = 0; v < row.size(); ++v)
            QVERIFY(std::abs(row[v] - direct->row(0)[v]) <= 1e-4f * (1 + std::abs(row[v])));
    }
    QVERIFY(table->logits(1, int64_t(ex.tokens.size() - 1)).empty()); // unscored position

    DistillationLoss<float> loss(table->source(), {});
    const auto row = table->logits(2, 3);
    std::vector<float> grad(row.size());
    QVERIFY(std::abs(loss.score(2, 3, 0, row, grad)) < 1e-6);
    QVERIFY(loss.status().ok());
}

QTEST_APPLESS_MAIN(TestTrainDistillation)
#include "test_train_distillation.moc"
