// Issue 8, done-when 1: the hand-written backward of every op of the trainable LLaMA and of a
// whole tiny model agrees with central differences in double precision to 1e-5 absolute +
// 1e-3 relative, with LoRA B and the IR-QLoRA betas non-zero, masked targets and GQA; float32
// gradients agree with the double ones.
#include "core/thread_pool.h"
#include "train/decoder_layer.h"
#include "train/lora_linear.h"
#include "train/train_ops.h"
#include "train/trainable_model.h"

#include "gradient_check.h"

#include <QtTest>
#include <cmath>
#include <functional>
#include <random>

using namespace lowbit;
using namespace lowbit::train;

namespace {

using test::checkGradient;

std::vector<double> randomValues(std::mt19937_64 &rng, size_t n, double scale = 1.0) {
    std::normal_distribution<double> normal(0.0, scale);
    std::vector<double> v(n);
    for (double &x : v)
        x = normal(rng);
    return v;
}

double dot(const std::vector<double> &a, const std::vector<double> &b) {
    double s = 0;
    for (size_t i = 0; i < a.size(); ++i)
        s += a[i] * b[i];
    return s;
}

#define CHECK_GRADIENT(what, values, analytic, loss)                                               \
    do {                                                                                           \
        const QString mismatch = checkGradient(what, values, analytic, loss);                      \
        QVERIFY2(mismatch.isEmpty(), qPrintable(mismatch));                                        \
    } while (0)

// A trainable base that exposes its dense weight as a parameter (DB-LLM-like), for the tests.
template <typename Real> class ParameterBase final : public LinearBase<Real> {
public:
    ParameterBase(int64_t rows, int64_t cols, std::vector<Real> w) : m_rows(rows), m_cols(cols) {
        m_weight.name = "test.base.weight";
        m_weight.shape = {rows, cols};
        m_weight.grad.assign(w.size(), Real(0));
        m_weight.value = std::move(w);
    }
    int64_t rows() const override { return m_rows; }
    int64_t cols() const override { return m_cols; }
    const Real *weight() const override { return m_weight.value.data(); }
    std::vector<Parameter<Real> *> parameters() override { return {&m_weight}; }
    void backward(const Real *dWeight) override {
        for (size_t i = 0; i < m_weight.grad.size(); ++i)
            m_weight.grad[i] += dWeight[i];
    }

private:
    int64_t m_rows, m_cols;
    Parameter<Real> m_weight;
};

} // namespace

class TestTrainGrad : public QObject {
    Q_OBJECT
private slots:
    void rmsnorm();
    void rope();
    void attentionGroupedQuery();
    void attentionLongSequencesOnPool();
    void swiglu();
    void crossEntropy();
    void loraLinear_data();
    void loraLinear();
    void elasticMatchesReferenceForm();
    void loraMergedMatchesForward_data();
    void loraMergedMatchesForward();
    void loraInitialization();
};

void TestTrainGrad::rmsnorm() {
    std::mt19937_64 rng(1);
    const int64_t rows = 3, dim = 8;
    std::vector<double> x = randomValues(rng, rows * dim), w = randomValues(rng, dim);
    const std::vector<double> proj = randomValues(rng, rows * dim);
    std::vector<double> y(rows * dim), inv(rows), dx(rows * dim, 0.0);
    auto loss = [&] {
        ops::rmsnormForward(x.data(), rows, dim, w.data(), 1e-5, y.data(), inv.data());
        return dot(y, proj);
    };
    loss();
    ops::rmsnormBackward(x.data(), rows, dim, w.data(), inv.data(), proj.data(), dx.data());
    CHECK_GRADIENT("dx", x, dx, loss);
}

void TestTrainGrad::rope() {
    std::mt19937_64 rng(2);
    const int64_t rows = 3, heads = 2, headDim = 6, stride = heads * headDim + 2;
    std::vector<double> x = randomValues(rng, rows * stride), cosSin(rows * headDim);
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < headDim / 2; ++j) {
            const double angle = 0.7 * double(r + 1) * double(j + 1);
            cosSin[r * headDim + j] = std::cos(angle);
            cosSin[r * headDim + headDim / 2 + j] = std::sin(angle);
        }
    const std::vector<double> proj = randomValues(rng, rows * stride);
    auto loss = [&] {
        std::vector<double> y = x;
        ops::ropeForward(y.data(), rows, stride, heads, headDim, cosSin.data());
        return dot(y, proj);
    };
    std::vector<double> dx = proj;
    ops::ropeBackward(dx.data(), rows, stride, heads, headDim, cosSin.data());
    // Columns past the heads are not rotated: their gradient passes through unchanged.
    CHECK_GRADIENT("dx", x, dx, loss);
}

