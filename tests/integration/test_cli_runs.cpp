// The run-store commands end to end on stories260K with the tinystories perplexity task:
// run -> runs list -> runs show -> compare -> export (json, csv, markdown, lm-eval) -> delete,
// every exported number read back and checked against the database; plus the refusals (missing
// checkpoint, bad field, corrupt database, resume of a done run). The subcommands are called as
// functions (lowbit_cli) with stdout and stderr captured.
#include "cli_capture.h"
#include "cli_commands.h"

#include "run_store.h"
#include "shared_data.h"
#include "temp_dir.h"

#include <QtTest>

#include <cstdio>
#include <fstream>
#include <sstream>

using namespace lowbit;
using lowbit::test::TempDir;
using nlohmann::json;

namespace {

using Output = test::CliOutput;

std::vector<std::string> splitCsv(const std::string &line) {
    std::vector<std::string> fields;
    std::string field;
    bool quoted = false;
    for (char c : line) {
        if (c == '"')
            quoted = !quoted;
        else if (c == ',' && !quoted) {
            fields.push_back(field);
            field.clear();
        } else
            field += c;
    }
    fields.push_back(field);
    return fields;
}

} // namespace

class TestCliRuns : public QObject {
    Q_OBJECT
private slots:
    void initTestCase();
    void roundTrip();
    void refusals();

private:
    std::filesystem::path m_model, m_tokenizer;
};

void TestCliRuns::initTestCase() {
    LOWBIT_REQUIRE_SHARED_FILE(model, "data/llama2c/stories260K.bin");
    LOWBIT_REQUIRE_SHARED_FILE(tokenizer, "data/llama2c/tok512.bin");
    LOWBIT_REQUIRE_SHARED_FILE(text, "data/tinystories/tinystories_val_first1000.txt");
    m_model = model;
    m_tokenizer = tokenizer;
    qputenv("LOWBIT_DATA_DIR", test::sharedPath("data").c_str());
}

