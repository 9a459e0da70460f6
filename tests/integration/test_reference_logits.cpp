// Done-when 1: the forward pass over the HF fixtures matches the float64 NumPy reference
// (../shared/tools/llama_ref.py) to 1e-4 relative per logit row, and mean NLL within 1e-5.
#include "shared_data.h"

#include "model/checkpoint.h"
#include "runtime/log_prob.h"
#include "runtime/model.h"

#include <nlohmann/json.hpp>

#include <QtTest>
#include <cmath>

using namespace lowbit;

class TestReferenceLogits : public QObject {
    Q_OBJECT
private slots:
    void fixture_data();
    void fixture();
    void batchedEqualsSingle();
    void layerByLayer();
};

void TestReferenceLogits::fixture_data() {
    QTest::addColumn<QString>("name");
    QTest::newRow("a: bf16, 2 shards, untied") << "tiny-llama3-a";
    QTest::newRow("b: f16, tied, 128256 vocab") << "tiny-llama3-b";
}

void TestReferenceLogits::fixture() {
    QFETCH(QString, name);
    LOWBIT_REQUIRE_SHARED_FILE(dir, "fixtures/" + name.toStdString());
    const auto ref = nlohmann::json::parse(test::readFile(dir / "reference_logits.json"));
    auto checkpoint = loadCheckpoint(dir);
    QVERIFY2(checkpoint.ok(), checkpoint.ok() ? "" : checkpoint.error().message.c_str());
    auto model = Model::create(std::make_shared<const Checkpoint>(std::move(*checkpoint)), {2});
    QVERIFY(model.ok());
    const int64_t vocab = (*model)->config().vocabSize;

    for (size_t s = 0; s < ref["sequences"].size(); ++s) {
        const std::vector<int32_t> ids = ref["sequences"][s].get<std::vector<int32_t>>();
        KvCache cache = (*model)->makeCache(1, int64_t(ids.size()));
        SequenceInput input{0, ids, LogitsWanted::All};
        auto logits = (*model)->forward(cache, {&input, 1});
        QVERIFY(logits.ok());
        QCOMPARE(logits->rows, int64_t(ids.size()));
        double nll = 0;
        for (size_t t = 0; t < ids.size(); ++t) {
            const auto &refRow = ref["logits"][s][t];
            const float *row = logits->row(int64_t(t));
            double maxRef = 0, maxDiff = 0;
            for (size_t j = 0; j < refRow.size(); ++j) {
                maxRef = std::max(maxRef, std::abs(refRow[j].get<double>()));
                maxDiff = std::max(maxDiff, std::abs(row[j] - refRow[j].get<double>()));
            }
            if (ref.contains("top10")) { // wide vocab: check the stored top-10 and log-sum-exp too
                for (size_t k = 0; k < 10; ++k) { // top10[s] holds 10 [id, logit] pairs per position
                    const auto &pair = ref["top10"][s][t * 10 + k];
                    const double v = pair[1].get<double>();
                    maxRef = std::max(maxRef, std::abs(v));
                    maxDiff = std::max(maxDiff, std::abs(row[pair[0].get<int>()] - v));
                }
                const double lse = ref["logsumexp"][s][t].get<double>();
                QVERIFY2(std::abs(logSumExp(row, vocab) - lse) <= 1e-4 * std::abs(lse),
                         qPrintable(QString("seq %1 pos %2: log-sum-exp").arg(s).arg(t)));
            }
            QVERIFY2(maxDiff <= 1e-4 * maxRef,
                     qPrintable(QString("seq %1 pos %2: max |diff| %3 vs max |ref| %4")
                                    .arg(s).arg(t).arg(maxDiff).arg(maxRef)));
            if (t + 1 < ids.size())
                nll -= logProbability(row, vocab, ids[t + 1]);
        }
        if (ids.size() > 1) {
            nll /= double(ids.size() - 1);
            const double refNll = ref["nll"][s].get<double>();
            QVERIFY2(std::abs(nll - refNll) <= 1e-5,
                     qPrintable(QString("seq %1: nll %2 vs %3").arg(s).arg(nll, 0, 'g', 12).arg(refNll, 0, 'g', 12)));
        }
    }
}

