// BiLLM: layout and exact storage accounting; with H = I (no compensation) a float64
// re-computation of every step from the tensor's own masks — the residual binarization of the
// salient columns, mu +- alpha of the two split groups, the salient-column count minimizing the
// order-2 error over 1..49 columns ranked by sum w^2, the split no worse than any of the 81
// quantile thresholds, one magnitude threshold per block; the layer-output error ||(W - Q) X||
// below plain sign binarization on random and real (stories260K) layers; broken extras.
#include "salience_test_data.h"

#include "quant/billm.h"

#include <QtTest>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

using namespace lowbit;
using namespace lowbit::test;

namespace {

// Float64 binarization of the masked entries of x: returns the approximations.
std::vector<double> binarize64(const std::vector<double> &x, const std::vector<bool> &mask) {
    double sum = 0, n = 0;
    for (size_t i = 0; i < x.size(); ++i)
        if (mask[i]) {
            sum += x[i];
            ++n;
        }
    std::vector<double> out(x.size(), 0.0);
    if (n == 0)
        return out;
    const double mu = sum / n;
    double alpha = 0;
    for (size_t i = 0; i < x.size(); ++i)
        if (mask[i])
            alpha += std::abs(x[i] - mu) / n;
    for (size_t i = 0; i < x.size(); ++i)
        if (mask[i])
            out[i] = alpha == 0 || x[i] >= mu ? mu + alpha : mu - alpha;
    return out;
}

std::vector<double> residual64(const std::vector<double> &x, const std::vector<bool> &mask,
                               int order) {
    std::vector<double> approx(x.size(), 0.0), r = x;
    for (int o = 0; o < order; ++o) {
        const std::vector<double> b = binarize64(r, mask);
        for (size_t i = 0; i < x.size(); ++i)
            if (mask[i]) {
                approx[i] += b[i];
                r[i] -= b[i];
            }
    }
    return approx;
}

double sse(const std::vector<double> &x, const std::vector<double> &a,
           const std::vector<bool> &mask) {
    double e = 0;
    for (size_t i = 0; i < x.size(); ++i)
        if (mask[i])
            e += (x[i] - a[i]) * (x[i] - a[i]);
    return e;
}

// Rows of a block as float64 vectors.
std::vector<std::vector<double>> rowsOf(const LinearProblem &p) {
    std::vector<std::vector<double>> rows(size_t(p.rows));
    for (int64_t r = 0; r < p.rows; ++r)
        rows[size_t(r)].assign(p.w.begin() + r * p.cols, p.w.begin() + (r + 1) * p.cols);
    return rows;
}

} // namespace

class TestQuantBillm : public QObject {
    Q_OBJECT
private slots:
    void layoutAndBits();
    void salientColumnsBestCount();
    void splitIsBestQuantile();
    void valuesMatchFloat64();
    void beatsSignBinarization();
    void realLayersBeatSignBinarization();
    void brokenExtras();
    void methodOptions();
};

