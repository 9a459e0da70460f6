// PB-LLM: the bit budget (salient count and payload from the closed-form count of what is
// stored), exact storage accounting, a float64 re-computation of the method when H = I (nothing
// to compensate: top-|w| salient weights on the row's 8-bit min-max grid, the rest mu +- alpha
// over the binarized weights), exact reconstruction of representable rows, and the layer-output
// error ||(W - Q) X|| below plain sign binarization on random and real (stories260K) layers.
#include "salience_test_data.h"

#include "quant/pb_llm.h"

#include <QtTest>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

using namespace lowbit;
using namespace lowbit::test;

namespace {

int ceilLog2(int64_t n) {
    return int(std::ceil(std::log2(double(n)) - 1e-12));
}

Result<QuantizedTensor> quantize(const LinearProblem &p, double target, int64_t group = 0,
                                 bool magnitude = false) {
    PbLlmOptions o;
    o.targetBits = target;
    o.groupSize = group;
    o.hessianSalience = !magnitude;
    o.threads = 2;
    return quantizePbLlm(p.name, p.w, p.rows, p.cols, p.stats.hessian, o);
}

} // namespace

class TestQuantPbLlm : public QObject {
    Q_OBJECT
private slots:
    void budgetClosedForm();
    void codesAndBits_data();
    void codesAndBits();
    void identityHessianMatchesFloat64();
    void representableRowsExact();
    void beatsSignBinarization_data();
    void beatsSignBinarization();
    void realLayersBeatSignBinarization();
    void brokenExtras();
    void methodOptions();
};

void TestQuantPbLlm::budgetClosedForm() {
    // 64 x 64: 6-bit column index, 7-bit row count. 2 bits: (1 * 4096 - 64 * 7) / (8 + 6) = 260.57.
    QCOMPARE(pbLlmSalientCount(64, 64, 2.0, 8), int64_t(260));
    QCOMPARE(pbLlmPayloadBits(64, 64, 260, 8), (4096.0 + 260 * 14 + 64 * 7) / 4096.0);
    // 1.7 bits: (0.7 * 4096 - 448) / 14 = 172.8.
    QCOMPARE(pbLlmSalientCount(64, 64, 1.7, 8), int64_t(172));
    // 64 x 172: 8-bit index, 8-bit count: (0.7 * 11008 - 512) / 16 = 449.6.
    QCOMPARE(pbLlmSalientCount(64, 172, 1.7, 8), int64_t(449));
    QCOMPARE(pbLlmSalientCount(64, 64, 1.0, 8), int64_t(0));
    QCOMPARE(pbLlmSalientCount(4096, 4096, 2.0, 8), int64_t((4096.0 * 4096 - 4096 * 13) / 20));
}

void TestQuantPbLlm::codesAndBits_data() {
    QTest::addColumn<double>("target");
    QTest::addColumn<qint64>("group");
    QTest::addColumn<bool>("magnitude");
    QTest::newRow("2 bits per row") << 2.0 << qint64(0) << false;
    QTest::newRow("1.7 bits per row") << 1.7 << qint64(0) << false;
    QTest::newRow("2 bits g64") << 2.0 << qint64(64) << false;
    QTest::newRow("1.7 bits magnitude g64") << 1.7 << qint64(64) << true;
}

