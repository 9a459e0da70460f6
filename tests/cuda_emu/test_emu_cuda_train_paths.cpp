// Device training paths the GPU suite (tests/unit/test_cuda_train_model.cpp) does not take, run on
// the CUDA emulator against TrainableModel<double>: LoRA on a subset of the projections (rank-0
// linears between adapted ones: the adapter offsets, the LoRA hidden buffers sized by the largest
// rank of a projection), gradients accumulated over two batches with a parameter changed between
// them (only the changed values are uploaded again), an odd rank with IEC, and packed RTN bases
// of 2 and 3 bits (3 bits: codes straddle 32-bit words, packedDequantize's general path) with
// groups that do not divide the rows.
#include "shared_data.h"

#include "model/checkpoint.h"
#include "quant/quantized_tensor.h"
#include "quant/rtn.h"
#include "train/cuda_train_model.h"
#include "train/trainable_model.h"

#include <QtTest>

#include <cmath>
#include <random>

using namespace lowbit;
using namespace lowbit::train;

namespace {

std::vector<TrainExample> batchOf(int64_t vocab, uint64_t seed, std::vector<int> lengths) {
    std::mt19937_64 rng(seed);
    std::vector<TrainExample> batch;
    for (int length : lengths) {
        TrainExample ex;
        for (int t = 0; t < length; ++t) {
            ex.tokens.push_back(int32_t(rng() % uint64_t(vocab)));
            ex.targets.push_back(t % 4 == 0 ? kIgnoreTarget : int32_t(rng() % uint64_t(vocab)));
        }
        batch.push_back(std::move(ex));
    }
    return batch;
}

// Largest |device − double| over all gradients, relative to the largest double gradient.
double worstError(const std::vector<Parameter<double> *> &want,
                  const std::vector<Parameter<float> *> &got) {
    double scale = 0, worst = 0;
    for (const Parameter<double> *p : want)
        for (double g : p->grad)
            scale = std::max(scale, std::abs(g));
    for (size_t t = 0; t < want.size(); ++t)
        for (size_t i = 0; i < want[t]->grad.size(); ++i)
            worst = std::max(worst, std::abs(double(got[t]->grad[i]) - want[t]->grad[i]));
    return scale > 0 ? worst / scale : 1e30;
}

} // namespace

class TestEmuCudaTrainPaths : public QObject {
    Q_OBJECT
private slots:
    void subsetAndAccumulation_data();
    void subsetAndAccumulation();
    void packedRtnMatchesDense_data();
    void packedRtnMatchesDense();
};

void TestEmuCudaTrainPaths::subsetAndAccumulation_data() {
    QTest::addColumn<QStringList>("targets");
    QTest::addColumn<int>("rank");
    QTest::addColumn<bool>("elastic");
    QTest::newRow("q,v r4") << QStringList{"q_proj", "v_proj"} << 4 << false;
    QTest::newRow("o,down r3 iec") << QStringList{"o_proj", "down_proj"} << 3 << true;
    QTest::newRow("k,gate,up r5 iec") << QStringList{"k_proj", "gate_proj", "up_proj"} << 5 << true;
}

void TestEmuCudaTrainPaths::subsetAndAccumulation() {
    QFETCH(QStringList, targets);
    QFETCH(int, rank);
    QFETCH(bool, elastic);
    LOWBIT_REQUIRE_SHARED_FILE(dir, "fixtures/tiny-llama3-a");
    auto ck = loadCheckpoint(dir);
    QVERIFY(ck.ok());
    LoraOptions lora;
    lora.rank = rank;
    lora.alpha = 8;
    lora.elasticConnection = elastic;
    lora.seed = 11;
    lora.targets.clear();
    for (const QString &t : targets)
        lora.targets.push_back(t.toStdString());
    auto cpu = TrainableModel<double>::create(*ck, lora);
    CudaTrainOptions options;
    options.precision = GemmPrecision::Fp32;
    options.maxBatchTokens = 120;
    options.headChunkRows = 24;
    auto gpu = CudaTrainModel::create(*ck, lora, options);
    QVERIFY(cpu.ok());
    QVERIFY2(gpu.ok(), gpu.ok() ? "" : gpu.error().message.c_str());
    auto pc = (*cpu)->parameters();
    auto pg = (*gpu)->parameters();
    QCOMPARE(pg.size(), pc.size());
    std::mt19937_64 rng(7);
    std::uniform_real_distribution<double> uniform(-0.3, 0.3);
    for (size_t t = 0; t < pc.size(); ++t) {
        QCOMPARE(pg[t]->name, pc[t]->name);
        for (size_t i = 0; i < pc[t]->value.size(); ++i) {
            const float v = float(uniform(rng));
            pc[t]->value[i] = v, pg[t]->value[i] = v;
        }
    }
    (*cpu)->zeroGrad();
    (*gpu)->zeroGrad();
    const auto first = batchOf(ck->config.vocabSize, 1, {50, 9, 31});
    auto a1 = (*cpu)->accumulate(first);
    auto b1 = (*gpu)->accumulate(first);
    QVERIFY(a1.ok());
    QVERIFY2(b1.ok(), b1.ok() ? "" : b1.error().message.c_str());
    QVERIFY(std::abs(b1->lossSum - a1->lossSum) < 1e-5 * std::abs(a1->lossSum));
    // One value of one tensor changes (as after a partial restore): the device must see it.
    pc.back()->value[0] += 0.25, pg.back()->value[0] += 0.25f;
    const auto second = batchOf(ck->config.vocabSize, 2, {120});
    auto a2 = (*cpu)->accumulate(second);
    auto b2 = (*gpu)->accumulate(second);
    QVERIFY(a2.ok());
    QVERIFY2(b2.ok(), b2.ok() ? "" : b2.error().message.c_str());
    QVERIFY2(std::abs(b2->lossSum - a2->lossSum) < 1e-5 * std::abs(a2->lossSum),
             qPrintable(QString("loss %1 vs %2").arg(b2->lossSum).arg(a2->lossSum)));
    const double worst = worstError(pc, pg);
    qInfo("accumulated gradients of two batches: worst error %.3g of the largest", worst);
    QVERIFY2(worst < 2e-5, qPrintable(QString("worst gradient error %1").arg(worst)));
}

