// LanguageModel::score on the device (CudaModel: loss.cu's log-softmax and top-K kernels on the
// head's chunks of logit rows) against the CPU Model's default, which reduces forward()'s rows on
// the host (test_language_model checks it against forward()'s logits and the float64 NumPy
// reference). Fixtures tiny-llama3-a (vocab 512) and -b (a LLaMA-3 vocabulary of 128256 rows'
// width), Fp32 GEMMs, passes of 7 tokens (inputs split mid-sequence, 7-row head chunks, a target
// layer per chunk) and of 512; targets out of row order with four on one row; the top-3 and the
// greedy tokens of generate(). Nothing of the logit matrix is downloaded (downloadedLogitRows).
//
// Tolerance: both run float32 GEMMs of the same shapes in different summation orders, ~1e-6
// relative per logit (test_cuda_model bounds the logits at 1e-4 of the reference); a
// log-probability is a difference of logits and a float64 log-sum-exp, so 1e-4 nats covers it
// tenfold. The top ids must agree: the fixtures' nearest ties are far above 1e-6.
// Device: LOWBIT_TEST_DEVICE (default cuda:0). Skips without the CUDA backend or a GPU; engine
// only, so the CUDA emulator can run it unchanged.
#include "shared_data.h"

#include "model/checkpoint.h"
#include "runtime/cuda_model.h"
#include "runtime/generator.h"
#include "runtime/model.h"

#include <nlohmann/json.hpp>

#include <QtTest>
#include <cmath>
#include <cstdlib>

using namespace lowbit;

namespace {

int testDevice() {
    const char *env = std::getenv("LOWBIT_TEST_DEVICE");
    auto spec = parseDevice(env && *env ? env : "cuda:0");
    return spec.ok() && spec->isCuda() ? spec->index : 0;
}

} // namespace

class TestCudaScore : public QObject {
    Q_OBJECT
private slots:
    void initTestCase();
    void scoreMatchesCpu_data();
    void scoreMatchesCpu();
    void fixtureReference();
};

void TestCudaScore::initTestCase() {
    if (!cudaBuilt())
        QSKIP("built without the CUDA backend (no CUDA toolkit, or LOWBIT_ENABLE_CUDA=OFF)");
    std::string why;
    if (cudaDeviceCount(&why) == 0)
        QSKIP(qPrintable(QString("no CUDA device: %1").arg(QString::fromStdString(why))));
}

void TestCudaScore::scoreMatchesCpu_data() {
    QTest::addColumn<QString>("name");
    QTest::addColumn<int>("limit");
    for (const char *name : {"tiny-llama3-a", "tiny-llama3-b"})
        for (const int limit : {7, 512})
            QTest::newRow(qPrintable(QString("%1 pass %2").arg(name).arg(limit)))
                << QString(name) << limit;
}

