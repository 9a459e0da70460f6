// The LanguageModel interface and its factory on the CPU: openLanguageModel("cpu") runs the very
// Model forward (bit-identical logits to Model::forward over a KvCache, and within 1e-4 of the
// float64 reference of the shared fixture), the SequenceCache calls behave as KvCache's, a cache
// the model did not allocate is refused, and a GPU this build or machine lacks is a clear error
// (the reason cudaDeviceCount gives) rather than a crash.
#include "shared_data.h"

#include "model/checkpoint.h"
#include "runtime/language_model.h"
#include "runtime/log_prob.h"
#include "runtime/model.h"

#include <nlohmann/json.hpp>

#include <QtTest>
#include <cmath>
#include <algorithm>
#include <cstring>
#include <numeric>
#include <map>
#include <set>

using namespace lowbit;

namespace {

std::shared_ptr<const Checkpoint> loadFixture(const std::filesystem::path &dir) {
    auto checkpoint = loadCheckpoint(dir);
    if (!checkpoint.ok())
        qWarning("%s", checkpoint.error().message.c_str());
    return checkpoint.ok() ? std::make_shared<const Checkpoint>(std::move(*checkpoint)) : nullptr;
}

// max |a - b| over max |b|: float32 GEMMs of different row counts may round differently.
double relativeError(const Logits &a, const Logits &b) {
    if (a.values.size() != b.values.size() || a.values.empty())
        return INFINITY;
    double maxRef = 0, maxDiff = 0;
    for (size_t i = 0; i < a.values.size(); ++i) {
        maxRef = std::max(maxRef, double(std::abs(b.values[i])));
        maxDiff = std::max(maxDiff, double(std::abs(a.values[i] - b.values[i])));
    }
    return maxDiff / std::max(maxRef, 1e-30);
}

bool sameBits(const Logits &a, const Logits &b) {
    return a.rows == b.rows && a.vocab == b.vocab && a.values.size() == b.values.size() &&
           std::memcmp(a.values.data(), b.values.data(), a.values.size() * sizeof(float)) == 0;
}

// A cache no model allocated.
class ForeignCache final : public SequenceCache {
public:
    int slotCount() const override { return 1; }
    int64_t capacity() const override { return 64; }
    int64_t length(int) const override { return 0; }
    void clear(int) override {}
    void clearAll() override {}
    void truncate(int, int64_t) override {}
    void copyPrefix(int, int, int64_t) override {}
};

} // namespace

class TestLanguageModel : public QObject {
    Q_OBJECT
private slots:
    void initTestCase();
    void cpuForwardIsModelForward();
    void cacheCallsThroughTheInterface();
    void foreignCacheIsAnError();
    void badSizesAreErrors();
    void unavailableGpuIsAClearError();
    void devicesAndSummary();
    void passesSplitExactly();
    void defaultScoreIsForwardReduced();
    void scoreRequestErrors();

private:
    std::filesystem::path m_dir;
    std::shared_ptr<const Checkpoint> m_checkpoint;
    nlohmann::json m_ref;
};

void TestLanguageModel::initTestCase() {
    LOWBIT_REQUIRE_SHARED_FILE(dir, "fixtures/tiny-llama3-a");
    m_dir = dir;
    m_checkpoint = loadFixture(dir);
    QVERIFY(m_checkpoint);
    m_ref = nlohmann::json::parse(test::readFile(dir / "reference_logits.json"));
}

