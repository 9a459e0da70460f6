// Quantization machinery: code packing against hand-built bytes, RTN and NF4 against closed-form
// grids (exact dequantization of representable values, codes in range, bits/weight formulas),
// the NF4 table against the normal quantiles it is defined by, calibration statistics against a
// float64 re-computation, the Cholesky factor against an in-test inverse, layer selection, and
// broken quantized.safetensors files.
#include "io/safetensors.h"
#include "quant/calibration.h"
#include "quant/linalg.h"
#include "quant/nf4.h"
#include "quant/quantized_checkpoint.h"
#include "quant/rtn.h"

#include <QTemporaryDir>
#include <QtTest>

#include <cmath>
#include <random>

using namespace lowbit;

namespace {

std::vector<float> gaussian(std::mt19937 &rng, size_t n, float sigma = 1) {
    std::normal_distribution<float> d(0, sigma);
    std::vector<float> v(n);
    for (float &x : v)
        x = d(rng);
    return v;
}

// Inverse standard normal CDF by bisection on erfc (float64), for the NF4 definition.
double normalQuantile(double p) {
    double lo = -10, hi = 10;
    for (int i = 0; i < 200; ++i) {
        const double mid = (lo + hi) / 2;
        (0.5 * std::erfc(-mid / std::sqrt(2.0)) < p ? lo : hi) = mid;
    }
    return (lo + hi) / 2;
}

} // namespace

class TestQuantCore : public QObject {
    Q_OBJECT
private slots:
    void packingMatchesHandBuiltBytes();
    void packingRoundTripsEveryWidth();
    void packingRejectsOversizedCodes();
    void rtnAsymmetricExactOnGrid_data();
    void rtnAsymmetricExactOnGrid();
    void rtnSymmetricExactOnGrid();
    void rtnBitsPerWeight_data();
    void rtnBitsPerWeight();
    void permutationUndone();
    void nf4TableIsNormalQuantiles();
    void nf4ExactOnLevels();
    void nf4DoubleQuantization();
    void dynamicMapShape();
    void statsHookMatchesFloat64_data();
    void statsHookMatchesFloat64();
    void choleskyInverseUpper();
    void layerSelection();
    void brokenPackedFiles();
};

void TestQuantCore::packingMatchesHandBuiltBytes() {
    // 3-bit codes 1..7,0 LSB-first: 001 010 011 100 101 110 111 000 -> D1 58 1F.
    auto t = QuantizedTensor::create("t", "rtn", 1, 8, 3, 0, false);
    QVERIFY(t.ok());
    const std::vector<uint8_t> codes = {1, 2, 3, 4, 5, 6, 7, 0};
    QVERIFY(t->setCodes(codes).ok());
    QCOMPARE(t->packed, (std::vector<uint8_t>{0xD1, 0x58, 0x1F}));
    // Two rows of 3 one-bit codes share a byte: rows are not padded.
    auto b = QuantizedTensor::create("b", "rtn", 2, 3, 1, 0, false);
    QVERIFY(b->setCodes(std::vector<uint8_t>{1, 0, 1, 1, 1, 0}).ok());
    QCOMPARE(b->packed, (std::vector<uint8_t>{0x1D}));
}

void TestQuantCore::packingRoundTripsEveryWidth() {
    std::mt19937 rng(7);
    for (int bits = 1; bits <= 8; ++bits) {
        auto t = QuantizedTensor::create("t", "rtn", 5, 77, bits, 16, false);
        QVERIFY(t.ok());
        std::vector<uint8_t> codes(5 * 77);
        for (uint8_t &c : codes)
            c = uint8_t(rng() % (1u << bits));
        QVERIFY(t->setCodes(codes).ok());
        QCOMPARE(int64_t(t->packed.size()), (5 * 77 * bits + 7) / 8);
        QCOMPARE(t->codes(), codes);
    }
    // Mixed widths per column group (SliM-LLM).
    auto m = QuantizedTensor::create("m", "slim", 3, 40, 2, 16, false);
    QVERIFY(m->setGroupBits({1, 3, 8}).ok());
    std::vector<uint8_t> codes(3 * 40);
    for (int64_t r = 0; r < 3; ++r)
        for (int64_t j = 0; j < 40; ++j)
            codes[size_t(r * 40 + j)] = uint8_t(rng() % (1u << m->groupWidth(j / 16)));
    QVERIFY(m->setCodes(codes).ok());
    QCOMPARE(m->rowBits(), int64_t(16 * 1 + 16 * 3 + 8 * 8));
    QCOMPARE(m->codes(), codes);
    QVERIFY(m->validate().ok());
}