void TestQuantPbLlm::codesAndBits() {
    QFETCH(double, target);
    QFETCH(qint64, group);
    QFETCH(bool, magnitude);
    const LinearProblem p = randomProblem(3, 96, 200, 400);
    nlohmann::json notes;
    PbLlmOptions o;
    o.targetBits = target;
    o.groupSize = group;
    o.hessianSalience = !magnitude;
    auto t = quantizePbLlm("w", p.w, p.rows, p.cols, p.stats.hessian, o, {}, &notes);
    QVERIFY2(t.ok(), t.ok() ? "" : t.error().message.c_str());
    QVERIFY(t->validate().ok());
    QCOMPARE(t->bits, 1);
    QCOMPARE(t->codebook, (std::vector<float>{-1, 1}));
    for (uint8_t c : t->codes())
        QVERIFY(c <= 1);
    const int64_t n = p.rows * p.cols, groups = group ? (p.cols + group - 1) / group : 1;
    const int idx = ceilLog2(p.cols), cnt = ceilLog2(p.cols + 1);
    QCOMPARE(idx, 8);
    QCOMPARE(cnt, 8);
    // The largest salient count within the budget.
    const int64_t salient =
        int64_t(std::floor(((target - 1) * double(n) - p.rows * cnt) / (8 + idx)));
    QCOMPARE(t->extra.at("salient_index").numel(), salient);
    QCOMPARE(notes["salient"].get<int64_t>(), salient);
    const double payload = (double(n) + double(salient) * (8 + idx) + p.rows * cnt) / double(n);
    QVERIFY(payload <= target && payload > target - double(8 + idx) / double(n));
    QCOMPARE(notes["payload_bits"].get<double>(), payload);
    for (uint8_t c : t->extra.at("salient_codes").u8())
        QVERIFY(c <= 255);
    // Everything stored: codes, salient (value, index), row counts, per-(row, group) FP16 alpha and
    // mu, per-row FP16 scale and 8-bit zero of the high grid.
    const uint64_t bits = uint64_t(n) + uint64_t(salient) * (8 + idx) + uint64_t(p.rows) * cnt +
                          uint64_t(p.rows * groups) * 32 + uint64_t(p.rows) * (16 + 8);
    QCOMPARE(t->storageBits(), bits);
    QVERIFY(t->bitsPerWeight() > target);
}

void TestQuantPbLlm::identityHessianMatchesFloat64() {
    std::mt19937 rng(5);
    std::normal_distribution<float> n01(0, 1);
    LinearProblem p;
    p.rows = 40;
    p.cols = 96;
    p.w.resize(size_t(p.rows * p.cols));
    for (float &v : p.w)
        v = n01(rng);
    p.stats.hessian = identityHessian(p.cols);
    auto t = quantize(p, 2.0);
    QVERIFY(t.ok());
    auto q = dequantizePbLlm(*t);
    QVERIFY(q.ok());
    // Salient: the k largest |w| of the matrix (one group); H = I makes the OBS score w^2 / d^2 a
    // constant multiple of w^2.
    const int64_t k = pbLlmSalientCount(p.rows, p.cols, 2.0, 8);
    std::vector<size_t> order(p.w.size());
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(),
              [&](size_t a, size_t b) { return std::abs(p.w[a]) > std::abs(p.w[b]); });
    std::vector<bool> salient(p.w.size(), false);
    for (int64_t i = 0; i < k; ++i)
        salient[order[size_t(i)]] = true;
    const auto counts = t->extra.at("salient_count").i32();
    const auto index = t->extra.at("salient_index").i32();
    size_t at = 0;
    for (int64_t r = 0; r < p.rows; ++r)
        for (int32_t i = 0; i < counts[size_t(r)]; ++i)
            QVERIFY(salient[size_t(r * p.cols + index[at++])]);
    QCOMPARE(int64_t(at), k);
    for (int64_t r = 0; r < p.rows; ++r) {
        const float *w = p.w.data() + r * p.cols;
        double lo = 0, hi = 0, sum = 0, n = 0;
        for (int64_t j = 0; j < p.cols; ++j) {
            lo = std::min(lo, double(w[j]));
            hi = std::max(hi, double(w[j]));
            if (!salient[size_t(r * p.cols + j)]) {
                sum += w[j];
                ++n;
            }
        }
        const double mu = sum / n, scale = (hi - lo) / 255, zero = std::nearbyint(-lo / scale);
        double alpha = 0;
        for (int64_t j = 0; j < p.cols; ++j)
            if (!salient[size_t(r * p.cols + j)])
                alpha += std::abs(w[j] - mu) / n;
        for (int64_t j = 0; j < p.cols; ++j) {
            const double expected =
                salient[size_t(r * p.cols + j)]
                    ? scale * (std::clamp(std::nearbyint(w[j] / scale) + zero, 0.0, 255.0) - zero)
                    : (w[j] >= mu ? mu + alpha : mu - alpha);
            QVERIFY2(std::abs((*q)[size_t(r * p.cols + j)] - expected) < 1e-5,
                     qPrintable(QString("(%1, %2): %3 vs %4")
                                    .arg(r)
                                    .arg(j)
                                    .arg((*q)[size_t(r * p.cols + j)])
                                    .arg(expected)));
        }
    }
}

