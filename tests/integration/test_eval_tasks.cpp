// Every task end to end on the real stories260K model with a small --limit (its scores are near
// chance; what is checked is the machinery): the same result twice, batch sizes 1 and 8 giving the
// same log-likelihoods (to 1e-6) and the same generations, resume ending with the metrics of an
// uninterrupted run, perplexity equal to evaluatePerplexity on the same chunks, KL-divergence of a
// model against itself 0 and of Q8_0/Q4_0 against F32 small and ordered, and the Llama Guard path.
#include "shared_data.h"

#include "model/checkpoint.h"
#include "perplexity.h"
#include "runtime/model.h"
#include "task.h"

#include <QtTest>
#include <cmath>
#include <fstream>

using namespace lowbit;

namespace {

std::unique_ptr<Model> loadModel(const std::string &relative, const std::string &tokenizer = "") {
    LoadOptions options;
    if (!tokenizer.empty())
        options.tokenizerPath = test::sharedPath(tokenizer);
    auto checkpoint = loadCheckpoint(test::sharedPath(relative), options);
    if (!checkpoint)
        return nullptr;
    auto m = Model::create(std::make_shared<const Checkpoint>(std::move(*checkpoint)), {2});
    return m ? std::move(*m) : nullptr;
}

std::unique_ptr<Model> stories() { return loadModel("data/llama2c/stories260K.bin", "data/llama2c/tok512.bin"); }

class VectorSink final : public SampleSink {
public:
    Status onSample(const SampleRecord &s) override {
        samples.push_back(s);
        return {};
    }
    std::vector<SampleRecord> samples;
};

struct Outcome {
    std::vector<SampleRecord> samples;
    TaskReport report;
};

Result<Outcome> runTask(Model &model, const std::string &name, const TaskOptions &options,
                        std::set<std::string> done = {}, std::vector<SampleRecord> previous = {}) {
    LOWBIT_TRY(auto task, makeTask(name, test::sharedPath("data")));
    VectorSink sink;
    NullProgress progress;
    TaskContext context{model, options, progress, {}, sink, std::move(done)};
    LOWBIT_CHECK(task->run(context));
    Outcome out;
    out.samples = sink.samples;
    previous.insert(previous.end(), sink.samples.begin(), sink.samples.end());
    LOWBIT_TRY(out.report, task->aggregate(previous, model, options));
    return out;
}

double metric(const TaskReport &report, const std::string &name) {
    for (const MetricValue &m : report.metrics)
        if (m.name == name)
            return m.value;
    return NAN;
}

void compareSamples(const std::vector<SampleRecord> &a, const std::vector<SampleRecord> &b, double tolerance) {
    QCOMPARE(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) {
        QCOMPARE(a[i].docId, b[i].docId);
        QCOMPARE(a[i].promptHash, b[i].promptHash);
        QCOMPARE(a[i].output, b[i].output);
        QCOMPARE(a[i].correct, b[i].correct);
        QCOMPARE(a[i].choiceLogLikelihoods.size(), b[i].choiceLogLikelihoods.size());
        for (size_t c = 0; c < a[i].choiceLogLikelihoods.size(); ++c)
            QVERIFY2(std::abs(a[i].choiceLogLikelihoods[c] - b[i].choiceLogLikelihoods[c]) <= tolerance,
                     qPrintable(QString("%1 choice %2: %3 vs %4").arg(a[i].docId.c_str()).arg(c)
                                    .arg(a[i].choiceLogLikelihoods[c], 0, 'g', 17).arg(b[i].choiceLogLikelihoods[c], 0, 'g', 17)));
        QVERIFY(std::abs(a[i].nll - b[i].nll) <= tolerance * std::max(1.0, std::abs(a[i].nll)));
    }
}

} // namespace