void TestQuantCore::packingRejectsOversizedCodes() {
    auto t = QuantizedTensor::create("t", "rtn", 1, 4, 2, 0, false);
    QVERIFY(!t->setCodes(std::vector<uint8_t>{0, 1, 4, 3}).ok());
    QVERIFY(!QuantizedTensor::create("t", "rtn", 1, 4, 9, 0, false).ok());
    QVERIFY(!QuantizedTensor::create("t", "rtn", 0, 4, 4, 0, false).ok());
}

void TestQuantCore::rtnAsymmetricExactOnGrid_data() {
    QTest::addColumn<int>("bits");
    QTest::addColumn<int>("group");
    for (int bits : {1, 2, 3, 4, 8})
        for (int group : {0, 32})
            QTest::newRow(qPrintable(QString("%1-bit g%2").arg(bits).arg(group))) << bits << group;
}

// Weights s * (q - z) with s a power of two, z an integer in [0, maxq], and codes 0 and maxq in
// every group: the min-max grid is exactly (s, z), so codes and values come back exactly.
void TestQuantCore::rtnAsymmetricExactOnGrid() {
    QFETCH(int, bits);
    QFETCH(int, group);
    std::mt19937 rng(uint32_t(bits * 100 + group));
    const int64_t rows = 6, cols = 96, g = group ? group : cols, maxq = (1 << bits) - 1;
    std::vector<float> w(rows * cols);
    std::vector<uint8_t> codes(rows * cols);
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t g0 = 0; g0 < cols; g0 += g) {
            const float s = std::ldexp(1.0f, -int(rng() % 8) - 2);
            const int z = int(rng() % (maxq + 1));
            for (int64_t j = g0; j < g0 + g; ++j) {
                const int q = j == g0 ? 0 : j == g0 + 1 ? int(maxq) : int(rng() % (maxq + 1));
                codes[size_t(r * cols + j)] = uint8_t(q);
                w[size_t(r * cols + j)] = s * float(q - z);
            }
        }
    auto t = quantizeRtn("w", w.data(), rows, cols, bits, group, false);
    QVERIFY(t.ok());
    QVERIFY(t->validate().ok());
    QCOMPARE(t->codes(), codes);
    QCOMPARE(t->dequantize(), w);
}

// Symmetric grid: scale = 2 max|w| / maxq, zero = 2^(b-1). With an anchor |w| = s * maxq / 2
// in each group the scale is exactly s; every other weight s * (q - 2^(b-1)), q in 1..maxq (code 0
// would exceed the anchor), is exact.
void TestQuantCore::rtnSymmetricExactOnGrid() {
    std::mt19937 rng(11);
    for (int bits : {2, 3, 4, 8}) {
        const int64_t rows = 4, cols = 64, g = 32, maxq = (1 << bits) - 1, zero = 1 << (bits - 1);
        std::vector<float> w(rows * cols);
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t g0 = 0; g0 < cols; g0 += g) {
                const float s = std::ldexp(1.0f, -int(rng() % 6));
                for (int64_t j = g0; j < g0 + g; ++j)
                    w[size_t(r * cols + j)] = s * float(int(1 + rng() % maxq) - zero);
                w[size_t(r * cols + g0)] = (rng() % 2 ? -1 : 1) * s * float(maxq) / 2; // anchor
            }
        auto t = quantizeRtn("w", w.data(), rows, cols, bits, g, true);
        QVERIFY(t.ok());
        const auto back = t->dequantize();
        for (int64_t i = 0; i < rows * cols; ++i)
            if (i % g != 0)
                QCOMPARE(back[size_t(i)], w[size_t(i)]);
        for (float z : t->zeros)
            QCOMPARE(z, float(zero));
    }
}

void TestQuantCore::rtnBitsPerWeight_data() {
    QTest::addColumn<int>("bits");
    QTest::addColumn<int>("group");
    QTest::addColumn<bool>("symmetric");
    QTest::addColumn<double>("expected");
    const double cols = 256;
    QTest::newRow("4-bit g128 asym") << 4 << 128 << false << 4 + 16.0 / 128 + 4.0 / 128;
    QTest::newRow("3-bit g32 sym") << 3 << 32 << true << 3 + 16.0 / 32;
    QTest::newRow("2-bit per-channel asym") << 2 << 0 << false << 2 + (16.0 + 2) / cols;
    QTest::newRow("8-bit g64 asym") << 8 << 64 << false << 8 + 16.0 / 64 + 8.0 / 64;
}

