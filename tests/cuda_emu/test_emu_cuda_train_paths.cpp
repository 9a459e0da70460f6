// Device training paths the GPU suite (tests/unit/test_cuda_train_model.cpp) does not take, run on
// the CUDA emulator against TrainableModel<double>: LoRA on a subset of the projections (rank-0
// linears between adapted ones: the adapter offsets, the LoRA hidden buffers sized by the largest
// rank of a projection), gradients accumulated over two batches with a parameter changed between
// them (only the changed values are uploaded again), and an odd rank with IEC.
#include "shared_data.h"

#include "model/checkpoint.h"
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

QTEST_APPLESS_MAIN(TestEmuCudaTrainPaths)
#include "test_emu_cuda_train_paths.moc"