void TestQuantBillm::layoutAndBits() {
    const LinearProblem p = randomProblem(21, 80, 300, 400); // blocks of 128, 128 and 44 columns
    nlohmann::json notes;
    BillmOptions o;
    o.threads = 2;
    auto t = quantizeBillm("w", p.w, p.rows, p.cols, p.stats.hessian, o, {}, &notes);
    QVERIFY2(t.ok(), t.ok() ? "" : t.error().message.c_str());
    QVERIFY(t->validate().ok());
    QCOMPARE(t->bits, 1);
    QCOMPARE(t->groups(), int64_t(3));
    const auto columns = t->extra.at("salient_columns").u8();
    int64_t salient = 0;
    for (int64_t b = 0; b < 3; ++b) {
        int64_t inBlock = 0;
        for (int64_t j = b * 128; j < std::min<int64_t>(p.cols, (b + 1) * 128); ++j)
            inBlock += columns[size_t(j)];
        QVERIFY(inBlock >= 1 && inBlock <= 49);
        salient += inBlock;
    }
    QCOMPARE(notes["salient_columns"].get<int64_t>(), salient);
    QCOMPARE(notes["nominal_bits"].get<double>(), 1.0 + double(salient) / double(p.cols));
    QCOMPARE(t->extra.at("residual_signs").numel(), p.rows * salient);
    QCOMPARE(t->extra.at("sparse_mask").numel(), p.rows * (p.cols - salient));
    for (uint8_t v : t->extra.at("sparse_mask").u8())
        QVERIFY(v <= 1);
    for (uint8_t v : t->extra.at("residual_signs").u8())
        QVERIFY(v <= 1);
    // Signs, FP16 alpha/mu of the concentrated group per (row, block), the column map, the second
    // plane, the split map, six FP16 parameters per (row, block).
    const int64_t n = p.rows * p.cols;
    const uint64_t bits = uint64_t(n) + uint64_t(p.rows * 3 * 32) + uint64_t(p.cols) +
                          uint64_t(p.rows * salient) + uint64_t(p.rows * (p.cols - salient)) +
                          uint64_t(p.rows * 3 * 6 * 16);
    QCOMPARE(t->storageBits(), bits);
    qInfo("nominal %.3f bits, stored %.3f bits/weight", notes["nominal_bits"].get<double>(),
          t->bitsPerWeight());
}

namespace {

// BiLLM with H = I on a random block of 128 columns, and the masks it chose, in float64.
struct IdentityCase {
    LinearProblem p;
    std::vector<float> q; // dequantized
    std::vector<std::vector<double>> rows;
    std::vector<bool> sal; // per column
    std::vector<std::vector<bool>> conc, sparse;
    int64_t salientCount = 0;
};

IdentityCase identityCase() {
    IdentityCase c;
    c.p = randomProblem(22, 48, 128, 16);
    c.p.stats.hessian = identityHessian(c.p.cols);
    auto t = quantizeBillm("w", c.p.w, c.p.rows, c.p.cols, c.p.stats.hessian, {});
    auto q = t.ok() ? dequantizeBillm(*t) : Result<std::vector<float>>(t.error());
    if (!q.ok())
        return c;
    c.q = *q;
    c.rows = rowsOf(c.p);
    const auto columns = t->extra.at("salient_columns").u8();
    const auto sparseMask = t->extra.at("sparse_mask").u8();
    for (int64_t j = 0; j < c.p.cols; ++j) {
        c.sal.push_back(columns[size_t(j)] != 0);
        c.salientCount += columns[size_t(j)] != 0;
    }
    size_t next = 0;
    for (int64_t r = 0; r < c.p.rows; ++r) {
        c.conc.emplace_back(size_t(c.p.cols), false);
        c.sparse.emplace_back(size_t(c.p.cols), false);
        for (int64_t j = 0; j < c.p.cols; ++j)
            if (!c.sal[size_t(j)])
                (sparseMask[next++] ? c.sparse : c.conc)[size_t(r)][size_t(j)] = true;
    }
    return c;
}

} // namespace

// The salient columns are the k of largest sum w^2 (H = I), k the best of 1..49 for the order-2
// error of both parts.
void TestQuantBillm::salientColumnsBestCount() {
    const IdentityCase c = identityCase();
    QVERIFY(!c.q.empty());
    const int64_t cols = c.p.cols;
    std::vector<double> score(size_t(cols), 0.0);
    for (const auto &row : c.rows)
        for (int64_t j = 0; j < cols; ++j)
            score[size_t(j)] += row[size_t(j)] * row[size_t(j)];
    std::vector<int64_t> order(static_cast<size_t>(cols));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](int64_t a, int64_t b) { return score[size_t(a)] > score[size_t(b)]; });
    for (int64_t i = 0; i < c.salientCount; ++i)
        QVERIFY(c.sal[size_t(order[size_t(i)])]);
    auto error = [&](const std::vector<bool> &s) {
        std::vector<bool> rest(s.size());
        for (size_t j = 0; j < s.size(); ++j)
            rest[j] = !s[j];
        double e = 0;
        for (const auto &row : c.rows)
            e += sse(row, residual64(row, s, 2), s) + sse(row, residual64(row, rest, 2), rest);
        return e;
    };
    double best = INFINITY;
    for (int64_t k = 1; k < 50; ++k) {
        std::vector<bool> s(size_t(cols), false);
        for (int64_t i = 0; i < k; ++i)
            s[size_t(order[size_t(i)])] = true;
        best = std::min(best, error(s));
    }
    QVERIFY2(error(c.sal) <= best * (1 + 1e-6), qPrintable(QString("k = %1").arg(c.salientCount)));
}