void TestQuantCore::rtnBitsPerWeight() {
    QFETCH(int, bits);
    QFETCH(int, group);
    QFETCH(bool, symmetric);
    QFETCH(double, expected);
    std::mt19937 rng(3);
    const auto w = gaussian(rng, 32 * 256);
    auto t = quantizeRtn("w", w.data(), 32, 256, bits, group, symmetric);
    QVERIFY(t.ok());
    QCOMPARE(t->bitsPerWeight(), expected);
    for (uint8_t c : t->codes())
        QVERIFY(c < (1u << bits));
}

void TestQuantCore::permutationUndone() {
    // Stored column j holds original column perm[j]: dequantize() puts it back.
    auto t = QuantizedTensor::create("p", "gptq", 1, 4, 3, 0, false);
    QVERIFY(t->setCodes(std::vector<uint8_t>{0, 1, 2, 3}).ok());
    t->scale(0, 0) = 0.5f;
    t->zero(0, 0) = 1;
    t->permutation = {2, 0, 3, 1};
    QVERIFY(t->validate().ok());
    QCOMPARE(t->dequantizeStored(), (std::vector<float>{-0.5f, 0.0f, 0.5f, 1.0f}));
    QCOMPARE(t->dequantize(), (std::vector<float>{0.0f, 1.0f, -0.5f, 0.5f}));
    t->permutation = {2, 0, 2, 1};
    QVERIFY(!t->validate().ok());
}

// QLoRA Appendix / bitsandbytes create_normal_map(offset = 0.9677083): 8 positive quantiles of
// linspace(offset, 0.5, 9)[:-1], 7 negative of linspace(offset, 0.5, 8)[:-1], and 0, over max.
void TestQuantCore::nf4TableIsNormalQuantiles() {
    const double offset = 0.9677083;
    std::vector<double> v;
    for (int i = 0; i < 8; ++i)
        v.push_back(normalQuantile(offset + (0.5 - offset) * i / 8.0));
    for (int i = 0; i < 7; ++i)
        v.push_back(-normalQuantile(offset + (0.5 - offset) * i / 7.0));
    v.push_back(0);
    std::sort(v.begin(), v.end());
    const double maxAbs = std::max(std::abs(v.front()), v.back());
    for (size_t i = 0; i < 16; ++i)
        QVERIFY2(
            std::abs(v[i] / maxAbs - kNf4Levels[i]) < 1e-6,
            qPrintable(QString("level %1: %2 vs %3").arg(i).arg(v[i] / maxAbs).arg(kNf4Levels[i])));
}

void TestQuantCore::nf4ExactOnLevels() {
    std::mt19937 rng(5);
    const int64_t rows = 8, cols = 128;
    std::vector<float> w(rows * cols);
    std::vector<uint8_t> codes(rows * cols);
    for (int64_t b = 0; b < rows * cols / 64; ++b) {
        const float absmax = std::ldexp(1.0f, -int(rng() % 5));
        for (int64_t i = 0; i < 64; ++i) {
            const uint8_t c = i == 0 ? 15 : uint8_t(rng() % 16); // level 1.0 fixes the absmax
            codes[size_t(b * 64 + i)] = c;
            w[size_t(b * 64 + i)] = absmax * kNf4Levels[c];
        }
    }
    auto t = quantizeNf4("w", w.data(), rows, cols, {64, false, 256});
    QVERIFY(t.ok());
    QCOMPARE(t->codes(), codes);
    QCOMPARE(t->dequantize(), w);
    // 4 bits + one fp32 absmax per 64 weights.
    QCOMPARE(t->bitsPerWeight(), 4 + 32.0 / 64);
}

void TestQuantCore::nf4DoubleQuantization() {
    std::mt19937 rng(9);
    const int64_t rows = 256, cols = 4096;
    const auto w = gaussian(rng, size_t(rows * cols), 0.02f);
    auto t = quantizeNf4("w", w.data(), rows, cols, {64, true, 256});
    QVERIFY(t.ok());
    // QLoRA's count: 4 + 8/64 + 32/(64*256) bits per weight, plus the one fp32 offset.
    const double n = double(rows * cols);
    QCOMPARE(t->bitsPerWeight(), 4 + 8.0 / 64 + 32.0 / (64 * 256) + 32 / n);
    // The rebuilt block scales stay within the 8-bit map's resolution of the true absmax.
    for (int64_t b = 0; b < rows * cols / 64; ++b) {
        float absmax = 0;
        for (int64_t i = 0; i < 64; ++i)
            absmax = std::max(absmax, std::abs(w[size_t(b * 64 + i)]));
        QVERIFY(std::abs(t->scales[size_t(b)] - absmax) < 0.02 * absmax);
    }
    auto back = dequantizeNf4(*t);
    QVERIFY(back.ok());
    QCOMPARE(*back, t->dequantize());
}