void TestTrainGrad::attentionGroupedQuery() {
    std::mt19937_64 rng(3);
    const ops::AttentionDims dims{6, 2, 4, 1.0 / 2.0}; // 3 query heads share each kv head
    const std::vector<int64_t> starts = {0, 3, 3, 7};  // lengths 3, 0 and 4
    const int64_t rows = 7, qDim = 24, kvDim = 8;
    std::vector<double> q = randomValues(rng, rows * qDim), k = randomValues(rng, rows * kvDim);
    std::vector<double> v = randomValues(rng, rows * kvDim);
    const std::vector<double> proj = randomValues(rng, rows * qDim);
    std::vector<double> out(rows * qDim), lse(rows * dims.heads);
    auto loss = [&] {
        ops::attentionForward(q.data(), k.data(), v.data(), starts, dims, out.data(), lse.data());
        return dot(out, proj);
    };
    loss();
    std::vector<double> dq(rows * qDim), dk(rows * kvDim), dv(rows * kvDim);
    ops::attentionBackward(q.data(), k.data(), v.data(), out.data(), lse.data(), proj.data(),
                           starts, dims, dq.data(), dk.data(), dv.data());
    CHECK_GRADIENT("dq", q, dq, loss);
    CHECK_GRADIENT("dk", k, dk, loss);
    CHECK_GRADIENT("dv", v, dv, loss);
    // Independent check of the forward's causality: the first row attends to itself only, so
    // its output is its own value row (head h reads kv head h / 3).
    for (int64_t h = 0; h < dims.heads; ++h)
        for (int64_t c = 0; c < dims.headDim; ++c)
            QCOMPARE(out[h * 4 + c], v[(h / 3) * 4 + c]);
}

// Sequences longer than the 64-row query block, split over a thread pool: the forward against a
// direct float64 evaluation of softmax(scale·q·kᵀ)·v, the backward against central differences.
void TestTrainGrad::attentionLongSequencesOnPool() {
    std::mt19937_64 rng(13);
    const ops::AttentionDims dims{4, 2, 4, 0.5};
    const std::vector<int64_t> starts = {0, 70, 75};
    const int64_t rows = 75, qDim = 16, kvDim = 8;
    std::vector<double> q = randomValues(rng, rows * qDim), k = randomValues(rng, rows * kvDim);
    std::vector<double> v = randomValues(rng, rows * kvDim);
    const std::vector<double> proj = randomValues(rng, rows * qDim);
    std::vector<double> out(rows * qDim), lse(rows * dims.heads);
    ThreadPool pool(3);
    auto loss = [&] {
        ops::attentionForward(q.data(), k.data(), v.data(), starts, dims, out.data(), lse.data(),
                              &pool);
        return dot(out, proj);
    };
    loss();
    for (size_t s = 0; s + 1 < starts.size(); ++s)
        for (int64_t i = starts[s]; i < starts[s + 1]; ++i)
            for (int64_t h = 0; h < dims.heads; ++h) {
                const int64_t g = h / 2;
                std::vector<double> w;
                for (int64_t j = starts[s]; j <= i; ++j) {
                    double score = 0;
                    for (int64_t c = 0; c < 4; ++c)
                        score += q[i * qDim + h * 4 + c] * k[j * kvDim + g * 4 + c];
                    w.push_back(std::exp(0.5 * score));
                }
                double sum = 0;
                for (double x : w)
                    sum += x;
                QVERIFY(std::abs(lse[i * dims.heads + h] - std::log(sum)) < 1e-12);
                for (int64_t c = 0; c < 4; ++c) {
                    double expected = 0;
                    for (int64_t j = starts[s]; j <= i; ++j)
                        expected += w[size_t(j - starts[s])] / sum * v[j * kvDim + g * 4 + c];
                    QVERIFY(std::abs(out[i * qDim + h * 4 + c] - expected) < 1e-12);
                }
            }
    std::vector<double> dq(rows * qDim), dk(rows * kvDim), dv(rows * kvDim);
    ops::attentionBackward(q.data(), k.data(), v.data(), out.data(), lse.data(), proj.data(),
                           starts, dims, dq.data(), dk.data(), dv.data(), &pool);
    CHECK_GRADIENT("dq", q, dq, loss);
    CHECK_GRADIENT("dk", k, dk, loss);
    CHECK_GRADIENT("dv", v, dv, loss);
}

