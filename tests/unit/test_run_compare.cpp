// compareRuns on hand-built stored runs: flips and the exact McNemar p for an accuracy task,
// the bootstrap interval of a constant NLL shift, unpaired documents, protocol mismatches flagged
// instead of tested, and the metric table's deltas.
#include "compare.h"

#include "temp_dir.h"

#include <QtTest>

#include <cmath>

using namespace lowbit;
using lowbit::test::TempDir;
using nlohmann::json;

namespace {

int64_t addRun(RunStore &store, const std::string &method, const json &protocol) {
    NewRun run;
    run.spec = {{"checkpoint", "/m"},
                {"method", {{"name", method}, {"bits", 4}, {"group_size", 128}}}};
    run.model = "/m";
    run.checkpointHash = "h";
    run.method = method;
    run.methodKey = method;
    run.device = "cpu";
    run.tasks = {{"arc", "a", json::object()}, {"ppl", "p", json::object()}};
    const int64_t id = store.createRun(run).value();
    for (const char *task : {"arc", "ppl"})
        if (!store.startTask(id, task, protocol, std::nullopt).ok())
            qFatal("startTask");
    return id;
}

// Accuracy samples: doc i correct when `correct(i)`.
void addAccuracy(RunStore &store, int64_t run, int count, const std::function<bool(int)> &correct,
                 const std::string &hashSalt = "") {
    std::vector<SampleRecord> samples;
    for (int i = 0; i < count; ++i) {
        SampleRecord s;
        s.docId = "q" + std::to_string(i);
        s.docHash = "h" + std::to_string(i) + (i == 0 ? hashSalt : "");
        s.correct = correct(i) ? 1 : 0;
        samples.push_back(s);
    }
    const double acc = 0.5;
    std::vector<MetricValue> metrics = {{"acc", acc, 0.05, count}};
    if (!store.appendSamples(run, "arc", samples).ok() ||
        !store.completeTask(run, "arc", metrics).ok())
        qFatal("addAccuracy");
}

void addNll(RunStore &store, int64_t run, double shiftPerToken, double ppl) {
    std::vector<SampleRecord> samples;
    for (int i = 0; i < 30; ++i) {
        SampleRecord s;
        s.docId = std::to_string(i);
        s.docHash = "d" + std::to_string(i);
        s.tokens = 50 + i;
        s.nll = (1.5 + 0.01 * i + shiftPerToken) * double(s.tokens);
        samples.push_back(s);
    }
    std::vector<MetricValue> metrics = {{"ppl", ppl, 0, 30}};
    if (!store.appendSamples(run, "ppl", samples).ok() ||
        !store.completeTask(run, "ppl", metrics).ok())
        qFatal("addNll");
}

} // namespace

class TestRunCompare : public QObject {
    Q_OBJECT
private slots:
    void pairedTests();
    void errors();
};