void TestQuantCore::dynamicMapShape() {
    const auto map = dynamicMap8();
    for (size_t i = 1; i < map.size(); ++i)
        QVERIFY(map[i] > map[i - 1]);
    QCOMPARE(map.back(), 1.0f);
    QVERIFY(std::abs(map.front() + 0.99296875f) < 1e-6f); // -(midpoint of the last fraction step)
    QVERIFY(std::find(map.begin(), map.end(), 0.0f) != map.end());
}

void TestQuantCore::statsHookMatchesFloat64_data() {
    QTest::addColumn<bool>("float64");
    QTest::newRow("blocked float32") << false;
    QTest::newRow("float64") << true;
}

void TestQuantCore::statsHookMatchesFloat64() {
    QFETCH(bool, float64);
    std::mt19937 rng(13);
    const int64_t cols = 37;
    StatsHook hook({LinearInput::Mlp}, {true, true, true},
                   float64 ? HessianPrecision::Float64 : HessianPrecision::BlockedFloat32, 2, 1);
    std::vector<std::vector<float>> batches;
    for (int64_t rows : {100, 7, 300}) {
        batches.push_back(gaussian(rng, size_t(rows * cols)));
        for (int64_t r = 0; r < rows; ++r)
            batches.back()[size_t(r * cols + 3)] += 4; // a channel with a large mean
        std::vector<float> copy = batches.back();
        hook.onLinearInput(0, LinearInput::Mlp, copy.data(), rows, cols);
        hook.onLinearInput(0, LinearInput::Attention, copy.data(), rows, cols); // not selected
    }
    LayerStatistics stats = hook.finish();
    QCOMPARE(stats.size(), size_t(1));
    const LinearStats &s = stats.at(LinearInput::Mlp);
    QCOMPARE(s.tokens, int64_t(407));
    std::vector<double> h(cols * cols, 0), mean(cols, 0), maxAbs(cols, 0);
    for (const auto &b : batches)
        for (size_t r = 0; r < b.size() / cols; ++r)
            for (int64_t i = 0; i < cols; ++i) {
                const double xi = b[r * cols + i];
                mean[i] += std::abs(xi) / 407;
                maxAbs[i] = std::max(maxAbs[i], std::abs(xi));
                for (int64_t j = 0; j < cols; ++j)
                    h[i * cols + j] += 2.0 * xi * double(b[r * cols + j]) / 407;
            }
    for (int64_t i = 0; i < cols * cols; ++i)
        QVERIFY(std::abs(s.hessian[i] - h[i]) <= 1e-5 * (1 + std::abs(h[i])));
    for (int64_t i = 0; i < cols; ++i) {
        QVERIFY(std::abs(s.meanAbs[i] - mean[i]) < 1e-9 * (1 + mean[i]));
        QCOMPARE(s.maxAbs[i], maxAbs[i]);
    }
    QCOMPARE(s.sampleCount, kStatsSampleRows);
    // Every sampled row is one of the input rows.
    for (int64_t k = 0; k < s.sampleCount; ++k) {
        bool found = false;
        for (const auto &b : batches)
            for (size_t r = 0; r < b.size() / cols && !found; ++r)
                found = std::equal(b.begin() + r * cols, b.begin() + (r + 1) * cols,
                                   s.sampleRows.begin() + k * cols);
        QVERIFY(found);
    }
}

// U upper triangular with U^T U = H^{-1}: checked as U H U^T = I in float64.
void TestQuantCore::choleskyInverseUpper() {
    std::mt19937 rng(17);
    const int64_t n = 150, k = 400;
    const auto x = gaussian(rng, size_t(n * k));
    std::vector<double> h(n * n, 0);
    for (int64_t t = 0; t < k; ++t)
        for (int64_t i = 0; i < n; ++i)
            for (int64_t j = 0; j < n; ++j)
                h[i * n + j] += double(x[t * n + i]) * x[t * n + j] / k;
    for (int64_t i = 0; i < n; ++i)
        h[i * n + i] += 0.01;
    std::vector<float> u(h.begin(), h.end());
    QVERIFY(lowbit::choleskyInverseUpper(u, n).ok());
    for (int64_t i = 0; i < n; ++i) {
        QVERIFY(u[i * n + i] > 0);
        for (int64_t j = 0; j < i; ++j)
            QCOMPARE(u[i * n + j], 0.0f);
    }
    double worst = 0;
    for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < n; ++j) {
            double v = 0; // (U H U^T)_ij
            for (int64_t a = i; a < n; ++a)
                for (int64_t b = j; b < n; ++b)
                    v += double(u[i * n + a]) * h[a * n + b] * double(u[j * n + b]);
            worst = std::max(worst, std::abs(v - (i == j ? 1.0 : 0.0)));
        }
    QVERIFY2(worst < 1e-3, qPrintable(QString::number(worst)));
    std::vector<float> notPd(4, 1.0f); // [[1,1],[1,1]] is singular
    notPd[3] = 0.5f;
    QVERIFY(!lowbit::choleskyInverseUpper(notPd, 2).ok());
}