void TestTrainGrad::swiglu() {
    std::mt19937_64 rng(4);
    const int64_t n = 20;
    std::vector<double> gate = randomValues(rng, n, 2.0), up = randomValues(rng, n);
    const std::vector<double> proj = randomValues(rng, n);
    auto loss = [&] {
        std::vector<double> out(n);
        ops::swigluForward(gate.data(), up.data(), n, out.data());
        return dot(out, proj);
    };
    std::vector<double> dGate(n), dUp(n);
    ops::swigluBackward(gate.data(), up.data(), proj.data(), n, dGate.data(), dUp.data());
    CHECK_GRADIENT("dGate", gate, dGate, loss);
    CHECK_GRADIENT("dUp", up, dUp, loss);
}

void TestTrainGrad::crossEntropy() {
    std::mt19937_64 rng(5);
    std::vector<double> logits = randomValues(rng, 9, 3.0), dLogits(9), scratch(9);
    const int32_t target = 4;
    auto loss = [&] { return ops::crossEntropy<double>(logits, target, scratch); };
    const double value = ops::crossEntropy<double>(logits, target, dLogits);
    double sumExp = 0; // closed form: log Σ exp(z) − z_t
    for (double z : logits)
        sumExp += std::exp(z);
    QVERIFY(std::abs(value - (std::log(sumExp) - logits[target])) < 1e-12);
    CHECK_GRADIENT("dLogits", logits, dLogits, loss);
}

void TestTrainGrad::loraLinear_data() {
    QTest::addColumn<bool>("elastic");
    QTest::addColumn<bool>("trainableBase");
    QTest::addColumn<int>("in");
    QTest::addColumn<int>("out");
    QTest::addColumn<int>("rank");
    QTest::newRow("LoRA, frozen base") << false << false << 12 << 8 << 4;
    QTest::newRow("LoRA + IEC, frozen base") << true << false << 12 << 8 << 4;
    QTest::newRow("LoRA + IEC, trainable base") << true << true << 12 << 8 << 4;
    QTest::newRow("IEC, rank divides neither side") << true << false << 10 << 7 << 3;
    QTest::newRow("IEC, rank above in and out") << true << false << 3 << 2 << 4;
}

namespace {

// A LoRA linear with random base, A, B and betas (all non-zero).
std::unique_ptr<LoraLinear<double>> randomLinear(std::mt19937_64 &rng, int64_t in, int64_t out,
                                                 int rank, bool elastic, bool trainableBase) {
    std::vector<double> w = randomValues(rng, size_t(out * in));
    std::unique_ptr<LinearBase<double>> base;
    if (trainableBase)
        base = std::make_unique<ParameterBase<double>>(out, in, w);
    else
        base = std::make_unique<DenseLinearBase<double>>(out, in, w);
    auto made = LoraLinear<double>::create(std::move(base), "test", rank, 6.0, elastic, 7);
    if (!made)
        return nullptr;
    for (Parameter<double> *p : (*made)->adapterParameters())
        p->value = randomValues(rng, p->value.size(), 0.5);
    return std::move(*made);
}

} // namespace

void TestTrainGrad::loraLinear() {
    QFETCH(bool, elastic);
    QFETCH(bool, trainableBase);
    QFETCH(int, in);
    QFETCH(int, out);
    QFETCH(int, rank);
    std::mt19937_64 rng(6);
    const int64_t n = 5;
    auto made = randomLinear(rng, in, out, rank, elastic, trainableBase);
    QVERIFY(made);
    LoraLinear<double> &linear = *made;
    std::vector<Parameter<double> *> params = linear.adapterParameters();
    QCOMPARE(params.size(), size_t(elastic ? 4 : 2));
    for (Parameter<double> *p : linear.base().parameters())
        params.push_back(p);

    std::vector<double> x = randomValues(rng, n * in), y(n * out), hidden(n * rank);
    const std::vector<double> proj = randomValues(rng, n * out);
    auto loss = [&] {
        linear.forward(x.data(), n, y.data(), hidden.data());
        return dot(y, proj);
    };
    loss();
    std::vector<double> dx(n * in, 0.25); // accumulate: the result adds to what is there
    linear.backward(x.data(), hidden.data(), proj.data(), n, dx.data(), true);
    for (double &g : dx)
        g -= 0.25;
    CHECK_GRADIENT("dx", x, dx, loss);
    for (Parameter<double> *p : params)
        CHECK_GRADIENT(p->name.c_str(), p->value, p->grad, loss);
}