// Every fixture sequence, once alone and once batched in two slots (the second sequence fed in
// two pieces with logits from an offset): the interface's logits are Model::forward's, bit for
// bit, and both match the float64 reference.
void TestLanguageModel::cpuForwardIsModelForward() {
    auto direct = Model::create(m_checkpoint, {2});
    QVERIFY(direct.ok());
    auto opened = openLanguageModel(m_checkpoint, DeviceSpec{}, {.threads = 2});
    QVERIFY2(opened.ok(), opened.ok() ? "" : opened.error().message.c_str());
    LanguageModel &model = **opened;
    QCOMPARE(model.device().toString(), std::string("cpu"));
    QVERIFY(dynamic_cast<Model *>(&model) != nullptr);
    QCOMPARE(model.threads(), 2);
    QVERIFY(model.deviceDescription().rfind("cpu", 0) == 0);

    for (size_t s = 0; s < m_ref["sequences"].size(); ++s) {
        const auto ids = m_ref["sequences"][s].get<std::vector<int32_t>>();
        KvCache kv = (*direct)->makeCache(1, int64_t(ids.size()));
        const SequenceInput input{0, ids, LogitsWanted::All};
        auto expected = (*direct)->forward(kv, {&input, 1});
        QVERIFY(expected.ok());
        auto cache = model.allocateCache(1, int64_t(ids.size()));
        QVERIFY(cache.ok());
        auto got = model.forward(**cache, {&input, 1});
        QVERIFY2(got.ok(), got.ok() ? "" : got.error().message.c_str());
        QVERIFY2(sameBits(*expected, *got), qPrintable(QString("sequence %1").arg(s)));
        QCOMPARE((*cache)->length(0), int64_t(ids.size()));
        for (size_t t = 0; t < ids.size(); ++t) {       // the independent reference, as
            const auto &refRow = m_ref["logits"][s][t]; // test_reference_logits checks it
            double maxRef = 0, maxDiff = 0;
            for (size_t j = 0; j < refRow.size(); ++j) {
                maxRef = std::max(maxRef, std::abs(refRow[j].get<double>()));
                maxDiff =
                    std::max(maxDiff, std::abs(got->row(int64_t(t))[j] - refRow[j].get<double>()));
            }
            QVERIFY(maxDiff <= 1e-4 * std::max(maxRef, 1e-30));
        }
    }

    const auto a = m_ref["sequences"][2].get<std::vector<int32_t>>();
    const auto b = m_ref["sequences"][1].get<std::vector<int32_t>>();
    QVERIFY(b.size() >= 3);
    const size_t split = b.size() / 2;
    const std::vector<SequenceInput> first = {{1, {b.data(), split}, LogitsWanted::Last},
                                              {0, a, LogitsWanted::All, 2}};
    const SequenceInput rest{1, {b.data() + split, b.size() - split}, LogitsWanted::All, 1};
    const int64_t capacity = int64_t(std::max(a.size(), b.size()));
    KvCache kv = (*direct)->makeCache(2, capacity);
    auto cache = model.allocateCache(2, capacity);
    QVERIFY(cache.ok());
    for (std::span<const SequenceInput> step :
         {std::span<const SequenceInput>(first), std::span<const SequenceInput>(&rest, 1)}) {
        auto expected = (*direct)->forward(kv, step);
        auto got = model.forward(**cache, step);
        QVERIFY(expected.ok() && got.ok());
        QVERIFY(got->rows > 0);
        QVERIFY(sameBits(*expected, *got));
    }
}

