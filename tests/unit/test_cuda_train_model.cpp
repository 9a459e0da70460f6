// CudaTrainModel (train/cuda_train_model.h) on the GPU against the CPU's float64 TrainableModel,
// itself checked against central differences (test_train_model) and NumPy (the fixtures): every
// parameter gradient with LoRA B and IEC β non-zero, a custom loss through the host, an NF4 / ICQ
// packed base against the same weights dense, the 16-bit tensor-core precision held to a looser
// bound, and evaluate() on the fixtures (the 128256-token vocabulary of tiny-llama3-b in chunks).
// The device is LOWBIT_TEST_DEVICE (default cuda:0). Skips without the CUDA backend or a GPU.
#include "shared_data.h"

#include "backend/device.h"
#include "model/checkpoint.h"
#include "quant/icq.h"
#include "quant/nf4.h"
#include "quant/quantized_tensor.h"
#include "train/cuda_train_model.h"
#include "train/trainable_model.h"

#include <QtTest>
#include <array>
#include <cmath>
#include <cstdlib>
#include <random>

using namespace lowbit;
using namespace lowbit::train;

namespace {

int testDevice() {
    const char *env = std::getenv("LOWBIT_TEST_DEVICE");
    auto spec = parseDevice(env && *env ? env : "cuda:0");
    return spec.ok() && spec->isCuda() ? spec->index : 0;
}

// Sequences of several lengths (one past a 64-row block, one empty), the first positions masked.
std::vector<TrainExample> randomBatch(int64_t vocab, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<TrainExample> batch;
    for (int length : {37, 70, 0, 5, 23}) {
        TrainExample ex;
        for (int t = 0; t < length; ++t) {
            ex.tokens.push_back(int32_t(rng() % uint64_t(vocab)));
            ex.targets.push_back(t < 3 ? kIgnoreTarget : int32_t(rng() % uint64_t(vocab)));
        }
        batch.push_back(std::move(ex));
    }
    return batch;
}

LoraOptions lora(bool elastic) {
    LoraOptions o;
    o.rank = 8;
    o.alpha = 16;
    o.elasticConnection = elastic;
    o.seed = 5;
    return o;
}

CudaTrainOptions deviceOptions(GemmPrecision precision) {
    CudaTrainOptions o;
    o.device = testDevice();
    o.precision = precision;
    o.maxBatchTokens = 160;
    o.headChunkRows = 16; // several chunks per batch
    return o;
}

// Every adapter tensor (A, B, βA, βB) to float-representable values in ±0.3 from `seed`, the
// same in both models; checks that the two list the same names in the same order.
template <typename Real>
QString setAdapters(std::vector<Parameter<Real> *> cpu, std::vector<Parameter<float> *> gpu,
                    uint64_t seed) {
    if (cpu.size() != gpu.size())
        return QString("%1 CPU parameters, %2 device").arg(cpu.size()).arg(gpu.size());
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> uniform(-0.3, 0.3);
    for (size_t t = 0; t < cpu.size(); ++t) {
        if (cpu[t]->name != gpu[t]->name || cpu[t]->shape != gpu[t]->shape)
            return QString("parameter %1: CPU %2, device %3")
                .arg(t)
                .arg(QString::fromStdString(cpu[t]->name), QString::fromStdString(gpu[t]->name));
        for (size_t i = 0; i < cpu[t]->value.size(); ++i) {
            const float v = float(uniform(rng));
            cpu[t]->value[i] = Real(v);
            gpu[t]->value[i] = v;
        }
    }
    return {};
}

// Tolerance of TestTrainModel::floatMatchesDouble, doubled: float32 rounds each op to 6e-8, and a
// gradient element sums terms that partly cancel, so its error scales with the model's largest
// gradients (~1e-6 of them measured on the CPU). The device sums in other orders (cuBLAS blocking,
// tree reductions), which changes the rounding but not its size; a wrong term in the backward is
// O(1) of the tensor's scale and fails by orders of magnitude.
QString compareGradients(const std::vector<Parameter<double> *> &expected,
                         const std::vector<Parameter<float> *> &got, double tensorTol,
                         double globalTol, double *worst) {
    double global = 0;
    for (const Parameter<double> *p : expected)
        for (double g : p->grad)
            global = std::max(global, std::abs(g));
    *worst = 0;
    for (size_t t = 0; t < expected.size(); ++t) {
        double scale = 0;
        for (double g : expected[t]->grad)
            scale = std::max(scale, std::abs(g));
        if (!(scale > 0))
            return QString::fromStdString(expected[t]->name + ": zero gradient (nothing tested)");
        for (size_t i = 0; i < expected[t]->grad.size(); ++i) {
            const double error = std::abs(double(got[t]->grad[i]) - expected[t]->grad[i]);
            *worst = std::max(*worst, error / global);
            if (!(error <= tensorTol * scale + globalTol * global))
                return QString("%1[%2]: device %3, CPU float64 %4")
                    .arg(QString::fromStdString(expected[t]->name))
                    .arg(i)
                    .arg(got[t]->grad[i], 0, 'g', 9)
                    .arg(expected[t]->grad[i], 0, 'g', 12);
        }
    }
    return {};
}

Checkpoint loadFixture(const std::filesystem::path &dir) {
    auto ck = loadCheckpoint(dir);
    if (!ck.ok())
        qFatal("%s", ck.error().message.c_str());
    return std::move(*ck);
}

std::vector<Tensor *> linears(LayerWeights &w) {
    return {&w.wq, &w.wk, &w.wv, &w.wo, &w.wGate, &w.wUp, &w.wDown};
}

// A squared-error loss on the logits, so the host path of a custom loss is exercised with
// gradients unlike cross-entropy's: ½·Σ_j (z_j − 0.01·target)².
template <typename Real> class SquaredLogits final : public LossFunction<Real> {
public:
    std::vector<std::array<int64_t, 3>> seen;
    double score(int64_t example, int64_t position, int32_t target, std::span<const Real> logits,
                 std::span<Real> dLogits) override {
        seen.push_back({example, position, target});
        double loss = 0;
        for (size_t j = 0; j < logits.size(); ++j) {
            const double d = double(logits[j]) - 0.01 * double(target);
            loss += 0.5 * d * d;
            dLogits[j] = Real(d);
        }
        return loss;
    }
};

} // namespace

