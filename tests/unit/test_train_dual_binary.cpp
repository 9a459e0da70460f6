// DB-LLM Flexible Dual Binarization: the initial ŵ is the 2-bit asymmetric min-max quantization
// recomputed here (every zero point 0..3 exercised), bit for bit in float; planes in {0, 1} with
// ŵ = α1·b1 + α2·b2; dL/dα by central differences in double; STE latent gradient; refresh picks
// the nearest of {0, α1, α2, α1 + α2} (the paper's thresholds for α1 = 2s, α2 = -s);
// bits/weight; the factory and bad input.
#include "quant/fdb.h"
#include "train/dual_binary.h"

#include <QtTest>

#include <cmath>
#include <random>
#include <set>

using namespace lowbit;
using namespace lowbit::train;

namespace {

constexpr int64_t kRows = 6, kCols = 200; // 4 groups of 64: the last one holds 8 columns

// Row r group 0: all positive (zero point 0), group 1: all negative (3), others mixed.
std::vector<float> testWeights(uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, 0.05f);
    std::vector<float> w(static_cast<size_t>(kRows * kCols));
    for (int64_t r = 0; r < kRows; ++r)
        for (int64_t j = 0; j < kCols; ++j) {
            float x = normal(rng);
            if (j < 64)
                x = std::abs(x) + 0.01f;
            else if (j < 128)
                x = -std::abs(x) - 0.01f;
            else if (r % 2 == 1 && j < 192) // skewed: zero point 1 or 2 depending on the side
                x = x + (r % 4 == 1 ? 0.03f : -0.03f);
            w[size_t(r * kCols + j)] = x;
        }
    return w;
}

// The 2-bit min-max grid of one group, written out here (GPTQ quant.py find_params, asymmetric).
struct Rtn2 {
    float scale, zero;
};
Rtn2 grid2(const float *x, int64_t n) {
    float lo = 0, hi = 0;
    for (int64_t i = 0; i < n; ++i) {
        lo = std::min(lo, x[i]);
        hi = std::max(hi, x[i]);
    }
    const float scale = (hi - lo) / 3.0f;
    return {scale, std::nearbyint(-lo / scale)};
}

float rtn2(float w, Rtn2 g) {
    const float q = std::clamp(std::nearbyint(w / g.scale) + g.zero, 0.0f, 3.0f);
    return g.scale * (q - g.zero);
}

template <typename Real>
std::unique_ptr<DualBinaryLinear<Real>> make(const std::vector<float> &w, bool latent) {
    DualBinaryOptions o;
    o.trainLatent = latent;
    auto l = DualBinaryLinear<Real>::create("model.layers.0.mlp.up_proj.weight", w.data(), kRows,
                                            kCols, o);
    return l.ok() ? std::move(l.value()) : nullptr;
}

// L = Σ G·ŵ + ½ Σ ŵ²  (dL/dŵ = G + ŵ): a loss with curvature, so that a wrong α grad shows.
double loss(const DualBinaryLinear<double> &l, const std::vector<double> &g) {
    double s = 0;
    for (size_t i = 0; i < g.size(); ++i)
        s += g[i] * l.weight()[i] + 0.5 * l.weight()[i] * l.weight()[i];
    return s;
}

} // namespace

class TestTrainDualBinary : public QObject {
    Q_OBJECT
private slots:
    void initEqualsRtn2Bit();
    void planesAreBinary();
    void alphaGradientCentralDifferences();
    void latentStraightThrough();
    void refreshPicksNearestLevel();
    void bitsPerWeight();
    void factoryAndBadInput();
    void fdbStorage();
};

void TestTrainDualBinary::initEqualsRtn2Bit() {
    const auto w = testWeights(1);
    auto l = make<float>(w, true);
    auto d = make<double>(w, false);
    QVERIFY(l && d);
    std::set<int> zeros;
    for (int64_t r = 0; r < kRows; ++r)
        for (int64_t g = 0; g < 4; ++g) {
            const int64_t begin = g * 64, n = std::min<int64_t>(64, kCols - begin);
            const Rtn2 grid = grid2(w.data() + r * kCols + begin, n);
            zeros.insert(int(grid.zero));
            for (int64_t j = begin; j < begin + n; ++j) {
                const size_t i = size_t(r * kCols + j);
                const float expected = rtn2(w[i], grid);
                QCOMPARE(l->weight()[i], expected); // bit for bit
                QVERIFY(std::abs(d->weight()[i] - double(expected)) <=
                        1e-6 * grid.scale); // α1 + α2 not rounded to float
            }
        }
    QCOMPARE(zeros, (std::set<int>{0, 1, 2, 3})); // every split of the header table ran
}