// clear / truncate / copyPrefix through SequenceCache: a slot continued from a copied prefix
// gives the logits of the sequence run whole.
void TestLanguageModel::cacheCallsThroughTheInterface() {
    auto opened = openLanguageModel(m_checkpoint, DeviceSpec{}, {.threads = 1});
    QVERIFY(opened.ok());
    LanguageModel &model = **opened;
    const auto ids = m_ref["sequences"][2].get<std::vector<int32_t>>();
    QVERIFY(ids.size() >= 4);
    auto made = model.allocateCache(3, int64_t(ids.size()) + 2);
    QVERIFY(made.ok());
    SequenceCache &cache = **made;
    QCOMPARE(cache.slotCount(), 3);
    QCOMPARE(cache.capacity(), int64_t(ids.size()) + 2);

    const SequenceInput whole{0, ids, LogitsWanted::Last};
    auto reference = model.forward(cache, {&whole, 1});
    QVERIFY(reference.ok());
    // Slot 1: a copy of slot 0's first 3 tokens, then the rest.
    cache.copyPrefix(0, 1, 3);
    QCOMPARE(cache.length(1), int64_t(3));
    const SequenceInput tail{1, {ids.data() + 3, ids.size() - 3}, LogitsWanted::Last};
    auto continued = model.forward(cache, {&tail, 1});
    QVERIFY(continued.ok());
    QVERIFY(relativeError(*continued, *reference) <= 1e-5);
    // Slot 0 cut back to 3 tokens and continued the same way.
    cache.truncate(0, 3);
    QCOMPARE(cache.length(0), int64_t(3));
    const SequenceInput tail0{0, {ids.data() + 3, ids.size() - 3}, LogitsWanted::Last};
    auto again = model.forward(cache, {&tail0, 1});
    QVERIFY(again.ok());
    QVERIFY(sameBits(*continued, *again));
    cache.clear(1);
    QCOMPARE(cache.length(1), int64_t(0));
    cache.clearAll();
    QCOMPARE(cache.length(0), int64_t(0));
}

void TestLanguageModel::foreignCacheIsAnError() {
    auto opened = openLanguageModel(m_checkpoint, DeviceSpec{}, {.threads = 1});
    QVERIFY(opened.ok());
    const std::vector<int32_t> ids = {1, 2, 3};
    const SequenceInput input{0, ids, LogitsWanted::Last};
    ForeignCache foreign;
    auto refused = (*opened)->forward(foreign, {&input, 1});
    QVERIFY(!refused.ok());
    QCOMPARE(refused.error().code, ErrorCode::InvalidArgument);
    QVERIFY(refused.error().message.find("not allocated by this") != std::string::npos);
    // A host cache of another model's shape (the other fixture, or one layer).
    LOWBIT_REQUIRE_SHARED_FILE(otherDir, "fixtures/tiny-llama3-b");
    auto other = openLanguageModel(loadFixture(otherDir), DeviceSpec{}, {.threads = 1});
    QVERIFY(other.ok());
    const ModelConfig &a = (*opened)->config(), &b = (*other)->config();
    QVERIFY(a.numLayers != b.numLayers || a.numKvHeads * a.headDim != b.numKvHeads * b.headDim);
    auto otherCache = (*other)->allocateCache(1, 8);
    QVERIFY(otherCache.ok());
    auto mismatch = (*opened)->forward(**otherCache, {&input, 1});
    QVERIFY(!mismatch.ok());
    QCOMPARE(mismatch.error().code, ErrorCode::InvalidArgument);
    QVERIFY(mismatch.error().message.find("does not fit the model") != std::string::npos);
    KvCache oneLayer(1, 1, 8, a.numKvHeads * a.headDim);
    QVERIFY(a.numLayers != 1);
    QVERIFY(!(*opened)->forward(static_cast<SequenceCache &>(oneLayer), {&input, 1}).ok());
}

void TestLanguageModel::badSizesAreErrors() {
    auto opened = openLanguageModel(m_checkpoint, DeviceSpec{}, {.threads = 1});
    QVERIFY(opened.ok());
    QCOMPARE((*opened)->allocateCache(-1, 8).error().code, ErrorCode::InvalidArgument);
    QCOMPARE((*opened)->allocateCache(1, -8).error().code, ErrorCode::InvalidArgument);
    auto cache = (*opened)->allocateCache(1, 2);
    QVERIFY(cache.ok());
    const std::vector<int32_t> three = {1, 2, 3};
    const SequenceInput over{0, three, LogitsWanted::Last};
    auto overflow = (*opened)->forward(**cache, {&over, 1});
    QVERIFY(!overflow.ok());
    QVERIFY(overflow.error().message.find("capacity") != std::string::npos);
    QCOMPARE(openLanguageModel(nullptr, DeviceSpec{}).error().code, ErrorCode::InvalidArgument);
}

