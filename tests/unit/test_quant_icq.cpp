// IR-QLoRA ICQ on NF4: τ = 0 is plain NF4 bit for bit; the shift is added back on
// dequantization; the chosen τ is the test's own re-computation of the reference search (lower
// median, 2n+1 grid over ±λσ·a0, first maximal code entropy); the mean code entropy is at least
// plain NF4's on random weights and strictly higher on every stories260K linear taken together;
// reconstruction error comparable to NF4; exact bits/weight; registry and broken τ data.
#include "shared_data.h"

#include "model/checkpoint.h"
#include "quant/icq.h"

#include <QtTest>

#include <algorithm>
#include <cmath>
#include <random>

using namespace lowbit;

namespace {

std::vector<float> randomWeights(uint32_t seed, int64_t n, double mean, double sd, bool skewed) {
    std::mt19937 rng(seed);
    std::normal_distribution<double> normal(mean, sd);
    std::exponential_distribution<double> expo(1.0 / sd);
    std::vector<float> w(static_cast<size_t>(n));
    for (float &x : w)
        x = float(skewed ? expo(rng) - sd + mean : normal(rng));
    return w;
}

double entropy64(const std::vector<uint8_t> &codes) {
    std::array<double, 16> counts{};
    for (uint8_t c : codes)
        counts[c] += 1;
    double h = 0;
    for (double c : counts)
        if (c > 0)
            h -= c / double(codes.size()) * std::log2(c / double(codes.size()));
    return h;
}

uint8_t nearestNf4(float x) {
    size_t best = 0;
    for (size_t k = 1; k < 16; ++k)
        if (std::fabs(double(x) - kNf4Levels[k]) < std::fabs(double(x) - kNf4Levels[best]))
            best = k;
    return uint8_t(best);
}

// The test's own version of the reference search for one block: returns its codes.
std::vector<uint8_t> referenceIcqCodes(const float *w, int64_t n) {
    std::vector<float> sorted(w, w + n);
    std::sort(sorted.begin(), sorted.end());
    const float tau0 = sorted[size_t((n - 1) / 2)];
    float a0 = 0;
    for (int64_t i = 0; i < n; ++i)
        a0 = std::max(a0, std::abs(w[i] - tau0));
    double bestH = -1;
    std::vector<uint8_t> best;
    for (int k = 0; k <= 200; ++k) {
        const double f = -0.1 * kIcqSigma + k * (0.2 * kIcqSigma / 200.0);
        const float tau = float(f * double(a0) + double(tau0));
        float amax = 0;
        for (int64_t i = 0; i < n; ++i)
            amax = std::max(amax, std::abs(w[i] - tau));
        std::vector<uint8_t> codes(static_cast<size_t>(n));
        for (int64_t i = 0; i < n; ++i)
            codes[size_t(i)] = nearestNf4((w[i] - tau) / amax);
        const double h = entropy64(codes);
        if (h > bestH + 1e-12) {
            bestH = h;
            best = codes;
        }
    }
    return best;
}

double sqError(const std::vector<float> &w, const std::vector<float> &q) {
    double e = 0;
    for (size_t i = 0; i < w.size(); ++i)
        e += (double(w[i]) - q[i]) * (double(w[i]) - q[i]);
    return e;
}

} // namespace

class TestQuantIcq : public QObject {
    Q_OBJECT
private slots:
    void entropyClosedForm();
    void zeroTauIsPlainNf4();
    void shiftAddedBack();
    void searchMatchesReference();
    void entropyAtLeastNf4OnRandom();
    void entropyHigherOnStories260k();
    void exactStorageBits();
    void registryAndOptions();
    void brokenTauData();
};

void TestQuantIcq::entropyClosedForm() {
    std::vector<uint8_t> all(64);
    for (size_t i = 0; i < all.size(); ++i)
        all[i] = uint8_t(i % 16);
    QCOMPARE(codeEntropyBits(all), 4.0);
    std::vector<uint8_t> two(64, 3);
    std::fill(two.begin(), two.begin() + 32, 9);
    QCOMPARE(codeEntropyBits(two), 1.0);
    QCOMPARE(codeEntropyBits(std::vector<uint8_t>(64, 7)), 0.0);
}