class TestCudaTrainModel : public QObject {
    Q_OBJECT
private slots:
    void initTestCase();
    void gradientsMatchDouble_data();
    void gradientsMatchDouble();
    void customLoss();
    void packedBaseMatchesDense_data();
    void packedBaseMatchesDense();
    void tensor16CloseToDouble();
    void evaluateMatchesCpu_data();
    void evaluateMatchesCpu();
    void badInput();
};

void TestCudaTrainModel::initTestCase() {
    if (!cudaBuilt())
        QSKIP("built without the CUDA backend (no CUDA toolkit, or LOWBIT_ENABLE_CUDA=OFF)");
    std::string why;
    if (cudaDeviceCount(&why) == 0)
        QSKIP(qPrintable(QString("no CUDA device: %1").arg(QString::fromStdString(why))));
}

void TestCudaTrainModel::gradientsMatchDouble_data() {
    QTest::addColumn<bool>("elastic");
    QTest::newRow("LoRA r8") << false;
    QTest::newRow("LoRA r8 + IEC") << true;
}

void TestCudaTrainModel::gradientsMatchDouble() {
    QFETCH(bool, elastic);
    LOWBIT_REQUIRE_SHARED_FILE(dir, "fixtures/tiny-llama3-a");
    const Checkpoint ck = loadFixture(dir);
    auto cpu = TrainableModel<double>::create(ck, lora(elastic));
    auto gpu = CudaTrainModel::create(ck, lora(elastic), deviceOptions(GemmPrecision::Fp32));
    QVERIFY(cpu.ok());
    QVERIFY2(gpu.ok(), gpu.ok() ? "" : gpu.error().message.c_str());
    const QString names = setAdapters((*cpu)->parameters(), (*gpu)->parameters(), 17);
    QVERIFY2(names.isEmpty(), qPrintable(names));
    const std::vector<TrainExample> batch = randomBatch(ck.config.vocabSize, 18);
    (*cpu)->zeroGrad();
    (*gpu)->zeroGrad();
    auto expected = (*cpu)->accumulate(batch);
    auto got = (*gpu)->accumulate(batch);
    QVERIFY(expected.ok());
    QVERIFY2(got.ok(), got.ok() ? "" : got.error().message.c_str());
    QCOMPARE(got->scored, expected->scored);
    QVERIFY2(std::abs(got->lossSum - expected->lossSum) < 1e-5 * expected->lossSum,
             qPrintable(QString("loss %1 vs %2").arg(got->lossSum).arg(expected->lossSum)));
    double worst = 0;
    const QString mismatch =
        compareGradients((*cpu)->parameters(), (*gpu)->parameters(), 2e-4, 2e-5, &worst);
    QVERIFY2(mismatch.isEmpty(), qPrintable(mismatch));
    qInfo("device float32 vs CPU float64 gradients: worst error %.3g of the largest", worst);
    // accumulate adds into the host grads: a second call doubles them.
    const std::vector<float> once = (*gpu)->parameters()[1]->grad;
    QVERIFY((*gpu)->accumulate(batch).ok());
    for (size_t i = 0; i < once.size(); ++i)
        QVERIFY(std::abs((*gpu)->parameters()[1]->grad[i] - 2 * once[i]) <=
                1e-6f * (1 + std::abs(once[i])));
}