// Without CUDA or a GPU (this machine), cuda:0 is refused with cudaDeviceCount's reason; with
// GPUs, an index past them is refused naming how many there are. Neither loads anything.
void TestLanguageModel::unavailableGpuIsAClearError() {
    std::string why;
    const int count = cudaDeviceCount(&why);
    const DeviceSpec gpu{DeviceSpec::Kind::Cuda, count == 0 ? 0 : count};
    auto refused = openLanguageModel(m_checkpoint, gpu);
    QVERIFY(!refused.ok());
    const std::string &message = refused.error().message;
    QVERIFY2(message.rfind(gpu.toString() + ": ", 0) == 0, message.c_str());
    if (count == 0) {
        QCOMPARE(refused.error().code, ErrorCode::Unsupported);
        QVERIFY(!why.empty());
        QVERIFY2(message.find(why) != std::string::npos, message.c_str());
    } else {
        QCOMPARE(refused.error().code, ErrorCode::InvalidArgument);
        QVERIFY2(message.find("no such device") != std::string::npos, message.c_str());
    }
    for (const char *bad : {"gpu", "cuda:", "cuda:x", "CUDA:0", "cuda:-1", "cuda:1000", " cpu"})
        QVERIFY2(!parseDevice(bad).ok(), bad);
}

void TestLanguageModel::devicesAndSummary() {
    const std::vector<DeviceSpec> devices = availableDevices();
    QVERIFY(!devices.empty());
    QVERIFY(!devices.front().isCuda());
    QCOMPARE(int(devices.size()) - 1, cudaDeviceCount());
    const std::string summary = computeBackendsSummary();
    QVERIFY2(summary.rfind("cpu", 0) == 0, summary.c_str());
    std::string why;
    if (!cudaBuilt())
        QCOMPARE(summary, std::string("cpu (built without CUDA)"));
    else if (cudaDeviceCount(&why) == 0)
        QCOMPARE(summary, "cpu; cuda built, no device: " + why);
    else
        QVERIFY2(summary.rfind("cpu, cuda (", 0) == 0, summary.c_str());
}

// CudaModel's split of a long forward into device passes, checked with the CPU model: every
// pass within the limit, no slot twice in a pass, the pieces of each input its tokens in order,
// and the passes run one after another give the rows of the unsplit forward, in its order.
void TestLanguageModel::passesSplitExactly() {
    auto direct = Model::create(m_checkpoint, {1});
    QVERIFY(direct.ok());
    const auto a = m_ref["sequences"][2].get<std::vector<int32_t>>();
    const auto b = m_ref["sequences"][1].get<std::vector<int32_t>>();
    const std::vector<int32_t> none;
    const std::vector<SequenceInput> inputs = {{2, b, LogitsWanted::Last},
                                               {0, none, LogitsWanted::All},
                                               {1, a, LogitsWanted::All, 30},
                                               {3, {a.data(), 5}, LogitsWanted::None},
                                               {4, {b.data(), 3}, LogitsWanted::All, 0}};
    const int64_t capacity = int64_t(a.size());
    KvCache whole = (*direct)->makeCache(5, capacity);
    auto expected = (*direct)->forward(whole, inputs);
    QVERIFY(expected.ok());
    QCOMPARE(expected->rows, int64_t(1 + (a.size() - 30) + 3));
    for (const int64_t limit : {1, 3, 7, 16, 48, 1000}) {
        const auto passes = splitIntoPasses(inputs, limit);
        std::map<int, std::vector<int32_t>> fed;
        KvCache cache = (*direct)->makeCache(5, capacity);
        Logits got;
        got.vocab = expected->vocab;
        for (const auto &pass : passes) {
            int64_t tokens = 0;
            std::set<int> seen;
            for (const SequenceInput &piece : pass) {
                tokens += int64_t(piece.tokens.size());
                QVERIFY(seen.insert(piece.slot).second);
                fed[piece.slot].insert(fed[piece.slot].end(), piece.tokens.begin(),
                                       piece.tokens.end());
            }
            QVERIFY(tokens <= limit);
            auto logits = (*direct)->forward(cache, pass);
            QVERIFY(logits.ok());
            got.values.insert(got.values.end(), logits->values.begin(), logits->values.end());
            got.rows += logits->rows;
        }
        for (const SequenceInput &in : inputs)
            QVERIFY(std::equal(in.tokens.begin(), in.tokens.end(), fed[in.slot].begin(),
                               fed[in.slot].end()));
        QCOMPARE(got.rows, expected->rows);
        QVERIFY2(relativeError(got, *expected) <= 1e-5, qPrintable(QString::number(limit)));
    }
    QCOMPARE(splitIntoPasses({}, 4).size(), size_t(1));
}