void TestCliRuns::roundTrip() {
    TempDir dir;
    const std::string db = (dir / "runs.sqlite").string();
    const std::vector<std::string> base = {"--model",     m_model.string(),
                                           "--tokenizer", m_tokenizer.string(),
                                           "--tasks",     "tinystories",
                                           "--limit",     "12",
                                           "--ctx",       "128",
                                           "--threads",   "1",
                                           "--db",        db};
    const Output first = test::runCli(cli::runRun, base, dir.path());
    QVERIFY2(first.code == 0, first.err.c_str());
    const int64_t a = std::stoll(first.lines().back());
    std::vector<std::string> rtn = base;
    rtn.insert(rtn.end(), {"--method", "rtn", "--bits", "4", "--group", "32"});
    const Output second = test::runCli(cli::runRun, rtn, dir.path());
    QVERIFY2(second.code == 0, second.err.c_str());
    const int64_t b = std::stoll(second.lines().back());
    QVERIFY(b != a);
    // The same measurement again: reported, no new run, the earlier id printed.
    const Output again = test::runCli(cli::runRun, base, dir.path());
    QCOMPARE(again.code, 0);
    QCOMPARE(std::stoll(again.lines().back()), a);
    QVERIFY2(again.err.find("already measured in run " + std::to_string(a)) != std::string::npos,
             again.err.c_str());

    const Output list = test::runCli(cli::runRuns, {"list", "--db", db}, dir.path());
    QCOMPARE(list.code, 0);
    QCOMPARE(list.lines().size(), size_t(2));
    QCOMPARE(std::stoll(list.lines()[0]), a); // id first
    QCOMPARE(std::stoll(list.lines()[1]), b);
    const Output filtered =
        test::runCli(cli::runRuns, {"list", "--method", "rtn", "--db", db}, dir.path());
    QCOMPARE(filtered.lines().size(), size_t(1));
    QCOMPARE(std::stoll(filtered.lines()[0]), b);
    QVERIFY(test::runCli(cli::runRuns, {"list", "--status", "failed", "--db", db}, dir.path())
                .lines()
                .empty());

    RunStore store = RunStore::open(db, {.readOnly = true}).value();
    const Output show =
        test::runCli(cli::runRuns, {"show", std::to_string(b), "--json", "--db", db}, dir.path());
    QCOMPARE(show.code, 0);
    const json shown = json::parse(show.out);
    QCOMPARE(shown["id"].get<int64_t>(), b);
    QCOMPARE(shown["status"].get<std::string>(), std::string("done"));
    QCOMPARE(shown["artifacts"].size(), size_t(1));

    const Output compare = test::runCli(
        cli::runCompare, {std::to_string(a), std::to_string(b), "--json", "--db", db}, dir.path());
    QVERIFY2(compare.code == 0, compare.err.c_str());
    const json comparison = json::parse(compare.out);
    QCOMPARE(comparison["pairs"].size(), size_t(1));
    QCOMPARE(comparison["pairs"][0]["test"].get<std::string>(), std::string("bootstrap"));
    QCOMPARE(comparison["pairs"][0]["paired_documents"].get<int64_t>(), int64_t(12));
    QVERIFY(comparison["pairs"][0]["protocol_differences"].empty());
    const Output compareText = test::runCli(
        cli::runCompare, {std::to_string(a), std::to_string(b), "--db", db}, dir.path());
    QVERIFY(compareText.out.find("paired bootstrap") != std::string::npos);

    // JSON export, read back and checked against the database.
    const auto jsonPath = dir / "export.json";
    QCOMPARE(test::runCli(cli::runExport,
                          {std::to_string(a), std::to_string(b), "--format", "json", "--out",
                           jsonPath.string(), "--db", db},
                          dir.path())
                 .code,
             0);
    const json exported = json::parse(test::readFile(jsonPath));
    QCOMPARE(exported["runs"].size(), size_t(2));
    size_t metricsChecked = 0;
    for (const json &run : exported["runs"]) {
        const int64_t id = run["id"].get<int64_t>();
        const RunRecord record = store.run(id).value();
        QCOMPARE(run["status"].get<std::string>(), std::string(runStatusName(record.status)));
        QCOMPARE(run["spec"], record.spec);
        QCOMPARE(run["checkpoint"]["content_hash"].get<std::string>(), record.checkpointHash);
        QCOMPARE(run["checkpoint"]["format"].get<std::string>(), std::string("llama2c"));
        const auto tasks = store.runTasks(id).value();
        QCOMPARE(run["tasks"].size(), tasks.size());
        QCOMPARE(run["tasks"][0]["samples"].get<int64_t>(), tasks[0].samples);
        QCOMPARE(run["tasks"][0]["protocol"], tasks[0].protocol);
        const std::vector<StoredMetric> metrics = store.metrics(id).value();
        for (const StoredMetric &m : metrics) {
            const json &value = run["tasks"][0]["metrics"][m.metric.name];
            QCOMPARE(value["value"].get<double>(), m.metric.value); // exact
            QCOMPARE(value["stderr"].get<double>(), m.metric.stderr_);
            QCOMPARE(value["n"].get<int64_t>(), m.metric.n);
            ++metricsChecked;
        }
    }
    QVERIFY(metricsChecked >= 4);

    // CSV: one row per metric, numbers exact.
    const auto csvPath = dir / "export.csv";
    QCOMPARE(
        test::runCli(cli::runExport,
                     {std::to_string(a), "--format", "csv", "--out", csvPath.string(), "--db", db},
                     dir.path())
            .code,
        0);
    std::istringstream csv(test::readFile(csvPath));
    std::string line;
    std::getline(csv, line);
    QCOMPARE(splitCsv(line)[6], std::string("value"));
    const auto metricsA = store.metrics(a).value();
    for (const StoredMetric &m : metricsA) {
        QVERIFY(std::getline(csv, line));
        const auto fields = splitCsv(line);
        QCOMPARE(fields[4], m.task);
        QCOMPARE(fields[5], m.metric.name);
        QCOMPARE(std::strtod(fields[6].c_str(), nullptr), m.metric.value);
    }
    QVERIFY(!std::getline(csv, line));

    const auto mdPath = dir / "export.md";
    QCOMPARE(test::runCli(
                 cli::runExport,
                 {std::to_string(a), "--format", "markdown", "--out", mdPath.string(), "--db", db},
                 dir.path())
                 .code,
             0);
    QVERIFY(test::readFile(mdPath).find("| " + std::to_string(a) +
                                        " | stories260K.bin | none | tinystories | ppl |") !=
            std::string::npos);

    // lm-eval: results JSON in the harness's shape and the samples JSONL.
    const auto lmDir = dir / "lm-eval";
    QCOMPARE(test::runCli(
                 cli::runExport,
                 {std::to_string(b), "--format", "lm-eval", "--out", lmDir.string(), "--db", db},
                 dir.path())
                 .code,
             0);
    const json results =
        json::parse(test::readFile(lmDir / ("results_run" + std::to_string(b) + ".json")));
    for (const char *key :
         {"results", "configs", "versions", "n-shot", "higher_is_better", "n-samples", "config"})
        QVERIFY2(results.contains(key), key);
    const std::vector<StoredMetric> metricsB = store.metrics(b).value();
    for (const StoredMetric &m : metricsB)
        QCOMPARE(results["results"]["tinystories"][m.metric.name + ",none"].get<double>(),
                 m.metric.value);
    QVERIFY(results["results"]["tinystories"].contains("ppl_stderr,none"));
    QCOMPARE(results["higher_is_better"]["tinystories"]["ppl"].get<bool>(), false);
    QCOMPARE(results["n-samples"]["tinystories"]["effective"].get<int64_t>(), int64_t(12));
    const auto samples = store.samples(b, "tinystories").value();
    std::istringstream jsonl(
        test::readFile(lmDir / ("samples_tinystories_run" + std::to_string(b) + ".jsonl")));
    size_t count = 0;
    for (std::string row; std::getline(jsonl, row); ++count) {
        const json sample = json::parse(row);
        QCOMPARE(sample["doc_id"].get<std::string>(), samples[count].docId);
        QCOMPARE(sample["nll"].get<double>(), samples[count].nll);
        QCOMPARE(sample["tokens"].get<int64_t>(), samples[count].tokens);
    }
    QCOMPARE(count, samples.size());

    // Delete, then the run is gone and the other stays.
    QCOMPARE(test::runCli(cli::runRuns, {"delete", std::to_string(b), "--db", db}, dir.path()).code,
             0);
    const Output afterDelete = test::runCli(cli::runRuns, {"list", "--db", db}, dir.path());
    QCOMPARE(afterDelete.lines().size(), size_t(1));
    const Output gone =
        test::runCli(cli::runRuns, {"show", std::to_string(b), "--db", db}, dir.path());
    QVERIFY(gone.code != 0);
    QVERIFY(gone.err.find("run " + std::to_string(b) + " does not exist") != std::string::npos);
    const Output resumeDone =
        test::runCli(cli::runResume, {std::to_string(a), "--db", db}, dir.path());
    QVERIFY(resumeDone.code != 0);
    QVERIFY(resumeDone.err.find("already done") != std::string::npos);
}