void TestCudaTrainModel::customLoss() {
    LOWBIT_REQUIRE_SHARED_FILE(dir, "fixtures/tiny-llama3-a");
    const Checkpoint ck = loadFixture(dir);
    auto cpu = TrainableModel<double>::create(ck, lora(true));
    auto gpu = CudaTrainModel::create(ck, lora(true), deviceOptions(GemmPrecision::Fp32));
    QVERIFY(cpu.ok());
    QVERIFY2(gpu.ok(), gpu.ok() ? "" : gpu.error().message.c_str());
    QVERIFY(setAdapters((*cpu)->parameters(), (*gpu)->parameters(), 27).isEmpty());
    const std::vector<TrainExample> batch = randomBatch(ck.config.vocabSize, 28);
    SquaredLogits<double> cpuLoss;
    SquaredLogits<float> gpuLoss;
    (*gpu)->setLossFunction(&gpuLoss);
    auto expected = (*cpu)->accumulate(batch, &cpuLoss);
    auto got = (*gpu)->accumulate(batch);
    QVERIFY(expected.ok());
    QVERIFY2(got.ok(), got.ok() ? "" : got.error().message.c_str());
    QCOMPARE(gpuLoss.seen, cpuLoss.seen); // same rows, same order, same (example, position)
    QVERIFY(std::abs(got->lossSum - expected->lossSum) < 1e-5 * expected->lossSum);
    double worst = 0;
    const QString mismatch =
        compareGradients((*cpu)->parameters(), (*gpu)->parameters(), 2e-4, 2e-5, &worst);
    QVERIFY2(mismatch.isEmpty(), qPrintable(mismatch));
    // evaluate() with the same loss gives the same sum.
    auto evaluated = (*gpu)->evaluate(batch, &gpuLoss);
    QVERIFY(evaluated.ok());
    QVERIFY(std::abs(evaluated->lossSum - got->lossSum) < 1e-6 * got->lossSum);
}

void TestCudaTrainModel::packedBaseMatchesDense_data() {
    QTest::addColumn<QString>("method");
    QTest::newRow("nf4 (double-quantized absmax)") << "nf4";
    QTest::newRow("icq (tau folded into the zeros)") << "icq";
}