// LanguageModel::score's default on the CPU, against forward()'s logits of the same inputs (two
// slots, one fed in two steps, logits from an offset and a Last row): each target's
// log-probability is logProbability() of its row bit for bit (what the evaluators computed before
// score() existed), within 1e-6 of a plain float64 log-softmax of the row and within 1e-4 of the
// fixture's float64 NumPy reference; the top-K is the row sorted by (logit desc, id asc); the
// cache advances as forward() advances it.
void TestLanguageModel::defaultScoreIsForwardReduced() {
    auto opened = openLanguageModel(m_checkpoint, DeviceSpec{}, {.threads = 3});
    QVERIFY(opened.ok());
    LanguageModel &model = **opened;
    const int64_t vocab = model.config().vocabSize;
    const auto a = m_ref["sequences"][2].get<std::vector<int32_t>>();
    const auto b = m_ref["sequences"][1].get<std::vector<int32_t>>();
    const int64_t capacity = int64_t(std::max(a.size(), b.size()));
    auto viaForward = model.allocateCache(2, capacity), viaScore = model.allocateCache(2, capacity);
    QVERIFY(viaForward.ok() && viaScore.ok());
    const std::vector<std::vector<SequenceInput>> steps = {
        {{1, {b.data(), 2}, LogitsWanted::Last}, {0, {a.data(), 9}, LogitsWanted::All, 3}},
        {{0, {a.data() + 9, a.size() - 9}, LogitsWanted::All, 0},
         {1, {b.data() + 2, b.size() - 2}, LogitsWanted::All, 0}}};
    for (const auto &step : steps) {
        auto logits = model.forward(**viaForward, step);
        QVERIFY(logits.ok());
        QCOMPARE(wantedRows(step), logits->rows);
        // Targets out of row order, several on one row, rows without any.
        std::vector<TokenTarget> targets;
        for (int64_t r = logits->rows - 1; r >= 0; r -= 2)
            targets.push_back({r, int32_t((r * 7 + 3) % vocab)});
        targets.push_back({0, int32_t(vocab - 1)});
        targets.push_back({0, 0});
        for (const int k : {0, 1, 5}) {
            if (k > 0) // the same inputs again, from the state before the step
                for (const SequenceInput &in : step)
                    (*viaScore)->truncate(in.slot, (*viaForward)->length(in.slot) -
                                                       int64_t(in.tokens.size()));
            auto scores = model.score(**viaScore, step, {targets, k});
            QVERIFY2(scores.ok(), scores.ok() ? "" : scores.error().message.c_str());
            QCOMPARE(scores->rows, logits->rows);
            QCOMPARE(scores->topK, k);
            QCOMPARE(scores->logProbs.size(), targets.size());
            for (size_t i = 0; i < targets.size(); ++i) {
                const float *row = logits->row(targets[i].row);
                const double got = scores->logProbs[i];
                QVERIFY(got == logProbability(row, vocab, targets[i].token)); // bit for bit
                double m = row[0], sum = 0;
                for (int64_t j = 0; j < vocab; ++j)
                    m = std::max(m, double(row[j]));
                for (int64_t j = 0; j < vocab; ++j)
                    sum += std::exp(double(row[j]) - m);
                QVERIFY(std::abs(got - (double(row[targets[i].token]) - m - std::log(sum))) <= 1e-6);
            }
            QCOMPARE(scores->topIds.size(), size_t(logits->rows * k));
            for (int64_t r = 0; r < logits->rows; ++r) {
                const float *row = logits->row(r);
                std::vector<int32_t> order(static_cast<size_t>(vocab));
                std::iota(order.begin(), order.end(), 0);
                std::stable_sort(order.begin(), order.end(),
                                 [row](int32_t x, int32_t y) { return row[x] > row[y]; });
                for (int j = 0; j < k; ++j) {
                    QCOMPARE(scores->topIds[size_t(r * k + j)], order[size_t(j)]);
                    QVERIFY(scores->topLogits[size_t(r * k + j)] == row[order[size_t(j)]]);
                }
            }
            for (int s = 0; s < 2; ++s)
                QCOMPARE((*viaScore)->length(s), (*viaForward)->length(s));
        }
    }
    // The whole of sequence 2 against the fixture's float64 reference logits.
    auto cache = model.allocateCache(1, int64_t(a.size()));
    const SequenceInput all{0, a, LogitsWanted::All};
    std::vector<TokenTarget> targets;
    for (size_t t = 0; t + 1 < a.size(); ++t)
        targets.push_back({int64_t(t), a[t + 1]});
    auto scores = model.score(**cache, {&all, 1}, {targets, 1});
    QVERIFY(scores.ok());
    for (size_t t = 0; t + 1 < a.size(); ++t) {
        const auto ref = m_ref["logits"][2][t].get<std::vector<double>>();
        const double m = *std::max_element(ref.begin(), ref.end());
        double sum = 0;
        for (double v : ref)
            sum += std::exp(v - m);
        QVERIFY(std::abs(scores->logProbs[t] - (ref[size_t(a[t + 1])] - m - std::log(sum))) <= 1e-4);
        QCOMPARE(int64_t(scores->topIds[t]),
                 int64_t(std::max_element(ref.begin(), ref.end()) - ref.begin()));
    }
}