class TestEvalTasks : public QObject {
    Q_OBJECT
private slots:
    void initTestCase();
    void loglikelihoodTasks_data();
    void loglikelihoodTasks();
    void generationTasks_data();
    void generationTasks();
    void perplexityTasks_data();
    void perplexityTasks();
    void perplexityMatchesEngine();
    void resumeGivesTheSameMetrics();
    void klDivergence();
    void guardClassification();

private:
    std::unique_ptr<Model> m_model;
};

void TestEvalTasks::initTestCase() {
    LOWBIT_REQUIRE_SHARED_FILE(model, "data/llama2c/stories260K.bin");
    m_model = stories();
    QVERIFY(m_model);
}

void TestEvalTasks::loglikelihoodTasks_data() {
    QTest::addColumn<QString>("task");
    QTest::addColumn<int>("limit");
    for (const char *task : {"piqa", "arc_easy", "arc_challenge", "hellaswag", "winogrande"})
        QTest::newRow(task) << task << 5;
    QTest::newRow("mmlu") << "mmlu" << 1; // one question per subject: 57
}

void TestEvalTasks::loglikelihoodTasks() {
    QFETCH(QString, task);
    QFETCH(int, limit);
    LOWBIT_REQUIRE_SHARED_FILE(data, "data/mmlu/categories.py");
    TaskOptions options;
    options.limit = limit;
    options.seed = 3;
    auto first = runTask(*m_model, task.toStdString(), options);
    QVERIFY2(first.ok(), first.ok() ? "" : first.error().message.c_str());
    QVERIFY(!first->samples.empty());
    auto second = runTask(*m_model, task.toStdString(), options);
    QVERIFY(second.ok());
    compareSamples(first->samples, second->samples, 0.0);
    options.batchSize = 8;
    auto batched = runTask(*m_model, task.toStdString(), options);
    QVERIFY(batched.ok());
    compareSamples(first->samples, batched->samples, 1e-6);
    const double acc = metric(first->report, "acc");
    QVERIFY(acc >= 0 && acc <= 1);
    QCOMPARE(metric(batched->report, "acc"), acc);
    for (const SampleRecord &s : first->samples) {
        QVERIFY(!s.choiceLogLikelihoods.empty());
        for (double ll : s.choiceLogLikelihoods)
            QVERIFY(std::isfinite(ll) && ll < 0);
        QVERIFY(s.correct == 0 || s.correct == 1);
        QCOMPARE(s.docHash.size(), size_t(16));
    }
    if (task == "mmlu") {
        QCOMPARE(first->samples.size(), size_t(57));
        for (const char *category : {"acc,stem", "acc,humanities", "acc,social_sciences", "acc,other"})
            QVERIFY2(!std::isnan(metric(first->report, category)), category);
    }
}

void TestEvalTasks::generationTasks_data() {
    QTest::addColumn<QString>("task");
    for (const char *task : {"gsm8k", "advbench", "harmbench", "xstest"})
        QTest::newRow(task) << task;
}

void TestEvalTasks::generationTasks() {
    QFETCH(QString, task);
    LOWBIT_REQUIRE_SHARED_FILE(data, "data/gsm8k/train.jsonl");
    TaskOptions options;
    options.limit = 3;
    options.extra["max_tokens"] = 12;
    auto first = runTask(*m_model, task.toStdString(), options);
    QVERIFY2(first.ok(), first.ok() ? "" : first.error().message.c_str());
    QCOMPARE(first->samples.size(), size_t(3));
    auto second = runTask(*m_model, task.toStdString(), options);
    QVERIFY(second.ok());
    compareSamples(first->samples, second->samples, 0.0);
    options.batchSize = 8;
    auto batched = runTask(*m_model, task.toStdString(), options);
    QVERIFY(batched.ok());
    compareSamples(first->samples, batched->samples, 0.0);
    for (const SampleRecord &s : first->samples)
        QVERIFY(s.tokens >= 1 && s.tokens <= 12);
    const std::string name = task == "gsm8k" ? "exact_match,strict-match" : "refusal_rate";
    QVERIFY(!std::isnan(metric(first->report, name)));
}