void TestQuantIcq::zeroTauIsPlainNf4() {
    const int64_t rows = 24, cols = 200; // 200: a short last block
    const auto w = randomWeights(1, rows * cols, 0.01, 0.05, false);
    IcqOptions o;
    const std::vector<float> zeros(size_t(rows * 4), 0.0f);
    auto shifted = quantizeNf4Shifted("w", w.data(), rows, cols, zeros, o);
    auto plain = quantizeNf4("w", w.data(), rows, cols, o.nf4);
    QVERIFY(shifted.ok() && plain.ok());
    QVERIFY(shifted->codes() == plain->codes());
    QVERIFY(shifted->scales == plain->scales);
    auto a = dequantizeIcq(*shifted);
    auto b = dequantizeNf4(*plain);
    QVERIFY(a.ok() && b.ok());
    QVERIFY(*a == *b);
}

void TestQuantIcq::shiftAddedBack() {
    const int64_t rows = 8, cols = 128;
    const auto w = randomWeights(2, rows * cols, 0.0, 0.05, false);
    std::vector<float> tau(static_cast<size_t>(rows * 2));
    std::mt19937 rng(3);
    std::uniform_real_distribution<float> u(-0.01f, 0.01f);
    float amax = 0;
    for (float &t : tau) {
        t = u(rng);
        amax = std::max(amax, std::abs(t));
    }
    IcqOptions o;
    auto t = quantizeNf4Shifted("w", w.data(), rows, cols, tau, o);
    QVERIFY(t.ok());
    auto tauHat = icqTau(*t);
    QVERIFY(tauHat.ok());
    for (size_t i = 0; i < tau.size(); ++i) // the 8-bit dynamic map near 1: steps of ~0.014
        QVERIFY2(std::abs((*tauHat)[i] - tau[i]) <= 0.01f * amax, qPrintable(QString::number(i)));
    std::vector<float> moved(w.size());
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < cols; ++j)
            moved[size_t(r * cols + j)] = w[size_t(r * cols + j)] - tau[size_t(r * 2 + j / 64)];
    auto nf4 = quantizeNf4("w", moved.data(), rows, cols, o.nf4);
    auto plainValues = dequantizeNf4(*nf4);
    auto values = dequantizeIcq(*t);
    QVERIFY(values.ok() && plainValues.ok());
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < cols; ++j) {
            const size_t i = size_t(r * cols + j);
            QCOMPARE((*values)[i], (*plainValues)[i] + (*tauHat)[size_t(r * 2 + j / 64)]);
        }
}

void TestQuantIcq::searchMatchesReference() {
    const int64_t rows = 6, cols = 192;
    for (bool skewed : {false, true}) {
        const auto w = randomWeights(skewed ? 5 : 4, rows * cols, 0.003, 0.04, skewed);
        auto t = quantizeIcq("w", w.data(), rows, cols);
        QVERIFY(t.ok());
        const auto codes = t->codes();
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t g = 0; g < 3; ++g) {
                const auto expected = referenceIcqCodes(w.data() + r * cols + g * 64, 64);
                const std::vector<uint8_t> got(codes.begin() + r * cols + g * 64,
                                               codes.begin() + r * cols + g * 64 + 64);
                QVERIFY2(got == expected, qPrintable(QString("block %1,%2").arg(r).arg(g)));
            }
    }
}

void TestQuantIcq::entropyAtLeastNf4OnRandom() {
    const int64_t rows = 64, cols = 256;
    for (bool skewed : {false, true}) {
        const auto w = randomWeights(skewed ? 7 : 6, rows * cols, 0.0, 0.02, skewed);
        auto icq = quantizeIcq("w", w.data(), rows, cols);
        auto nf4 = quantizeNf4("w", w.data(), rows, cols, {});
        QVERIFY(icq.ok() && nf4.ok());
        const double hIcq = meanBlockCodeEntropyBits(*icq), hNf4 = meanBlockCodeEntropyBits(*nf4);
        qInfo("%s weights: mean code entropy ICQ %.4f bits, NF4 %.4f bits",
              skewed ? "skewed" : "normal", hIcq, hNf4);
        QVERIFY(hIcq >= hNf4);
        if (skewed) // a block median far from 0: the shift must pay off
            QVERIFY(hIcq > hNf4);
    }
}