void TestQuantCore::layerSelection() {
    auto all = LayerSelection::parse("all");
    QVERIFY(all.ok());
    QVERIFY(all->contains(5, LinearKind::Down));
    auto s = LayerSelection::parse("0-2,q,v_proj");
    QVERIFY(s.ok());
    QVERIFY(s->contains(2, LinearKind::Q));
    QVERIFY(s->contains(0, LinearKind::V));
    QVERIFY(!s->contains(3, LinearKind::Q));
    QVERIFY(!s->contains(1, LinearKind::K));
    QCOMPARE(QString::fromStdString(s->toString()), QString("q_proj,v_proj,0,1,2"));
    QVERIFY(!LayerSelection::parse("0-2,qq").ok());
    QVERIFY(!LayerSelection::parse("3-1").ok());
    QCOMPARE(QString::fromStdString(linearTensorName(3, LinearKind::Down)),
             QString("model.layers.3.mlp.down_proj.weight"));
}

void TestQuantCore::brokenPackedFiles() {
    QTemporaryDir dir;
    const auto path = std::filesystem::path(dir.path().toStdString()) / "quantized.safetensors";
    const std::vector<uint8_t> codes(4, 0x55);
    const std::vector<float> scales(2, 1.0f), zeros(2, 0.0f);
    auto bytes = [](const auto &v) {
        return std::span<const std::byte>(reinterpret_cast<const std::byte *>(v.data()),
                                          v.size() * sizeof(v[0]));
    };
    const std::string good =
        R"({"w":{"tensor":"w.weight","method":"rtn","rows":2,"cols":8,"bits":2,)"
        R"("group_size":8,"symmetric":false,"scale_bits":16,"zero_bits":2}})";
    auto write = [&](const std::string &meta, int64_t codeBytes) {
        return writeSafetensorsRaw(
            path,
            {{"w.qcodes", "U8", {codeBytes}, bytes(codes).subspan(0, size_t(codeBytes))},
             {"w.scales", "F32", {2, 1}, bytes(scales)},
             {"w.zeros", "F32", {2, 1}, bytes(zeros)}},
            {{"lowbit.quantized", meta}});
    };
    QVERIFY(write(good, 4).ok());
    auto ok = readQuantizedTensors(path);
    QVERIFY2(ok.ok(), ok.ok() ? "" : ok.error().message.c_str());
    QCOMPARE(ok->front().codes(), std::vector<uint8_t>(16, 1));
    QVERIFY(write(good, 3).ok()); // packed stream one byte short
    QVERIFY(!readQuantizedTensors(path).ok());
    std::string badBits = good;
    badBits.replace(badBits.find("\"bits\":2"), 8, "\"bits\":9");
    QVERIFY(write(badBits, 4).ok());
    QVERIFY(!readQuantizedTensors(path).ok());
    std::string huge = good;
    huge.replace(huge.find("\"rows\":2"), 8, "\"rows\":4294967296");
    QVERIFY(write(huge, 4).ok()); // 2^32 rows: refused before any size arithmetic
    QVERIFY(!readQuantizedTensors(path).ok());
    QVERIFY(write("{\"w\": 3}", 4).ok());
    QVERIFY(!readQuantizedTensors(path).ok());
    QVERIFY(write("not json", 4).ok());
    QVERIFY(!readQuantizedTensors(path).ok());
    QVERIFY(writeSafetensorsRaw(path, {{"w.qcodes", "U8", {4}, bytes(codes)}},
                                {{"lowbit.quantized", good}})
                .ok());
    const auto missing = readQuantizedTensors(path);
    QVERIFY(!missing.ok());
    QVERIFY(missing.error().message.find("w.scales") != std::string::npos);
}

QTEST_APPLESS_MAIN(TestQuantCore)
#include "test_quant_core.moc"