// Rows that are mu +- alpha with as many of each sign are their own binarization.
void TestQuantPbLlm::representableRowsExact() {
    std::mt19937 rng(11);
    std::uniform_real_distribution<float> u(-1, 1);
    LinearProblem p;
    p.rows = 16;
    p.cols = 64;
    for (int64_t r = 0; r < p.rows; ++r) {
        const float mu = u(rng), alpha = 0.1f + std::abs(u(rng));
        std::vector<float> row(size_t(p.cols));
        for (int64_t j = 0; j < p.cols; ++j)
            row[size_t(j)] = j % 2 ? mu + alpha : mu - alpha;
        std::shuffle(row.begin(), row.end(), rng);
        p.w.insert(p.w.end(), row.begin(), row.end());
    }
    p.stats.hessian = identityHessian(p.cols);
    PbLlmOptions o;
    o.salientFraction = 0;
    auto t = quantizePbLlm("w", p.w, p.rows, p.cols, p.stats.hessian, o);
    QVERIFY(t.ok());
    QCOMPARE(t->extra.at("salient_index").numel(), int64_t(0));
    auto q = dequantizePbLlm(*t);
    QVERIFY(q.ok());
    for (size_t i = 0; i < p.w.size(); ++i)
        QVERIFY(std::abs((*q)[i] - p.w[i]) <= 1e-6f * (1 + std::abs(p.w[i])));
}

void TestQuantPbLlm::beatsSignBinarization_data() {
    QTest::addColumn<uint>("seed");
    QTest::addColumn<qint64>("rows");
    QTest::addColumn<qint64>("cols");
    QTest::addColumn<qint64>("group");
    QTest::newRow("128x256 per row") << 1u << qint64(128) << qint64(256) << qint64(0);
    QTest::newRow("96x192 g64") << 2u << qint64(96) << qint64(192) << qint64(64);
}

void TestQuantPbLlm::beatsSignBinarization() {
    QFETCH(uint, seed);
    QFETCH(qint64, rows);
    QFETCH(qint64, cols);
    QFETCH(qint64, group);
    const LinearProblem p = randomProblem(seed, rows, cols, 512);
    const double sign = outputError(p, signBinarize(p.w, rows, cols));
    double previous = 0;
    for (double target : {1.7, 2.0}) {
        auto t = quantize(p, target, group);
        QVERIFY(t.ok());
        auto q = dequantizePbLlm(*t);
        QVERIFY(q.ok());
        const double err = outputError(p, *q);
        qInfo("%.1f bits: ||(W-Q)X||^2 %.4g, sign binarization %.4g", target, err, sign);
        QVERIFY(err < sign);
        if (previous > 0)
            QVERIFY(err < previous); // a larger budget keeps more salient weights
        previous = err;
    }
}

