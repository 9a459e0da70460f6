// CudaModel and CudaKvCache on a host-memory emulation of the CUDA backend (HostCudaBackend: CPU
// ops, NaN-filled "device" buffers, a settable free memory), so that everything of the GPU
// forward that is not a kernel runs on the CPU: the device cache's slot offsets and prefix
// copies, the per-pass batch layout, the split of long batches into passes, the head in chunks
// of at most 256 rows, logProbs()/next() and score() (with no full logit row downloaded), the
// memory refusals, foreign caches, and the evaluators and greedy decoding through the
// LanguageModel interface. The reference is the CPU Model on the shared
// fixture (itself checked against float64 NumPy in test_reference_logits); both run the same CPU
// ops, so they agree to float32 rounding of differently grouped GEMM rows (1e-5 relative).
#include "host_cuda_backend.h"
#include "shared_data.h"

#include "loglikelihood.h"
#include "model/checkpoint.h"
#include "perplexity.h"
#include "runtime/cuda_model.h"
#include "runtime/generator.h"
#include "runtime/model.h"

#include <nlohmann/json.hpp>

#include <QtTest>
#include <cmath>
#include <random>

using namespace lowbit;
using lowbit::test::HostCudaBackend;

namespace {

double relativeError(const Logits &a, const Logits &b) {
    if (a.rows != b.rows || a.values.size() != b.values.size() || a.values.empty())
        return INFINITY;
    double maxRef = 0, maxDiff = 0;
    for (size_t i = 0; i < a.values.size(); ++i) {
        if (!std::isfinite(a.values[i]))
            return INFINITY;
        maxRef = std::max(maxRef, double(std::abs(b.values[i])));
        maxDiff = std::max(maxDiff, double(std::abs(a.values[i] - b.values[i])));
    }
    return maxDiff / std::max(maxRef, 1e-30);
}

} // namespace

class TestDeviceModelHost : public QObject {
    Q_OBJECT
private slots:
    void initTestCase();
    void forwardMatchesCpu();
    void prefixCopiesAndTruncation();
    void lossSideReductions();
    void scoreMatchesCpu();
    void memoryRefusals();
    void foreignCaches();
    void evaluatorsThroughTheInterface();

private:
    std::unique_ptr<CudaModel> emulated(int64_t maxBatchTokens,
                                        std::shared_ptr<HostCudaBackend> backend = nullptr);
    std::shared_ptr<const Checkpoint> m_checkpoint;
    std::unique_ptr<Model> m_cpu;
    std::vector<std::vector<int32_t>> m_sequences;
};

void TestDeviceModelHost::initTestCase() {
    LOWBIT_REQUIRE_SHARED_FILE(dir, "fixtures/tiny-llama3-a");
    auto checkpoint = loadCheckpoint(dir);
    QVERIFY(checkpoint.ok());
    m_checkpoint = std::make_shared<const Checkpoint>(std::move(*checkpoint));
    auto cpu = Model::create(m_checkpoint, {1});
    QVERIFY(cpu.ok());
    m_cpu = std::move(*cpu);
    const auto ref = nlohmann::json::parse(test::readFile(dir / "reference_logits.json"));
    for (const auto &s : ref["sequences"])
        m_sequences.push_back(s.get<std::vector<int32_t>>());
    QVERIFY(m_sequences.size() == 3 && m_sequences[2].size() > 40);
}

std::unique_ptr<CudaModel> TestDeviceModelHost::emulated(int64_t maxBatchTokens,
                                                         std::shared_ptr<HostCudaBackend> backend) {
    if (!backend)
        backend = std::make_shared<HostCudaBackend>();
    CudaModelOptions options;
    options.maxBatchTokens = maxBatchTokens;
    options.threads = 1;
    auto model = CudaModel::create(m_checkpoint, options, backend);
    if (!model.ok())
        qWarning("%s", model.error().message.c_str());
    return model.ok() ? std::move(*model) : nullptr;
}