// One magnitude threshold splits the rest (every sparse |w| above every concentrated one), and
// the split is no worse than any of the 81 quantile thresholds of |W| with salient columns zeroed.
void TestQuantBillm::splitIsBestQuantile() {
    const IdentityCase c = identityCase();
    QVERIFY(!c.q.empty());
    double maxConc = 0, minSparse = INFINITY;
    std::vector<double> mags;
    for (int64_t r = 0; r < c.p.rows; ++r)
        for (int64_t j = 0; j < c.p.cols; ++j) {
            const double a = std::abs(c.rows[size_t(r)][size_t(j)]);
            mags.push_back(c.sal[size_t(j)] ? 0.0 : a);
            if (c.sparse[size_t(r)][size_t(j)])
                minSparse = std::min(minSparse, a);
            if (c.conc[size_t(r)][size_t(j)])
                maxConc = std::max(maxConc, a);
        }
    QVERIFY(maxConc < minSparse);
    std::sort(mags.begin(), mags.end());
    auto splitError = [&](const std::vector<std::vector<bool>> &conc,
                          const std::vector<std::vector<bool>> &sparse) {
        double e = 0;
        for (size_t r = 0; r < c.rows.size(); ++r)
            e += sse(c.rows[r], binarize64(c.rows[r], conc[r]), conc[r]) +
                 sse(c.rows[r], binarize64(c.rows[r], sparse[r]), sparse[r]);
        return e;
    };
    const double chosen = splitError(c.conc, c.sparse);
    for (int step = 0; step <= 80; ++step) {
        const double pos = (0.10 + 0.01 * step) * double(mags.size() - 1);
        const size_t lo = size_t(pos), hi = std::min(lo + 1, mags.size() - 1);
        const double thr = mags[lo] + (mags[hi] - mags[lo]) * (pos - double(lo));
        auto conc = c.conc, sparse = c.sparse;
        for (size_t r = 0; r < c.rows.size(); ++r)
            for (size_t j = 0; j < c.sal.size(); ++j) {
                conc[r][j] = !c.sal[j] && std::abs(c.rows[r][j]) < thr;
                sparse[r][j] = !c.sal[j] && std::abs(c.rows[r][j]) >= thr;
            }
        QVERIFY(chosen <= splitError(conc, sparse) * (1 + 1e-6));
    }
}

// The dequantized values: residual binarization of the salient columns, mu +- alpha of each
// split group, per row.
void TestQuantBillm::valuesMatchFloat64() {
    const IdentityCase c = identityCase();
    QVERIFY(!c.q.empty());
    for (size_t r = 0; r < c.rows.size(); ++r) {
        const auto &row = c.rows[r];
        const auto a = residual64(row, c.sal, 2), b = binarize64(row, c.conc[r]),
                   d = binarize64(row, c.sparse[r]);
        for (size_t j = 0; j < row.size(); ++j) {
            const double expected = c.sal[j] ? a[j] : c.sparse[r][j] ? d[j] : b[j];
            const float got = c.q[r * row.size() + j];
            QVERIFY2(
                std::abs(got - expected) < 1e-5,
                qPrintable(QString("(%1, %2): %3 vs %4").arg(r).arg(j).arg(got).arg(expected)));
        }
    }
}

