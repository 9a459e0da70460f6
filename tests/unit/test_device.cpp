// Device strings and the memory estimate that guards CUDA jobs: pure host code, checked in every
// build (with or without CUDA) against hand-computed sizes.
#include "backend/cuda/cuda_backend.h"
#include "backend/device.h"

#include <QtTest>

using namespace lowbit;

class TestDevice : public QObject {
    Q_OBJECT
private slots:
    void parse();
    void estimateLlama3_8B();
    void refusesWhatCannotFit();
    void withoutDevice();
};

void TestDevice::parse() {
    QVERIFY(!parseDevice("cpu")->isCuda());
    QCOMPARE(parseDevice("cuda")->index, 0);
    QCOMPARE(parseDevice("cuda:3")->index, 3);
    QCOMPARE(parseDevice("cuda:3")->toString(), std::string("cuda:3"));
    for (const char *bad :
         {"", "gpu", "cuda:", "cuda:-1", "cuda:1x", "cuda:1234", "CUDA:0", "cuda0"}) {
        auto d = parseDevice(bad);
        QVERIFY2(!d.ok(), bad);
        QCOMPARE(d.error().code, ErrorCode::InvalidArgument);
        QVERIFY(d.error().message.find("cuda:N") != std::string::npos);
    }
}

// LLaMA-3-8B in bf16: 8.03e9 parameters = 16.06 GB of weights; its KV cache in float32 is
// 2 * 32 layers * 1024 (8 kv heads x 128) * 4 bytes = 256 KiB per token.
void TestDevice::estimateLlama3_8B() {
    ModelConfig c;
    c.vocabSize = 128256, c.hiddenSize = 4096, c.intermediateSize = 14336, c.numLayers = 32;
    c.numHeads = 32, c.numKvHeads = 8, c.headDim = 128;
    const MemoryEstimate e = estimateDeviceMemory(c, 16, 1, 2048, 2048, 256);
    const double params = double(e.weightBytes) / 2;
    QVERIFY2(std::abs(params - 8.03e9) < 0.01e9, qPrintable(QString::number(params)));
    QCOMPARE(e.kvCacheBytes, uint64_t(2048) * 256 * 1024);
    QVERIFY(e.workspaceBytes > uint64_t(256) << 20);
    // 4-bit linear layers (4.25 bits with scales) keep the 16-bit embedding and head.
    const MemoryEstimate q = estimateDeviceMemory(c, 4.25, 1, 2048, 2048, 256);
    const double tables = 2.0 * 128256 * 4096 * 2;
    QVERIFY(std::abs(double(q.weightBytes) - (tables + (8.03e9 - 2.0 * 128256 * 4096) * 4.25 / 8)) <
            0.02e9);
}

void TestDevice::refusesWhatCannotFit() {
    MemoryEstimate e{uint64_t(16) << 30, uint64_t(1) << 30, uint64_t(1) << 30};
    QVERIFY(checkFits(e, uint64_t(80) << 30, "cuda:0").ok());
    const Status s = checkFits(e, uint64_t(12) << 30, "cuda:0 (A10)");
    QVERIFY(!s.ok());
    QCOMPARE(s.error().code, ErrorCode::OutOfMemory);
    QVERIFY2(s.error().message.find("18.0 GiB") != std::string::npos &&
                 s.error().message.find("12.0 GiB is free") != std::string::npos,
             s.error().message.c_str());
}

// Without the CUDA backend or without a GPU the entry points answer with errors, never crash.
void TestDevice::withoutDevice() {
    std::string why;
    if (cudaDeviceCount(&why) > 0)
        QSKIP("a CUDA device is present: test_cuda_backend covers it");
    QVERIFY(!why.empty());
    auto b = makeCudaBackend();
    QVERIFY(!b.ok());
    QCOMPARE(b.error().code, ErrorCode::Unsupported);
}

QTEST_APPLESS_MAIN(TestDevice)
#include "test_device.moc"