void TestQuantPbLlm::realLayersBeatSignBinarization() {
    const std::vector<LinearProblem> problems = stories260kProblems();
    if (problems.empty()) {
        if (sharedRequired())
            QFAIL("stories260K or the WikiText-2 prefix missing");
        QSKIP("stories260K or the WikiText-2 prefix missing");
    }
    double sumSign = 0, sum2 = 0, sum17 = 0;
    for (const LinearProblem &p : problems) {
        const double sign = outputError(p, signBinarize(p.w, p.rows, p.cols));
        sumSign += sign;
        for (double target : {1.7, 2.0}) {
            auto t = quantize(p, target);
            QVERIFY(t.ok());
            auto q = dequantizePbLlm(*t);
            QVERIFY(q.ok());
            const double err = outputError(p, *q);
            (target < 2 ? sum17 : sum2) += err;
            QVERIFY2(err < sign, qPrintable(QString("%1 at %2 bits: %3 vs sign %4")
                                                .arg(p.name.c_str())
                                                .arg(target)
                                                .arg(err)
                                                .arg(sign)));
        }
    }
    qInfo("sum over %zu stories260K linears of ||(W-Q)X||^2: PB-LLM 2 bits %.5g, 1.7 bits %.5g, "
          "sign binarization %.5g",
          problems.size(), sum2, sum17, sumSign);
}

void TestQuantPbLlm::brokenExtras() {
    const LinearProblem p = randomProblem(4, 8, 64, 64);
    auto good = quantize(p, 3.0);
    QVERIFY(good.ok());
    QVERIFY(dequantizePbLlm(*good).ok());
    auto expectBad = [](const QuantizedTensor &t, const char *what) {
        auto r = dequantizePbLlm(t);
        QVERIFY2(!r.ok(), what);
        QCOMPARE(int(r.error().code), int(ErrorCode::Format));
        QVERIFY(r.error().message.find("'random'") != std::string::npos);
    };
    QuantizedTensor t = *good;
    t.extra.erase("salient_zero");
    expectBad(t, "missing extra");
    t = *good;
    t.extra["salient_count"] = QuantExtra::fromF32({t.rows}, std::vector<float>(size_t(t.rows), 1));
    expectBad(t, "wrong type");
    t = *good;
    auto index = t.extra.at("salient_index").i32();
    std::vector<int32_t> outOfRange(index.begin(), index.end());
    outOfRange[0] = int32_t(t.cols);
    t.extra["salient_index"] = QuantExtra::fromI32({int64_t(outOfRange.size())}, outOfRange, 6);
    expectBad(t, "index out of range");
    t = *good;
    auto counts = t.extra.at("salient_count").i32();
    std::vector<int32_t> more(counts.begin(), counts.end());
    more.back() += 1;
    t.extra["salient_count"] = QuantExtra::fromI32({t.rows}, more, 7);
    expectBad(t, "counts past the entries");
    more.back() -= 2;
    t.extra["salient_count"] = QuantExtra::fromI32({t.rows}, more, 7);
    expectBad(t, "counts short of the entries");
}

void TestQuantPbLlm::methodOptions() {
    QuantizeOptions o;
    o.method = "pb-llm";
    o.bits = 2;
    QVERIFY(makeQuantizer(o).ok());
    o.methodOptions = {{"target_bits", 1.7}, {"magnitude_salience", true}};
    QVERIFY(makeQuantizer(o).ok());
    for (const nlohmann::json &bad :
         {nlohmann::json{{"target_bit", 1.7}}, nlohmann::json{{"target_bits", 0.5}},
          nlohmann::json{{"high_bits", 9}}, nlohmann::json{{"salient_fraction", 1.5}}}) {
        o.methodOptions = bad;
        auto q = makeQuantizer(o);
        QVERIFY2(!q.ok(), bad.dump().c_str());
        QVERIFY(q.error().message.find("pb-llm") != std::string::npos);
    }
    // The storage loader builds the quantizer from the tensor alone (1-bit codes, no options).
    const LinearProblem p = randomProblem(6, 8, 64, 64);
    auto t = quantize(p, 2.0);
    QVERIFY(t.ok());
    QuantizeOptions load;
    load.method = "pb-llm";
    load.bits = t->bits;
    auto quantizer = makeQuantizer(load);
    QVERIFY(quantizer.ok());
    auto viaRegistry = (*quantizer)->dequantize(*t);
    QVERIFY(viaRegistry.ok());
    QCOMPARE(*viaRegistry, *dequantizePbLlm(*t));
}

QTEST_APPLESS_MAIN(TestQuantPbLlm)
#include "test_quant_pb_llm.moc"