// Two slots batched, the second sequence fed in three pieces with logits from offsets, under
// pass limits that split inputs mid-sequence (7, 16) and none (512).
void TestDeviceModelHost::forwardMatchesCpu() {
    const auto &a = m_sequences[2], &b = m_sequences[1];
    const std::vector<std::vector<SequenceInput>> steps = {
        {{1, {b.data(), 2}, LogitsWanted::Last}, {0, {a.data(), 20}, LogitsWanted::All, 3}},
        {{0, {a.data() + 20, a.size() - 20}, LogitsWanted::All, 0},
         {1, {b.data() + 2, 3}, LogitsWanted::None}},
        {{1, {b.data() + 5, b.size() - 5}, LogitsWanted::All, 1}}};
    for (const int64_t limit : {7, 16, 512}) {
        auto model = emulated(limit);
        QVERIFY(model);
        QVERIFY(model->deviceDescription().rfind("cuda:0 (host emulation", 0) == 0);
        auto cache = model->allocateCache(2, int64_t(a.size()));
        QVERIFY(cache.ok());
        KvCache reference = m_cpu->makeCache(2, int64_t(a.size()));
        for (const auto &step : steps) {
            auto expected = m_cpu->forward(reference, step);
            auto got = model->forward(**cache, step);
            QVERIFY2(got.ok(), got.ok() ? "" : got.error().message.c_str());
            QVERIFY(expected.ok());
            QCOMPARE(got->rows, expected->rows);
            if (expected->rows > 0)
                QVERIFY2(relativeError(*got, *expected) <= 1e-5,
                         qPrintable(QString("limit %1").arg(limit)));
            for (int s = 0; s < 2; ++s)
                QCOMPARE((*cache)->length(s), reference.length(s));
        }
    }
    // More than 256 wanted rows: the head runs in chunks.
    auto model = emulated(512);
    std::vector<int32_t> longer;
    while (longer.size() < 300)
        longer.insert(longer.end(), m_sequences[2].begin(), m_sequences[2].end());
    longer.resize(300);
    const SequenceInput all{0, longer, LogitsWanted::All};
    auto cache = model->allocateCache(1, 300);
    KvCache reference = m_cpu->makeCache(1, 300);
    auto got = model->forward(**cache, {&all, 1});
    auto expected = m_cpu->forward(reference, {&all, 1});
    QVERIFY(got.ok() && expected.ok());
    QCOMPARE(got->rows, int64_t(300));
    QVERIFY(relativeError(*got, *expected) <= 1e-5);
}

// copyPrefix / truncate / clear through the device cache, as the log-likelihood engine uses them.
void TestDeviceModelHost::prefixCopiesAndTruncation() {
    auto model = emulated(64);
    const auto &ids = m_sequences[2];
    auto made = model->allocateCache(3, int64_t(ids.size()));
    QVERIFY(made.ok());
    SequenceCache &cache = **made;
    const SequenceInput whole{0, ids, LogitsWanted::Last};
    auto reference = model->forward(cache, {&whole, 1});
    QVERIFY(reference.ok());
    cache.copyPrefix(0, 2, 11);
    QCOMPARE(cache.length(2), int64_t(11));
    const SequenceInput tail{2, {ids.data() + 11, ids.size() - 11}, LogitsWanted::Last};
    auto continued = model->forward(cache, {&tail, 1});
    QVERIFY(continued.ok());
    QVERIFY(relativeError(*continued, *reference) <= 1e-5);
    cache.truncate(0, 11);
    QCOMPARE(cache.length(0), int64_t(11));
    const SequenceInput tail0{0, {ids.data() + 11, ids.size() - 11}, LogitsWanted::Last};
    auto again = model->forward(cache, {&tail0, 1});
    QVERIFY(again.ok());
    QVERIFY(relativeError(*again, *continued) == 0);
    // A copy from an out-of-range slot is kept and returned by the next forward.
    cache.copyPrefix(7, 1, 3);
    const SequenceInput one{1, {ids.data(), 1}, LogitsWanted::Last};
    auto refused = model->forward(cache, {&one, 1});
    QVERIFY(!refused.ok());
    QVERIFY(refused.error().message.find("slot 7 out of range") != std::string::npos);
    QVERIFY(model->forward(cache, {&one, 1}).ok()); // reported once
    // Overflow and bad tokens leave the cache as it was.
    cache.clearAll();
    const std::vector<int32_t> bad = {1, int32_t(model->config().vocabSize)};
    const SequenceInput badInput{0, bad, LogitsWanted::Last};
    QVERIFY(!model->forward(cache, {&badInput, 1}).ok());
    QCOMPARE(cache.length(0), int64_t(0));
}