// Several sequences in one forward, and a sequence fed in pieces through the KV cache, give the
// logits of one sequence run alone (the reference checked above).
void TestReferenceLogits::batchedEqualsSingle() {
    LOWBIT_REQUIRE_SHARED_FILE(dir, "fixtures/tiny-llama3-a");
    auto checkpoint = loadCheckpoint(dir);
    QVERIFY(checkpoint.ok());
    auto model = Model::create(std::make_shared<const Checkpoint>(std::move(*checkpoint)), {2});
    QVERIFY(model.ok());
    const std::vector<int32_t> a = {5, 77, 300, 12, 9, 411, 2, 2, 100, 7};
    const std::vector<int32_t> b = {42, 1, 511, 250};
    KvCache alone = (*model)->makeCache(1, 16);
    SequenceInput inA{0, a, LogitsWanted::All};
    auto single = (*model)->forward(alone, {&inA, 1});
    QVERIFY(single.ok());

    KvCache both = (*model)->makeCache(2, 16);
    std::vector<SequenceInput> inputs = {{1, b, LogitsWanted::All}, {0, {a.data(), 6}, LogitsWanted::All}};
    auto batched = (*model)->forward(both, inputs);
    QVERIFY(batched.ok());
    SequenceInput rest{0, {a.data() + 6, 4}, LogitsWanted::All};
    auto tail = (*model)->forward(both, {&rest, 1});
    QVERIFY(tail.ok());
    const int64_t vocab = single->vocab;
    for (int64_t t = 0; t < 10; ++t) {
        const float *got = t < 6 ? batched->row(4 + t) : tail->row(t - 6);
        for (int64_t j = 0; j < vocab; ++j)
            QVERIFY(std::abs(got[j] - single->row(t)[j]) <= 1e-4f * (1.0f + std::abs(single->row(t)[j])));
    }
    QCOMPARE(both.length(0), int64_t(10));
    QCOMPARE(both.length(1), int64_t(4));
}

// The calibration path (embed, one decoder layer at a time through a one-layer cache, head) gives
// the logits of forward(); the hook sees each distinct linear input once per layer.
void TestReferenceLogits::layerByLayer() {
    LOWBIT_REQUIRE_SHARED_FILE(dir, "fixtures/tiny-llama3-a");
    auto checkpoint = loadCheckpoint(dir);
    QVERIFY(checkpoint.ok());
    auto model = Model::create(std::make_shared<const Checkpoint>(std::move(*checkpoint)), {2});
    QVERIFY(model.ok());
    Model &m = **model;
    const ModelConfig &c = m.config();
    const std::vector<int32_t> a = {3, 99, 400, 17, 256, 1, 8}, b = {500, 42, 42};
    std::vector<SequenceInput> inputs = {{0, a, LogitsWanted::All}, {1, b, LogitsWanted::All}};
    KvCache full = m.makeCache(2, 8);
    auto reference = m.forward(full, inputs);
    QVERIFY(reference.ok());

    struct Counter : LinearHook {
        std::vector<std::tuple<int64_t, LinearInput, int64_t, int64_t>> calls;
        void onLinearInput(int64_t layer, LinearInput kind, float *, int64_t rows, int64_t cols) override {
            calls.emplace_back(layer, kind, rows, cols);
        }
    } counter;
    std::vector<float> hidden(size_t(10 * c.hiddenSize));
    QVERIFY(m.embed(inputs, hidden.data()).ok());
    KvCache oneLayer(1, 2, 8, c.numKvHeads * c.headDim);
    for (int64_t layer = 0; layer < c.numLayers; ++layer)
        QVERIFY(m.runLayer(layer, oneLayer, 0, inputs, hidden.data(), nullptr, &counter).ok());
    const Logits logits = m.head(hidden.data(), 10);
    for (int64_t r = 0; r < 10; ++r)
        for (int64_t j = 0; j < logits.vocab; ++j)
            QVERIFY(std::abs(logits.row(r)[j] - reference->row(r)[j]) <= 1e-5f * (1 + std::abs(reference->row(r)[j])));
    QCOMPARE(int64_t(counter.calls.size()), 4 * c.numLayers);
    QVERIFY(counter.calls[1] == std::make_tuple(int64_t(0), LinearInput::AttentionOutput, int64_t(10), c.numHeads * c.headDim));
    QVERIFY(counter.calls[3] == std::make_tuple(int64_t(0), LinearInput::MlpDown, int64_t(10), c.intermediateSize));
}

QTEST_APPLESS_MAIN(TestReferenceLogits)
#include "test_reference_logits.moc"