void TestTrainDualBinary::planesAreBinary() {
    const auto w = testWeights(2);
    auto l = make<float>(w, false);
    QVERIFY(l);
    int zerosSeen = 0;
    for (int64_t r = 0; r < kRows; ++r)
        for (int64_t j = 0; j < kCols; ++j) {
            const size_t i = size_t(r * kCols + j);
            const uint8_t b1 = l->plane1()[i], b2 = l->plane2()[i];
            QVERIFY(b1 <= 1 && b2 <= 1);
            const float a1 = l->alpha1(r, j / 64), a2 = l->alpha2(r, j / 64);
            QCOMPARE(l->weight()[i], (b1 ? a1 : 0.0f) + (b2 ? a2 : 0.0f));
            zerosSeen += b1 == 0 && b2 == 0;
        }
    QVERIFY(zerosSeen > 0); // the {0, 1} planes keep exact zeros (the paper's sparsity)
    QCOMPARE(l->alphaParameter().name, std::string("model.layers.0.mlp.up_proj.fdb_alpha"));
    QCOMPARE(l->alphaParameter().shape, (std::vector<int64_t>{kRows, 4, 2}));
}

void TestTrainDualBinary::alphaGradientCentralDifferences() {
    const auto w = testWeights(3);
    auto l = make<double>(w, false);
    QVERIFY(l);
    std::mt19937 rng(4);
    std::normal_distribution<double> normal(0.0, 1.0);
    std::vector<double> g(w.size());
    for (double &x : g)
        x = normal(rng);
    std::vector<double> dW(w.size());
    for (size_t i = 0; i < g.size(); ++i)
        dW[i] = g[i] + l->weight()[i];
    Parameter<double> &alpha = l->alphaParameter();
    std::fill(alpha.grad.begin(), alpha.grad.end(), 0.0);
    l->backward(dW.data());
    const double eps = 1e-6;
    for (size_t k = 0; k < alpha.value.size(); ++k) {
        const double keep = alpha.value[k];
        alpha.value[k] = keep + eps;
        l->refresh();
        const double up = loss(*l, g);
        alpha.value[k] = keep - eps;
        l->refresh();
        const double down = loss(*l, g);
        alpha.value[k] = keep;
        l->refresh();
        const double numeric = (up - down) / (2 * eps);
        QVERIFY2(std::abs(numeric - alpha.grad[k]) <= 1e-5 + 1e-3 * std::abs(numeric),
                 qPrintable(QString("alpha %1: %2 vs %3").arg(k).arg(alpha.grad[k]).arg(numeric)));
    }
}

void TestTrainDualBinary::latentStraightThrough() {
    const auto w = testWeights(5);
    auto l = make<double>(w, true);
    auto fixed = make<double>(w, false);
    QVERIFY(l && fixed);
    QCOMPARE(l->parameters().size(), size_t(2));
    QCOMPARE(fixed->parameters().size(), size_t(1));
    std::vector<double> dW(w.size());
    std::mt19937 rng(6);
    std::normal_distribution<double> normal(0.0, 1.0);
    for (double &x : dW)
        x = normal(rng);
    l->backward(dW.data());
    l->backward(dW.data()); // gradients accumulate
    fixed->backward(dW.data());
    Parameter<double> *latent = l->latentParameter();
    QVERIFY(latent);
    QCOMPARE(latent->name, std::string("model.layers.0.mlp.up_proj.weight"));
    for (size_t i = 0; i < dW.size(); ++i)
        QCOMPARE(latent->grad[i], 2 * dW[i]);
    for (size_t k = 0; k < l->alphaParameter().grad.size(); ++k)
        QVERIFY(std::abs(l->alphaParameter().grad[k] - 2 * fixed->alphaParameter().grad[k]) <=
                1e-12);
}