void TestDeviceModelHost::lossSideReductions() {
    auto model = emulated(64);
    const auto &ids = m_sequences[2];
    auto cache = model->allocateCache(1, int64_t(ids.size()));
    QVERIFY(cache.ok());
    auto logProbs = model->logProbs(**cache, 0, ids);
    QVERIFY(logProbs.ok());
    QCOMPARE(logProbs->size(), ids.size() - 1);
    KvCache reference = m_cpu->makeCache(1, int64_t(ids.size()));
    const SequenceInput all{0, ids, LogitsWanted::All};
    auto logits = m_cpu->forward(reference, {&all, 1});
    QVERIFY(logits.ok());
    for (size_t t = 0; t + 1 < ids.size(); ++t) {
        const double expected = logProbability(logits->row(int64_t(t)), logits->vocab, ids[t + 1]);
        QVERIFY(std::abs((*logProbs)[t] - expected) <= 1e-4);
    }
    (*cache)->clear(0);
    auto top = model->next(**cache, 0, {ids.data(), 5}, 3);
    QVERIFY(top.ok());
    const float *row = logits->row(4);
    const auto best = std::max_element(row, row + logits->vocab) - row;
    QCOMPARE(int64_t(top->ids[0]), int64_t(best));
    QVERIFY(top->logits[0] >= top->logits[1] && top->logits[1] >= top->logits[2]);
    QCOMPARE((*cache)->length(0), int64_t(5));
    QVERIFY(!model->next(**cache, 0, {}, 1).ok());
    QVERIFY(!model->logProbs(**cache, 0, std::vector<int32_t>(100, 1)).ok()); // over 64 a pass
}

// CudaModel::score against the CPU Model's (LanguageModel's default over forward()): passes split
// mid-input (limits 7 and 512), a head of more than 256 wanted rows (chunks), targets out of row
// order with several on one row (the shared row of the log-likelihood engine) and the top-3 of
// every row; no full logit row is downloaded, and a refused request leaves the cache as it was.
void TestDeviceModelHost::scoreMatchesCpu() {
    const auto &a = m_sequences[2], &b = m_sequences[1];
    std::vector<int32_t> longer;
    while (longer.size() < 300)
        longer.insert(longer.end(), a.begin(), a.end());
    longer.resize(300);
    const int32_t vocab = int32_t(m_checkpoint->config.vocabSize);
    const std::vector<SequenceInput> step = {{1, {b.data(), 3}, LogitsWanted::Last},
                                             {0, longer, LogitsWanted::All, 5},
                                             {2, b, LogitsWanted::All, 1}};
    const int64_t rows = wantedRows(step);
    QCOMPARE(rows, int64_t(1 + 295 + b.size() - 1));
    std::vector<TokenTarget> targets;
    for (int64_t r = rows - 1; r >= 0; --r)
        targets.push_back({r, int32_t((r * 13 + 1) % vocab)});
    for (int32_t token : {7, 0, vocab - 1})
        targets.push_back({0, token}); // the Last row: four targets
    targets.push_back({290, 3});
    for (const int64_t limit : {7, 512}) {
        auto model = emulated(limit);
        QVERIFY(model);
        auto cache = model->allocateCache(3, 300);
        QVERIFY(cache.ok());
        KvCache reference = m_cpu->makeCache(3, 300);
        auto expected = m_cpu->score(reference, step, {targets, 3});
        auto got = model->score(**cache, step, {targets, 3});
        QVERIFY2(got.ok(), got.ok() ? "" : got.error().message.c_str());
        QVERIFY(expected.ok());
        QCOMPARE(got->rows, rows);
        QCOMPARE(got->logProbs.size(), targets.size());
        for (size_t i = 0; i < targets.size(); ++i)
            QVERIFY2(std::abs(got->logProbs[i] - expected->logProbs[i]) <= 1e-4,
                     qPrintable(QString("limit %1 target %2").arg(limit).arg(i)));
        QVERIFY(got->topIds == expected->topIds);
        for (size_t i = 0; i < got->topLogits.size(); ++i)
            QVERIFY(std::abs(got->topLogits[i] - expected->topLogits[i]) <=
                    1e-5 * std::max(1.0f, std::abs(expected->topLogits[i])));
        QCOMPARE(model->downloadedLogitRows(), int64_t(0));
        for (int s = 0; s < 3; ++s)
            QCOMPARE((*cache)->length(s), reference.length(s));
        // Refused before any work: the lengths stay.
        const std::vector<TokenTarget> past = {{rows, 1}};
        (*cache)->clearAll();
        QCOMPARE(model->score(**cache, step, {past, 0}).error().code, ErrorCode::InvalidArgument);
        QCOMPARE((*cache)->length(0), int64_t(0));
        // forward() still downloads rows, and counts them.
        auto logits = model->forward(**cache, step);
        QVERIFY(logits.ok());
        QCOMPARE(model->downloadedLogitRows(), rows);
    }
}