// The packed base dequantized on the device against the same weights given dense in float32,
// both on the device (they differ only by the rounding of scale·(level − zero)), and the dense
// one against the CPU in float64.
void TestCudaTrainModel::packedBaseMatchesDense() {
    QFETCH(QString, method);
    LOWBIT_REQUIRE_SHARED_FILE(dir, "fixtures/tiny-llama3-a");
    const Checkpoint ck = loadFixture(dir);
    Checkpoint dense = ck;
    std::map<std::string, QuantizedTensor> packed;
    for (LayerWeights &w : dense.weights.layers)
        for (Tensor *t : linears(w)) {
            const std::vector<float> values = tensorToFloats(*t);
            auto q = method == "nf4"
                         ? quantizeNf4(t->name, values.data(), t->rows(), t->cols(), Nf4Options{})
                         : quantizeIcq(t->name, values.data(), t->rows(), t->cols());
            QVERIFY(q.ok());
            auto deq = method == "nf4" ? dequantizeNf4(*q) : dequantizeIcq(*q);
            QVERIFY(deq.ok());
            *t = Tensor::fromFloats(t->name, t->shape, deq->data());
            packed.emplace(t->name, std::move(*q));
        }
    CudaTrainOptions packedOptions = deviceOptions(GemmPrecision::Fp32);
    packedOptions.packed = &packed;
    auto a = CudaTrainModel::create(ck, lora(true), packedOptions);
    auto b = CudaTrainModel::create(dense, lora(true), deviceOptions(GemmPrecision::Fp32));
    auto cpu = TrainableModel<double>::create(dense, lora(true));
    QVERIFY2(a.ok(), a.ok() ? "" : a.error().message.c_str());
    QVERIFY2(b.ok(), b.ok() ? "" : b.error().message.c_str());
    QVERIFY(cpu.ok());
    QVERIFY(setAdapters((*cpu)->parameters(), (*a)->parameters(), 37).isEmpty());
    QVERIFY(setAdapters((*cpu)->parameters(), (*b)->parameters(), 37).isEmpty());
    const std::vector<TrainExample> batch = randomBatch(ck.config.vocabSize, 38);
    auto la = (*a)->accumulate(batch), lb = (*b)->accumulate(batch);
    auto lc = (*cpu)->accumulate(batch);
    QVERIFY(la.ok() && lb.ok() && lc.ok());
    QVERIFY2(std::abs(la->lossSum - lb->lossSum) < 1e-6 * lb->lossSum,
             qPrintable(QString("packed %1 vs dense %2").arg(la->lossSum).arg(lb->lossSum)));
    QVERIFY(std::abs(lb->lossSum - lc->lossSum) < 1e-5 * lc->lossSum);
    double worst = 0;
    QString mismatch =
        compareGradients((*cpu)->parameters(), (*b)->parameters(), 2e-4, 2e-5, &worst);
    QVERIFY2(mismatch.isEmpty(), qPrintable(mismatch));
    // Packed vs dense: the same GEMMs on weights equal to an ulp, so a tenth of the tolerance.
    const auto pa = (*a)->parameters(), pb = (*b)->parameters();
    std::vector<Parameter<double>> denseGrads;
    for (const Parameter<float> *p : pb)
        denseGrads.push_back(
            {p->name, p->shape, {}, std::vector<double>(p->grad.begin(), p->grad.end())});
    std::vector<Parameter<double> *> reference;
    for (Parameter<double> &p : denseGrads)
        reference.push_back(&p);
    mismatch = compareGradients(reference, pa, 2e-5, 2e-6, &worst);
    QVERIFY2(mismatch.isEmpty(), qPrintable(mismatch));
    qInfo("packed vs dense base on the device: worst gradient difference %.3g of the largest",
          worst);
}

// bf16 GEMM inputs (2^-9 relative each) through two layers and the head: the loss to 1%, the
// gradients to 5% in relative L2 norm — loose, but a wrong op or transpose is off by O(1).
void TestCudaTrainModel::tensor16CloseToDouble() {
    LOWBIT_REQUIRE_SHARED_FILE(dir, "fixtures/tiny-llama3-a");
    const Checkpoint ck = loadFixture(dir);
    auto cpu = TrainableModel<double>::create(ck, lora(true));
    auto gpu = CudaTrainModel::create(ck, lora(true), deviceOptions(GemmPrecision::Tensor16));
    QVERIFY(cpu.ok());
    QVERIFY2(gpu.ok(), gpu.ok() ? "" : gpu.error().message.c_str());
    QVERIFY(setAdapters((*cpu)->parameters(), (*gpu)->parameters(), 47).isEmpty());
    const std::vector<TrainExample> batch = randomBatch(ck.config.vocabSize, 48);
    auto expected = (*cpu)->accumulate(batch);
    auto got = (*gpu)->accumulate(batch);
    QVERIFY(expected.ok() && got.ok());
    QVERIFY2(std::abs(got->lossSum - expected->lossSum) < 1e-2 * expected->lossSum,
             qPrintable(QString("loss %1 vs %2").arg(got->lossSum).arg(expected->lossSum)));
    double diff = 0, norm = 0;
    const auto pc = (*cpu)->parameters();
    const auto pg = (*gpu)->parameters();
    for (size_t t = 0; t < pc.size(); ++t)
        for (size_t i = 0; i < pc[t]->grad.size(); ++i) {
            diff += std::pow(double(pg[t]->grad[i]) - pc[t]->grad[i], 2);
            norm += pc[t]->grad[i] * pc[t]->grad[i];
        }
    const double relative = std::sqrt(diff / norm);
    qInfo("Tensor16 gradients: relative L2 error %.3g", relative);
    QVERIFY(relative < 5e-2);
}