void TestEmuCudaTrainPaths::packedRtnMatchesDense_data() {
    QTest::addColumn<int>("bits");
    QTest::addColumn<int>("group");
    QTest::addColumn<bool>("symmetric");
    QTest::newRow("3-bit g48 asym") << 3 << 48 << false;
    QTest::newRow("2-bit g32 sym") << 2 << 32 << true;
    QTest::newRow("3-bit per channel") << 3 << 0 << true;
}

// The packed RTN base dequantized on the device vs the same weights given dense (float32): the
// same model up to the rounding of scale·(code − zero), so losses agree to float32 rounding.
void TestEmuCudaTrainPaths::packedRtnMatchesDense() {
    QFETCH(int, bits);
    QFETCH(int, group);
    QFETCH(bool, symmetric);
    LOWBIT_REQUIRE_SHARED_FILE(dir, "fixtures/tiny-llama3-a");
    auto ck = loadCheckpoint(dir);
    QVERIFY(ck.ok());
    Checkpoint dense = *ck;
    std::map<std::string, QuantizedTensor> packed;
    for (LayerWeights &w : dense.weights.layers)
        for (Tensor *t : {&w.wq, &w.wk, &w.wv, &w.wo, &w.wGate, &w.wUp, &w.wDown}) {
            const std::vector<float> values = tensorToFloats(*t);
            auto q = quantizeRtn(t->name, values.data(), t->rows(), t->cols(), bits,
                                 group ? group : t->cols(), symmetric);
            QVERIFY2(q.ok(), q.ok() ? "" : q.error().message.c_str());
            const std::vector<float> deq = q->dequantize();
            *t = Tensor::fromFloats(t->name, t->shape, deq.data());
            packed.emplace(t->name, std::move(*q));
        }
    LoraOptions lora;
    lora.rank = 4;
    lora.seed = 3;
    CudaTrainOptions options;
    options.precision = GemmPrecision::Fp32;
    options.maxBatchTokens = 64;
    auto a = CudaTrainModel::create(dense, lora, options);
    options.packed = &packed;
    auto b = CudaTrainModel::create(*ck, lora, options);
    QVERIFY2(a.ok(), a.ok() ? "" : a.error().message.c_str());
    QVERIFY2(b.ok(), b.ok() ? "" : b.error().message.c_str());
    auto pa = (*a)->parameters(), pb = (*b)->parameters();
    for (size_t t = 0; t < pa.size(); ++t)
        for (size_t i = 0; i < pa[t]->value.size(); ++i)
            pa[t]->value[i] = pb[t]->value[i] = 0.02f * float(int(i % 11) - 5);
    (*a)->zeroGrad();
    (*b)->zeroGrad();
    const auto batch = batchOf(ck->config.vocabSize, 4, {40, 24});
    auto la = (*a)->accumulate(batch);
    auto lb = (*b)->accumulate(batch);
    QVERIFY(la.ok());
    QVERIFY2(lb.ok(), lb.ok() ? "" : lb.error().message.c_str());
    QVERIFY2(std::abs(la->lossSum - lb->lossSum) < 1e-5 * std::abs(la->lossSum),
             qPrintable(QString("packed %1 vs dense %2").arg(lb->lossSum).arg(la->lossSum)));
    double scale = 0, worst = 0;
    for (size_t t = 0; t < pa.size(); ++t)
        for (size_t i = 0; i < pa[t]->grad.size(); ++i) {
            scale = std::max(scale, double(std::abs(pa[t]->grad[i])));
            worst = std::max(worst, double(std::abs(pa[t]->grad[i] - pb[t]->grad[i])));
        }
    qInfo("packed vs dense RTN base: worst gradient difference %.3g of the largest", worst / scale);
    QVERIFY(scale > 0);
    QVERIFY(worst <= 1e-4 * scale);
}

QTEST_APPLESS_MAIN(TestEmuCudaTrainPaths)
#include "test_emu_cuda_train_paths.moc"