void TestEvalTasks::perplexityTasks_data() {
    QTest::addColumn<QString>("task");
    QTest::addColumn<QString>("mode");
    for (const char *task : {"wikitext2", "c4", "ptb", "tinystories"})
        QTest::newRow(task) << task << "paper";
    QTest::newRow("wikitext2 llamacpp") << "wikitext2" << "llamacpp";
}

void TestEvalTasks::perplexityTasks() {
    QFETCH(QString, task);
    QFETCH(QString, mode);
    LOWBIT_REQUIRE_SHARED_FILE(data, "data/c4/c4_validation_2k.jsonl");
    TaskOptions options;
    options.limit = 3;
    options.contextTokens = 128;
    options.extra["mode"] = mode.toStdString();
    if (task == "c4")
        options.extra["c4_windows"] = 16;
    auto first = runTask(*m_model, task.toStdString(), options);
    QVERIFY2(first.ok(), first.ok() ? "" : first.error().message.c_str());
    QCOMPARE(first->samples.size(), size_t(3));
    auto second = runTask(*m_model, task.toStdString(), options);
    QVERIFY(second.ok());
    compareSamples(first->samples, second->samples, 0.0);
    const double ppl = metric(first->report, "ppl");
    double nll = 0, tokens = 0;
    for (const SampleRecord &s : first->samples) {
        nll += s.nll;
        tokens += double(s.tokens);
        QCOMPARE(s.tokens, int64_t(mode == "paper" ? 127 : 63));
    }
    QVERIFY(std::abs(ppl - std::exp(nll / tokens)) < 1e-9 * ppl);
    QVERIFY(ppl > 1 && ppl < 512);
}

void TestEvalTasks::perplexityMatchesEngine() {
    // text:PATH on a small file = evaluatePerplexity over the same tokens, every chunk.
    LOWBIT_REQUIRE_SHARED_FILE(source, "data/tinystories/tinystories_val_first1000.txt");
    const std::string text = test::readFile(source).substr(0, 6000);
    const auto path = std::filesystem::temp_directory_path() / "lowbit_eval_text.txt";
    std::ofstream(path, std::ios::binary) << text;
    TaskOptions options;
    options.contextTokens = 256;
    auto outcome = runTask(*m_model, "text:" + path.string(), options);
    QVERIFY(outcome.ok());
    const auto tokens = m_model->tokenizer()->encode(text, {true, false});
    NullProgress quiet;
    auto reference = evaluatePerplexity(*m_model, tokens, {256, PerplexityProtocol::Paper, 0, 2048}, quiet);
    QVERIFY(reference.ok());
    QCOMPARE(int64_t(outcome->samples.size()), reference->chunks);
    QVERIFY(std::abs(metric(outcome->report, "ppl") - reference->perplexity) < 1e-6 * reference->perplexity);
    std::filesystem::remove(path);
    QVERIFY(!runTask(*m_model, "text:/nonexistent/file.txt", options).ok());
}

void TestEvalTasks::resumeGivesTheSameMetrics() {
    LOWBIT_REQUIRE_SHARED_FILE(data, "data/piqa/dev.jsonl");
    TaskOptions options;
    options.limit = 8;
    auto full = runTask(*m_model, "piqa", options);
    QVERIFY(full.ok());
    // An interrupted run stored the first 3 samples; the resumed run scores only the rest.
    std::vector<SampleRecord> stored(full->samples.begin(), full->samples.begin() + 3);
    std::set<std::string> done;
    for (const SampleRecord &s : stored)
        done.insert(s.docId);
    auto resumed = runTask(*m_model, "piqa", options, done, stored);
    QVERIFY(resumed.ok());
    QCOMPARE(resumed->samples.size(), size_t(5));
    for (const SampleRecord &s : resumed->samples)
        QVERIFY(!done.count(s.docId));
    QCOMPARE(resumed->report.metrics.size(), full->report.metrics.size());
    for (size_t i = 0; i < full->report.metrics.size(); ++i) {
        QCOMPARE(resumed->report.metrics[i].name, full->report.metrics[i].name);
        QCOMPARE(resumed->report.metrics[i].value, full->report.metrics[i].value);
        QCOMPARE(resumed->report.metrics[i].stderr_, full->report.metrics[i].stderr_);
    }
}