void TestQuantBillm::beatsSignBinarization() {
    for (uint32_t seed : {31u, 32u}) {
        const LinearProblem p = randomProblem(seed, 96, 256, 512);
        BillmOptions o;
        o.threads = 2;
        auto t = quantizeBillm("w", p.w, p.rows, p.cols, p.stats.hessian, o);
        QVERIFY(t.ok());
        auto q = dequantizeBillm(*t);
        QVERIFY(q.ok());
        const double err = outputError(p, *q),
                     sign = outputError(p, signBinarize(p.w, p.rows, p.cols));
        qInfo("seed %u: ||(W-Q)X||^2 BiLLM %.5g, sign binarization %.5g", seed, err, sign);
        QVERIFY(err < sign);
    }
}

void TestQuantBillm::realLayersBeatSignBinarization() {
    const std::vector<LinearProblem> problems = stories260kProblems();
    if (problems.empty()) {
        if (sharedRequired())
            QFAIL("stories260K or the WikiText-2 prefix missing");
        QSKIP("stories260K or the WikiText-2 prefix missing");
    }
    double sumBillm = 0, sumSign = 0;
    for (const LinearProblem &p : problems) {
        BillmOptions o;
        o.threads = 2;
        auto t = quantizeBillm(p.name, p.w, p.rows, p.cols, p.stats.hessian, o);
        QVERIFY(t.ok());
        auto q = dequantizeBillm(*t);
        QVERIFY(q.ok());
        const double err = outputError(p, *q),
                     sign = outputError(p, signBinarize(p.w, p.rows, p.cols));
        sumBillm += err;
        sumSign += sign;
        QVERIFY2(err < sign,
                 qPrintable(QString("%1: %2 vs sign %3").arg(p.name.c_str()).arg(err).arg(sign)));
    }
    qInfo("sum over %zu stories260K linears of ||(W-Q)X||^2: BiLLM %.5g, sign binarization %.5g",
          problems.size(), sumBillm, sumSign);
}

void TestQuantBillm::brokenExtras() {
    const LinearProblem p = randomProblem(23, 8, 64, 64);
    auto good = quantizeBillm("w", p.w, p.rows, p.cols, p.stats.hessian, {});
    QVERIFY(good.ok());
    QVERIFY(dequantizeBillm(*good).ok());
    auto expectBad = [](const QuantizedTensor &t, const char *what) {
        auto r = dequantizeBillm(t);
        QVERIFY2(!r.ok(), what);
        QCOMPARE(int(r.error().code), int(ErrorCode::Format));
        QVERIFY(r.error().message.find("'w'") != std::string::npos);
    };
    QuantizedTensor t = *good;
    t.extra.erase("params");
    expectBad(t, "missing params");
    t = *good;
    std::vector<uint8_t> columns(t.extra.at("salient_columns").u8().begin(),
                                 t.extra.at("salient_columns").u8().end());
    *std::find(columns.begin(), columns.end(), uint8_t(0)) = 1; // one more salient column
    t.extra["salient_columns"] = QuantExtra::fromU8({t.cols}, columns, 1);
    expectBad(t, "column map disagrees with the planes");
    t = *good;
    t.extra["sparse_mask"] = QuantExtra::fromU8({1}, std::vector<uint8_t>{1}, 1);
    expectBad(t, "short split map");
    t = *good;
    t.codebook.clear();
    expectBad(t, "no sign codebook");
}

void TestQuantBillm::methodOptions() {
    QuantizeOptions o;
    o.method = "billm";
    o.bits = 4;
    auto q = makeQuantizer(o);
    QVERIFY(!q.ok());
    QVERIFY(q.error().message.find("--bits 1") != std::string::npos);
    o.bits = 1;
    QVERIFY(makeQuantizer(o).ok());
    o.methodOptions = {{"max_salient_column", 30}};
    QVERIFY(!makeQuantizer(o).ok());
    o.methodOptions = {{"block", 0}};
    QVERIFY(!makeQuantizer(o).ok());
}

QTEST_APPLESS_MAIN(TestQuantBillm)
#include "test_quant_billm.moc"