void TestCliRuns::refusals() {
    TempDir dir;
    const std::string db = (dir / "runs.sqlite").string();
    const std::string missing = (dir / "nope.bin").string();
    const Output noModel = test::runCli(
        cli::runRun, {"--model", missing, "--tasks", "tinystories", "--db", db}, dir.path());
    QVERIFY(noModel.code != 0);
    QVERIFY2(noModel.err.find("spec.checkpoint: " + missing) != std::string::npos,
             noModel.err.c_str());
    const Output badBits =
        test::runCli(cli::runRun,
                     {"--model", m_model.string(), "--tokenizer", m_tokenizer.string(), "--method",
                      "rtn", "--bits", "9", "--tasks", "tinystories", "--db", db},
                     dir.path());
    QCOMPARE(badBits.code, 2);
    QVERIFY2(badBits.err.find("spec.method.bits") != std::string::npos, badBits.err.c_str());
    const Output badTask =
        test::runCli(cli::runRun,
                     {"--model", m_model.string(), "--tokenizer", m_tokenizer.string(), "--tasks",
                      "no_such_task", "--db", db},
                     dir.path());
    QVERIFY(badTask.code != 0);
    QVERIFY2(badTask.err.find("no_such_task") != std::string::npos, badTask.err.c_str());
    QVERIFY(RunStore::open(db)->listRuns()->empty());

    const auto specPath = dir / "spec.json";
    std::ofstream(specPath)
        << R"({"version": 1, "checkpoint": ")" << m_model.string()
        << R"(", "method": {"name": "none"}, "tasks": ["tinystories"], "thredas": 2})";
    const Output typo = test::runCli(cli::runRun, {specPath.string(), "--db", db}, dir.path());
    QCOMPARE(typo.code, 2);
    QVERIFY2(typo.err.find(specPath.string() + ": spec.thredas: unknown field") !=
                 std::string::npos,
             typo.err.c_str());

    const auto junk = dir / "junk.sqlite";
    std::ofstream(junk) << std::string(5000, 'x');
    const Output corrupt = test::runCli(cli::runRuns, {"list", "--db", junk.string()}, dir.path());
    QCOMPARE(corrupt.code, 1);
    QVERIFY2(corrupt.err.find("not a SQLite database") != std::string::npos, corrupt.err.c_str());
}

QTEST_APPLESS_MAIN(TestCliRuns)
#include "test_cli_runs.moc"