// create() refuses weights + activations that do not fit, allocateCache() a cache that does
// not; neither leaves buffers behind.
void TestDeviceModelHost::memoryRefusals() {
    auto tight = std::make_shared<HostCudaBackend>(uint64_t(1) << 20);
    CudaModelOptions options;
    options.maxBatchTokens = 64;
    auto refused = CudaModel::create(m_checkpoint, options, tight);
    QVERIFY(!refused.ok());
    QCOMPARE(refused.error().code, ErrorCode::OutOfMemory);
    QVERIFY2(refused.error().message.find("host emulation") != std::string::npos &&
                 refused.error().message.find("is free") != std::string::npos,
             refused.error().message.c_str());
    QCOMPARE(tight->liveBuffers(), size_t(0));

    auto backend = std::make_shared<HostCudaBackend>();
    auto model = emulated(64, backend);
    QVERIFY(model);
    const size_t activations = backend->liveBuffers();
    backend->setFreeBytes(uint64_t(300) << 20); // above the 256 MiB scratch allowance only
    auto big = model->allocateCache(64, 100000);
    QVERIFY(!big.ok());
    QCOMPARE(big.error().code, ErrorCode::OutOfMemory);
    QVERIFY(big.error().message.find("KV cache") != std::string::npos);
    QCOMPARE(backend->liveBuffers(), activations);
    {
        auto small = model->allocateCache(2, 64);
        QVERIFY(small.ok());
        QCOMPARE(backend->liveBuffers(), activations + 2 * size_t(model->config().numLayers));
    }
    QCOMPARE(backend->liveBuffers(), activations);
    QCOMPARE(model->allocateCache(-1, 4).error().code, ErrorCode::InvalidArgument);
    // A cache may outlive its model: it holds the backend.
    auto kept = model->allocateCache(1, 8);
    QVERIFY(kept.ok());
    model.reset();
    QCOMPARE(backend->liveBuffers(), 2 * size_t(m_checkpoint->config.numLayers));
    kept->reset();
    QCOMPARE(backend->liveBuffers(), size_t(0));
}

void TestDeviceModelHost::foreignCaches() {
    auto one = emulated(64), two = emulated(64);
    const std::vector<int32_t> ids = {1, 2, 3};
    const SequenceInput input{0, ids, LogitsWanted::Last};
    auto theirs = two->allocateCache(1, 8);
    QVERIFY(theirs.ok());
    auto refused = one->forward(**theirs, {&input, 1});
    QVERIFY(!refused.ok());
    QCOMPARE(refused.error().code, ErrorCode::InvalidArgument);
    QVERIFY(refused.error().message.find("not allocated by this model") != std::string::npos);
    KvCache host = m_cpu->makeCache(1, 8);
    QCOMPARE(one->forward(host, {&input, 1}).error().code, ErrorCode::InvalidArgument);
    QCOMPARE(m_cpu->forward(static_cast<SequenceCache &>(**theirs), {&input, 1}).error().code,
             ErrorCode::InvalidArgument);
    QVERIFY(!one->logProbs(host, 0, ids).ok());
}