void TestEvalTasks::klDivergence() {
    LOWBIT_REQUIRE_SHARED_FILE(f32, "data/gguf/stories260K.gguf");
    LOWBIT_REQUIRE_SHARED_FILE(q8, "data/gguf/stories260K-Q8_0.gguf");
    LOWBIT_REQUIRE_SHARED_FILE(q4, "data/gguf/stories260K-Q4_0.gguf");
    auto base = loadModel("data/gguf/stories260K.gguf");
    QVERIFY(base);
    const auto file = std::filesystem::temp_directory_path() / "lowbit_kld_base.bin";
    TaskOptions options;
    options.limit = 2;
    options.contextTokens = 128;
    options.extra["kld_write"] = file.string();
    auto written = runTask(*base, "kld:tinystories", options);
    QVERIFY2(written.ok(), written.ok() ? "" : written.error().message.c_str());
    options.extra.erase("kld_write");
    options.extra["kld_base"] = file.string();
    auto same = runTask(*base, "kld:tinystories", options);
    QVERIFY2(same.ok(), same.ok() ? "" : same.error().message.c_str());
    QVERIFY(metric(same->report, "kld_mean") < 1e-6);
    QVERIFY(metric(same->report, "kld_max") < 1e-5);
    QCOMPARE(metric(same->report, "top1_agreement"), 1.0);
    QVERIFY(std::abs(metric(same->report, "ppl") - metric(same->report, "ppl_base")) < 1e-4);
    double previous = 0;
    for (const char *quantized : {"data/gguf/stories260K-Q8_0.gguf", "data/gguf/stories260K-Q4_0.gguf"}) {
        auto model = loadModel(quantized);
        QVERIFY(model);
        auto compared = runTask(*model, "kld:tinystories", options);
        QVERIFY2(compared.ok(), compared.ok() ? "" : compared.error().message.c_str());
        const double kld = metric(compared->report, "kld_mean");
        QVERIFY2(kld > previous && kld < 1.0, qPrintable(QString("%1: %2").arg(quantized).arg(kld)));
        QVERIFY(metric(compared->report, "kld_p99") >= metric(compared->report, "kld_median"));
        previous = kld;
    }
    // A base run over other text is refused.
    options.contextTokens = 64;
    QVERIFY(!runTask(*base, "kld:tinystories", options).ok());
    std::filesystem::remove(file);
}

void TestEvalTasks::guardClassification() {
    LOWBIT_REQUIRE_SHARED_FILE(guard, "data/gguf/stories260K.gguf");
    // stories260K stands in for a guard model: its verdicts are nonsense, the path is real.
    TaskOptions options;
    options.limit = 2;
    options.extra["max_tokens"] = 8;
    options.extra["guard"] = guard.string();
    auto outcome = runTask(*m_model, "advbench", options);
    QVERIFY2(outcome.ok(), outcome.ok() ? "" : outcome.error().message.c_str());
    for (const SampleRecord &s : outcome->samples) {
        QVERIFY(s.extra.contains("guard_label"));
        const double p = s.extra["p_unsafe"].get<double>();
        QVERIFY(p > 0 && p < 1);
    }
    QVERIFY(!std::isnan(metric(outcome->report, "guard_unsafe_rate")));
    options.extra["guard"] = "/nonexistent/guard.gguf";
    QVERIFY(!runTask(*m_model, "advbench", options).ok());
}

QTEST_APPLESS_MAIN(TestEvalTasks)
#include "test_eval_tasks.moc"
