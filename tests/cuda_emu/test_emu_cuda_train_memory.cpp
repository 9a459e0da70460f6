// CudaTrainModel's device memory, measured by the CUDA emulator's allocator (only possible here:
// on a GPU the CUDA context and cuBLAS allocate too). estimateCudaTrainMemory is what create()
// checks against the free memory before allocating, so it must cover every byte create() and a
// step allocate; and a model must give everything back when destroyed, also after a create()
// that failed half-way.
#include "shared_data.h"

#include "model/checkpoint.h"
#include "quant/nf4.h"
#include "quant/quantized_tensor.h"
#include "train/cuda_train_model.h"

#include <cuda_runtime_api.h>

#include <QtTest>

#include <map>
#include <random>

using namespace lowbit;
using namespace lowbit::train;

namespace {

// A full batch: maxBatchTokens rows over three examples, every target scored.
std::vector<TrainExample> fullBatch(int64_t vocab, int64_t rows) {
    std::mt19937_64 rng(3);
    std::vector<TrainExample> batch(3);
    for (int64_t r = 0; r < rows; ++r) {
        TrainExample &ex = batch[size_t(r % 3)];
        ex.tokens.push_back(int32_t(rng() % uint64_t(vocab)));
        ex.targets.push_back(int32_t(rng() % uint64_t(vocab)));
    }
    return batch;
}

} // namespace

class TestEmuCudaTrainMemory : public QObject {
    Q_OBJECT
private slots:
    void estimateCoversAllocations_data();
    void estimateCoversAllocations();
    void failedCreateFreesEverything();
    void allocationFailureMidCreate();
};

void TestEmuCudaTrainMemory::estimateCoversAllocations_data() {
    QTest::addColumn<bool>("tensor16");
    QTest::addColumn<bool>("packed");
    QTest::addColumn<bool>("elastic");
    QTest::newRow("fp32 dense lora") << false << false << false;
    QTest::newRow("fp32 nf4 iec") << false << true << true;
    QTest::newRow("tensor16 dense iec") << true << false << true;
    QTest::newRow("tensor16 nf4 lora") << true << true << false;
}

void TestEmuCudaTrainMemory::estimateCoversAllocations() {
    QFETCH(bool, tensor16);
    QFETCH(bool, packed);
    QFETCH(bool, elastic);
    LOWBIT_REQUIRE_SHARED_FILE(dir, "fixtures/tiny-llama3-a");
    auto ck = loadCheckpoint(dir);
    QVERIFY(ck.ok());
    std::map<std::string, QuantizedTensor> nf4;
    if (packed)
        for (const LayerWeights &w : ck->weights.layers)
            for (const Tensor *t : {&w.wq, &w.wk, &w.wv, &w.wo, &w.wGate, &w.wUp, &w.wDown}) {
                const std::vector<float> values = tensorToFloats(*t);
                auto q = quantizeNf4(t->name, values.data(), t->rows(), t->cols(), Nf4Options{});
                QVERIFY(q.ok());
                nf4.emplace(t->name, std::move(*q));
            }
    LoraOptions lora;
    lora.rank = 8;
    lora.elasticConnection = elastic;
    CudaTrainOptions options;
    options.precision = tensor16 ? GemmPrecision::Tensor16 : GemmPrecision::Fp32;
    options.maxBatchTokens = 96;
    options.headChunkRows = 40;
    options.packed = packed ? &nf4 : nullptr;
    auto estimate = estimateCudaTrainMemory(*ck, lora, options);
    QVERIFY(estimate.ok());

    const size_t before = lowbit_emu::allocatedBytes();
    lowbit_emu::resetPeakAllocatedBytes();
    {
        auto model = CudaTrainModel::create(*ck, lora, options);
        QVERIFY2(model.ok(), model.ok() ? "" : model.error().message.c_str());
        const size_t created = lowbit_emu::allocatedBytes() - before;
        for (Parameter<float> *p : (*model)->parameters())
            for (size_t i = 0; i < p->value.size(); ++i)
                p->value[i] = 0.01f * float(i % 7) - 0.03f; // B non-zero: every path runs
        (*model)->zeroGrad();
        auto step = (*model)->accumulate(fullBatch(ck->config.vocabSize, 96));
        QVERIFY2(step.ok(), step.ok() ? "" : step.error().message.c_str());
        const size_t peak = lowbit_emu::peakAllocatedBytes() - before;
        qInfo("estimate %llu bytes, create() allocated %zu, peak in a step %zu",
              static_cast<unsigned long long>(estimate->total()), created, peak);
        QVERIFY2(created <= estimate->total(),
                 qPrintable(QString("create() allocated %1 bytes, estimated %2")
                                .arg(created)
                                .arg(estimate->total())));
        // A step may add the sequence-start table and the IEC partial sums: a few KiB.
        QVERIFY2(peak <= estimate->total() + 64 * 1024,
                 qPrintable(QString("a step peaked at %1 bytes, estimated %2")
                                .arg(peak)
                                .arg(estimate->total())));
        QVERIFY((*model)->allocatedPeakBytes() <= created);
    }
    QCOMPARE(lowbit_emu::allocatedBytes(), before); // nothing leaked
}