void TestCudaTrainModel::evaluateMatchesCpu_data() {
    QTest::addColumn<QString>("fixture");
    QTest::newRow("tiny-llama3-a: BF16, GQA 4/2, untied") << "fixtures/tiny-llama3-a";
    QTest::newRow("tiny-llama3-b: F16, GQA 4/1, tied, vocab 128256") << "fixtures/tiny-llama3-b";
}

void TestCudaTrainModel::evaluateMatchesCpu() {
    QFETCH(QString, fixture);
    LOWBIT_REQUIRE_SHARED_FILE(dir, fixture.toStdString());
    const Checkpoint ck = loadFixture(dir);
    auto cpu = TrainableModel<double>::create(ck, lora(false));
    auto gpu = CudaTrainModel::create(ck, lora(false), deviceOptions(GemmPrecision::Fp32));
    QVERIFY(cpu.ok());
    QVERIFY2(gpu.ok(), gpu.ok() ? "" : gpu.error().message.c_str());
    QVERIFY(setAdapters((*cpu)->parameters(), (*gpu)->parameters(), 57).isEmpty());
    const std::vector<TrainExample> batch = randomBatch(ck.config.vocabSize, 58);
    auto expected = (*cpu)->evaluate(batch);
    auto got = (*gpu)->evaluate(batch);
    QVERIFY(expected.ok());
    QVERIFY2(got.ok(), got.ok() ? "" : got.error().message.c_str());
    QCOMPARE(got->scored, expected->scored);
    QVERIFY2(std::abs(got->lossSum - expected->lossSum) < 1e-5 * expected->lossSum,
             qPrintable(QString("device %1 vs CPU float64 %2")
                            .arg(got->lossSum, 0, 'g', 10)
                            .arg(expected->lossSum, 0, 'g', 10)));
    // The forward of accumulate() is the same one.
    (*gpu)->zeroGrad();
    auto trained = (*gpu)->accumulate(batch);
    QVERIFY(trained.ok());
    QVERIFY(std::abs(trained->lossSum - got->lossSum) <= 1e-9 * got->lossSum);
}

void TestCudaTrainModel::badInput() {
    LOWBIT_REQUIRE_SHARED_FILE(dir, "fixtures/tiny-llama3-a");
    const Checkpoint ck = loadFixture(dir);
    auto gpu = CudaTrainModel::create(ck, lora(false), deviceOptions(GemmPrecision::Fp32));
    QVERIFY2(gpu.ok(), gpu.ok() ? "" : gpu.error().message.c_str());
    auto fails = [&](std::vector<TrainExample> batch, const char *needle) {
        auto r = (*gpu)->accumulate(batch);
        return !r.ok() && r.error().message.find(needle) != std::string::npos;
    };
    QVERIFY(fails({{{1, 2, 3}, {2, 3}}}, "targets"));
    QVERIFY(fails({{{1, 2, 3}, {2, 3, 512}}}, "target 512 out of range"));
    QVERIFY(fails({{std::vector<int32_t>(161, 1), std::vector<int32_t>(161, 1)}},
                  "more than the 160 (maxBatchTokens)"));
    auto nothing = (*gpu)->accumulate(std::vector<TrainExample>{{{1, 2}, {kIgnoreTarget, -100}}});
    QVERIFY(nothing.ok());
    QCOMPARE(nothing->scored, int64_t(0));
    CudaTrainOptions options = deviceOptions(GemmPrecision::Fp32);
    // A billion-token batch: refused before anything is allocated, naming needed vs free.
    options.maxBatchTokens = 1'000'000'000;
    auto huge = CudaTrainModel::create(ck, lora(false), options);
    QVERIFY(!huge.ok());
    QCOMPARE(huge.error().code, ErrorCode::OutOfMemory);
    QVERIFY2(huge.error().message.find("training needs") != std::string::npos &&
                 huge.error().message.find("but only") != std::string::npos,
             huge.error().message.c_str());
    options = deviceOptions(GemmPrecision::Fp32);
    options.device = 999;
    auto missing = CudaTrainModel::create(ck, lora(false), options);
    QVERIFY(!missing.ok() && missing.error().message.find("cuda:999") != std::string::npos);
}

QTEST_APPLESS_MAIN(TestCudaTrainModel)
#include "test_cuda_train_model.moc"