// The IR-QLoRA reference forward written out directly (irlora.py, divisible shapes):
// h = A·x + βA·mean(x.reshape(r, in/r), -1); y += s·((B·h).reshape(r, out/r) + βB·h[:, None]).
void TestTrainGrad::elasticMatchesReferenceForm() {
    std::mt19937_64 rng(10);
    const int64_t in = 12, out = 8, rank = 4, n = 2;
    auto linear = randomLinear(rng, in, out, int(rank), true, false);
    QVERIFY(linear);
    const auto params = linear->adapterParameters();
    const std::vector<double> &a = params[0]->value, &b = params[1]->value;
    const double betaA = params[2]->value[0], betaB = params[3]->value[0], s = 6.0 / 4;
    const std::vector<double> x = randomValues(rng, n * in);
    std::vector<double> y(n * out), hidden(n * rank), base(n * out), noHidden(n * rank);
    linear->forward(x.data(), n, y.data(), hidden.data());
    auto plain = LoraLinear<double>::create(
        std::make_unique<DenseLinearBase<double>>(
            out, in,
            std::vector<double>(linear->base().weight(), linear->base().weight() + out * in)),
        "base", 0, 1.0, false, 0);
    (*plain)->forward(x.data(), n, base.data(), noHidden.data());
    for (int64_t row = 0; row < n; ++row) {
        std::vector<double> h(rank);
        for (int64_t g = 0; g < rank; ++g) {
            double mean = 0;
            for (int64_t j = 0; j < in / rank; ++j)
                mean += x[row * in + g * (in / rank) + j] / double(in / rank);
            for (int64_t j = 0; j < in; ++j)
                h[g] += a[g * in + j] * x[row * in + j];
            h[g] += betaA * mean;
        }
        for (int64_t o = 0; o < out; ++o) {
            double bh = 0;
            for (int64_t g = 0; g < rank; ++g)
                bh += b[o * rank + g] * h[g];
            const double expected = base[row * out + o] + s * (bh + betaB * h[o / (out / rank)]);
            QVERIFY(std::abs(y[row * out + o] - expected) < 1e-12);
        }
    }
}

void TestTrainGrad::loraMergedMatchesForward_data() {
    QTest::addColumn<int>("in");
    QTest::addColumn<int>("out");
    QTest::addColumn<int>("rank");
    QTest::newRow("divisible") << 8 << 12 << 4;
    QTest::newRow("rank divides neither side") << 10 << 7 << 3;
    QTest::newRow("rank above in and out") << 3 << 2 << 4;
}

void TestTrainGrad::loraMergedMatchesForward() {
    QFETCH(int, in);
    QFETCH(int, out);
    QFETCH(int, rank);
    std::mt19937_64 rng(8);
    const int64_t n = 3;
    auto linear = randomLinear(rng, in, out, rank, true, false);
    QVERIFY(linear);
    const std::vector<double> x = randomValues(rng, n * in);
    std::vector<double> y(n * out), hidden(n * rank);
    linear->forward(x.data(), n, y.data(), hidden.data());
    const std::vector<double> merged = linear->merged();
    for (int64_t r = 0; r < n; ++r)
        for (int64_t o = 0; o < out; ++o) {
            double expected = 0;
            for (int64_t i = 0; i < in; ++i)
                expected += x[r * in + i] * merged[o * in + i];
            QVERIFY(std::abs(y[r * out + o] - expected) < 1e-12);
        }
}

void TestTrainGrad::loraInitialization() {
    const int64_t in = 64, out = 32;
    auto made = LoraLinear<float>::create(
        std::make_unique<DenseLinearBase<float>>(out, in, std::vector<float>(out * in, 0.5f)), "p",
        16, 32.0, false, 42);
    QVERIFY(made.ok());
    std::vector<Parameter<float> *> params = (*made)->adapterParameters();
    QCOMPARE(params[0]->name, std::string("p.lora_A.weight"));
    QCOMPARE(params[0]->shape, (std::vector<int64_t>{16, in}));
    QCOMPARE(params[1]->name, std::string("p.lora_B.weight"));
    QCOMPARE(params[1]->shape, (std::vector<int64_t>{out, 16}));
    // PEFT's kaiming_uniform_(a=√5): U(−1/√in, 1/√in); mean ≈ 0, variance bound²/3.
    const double bound = 1.0 / 8.0;
    double sum = 0, sumSquares = 0;
    for (float a : params[0]->value) {
        QVERIFY(std::abs(a) <= bound);
        sum += a;
        sumSquares += double(a) * a;
    }
    const double count = double(params[0]->value.size());
    QVERIFY(std::abs(sum / count) < 0.01);
    QVERIFY(std::abs(sumSquares / count - bound * bound / 3) < 0.15 * bound * bound / 3);
    for (float b : params[1]->value)
        QCOMPARE(b, 0.0f);
}

QTEST_APPLESS_MAIN(TestTrainGrad)
#include "test_train_grad.moc"
