// Done-when 2 and 5: the real trained stories260K model, from llama2.c .bin + tok512.bin and from
// llama.cpp's GGUF conversion (interleaved Q/K rows, embedded vocab), against the reference outputs
// in ../shared/data/llama2c and llama.cpp's own perplexities in ../shared/data/gguf.
#include "shared_data.h"

#include "model/checkpoint.h"
#include "perplexity.h"
#include "runtime/generator.h"
#include "runtime/model.h"

#include <nlohmann/json.hpp>

#include <QtTest>
#include <cmath>

using namespace lowbit;

namespace {

std::unique_ptr<Model> loadModel(const std::filesystem::path &path, const LoadOptions &options = {}) {
    auto checkpoint = loadCheckpoint(path, options);
    if (!checkpoint) {
        qWarning("%s", checkpoint.error().message.c_str());
        return nullptr;
    }
    auto model = Model::create(std::make_shared<const Checkpoint>(std::move(*checkpoint)), {2});
    return model ? std::move(*model) : nullptr;
}

} // namespace

class TestStories260K : public QObject {
    Q_OBJECT
private slots:
    void greedy_data();
    void greedy();
    void llamaCppPerplexity_data();
    void llamaCppPerplexity();
    void stopStringAndSampling();
};

void TestStories260K::greedy_data() {
    QTest::addColumn<QString>("model");
    QTest::addColumn<QString>("tokenizer");
    QTest::newRow("llama2.c .bin + tok512.bin") << "data/llama2c/stories260K.bin" << "data/llama2c/tok512.bin";
    QTest::newRow("GGUF, embedded vocab") << "data/gguf/stories260K.gguf" << "";
}

void TestStories260K::greedy() {
    QFETCH(QString, model);
    QFETCH(QString, tokenizer);
    LOWBIT_REQUIRE_SHARED_FILE(modelPath, model.toStdString());
    LOWBIT_REQUIRE_SHARED_FILE(refPath, "data/llama2c/stories260K.greedy_reference.json");
    LoadOptions options;
    if (!tokenizer.isEmpty())
        options.tokenizerPath = test::sharedPath(tokenizer.toStdString());
    auto m = loadModel(modelPath, options);
    QVERIFY(m);
    QVERIFY(m->tokenizer());
    const auto ref = nlohmann::json::parse(test::readFile(refPath));
    const auto expected = ref["generated_ids"].get<std::vector<int32_t>>();

    // The first three logit rows, for input [BOS, ids0, ids1].
    const std::vector<int32_t> prefix = {1, expected[0], expected[1]};
    KvCache cache = m->makeCache(1, 3);
    SequenceInput input{0, prefix, LogitsWanted::All};
    auto logits = m->forward(cache, {&input, 1});
    QVERIFY(logits.ok());
    for (int64_t t = 0; t < 3; ++t) {
        const auto row = ref["first_logits"][size_t(t)].get<std::vector<double>>();
        QCOMPARE(int64_t(row.size()), logits->vocab);
        double maxRef = 0, maxDiff = 0;
        for (size_t j = 0; j < row.size(); ++j) {
            maxRef = std::max(maxRef, std::abs(row[j]));
            maxDiff = std::max(maxDiff, std::abs(logits->row(t)[j] - row[j]));
        }
        QVERIFY2(maxDiff <= 1e-4 * maxRef, qPrintable(QString("row %1: %2 vs %3").arg(t).arg(maxDiff).arg(maxRef)));
    }

    // run.c stops only at BOS or after 256 steps; EOS is an ordinary token there.
    GenerateOptions greedy;
    greedy.maxTokens = 256;
    greedy.stopAtEos = false;
    const std::vector<int32_t> bos = {1};
    auto result = generate(*m, bos, greedy);
    QVERIFY(result.ok());
    QCOMPARE(result->tokens, expected);
    QCOMPARE(QString::fromStdString(m->tokenizer()->decode(result->tokens)),
             QString::fromStdString(ref["text"].get<std::string>()));
}

void TestStories260K::llamaCppPerplexity_data() {
    QTest::addColumn<QString>("file");
    for (const char *f : {"stories260K.gguf", "stories260K-Q8_0.gguf", "stories260K-Q4_0.gguf", "stories260K-Q4_K_M.gguf"})
        QTest::newRow(f) << f;
}

// llama-perplexity -c 256 on ts_val_head50k.txt; the reference file states the chunking.
void TestStories260K::llamaCppPerplexity() {
    QFETCH(QString, file);
    LOWBIT_REQUIRE_SHARED_FILE(refPath, "data/gguf/llamacpp_ppl_reference.json");
    LOWBIT_REQUIRE_SHARED_FILE(textPath, "data/gguf/ts_val_head50k.txt");
    LOWBIT_REQUIRE_SHARED_FILE(modelPath, "data/gguf/" + file.toStdString());
    const auto ref = nlohmann::json::parse(test::readFile(refPath));
    auto m = loadModel(modelPath);
    QVERIFY(m);
    const auto tokens = m->tokenizer()->encode(test::readFile(textPath), {true, false});
    PerplexityOptions options;
    options.contextTokens = 256;
    options.protocol = PerplexityProtocol::LlamaCpp;
    NullProgress progress;
    auto report = evaluatePerplexity(*m, tokens, options, progress);
    QVERIFY(report.ok());
    QCOMPARE(report->chunks, int64_t(94));
    QCOMPARE(report->predictedTokens, int64_t(94 * 127));
    const double expected = ref["ppl"][file.toStdString()][0].get<double>();
    QVERIFY2(std::abs(report->perplexity - expected) <= 1e-3 * expected,
             qPrintable(QString("PPL %1, llama.cpp %2").arg(report->perplexity, 0, 'f', 5).arg(expected)));
}

// The greedy text contains "Lily": generation stops there and cuts the text before it. Sampling
// with a seed is reproducible and differs from greedy.
void TestStories260K::stopStringAndSampling() {
    LOWBIT_REQUIRE_SHARED_FILE(modelPath, "data/gguf/stories260K.gguf");
    auto m = loadModel(modelPath);
    QVERIFY(m);
    const std::vector<int32_t> bos = {1};
    GenerateOptions options;
    options.maxTokens = 64;
    options.stopStrings = {"Lily"};
    auto stopped = generate(*m, bos, options);
    QVERIFY(stopped.ok());
    QCOMPARE(QString::fromStdString(stopped->stopReason), QString("stop_string"));
    QCOMPARE(QString::fromStdString(stopped->text), QString("Once upon a time, there was a little girl named "));

    options.stopStrings.clear();
    options.sampling = {0.8, 40, 0.95, 1234};
    auto a = generate(*m, bos, options), b = generate(*m, bos, options);
    options.sampling.temperature = 0;
    auto greedy = generate(*m, bos, options);
    QVERIFY(a.ok() && b.ok() && greedy.ok());
    QCOMPARE(a->tokens, b->tokens);
    QVERIFY(a->tokens != greedy->tokens);
}

QTEST_APPLESS_MAIN(TestStories260K)
#include "test_stories260k.moc"