// Perplexity and log-likelihood scoring over the interface: the emulated device model gives the
// CPU model's numbers.
void TestDeviceModelHost::evaluatorsThroughTheInterface() {
    auto model = emulated(48);
    std::mt19937 rng(std::random_device{}());
    std::vector<int32_t> tokens(32 * 6);
    for (int32_t &t : tokens)
        t = int32_t(rng() % uint32_t(m_checkpoint->config.vocabSize));
    const PerplexityOptions options{32, PerplexityProtocol::Paper, 0, 96};
    NullProgress progress;
    auto expected = evaluatePerplexity(*m_cpu, tokens, options, progress);
    auto got = evaluatePerplexity(*model, tokens, options, progress);
    QVERIFY(expected.ok() && got.ok());
    QVERIFY(std::abs(got->meanNll - expected->meanNll) <= 1e-5 * expected->meanNll);
    QCOMPARE(model->downloadedLogitRows(), int64_t(0)); // scored where the logits are

    std::vector<TokenizedRequest> requests;
    for (int g = 0; g < 3; ++g)
        for (int c = 0; c < 4; ++c) {
            TokenizedRequest r;
            r.context.assign(tokens.begin() + g * 20, tokens.begin() + g * 20 + 12);
            r.continuation.assign(tokens.begin() + 100 + c * 3,
                                  tokens.begin() + 100 + c * 3 + 2 + c);
            r.group = g;
            requests.push_back(r);
        }
    LoglikelihoodEngine cpuEngine(*m_cpu, {false, 0}), deviceEngine(*model, {false, 0});
    auto a = cpuEngine.scoreTokens(requests);
    auto b = deviceEngine.scoreTokens(requests);
    QVERIFY(a.ok() && b.ok());
    for (size_t i = 0; i < requests.size(); ++i) {
        QCOMPARE((*b)[i].tokens, (*a)[i].tokens);
        QVERIFY(std::abs((*b)[i].logLikelihood - (*a)[i].logLikelihood) <= 1e-4);
        QCOMPARE((*b)[i].isGreedy, (*a)[i].isGreedy);
    }
    QCOMPARE(model->downloadedLogitRows(), int64_t(0));

    // Greedy decoding reads only the argmax: generate() on either model gives the tokens of a
    // plain loop over the CPU forward's rows and std::max_element.
    const std::vector<int32_t> prompt(m_sequences[2].begin(), m_sequences[2].begin() + 4);
    std::vector<int32_t> expectedTokens;
    KvCache kv = m_cpu->makeCache(1, 16);
    SequenceInput step{0, prompt, LogitsWanted::Last};
    for (int i = 0; i < 10; ++i) {
        auto logits = m_cpu->forward(kv, {&step, 1});
        QVERIFY2(logits.ok(), logits.ok() ? "" : logits.error().message.c_str());
        const float *row = logits->row(0);
        expectedTokens.push_back(int32_t(std::max_element(row, row + logits->vocab) - row));
        step.tokens = {&expectedTokens.back(), 1};
    }
    GenerateOptions greedy;
    greedy.maxTokens = 10;
    greedy.stopAtEos = false;
    for (LanguageModel *m : {static_cast<LanguageModel *>(m_cpu.get()),
                             static_cast<LanguageModel *>(model.get())}) {
        auto generated = generate(*m, prompt, greedy);
        QVERIFY2(generated.ok(), generated.ok() ? "" : generated.error().message.c_str());
        QVERIFY(generated->tokens == expectedTokens);
    }
    QCOMPARE(model->downloadedLogitRows(), int64_t(0));
}

QTEST_APPLESS_MAIN(TestDeviceModelHost)
#include "test_device_model_host.moc"
