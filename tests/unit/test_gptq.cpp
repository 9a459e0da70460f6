// GPTQ against an independent float64 re-implementation of Algorithm 1 (one column at a time, no
// lazy batches, H^-1 by an in-test Cholesky), against RTN when H is a multiple of I (no
// correlations: nothing to compensate), and against RTN on the layer-output error ||W X - Q X||
// for correlated activations at 3 and 4 bits; dead columns, act-order, cancellation.
#include "quant/gptq.h"
#include "quant/minmax_grid.h"
#include "quant/rtn.h"

#include <QtTest>

#include <cmath>
#include <random>

using namespace lowbit;

namespace {

struct Problem {
    int64_t rows = 0, cols = 0, tokens = 0;
    std::vector<float> w, x; // w: rows x cols, x: tokens x cols
    std::vector<double> h;   // 2 X^T X / N
};

// Activations with correlated channels (a random mixing) and a few outlier channels, as LLM
// linear inputs have.
Problem makeProblem(uint32_t seed, int64_t rows, int64_t cols, int64_t tokens) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> n01(0, 1);
    Problem p{rows, cols, tokens, {}, {}, {}};
    p.w.resize(rows * cols);
    for (float &v : p.w)
        v = n01(rng) * 0.05f;
    std::vector<float> mix(cols * cols), z(cols);
    for (float &v : mix)
        v = n01(rng) / std::sqrt(float(cols));
    p.x.resize(tokens * cols);
    for (int64_t t = 0; t < tokens; ++t) {
        for (float &v : z)
            v = n01(rng);
        for (int64_t j = 0; j < cols; ++j) {
            float s = z[size_t(j)] * 0.3f;
            for (int64_t k = 0; k < cols; ++k)
                s += mix[size_t(j * cols + k)] * z[size_t(k)];
            p.x[size_t(t * cols + j)] = s * (j % 17 == 0 ? 8.0f : 1.0f);
        }
    }
    p.h.assign(cols * cols, 0);
    for (int64_t t = 0; t < tokens; ++t)
        for (int64_t i = 0; i < cols; ++i)
            for (int64_t j = 0; j < cols; ++j)
                p.h[size_t(i * cols + j)] +=
                    2.0 * p.x[size_t(t * cols + i)] * p.x[size_t(t * cols + j)] / double(tokens);
    return p;
}

// ||(W - Q) X^T||_F^2 in float64.
double outputError(const Problem &p, const std::vector<float> &q) {
    double e = 0;
    for (int64_t t = 0; t < p.tokens; ++t)
        for (int64_t r = 0; r < p.rows; ++r) {
            double d = 0;
            for (int64_t j = 0; j < p.cols; ++j)
                d += (double(p.w[size_t(r * p.cols + j)]) - q[size_t(r * p.cols + j)]) *
                     p.x[size_t(t * p.cols + j)];
            e += d * d;
        }
    return e;
}

// Upper U with U^T U = (H + damp)^{-1}, float64: invert by Gauss-Jordan, then Cholesky of the
// inverse written as U^T U (U = L^T of the lower factor).
std::vector<double> referenceHinvUpper(std::vector<double> h, int64_t n, double damp) {
    double mean = 0;
    for (int64_t i = 0; i < n; ++i)
        mean += h[size_t(i * n + i)] / double(n);
    for (int64_t i = 0; i < n; ++i)
        h[size_t(i * n + i)] += damp * mean;
    std::vector<double> inv(n * n, 0);
    for (int64_t i = 0; i < n; ++i)
        inv[size_t(i * n + i)] = 1;
    for (int64_t c = 0; c < n; ++c) {
        const double pivot = h[size_t(c * n + c)];
        for (int64_t j = 0; j < n; ++j) {
            h[size_t(c * n + j)] /= pivot;
            inv[size_t(c * n + j)] /= pivot;
        }
        for (int64_t r = 0; r < n; ++r)
            if (r != c) {
                const double f = h[size_t(r * n + c)];
                for (int64_t j = 0; j < n; ++j) {
                    h[size_t(r * n + j)] -= f * h[size_t(c * n + j)];
                    inv[size_t(r * n + j)] -= f * inv[size_t(c * n + j)];
                }
            }
    }
    std::vector<double> u(n * n, 0); // inv = U^T U: U = chol(inv) upper
    for (int64_t i = 0; i < n; ++i)
        for (int64_t j = i; j < n; ++j) {
            double s = inv[size_t(i * n + j)];
            for (int64_t k = 0; k < i; ++k)
                s -= u[size_t(k * n + i)] * u[size_t(k * n + j)];
            u[size_t(i * n + j)] = i == j ? std::sqrt(s) : s / u[size_t(i * n + i)];
        }
    return u;
}

// GPTQ Algorithm 1 one column at a time in float64 (grid of a group found at its first column).
std::vector<uint8_t> referenceGptq(const Problem &p, int bits, int64_t group) {
    const auto u = referenceHinvUpper(p.h, p.cols, 0.01);
    std::vector<double> w(p.w.begin(), p.w.end());
    std::vector<uint8_t> codes(p.rows * p.cols);
    std::vector<GridParams> params(p.rows);
    std::vector<float> groupValues(group);
    for (int64_t j = 0; j < p.cols; ++j)
        for (int64_t r = 0; r < p.rows; ++r) {
            double *row = w.data() + r * p.cols;
            if (j % group == 0) {
                for (int64_t k = 0; k < group; ++k)
                    groupValues[size_t(k)] = float(row[j + k]);
                params[size_t(r)] = minMaxGrid(groupValues.data(), group, 1, bits, false);
            }
            const uint8_t c = params[size_t(r)].code(float(row[j]));
            codes[size_t(r * p.cols + j)] = c;
            const double e = (row[j] - params[size_t(r)].value(c)) / u[size_t(j * p.cols + j)];
            for (int64_t k = j + 1; k < p.cols; ++k)
                row[k] -= e * u[size_t(j * p.cols + k)];
        }
    return codes;
}

} // namespace