void TestCudaScore::scoreMatchesCpu() {
    QFETCH(QString, name);
    QFETCH(int, limit);
    LOWBIT_REQUIRE_SHARED_FILE(dir, "fixtures/" + name.toStdString());
    auto loaded = loadCheckpoint(dir);
    QVERIFY(loaded.ok());
    auto checkpoint = std::make_shared<const Checkpoint>(std::move(*loaded));
    const auto ref = nlohmann::json::parse(test::readFile(dir / "reference_logits.json"));
    std::vector<int32_t> a, b = ref["sequences"][0].get<std::vector<int32_t>>();
    for (const auto &s : ref["sequences"]) // the longest, repeated to 60 tokens
        if (s.size() > a.size())
            a = s.get<std::vector<int32_t>>();
    const std::vector<int32_t> once = a;
    while (a.size() < 60)
        a.insert(a.end(), once.begin(), once.end());
    a.resize(60);
    auto cpu = Model::create(checkpoint, {2});
    QVERIFY(cpu.ok());
    CudaModelOptions options;
    options.backend = {testDevice(), GemmPrecision::Fp32};
    options.maxBatchTokens = limit;
    options.threads = 2;
    auto device = CudaModel::create(checkpoint, options);
    QVERIFY2(device.ok(), device.ok() ? "" : device.error().message.c_str());

    const int32_t vocab = int32_t(checkpoint->config.vocabSize);
    const std::vector<SequenceInput> step = {{1, {b.data(), std::min<size_t>(b.size(), 3)},
                                              LogitsWanted::Last},
                                             {0, a, LogitsWanted::All, 5}};
    const int64_t rows = wantedRows(step);
    QCOMPARE(rows, int64_t(1 + a.size() - 5));
    std::vector<TokenTarget> targets;
    for (int64_t r = rows - 1; r >= 0; --r)
        targets.push_back({r, int32_t((r * 7919 + 1) % vocab)});
    for (int32_t token : {7, 0, vocab - 1})
        targets.push_back({0, token}); // the Last row: four targets
    targets.push_back({rows / 2, 3});
    KvCache reference = (*cpu)->makeCache(2, 64);
    auto cache = (*device)->allocateCache(2, 64);
    QVERIFY(cache.ok());
    auto expected = (*cpu)->score(reference, step, {targets, 3});
    auto got = (*device)->score(**cache, step, {targets, 3});
    QVERIFY(expected.ok());
    QVERIFY2(got.ok(), got.ok() ? "" : got.error().message.c_str());
    QCOMPARE(got->rows, rows);
    QCOMPARE(got->logProbs.size(), targets.size());
    for (size_t i = 0; i < targets.size(); ++i)
        QVERIFY2(std::abs(got->logProbs[i] - expected->logProbs[i]) <= 1e-4,
                 qPrintable(QString("target %1 (row %2): %3 vs cpu %4")
                                .arg(i)
                                .arg(targets[i].row)
                                .arg(got->logProbs[i], 0, 'g', 10)
                                .arg(expected->logProbs[i], 0, 'g', 10)));
    QVERIFY(got->topIds == expected->topIds);
    for (size_t i = 0; i < got->topLogits.size(); ++i)
        QVERIFY(std::abs(got->topLogits[i] - expected->topLogits[i]) <=
                1e-4 * std::max(1.0f, std::abs(expected->topLogits[i])));
    for (int s = 0; s < 2; ++s)
        QCOMPARE((*cache)->length(s), reference.length(s));

    // Greedy decoding: score()'s top-1 on each side.
    GenerateOptions greedy;
    greedy.maxTokens = 8;
    greedy.stopAtEos = false;
    const std::vector<int32_t> prompt(a.begin(), a.begin() + 4);
    auto onCpu = generate(**cpu, prompt, greedy);
    auto onDevice = generate(**device, prompt, greedy);
    QVERIFY(onCpu.ok() && onDevice.ok());
    QCOMPARE(onDevice->tokens, onCpu->tokens);
    QCOMPARE((*device)->downloadedLogitRows(), int64_t(0));
}

// tiny-llama3-a's sequences scored on the device against the float64 NumPy logits of the fixture
// (log-softmax and argmax of each reference row).
void TestCudaScore::fixtureReference() {
    LOWBIT_REQUIRE_SHARED_FILE(dir, "fixtures/tiny-llama3-a");
    auto loaded = loadCheckpoint(dir);
    QVERIFY(loaded.ok());
    auto checkpoint = std::make_shared<const Checkpoint>(std::move(*loaded));
    const auto ref = nlohmann::json::parse(test::readFile(dir / "reference_logits.json"));
    CudaModelOptions options;
    options.backend = {testDevice(), GemmPrecision::Fp32};
    auto device = CudaModel::create(checkpoint, options);
    QVERIFY(device.ok());
    for (size_t s = 0; s < ref["sequences"].size(); ++s) {
        const auto ids = ref["sequences"][s].get<std::vector<int32_t>>();
        auto cache = (*device)->allocateCache(1, int64_t(ids.size()));
        QVERIFY(cache.ok());
        const SequenceInput all{0, ids, LogitsWanted::All};
        std::vector<TokenTarget> targets;
        for (size_t t = 0; t + 1 < ids.size(); ++t)
            targets.push_back({int64_t(t), ids[t + 1]});
        auto scores = (*device)->score(**cache, {&all, 1}, {targets, 1});
        QVERIFY(scores.ok());
        QCOMPARE(scores->rows, int64_t(ids.size()));
        for (size_t t = 0; t < ids.size(); ++t) {
            const auto row = ref["logits"][s][t].get<std::vector<double>>();
            const auto best = std::max_element(row.begin(), row.end());
            QCOMPARE(int64_t(scores->topIds[t]), int64_t(best - row.begin()));
            if (t + 1 == ids.size())
                continue;
            double sum = 0;
            for (double v : row)
                sum += std::exp(v - *best);
            const double expected = row[size_t(ids[t + 1])] - *best - std::log(sum);
            QVERIFY(std::abs(scores->logProbs[t] - expected) <= 1e-4);
        }
    }
    QCOMPARE((*device)->downloadedLogitRows(), int64_t(0));
}

QTEST_APPLESS_MAIN(TestCudaScore)
#include "test_cuda_score.moc"