void TestTrainDualBinary::refreshPicksNearestLevel() {
    const auto w = testWeights(7);
    auto l = make<double>(w, true);
    QVERIFY(l);
    Parameter<double> *latent = l->latentParameter();
    std::mt19937 rng(8);
    std::normal_distribution<double> normal(0.0, 0.02);
    for (double &x : latent->value)
        x += normal(rng); // as if an optimizer step moved them
    for (double &a : l->alphaParameter().value)
        a *= 1.1;
    l->refresh();
    for (int64_t r = 0; r < kRows; ++r)
        for (int64_t j = 0; j < kCols; ++j) {
            const size_t i = size_t(r * kCols + j);
            const double a1 = l->alpha1(r, j / 64), a2 = l->alpha2(r, j / 64), x = latent->value[i];
            double bestDistance = 1e300;
            for (double level : {0.0, a1, a2, a1 + a2})
                bestDistance = std::min(bestDistance, std::abs(x - level));
            QCOMPARE(std::abs(x - l->weight()[i]), bestDistance);
            if (a1 > 0 && a2 < 0 && a1 == -2 * a2) { // the paper's pattern α1 = 2s, α2 = -s
                const int b1 = x - (a1 + a2) / 2 >= 0, b2 = -(x - a1 * b1 - a2 / 2) >= 0;
                QCOMPARE(int(l->plane1()[i]), b1);
                QCOMPARE(int(l->plane2()[i]), b2);
            }
        }
}

void TestTrainDualBinary::bitsPerWeight() {
    const auto w = testWeights(9);
    auto l = make<float>(w, false);
    QVERIFY(l);
    QCOMPARE(l->bitsPerWeight(), 2.5);
    QCOMPARE(l->groups(), int64_t(4));
}

void TestTrainDualBinary::factoryAndBadInput() {
    const auto w = testWeights(10);
    const Tensor t = Tensor::fromFloats("x", {kRows, kCols}, w.data(), DType::BF16);
    auto factory = makeDualBinaryFactory<float>({});
    auto base = factory(3, "o_proj", t);
    QVERIFY(base.ok());
    QCOMPARE((*base)->rows(), kRows);
    auto params = (*base)->parameters();
    QCOMPARE(params.size(), size_t(2));
    QCOMPARE(params[0]->name, std::string("model.layers.3.self_attn.o_proj.fdb_alpha"));
    const Tensor flat = Tensor::fromFloats("flat", {kRows * kCols}, w.data());
    QVERIFY(!factory(0, "q_proj", flat).ok());
    std::vector<float> nan = w;
    nan[11] = std::nanf("");
    auto bad = DualBinaryLinear<float>::create("bad.weight", nan.data(), kRows, kCols, {});
    QVERIFY(!bad.ok());
    QVERIFY(bad.error().message.find("bad.weight") != std::string::npos);
    QVERIFY(!DualBinaryLinear<float>::create("e", w.data(), 0, kCols, {}).ok());
}

void TestTrainDualBinary::fdbStorage() {
    const auto w = testWeights(12);
    auto l = make<float>(w, true);
    QVERIFY(l);
    for (float &a : l->alphaParameter().value)
        a *= 0.9f; // a trained state, not the initialization
    l->refresh();
    auto t = l->toQuantizedTensor("model.layers.0.mlp.up_proj.weight");
    QVERIFY(t.ok());
    QVERIFY(t->validate().ok());
    QCOMPARE(t->method, std::string("fdb"));
    QCOMPARE(t->bitsPerWeight(), 2.0 + 4 * 32.0 / double(kCols)); // 4 groups (one short) per row
    auto values = dequantizeFdb(*t);
    QVERIFY(values.ok());
    for (size_t i = 0; i < values->size(); ++i)
        QCOMPARE((*values)[i], l->weight()[i]);

    QuantizeOptions o;
    o.method = "fdb";
    o.bits = 2;
    auto q = makeQuantizer(o);
    QVERIFY(q.ok());
    LinearJob job;
    job.name = "w";
    job.rows = kRows;
    job.cols = kCols;
    job.weight = w;
    auto ptq = (*q)->quantize(job);
    QVERIFY(ptq.ok());
    auto ptqValues = (*q)->dequantize(*ptq);
    QVERIFY(ptqValues.ok());
    for (int64_t r = 0; r < kRows; ++r)
        for (int64_t j = 0; j < kCols; ++j) {
            const int64_t begin = j / 64 * 64, n = std::min<int64_t>(64, kCols - begin);
            const size_t i = size_t(r * kCols + j);
            QCOMPARE((*ptqValues)[i], rtn2(w[i], grid2(w.data() + r * kCols + begin, n)));
        }
    o.bits = 3;
    QVERIFY(!makeQuantizer(o).ok());
    QuantizedTensor broken = *ptq;
    broken.extra.erase("fdb_alpha");
    auto bad = dequantizeFdb(broken);
    QVERIFY(!bad.ok());
    QVERIFY(bad.error().message.find("w:") == 0);
}

QTEST_APPLESS_MAIN(TestTrainDualBinary)
#include "test_train_dual_binary.moc"