void TestEmuCudaTrainMemory::failedCreateFreesEverything() {
    LOWBIT_REQUIRE_SHARED_FILE(dir, "fixtures/tiny-llama3-a");
    auto ck = loadCheckpoint(dir);
    QVERIFY(ck.ok());
    LoraOptions lora;
    lora.rank = 8;
    CudaTrainOptions options;
    options.maxBatchTokens = 96;
    const size_t before = lowbit_emu::allocatedBytes();
    lowbit_emu::setDeviceMemory(before + (size_t(64) << 20)); // below create()'s 256 MiB margin
    auto refused = CudaTrainModel::create(*ck, lora, options);
    lowbit_emu::setDeviceMemory(size_t(80) << 30);
    QVERIFY(!refused.ok());
    QCOMPARE(refused.error().code, ErrorCode::OutOfMemory);
    QVERIFY2(refused.error().message.find("is free") != std::string::npos,
             refused.error().message.c_str());
    QCOMPARE(lowbit_emu::allocatedBytes(), before);
}

// Every allocation of create() failing in turn (as another process taking memory between the
// free-memory check and the allocation would): OutOfMemory naming what, nothing kept.
void TestEmuCudaTrainMemory::allocationFailureMidCreate() {
    LOWBIT_REQUIRE_SHARED_FILE(dir, "fixtures/tiny-llama3-a");
    auto ck = loadCheckpoint(dir);
    QVERIFY(ck.ok());
    LoraOptions lora;
    lora.rank = 8;
    lora.elasticConnection = true;
    CudaTrainOptions options;
    options.maxBatchTokens = 96;
    const size_t before = lowbit_emu::allocatedBytes();
    int failures = 0;
    for (long k = 0;; ++k) {
        lowbit_emu::failAllocation(k);
        auto model = CudaTrainModel::create(*ck, lora, options);
        lowbit_emu::failAllocation(-1);
        if (model.ok())
            break;
        ++failures;
        QCOMPARE(model.error().code, ErrorCode::OutOfMemory);
        QVERIFY2(model.error().message.find("out of memory") != std::string::npos,
                 model.error().message.c_str());
        QCOMPARE(lowbit_emu::allocatedBytes(), before);
        QVERIFY(k < 10000);
    }
    qInfo("create() failed cleanly at each of its %d allocations", failures);
    QVERIFY(failures > 20);
    QCOMPARE(lowbit_emu::allocatedBytes(), before);
}

QTEST_APPLESS_MAIN(TestEmuCudaTrainMemory)
#include "test_emu_cuda_train_memory.moc"