// Bad requests are refused before the model runs (the cache keeps its length).
void TestLanguageModel::scoreRequestErrors() {
    auto opened = openLanguageModel(m_checkpoint, DeviceSpec{}, {.threads = 1});
    QVERIFY(opened.ok());
    LanguageModel &model = **opened;
    auto cache = model.allocateCache(1, 16);
    QVERIFY(cache.ok());
    const std::vector<int32_t> ids = {1, 5, 9, 2};
    const SequenceInput from2{0, ids, LogitsWanted::All, 2}, none{0, ids, LogitsWanted::None};
    const int32_t vocab = int32_t(model.config().vocabSize);
    const std::vector<std::pair<SequenceInput, std::vector<TokenTarget>>> bad = {
        {from2, {{2, 1}}}, {from2, {{-1, 1}}}, {from2, {{0, vocab}}}, {from2, {{1, -1}}},
        {none, {{0, 1}}}};
    for (const auto &[input, targets] : bad) {
        auto refused = model.score(**cache, {&input, 1}, {targets, 0});
        QVERIFY(!refused.ok());
        QCOMPARE(refused.error().code, ErrorCode::InvalidArgument);
        QCOMPARE((*cache)->length(0), int64_t(0));
    }
    for (const int k : {-1, kScoreTopKMax + 1})
        QCOMPARE(model.score(**cache, {&from2, 1}, {{}, k}).error().code, ErrorCode::InvalidArgument);
    QCOMPARE((*cache)->length(0), int64_t(0));
    auto ok = model.score(**cache, {&from2, 1}, {{}, kScoreTopKMax});
    QVERIFY(ok.ok());
    QCOMPARE(ok->topIds.size(), size_t(2 * kScoreTopKMax));
    QCOMPARE((*cache)->length(0), int64_t(4));
}

QTEST_APPLESS_MAIN(TestLanguageModel)
#include "test_language_model.moc"