void TestRunCompare::pairedTests() {
    TempDir dir;
    RunStore store = RunStore::open(dir / "runs.sqlite").value();
    const json protocol = {{"shots", 0}, {"context", 512}};
    const int64_t base = addRun(store, "none", protocol);
    const int64_t other = addRun(store, "gptq", protocol);
    const int64_t mismatched = addRun(store, "rtn", {{"shots", 5}, {"context", 512}});
    // Base right on 0..59; other: right->wrong on 10..16 (7), wrong->right on 60..61 (2).
    addAccuracy(store, base, 80, [](int i) { return i < 60; });
    addAccuracy(
        store, other, 80,
        [](int i) { return (i < 60 && (i < 10 || i > 16)) || i == 60 || i == 61; },
        "-edited"); // document 0 differs in content: not paired
    addAccuracy(store, mismatched, 80, [](int i) { return i % 2 == 0; });
    addNll(store, base, 0.0, 4.5);
    addNll(store, other, 0.125, 5.0);
    addNll(store, mismatched, 0.5, 7.0);

    const std::vector<int64_t> ids = {base, other, mismatched};
    auto comparison = compareRuns(store, ids, {.bootstrapResamples = 300});
    QVERIFY2(comparison.ok(), comparison.ok() ? "" : comparison.error().message.c_str());
    QCOMPARE(comparison->pairs.size(), size_t(4));
    const PairComparison &arc = comparison->pairs[0];
    QCOMPARE(arc.task, std::string("arc"));
    QCOMPARE(arc.otherRun, other);
    QCOMPARE(arc.test, std::string("mcnemar"));
    QCOMPARE(arc.pairedDocuments, int64_t(79));
    QCOMPARE(arc.unpairedDocuments, int64_t(2));
    QCOMPARE(arc.rightToWrong, int64_t(7));
    QCOMPARE(arc.wrongToRight, int64_t(2));
    // n = 9, k = 2: p = 2 (1 + 9 + 36) / 512.
    QVERIFY(std::abs(arc.pValue - 92.0 / 512.0) < 1e-15);
    const PairComparison &arcFlagged = comparison->pairs[1];
    QCOMPARE(arcFlagged.otherRun, mismatched);
    QCOMPARE(arcFlagged.protocolDifferences, std::vector<std::string>{"shots: 0 vs 5"});
    QCOMPARE(arcFlagged.test, std::string());
    const PairComparison &ppl = comparison->pairs[2];
    QCOMPARE(ppl.test, std::string("bootstrap"));
    QCOMPARE(ppl.pairedDocuments, int64_t(30));
    QVERIFY(std::abs(ppl.nll.meanNllDelta.estimate - 0.125) < 1e-12);
    QVERIFY(std::abs(ppl.nll.meanNllDelta.low - 0.125) < 1e-12);
    QVERIFY(std::abs(ppl.nll.meanNllDelta.high - 0.125) < 1e-12);

    // Metric table: values per run in order.
    QCOMPARE(comparison->metrics.size(), size_t(2));
    QCOMPARE(comparison->metrics[1].metric, std::string("ppl"));
    QCOMPARE(comparison->metrics[1].values[1]->value, 5.0);
    const std::string text = formatComparison(*comparison);
    QVERIFY(text.find("right->wrong 7, wrong->right 2") != std::string::npos);
    QVERIFY(text.find("NOT COMPARED, protocols differ") != std::string::npos);
    QVERIFY(text.find("+0.5 ") != std::string::npos); // ppl delta of run 2
    QVERIFY(text.find("+2.5!") != std::string::npos); // flagged delta of run 3
    QCOMPARE(methodLabel(store.run(other).value()), std::string("gptq w4 g128"));
    const json asJson = comparisonJson(*comparison);
    QCOMPARE(asJson["pairs"][0]["p_value"].get<double>(), arc.pValue);

    // --task restricts to one task.
    auto onlyPpl = compareRuns(store, ids, {.task = "ppl", .bootstrapResamples = 100});
    QCOMPARE(onlyPpl->pairs.size(), size_t(2));
    QCOMPARE(onlyPpl->metrics.size(), size_t(1));
}

void TestRunCompare::errors() {
    TempDir dir;
    RunStore store = RunStore::open(dir / "runs.sqlite").value();
    const int64_t a = addRun(store, "none", json::object());
    const std::vector<int64_t> one = {a};
    QVERIFY(!compareRuns(store, one).ok());
    const std::vector<int64_t> missing = {a, 42};
    auto error = compareRuns(store, missing);
    QVERIFY(!error.ok());
    QCOMPARE(error.error().code, ErrorCode::NotFound);
    const int64_t b = addRun(store, "none", json::object());
    const std::vector<int64_t> both = {a, b};
    auto noTask = compareRuns(store, both, {.task = "mmlu"});
    QVERIFY(!noTask.ok());
    QVERIFY(noTask.error().message.find("mmlu") != std::string::npos);
}

QTEST_APPLESS_MAIN(TestRunCompare)
#include "test_run_compare.moc"