void TestQuantIcq::entropyHigherOnStories260k() {
    LOWBIT_REQUIRE_SHARED_FILE(model, "data/llama2c/stories260K.bin");
    LOWBIT_REQUIRE_SHARED_FILE(tok, "data/llama2c/tok512.bin");
    auto ckpt = loadCheckpoint(model, {.tokenizerPath = tok});
    QVERIFY2(ckpt.ok(), ckpt.ok() ? "" : ckpt.error().message.c_str());
    double sumIcq = 0, sumNf4 = 0, errIcq = 0, errNf4 = 0;
    int linears = 0;
    for (const LayerWeights &layer : ckpt->weights.layers)
        for (LinearKind kind : kAllLinearKinds) {
            const Tensor &tensor = linearWeight(layer, kind);
            const std::vector<float> w = tensorToFloats(tensor);
            auto icq = quantizeIcq(tensor.name, w.data(), tensor.rows(), tensor.cols());
            auto nf4 = quantizeNf4(tensor.name, w.data(), tensor.rows(), tensor.cols(), {});
            QVERIFY(icq.ok() && nf4.ok());
            sumIcq += meanBlockCodeEntropyBits(*icq);
            sumNf4 += meanBlockCodeEntropyBits(*nf4);
            errIcq += sqError(w, dequantizeIcq(*icq).value());
            errNf4 += sqError(w, dequantizeNf4(*nf4).value());
            ++linears;
        }
    qInfo("stories260K, %d linears: mean code entropy ICQ %.4f bits, NF4 %.4f bits; "
          "squared reconstruction error ICQ %.5g, NF4 %.5g",
          linears, sumIcq / linears, sumNf4 / linears, errIcq, errNf4);
    QVERIFY(linears > 0);
    QVERIFY(sumIcq > sumNf4);        // issue 8, done-when 2
    QVERIFY(errIcq < 1.25 * errNf4); // entropy is bought without losing reconstruction
}

void TestQuantIcq::exactStorageBits() {
    const int64_t rows = 40, cols = 128; // 80 blocks: runs of 32 -> 3 runs
    const auto w = randomWeights(8, rows * cols, 0.0, 0.05, false);
    IcqOptions o;
    o.tauBlock = 32;
    auto icq = quantizeIcq("w", w.data(), rows, cols, o);
    auto nf4 = quantizeNf4("w", w.data(), rows, cols, o.nf4);
    QVERIFY(icq.ok() && nf4.ok());
    QCOMPARE(icq->storageBits() - nf4->storageBits(), uint64_t(80 * 8 + 3 * 32));
    QCOMPARE(icq->method, std::string("icq"));
    QVERIFY(icq->validate().ok());
}

void TestQuantIcq::registryAndOptions() {
    QuantizeOptions o;
    o.method = "icq";
    o.bits = 4;
    auto q = makeQuantizer(o);
    QVERIFY(q.ok());
    QCOMPARE((*q)->name(), std::string_view("icq"));
    const int64_t rows = 4, cols = 64;
    const auto w = randomWeights(9, rows * cols, 0.0, 0.05, false);
    LinearJob job;
    job.name = "model.layers.0.self_attn.q_proj.weight";
    job.rows = rows;
    job.cols = cols;
    job.weight = w;
    auto t = (*q)->quantize(job);
    QVERIFY(t.ok());
    auto viaQuantizer = (*q)->dequantize(*t);
    auto direct = dequantizeIcq(*t);
    QVERIFY(viaQuantizer.ok() && direct.ok() && *viaQuantizer == *direct);
    o.bits = 3;
    QVERIFY(!makeQuantizer(o).ok());
    o.bits = 4;
    o.methodOptions = {{"tau_range", -1.0}};
    QVERIFY(!makeQuantizer(o).ok());
    o.methodOptions = {{"tau_stepz", 5}};
    auto typo = makeQuantizer(o);
    QVERIFY(!typo.ok());
    QVERIFY(typo.error().message.find("tau_stepz") != std::string::npos);
    o.methodOptions = {{"tau_steps", 10}, {"tau_block", 64}};
    QVERIFY(makeQuantizer(o).ok());
}

void TestQuantIcq::brokenTauData() {
    const auto w = randomWeights(10, 4 * 64, 0.0, 0.05, false);
    auto t = quantizeIcq("w", w.data(), 4, 64);
    QVERIFY(t.ok());
    QuantizedTensor broken = *t;
    broken.extra.erase("tau_scales");
    auto r = dequantizeIcq(broken);
    QVERIFY(!r.ok());
    QVERIFY(r.error().message.find("w") == 0);
    broken = *t;
    broken.extra["tau_block"] = QuantExtra::fromI32({1}, std::vector<int32_t>{0}, 0);
    QVERIFY(!dequantizeIcq(broken).ok());
    std::vector<float> nan = w;
    nan[7] = std::nanf("");
    QVERIFY(!quantizeIcq("w", nan.data(), 4, 64).ok());
}

QTEST_APPLESS_MAIN(TestQuantIcq)
#include "test_quant_icq.moc"