class TestGptq : public QObject {
    Q_OBJECT
private slots:
    void matchesFloat64Reference();
    void identityHessianIsRtn();
    void beatsRtnOnOutputError_data();
    void beatsRtnOnOutputError();
    void deadColumnsAreZero();
    void cancelled();
};

void TestGptq::matchesFloat64Reference() {
    const Problem p = makeProblem(1, 24, 96, 400);
    // (group, block): per-channel in one block and in three (the LDL form's lazy updates), g32.
    for (const auto &[group, block] : {std::pair<int64_t, int64_t>{96, 96}, {96, 32}, {32, 32}}) {
        GptqOptions o;
        o.bits = 3;
        o.groupSize = group == p.cols ? 0 : group;
        o.blockSize = block; // group params are found at block starts, as the reference's are
        auto t = quantizeGptq("w", p.w, p.rows, p.cols, p.h, o);
        QVERIFY(t.ok());
        const auto expected = referenceGptq(p, 3, group);
        const auto codes = t->codes();
        int64_t same = 0;
        for (size_t i = 0; i < codes.size(); ++i)
            same += codes[i] == expected[i];
        // float32 vs float64 may flip a rounding tie now and then, never more.
        qInfo("group %lld, block %lld: %lld of %zu codes agree", static_cast<long long>(group),
              static_cast<long long>(block), static_cast<long long>(same), codes.size());
        QVERIFY2(same >= int64_t(codes.size()) * 99 / 100,
                 qPrintable(QString("%1 of %2 codes agree").arg(same).arg(codes.size())));
    }
}

void TestGptq::identityHessianIsRtn() {
    std::mt19937 rng(2);
    std::normal_distribution<float> n01(0, 1);
    const int64_t rows = 16, cols = 64;
    std::vector<float> w(rows * cols);
    for (float &v : w)
        v = n01(rng);
    std::vector<double> h(cols * cols, 0);
    for (int64_t i = 0; i < cols; ++i)
        h[size_t(i * cols + i)] = 3.0;
    for (int64_t group : {int64_t(0), int64_t(16)}) {
        GptqOptions o;
        o.bits = 4;
        o.groupSize = group;
        auto g = quantizeGptq("w", w, rows, cols, h, o);
        auto r = quantizeRtn("w", w.data(), rows, cols, 4, group, false);
        QVERIFY(g.ok() && r.ok());
        QCOMPARE(g->codes(), r->codes());
        QCOMPARE(g->dequantize(), r->dequantize());
    }
}

void TestGptq::beatsRtnOnOutputError_data() {
    QTest::addColumn<int>("bits");
    QTest::addColumn<int>("group");
    QTest::addColumn<bool>("actOrder");
    for (int bits : {3, 4})
        for (int group : {0, 32})
            for (bool act : {false, true})
                QTest::newRow(qPrintable(
                    QString("%1-bit g%2%3").arg(bits).arg(group).arg(act ? " act-order" : "")))
                    << bits << group << act;
}

void TestGptq::beatsRtnOnOutputError() {
    QFETCH(int, bits);
    QFETCH(int, group);
    QFETCH(bool, actOrder);
    const Problem p = makeProblem(uint32_t(10 + bits), 48, 128, 512);
    GptqOptions o;
    o.bits = bits;
    o.groupSize = group;
    o.actOrder = actOrder;
    nlohmann::json notes;
    auto g = quantizeGptq("w", p.w, p.rows, p.cols, p.h, o, {}, &notes);
    auto r = quantizeRtn("w", p.w.data(), p.rows, p.cols, bits, group, false);
    QVERIFY(g.ok() && r.ok());
    QVERIFY(g->validate().ok());
    QCOMPARE(!g->permutation.empty(), actOrder);
    const double eg = outputError(p, g->dequantize()), er = outputError(p, r->dequantize());
    qInfo("%d-bit g%d%s: ||(W-Q)X||^2 GPTQ %.4g, RTN %.4g (loss %.4g)", bits, group,
          actOrder ? " act" : "", eg, er, notes["loss"].get<double>());
    QVERIFY(eg < 0.8 * er);
    for (uint8_t c : g->codes())
        QVERIFY(c < (1u << bits));
}

void TestGptq::deadColumnsAreZero() {
    Problem p = makeProblem(3, 8, 64, 200);
    for (int64_t k = 0; k < p.cols; ++k) { // channel 5 never fires
        p.h[size_t(5 * p.cols + k)] = 0;
        p.h[size_t(k * p.cols + 5)] = 0;
    }
    GptqOptions o;
    o.bits = 4;
    auto t = quantizeGptq("w", p.w, p.rows, p.cols, p.h, o);
    QVERIFY(t.ok());
    const auto q = t->dequantize();
    for (int64_t r = 0; r < p.rows; ++r)
        QCOMPARE(q[size_t(r * p.cols + 5)], 0.0f);
}

void TestGptq::cancelled() {
    const Problem p = makeProblem(4, 8, 64, 100);
    std::stop_source stop;
    stop.request_stop();
    GptqOptions o;
    auto t = quantizeGptq("w", p.w, p.rows, p.cols, p.h, o, stop.get_token());
    QVERIFY(!t.ok());
    QCOMPARE(int(t.error().code), int(ErrorCode::Cancelled));
}

QTEST_APPLESS_MAIN(TestGptq)
#include "test_gptq.moc"
