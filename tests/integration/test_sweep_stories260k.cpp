// Issue 9's done-when: a real single-node Slurm cluster (scripts/slurm-up.sh, Debian packages,
// no systemd) runs a sweep of 2 methods × 2 bit-widths × 2 tasks on stories260K as two job
// arrays (quantize, then evaluate with afterok); one evaluate task is cancelled and retried
// alone; partial and final collects merge the task databases idempotently; the merged database
// equals a local run of the same sweep metric for metric. The cluster is torn down whatever
// happens (scripts/slurm-down.sh, through tests/support/slurm_test_cluster.h). Skipped without
// the Slurm packages or root, unless LOWBIT_REQUIRE_SLURM=1 (CI), where that fails.
#include "cli_commands.h"

#include "run_store.h"
#include "shared_data.h"
#include "slurm_test_cluster.h"
#include "sweep/sweep_slurm.h"
#include "temp_dir.h"

#include <QtTest>

#include <chrono>
#include <fstream>
#include <map>
#include <set>
#include <thread>

using namespace lowbit;
using namespace lowbit::sweep;
using lowbit::test::TempDir;
using nlohmann::json;

#ifndef LOWBIT_EXECUTABLE
#error "tests/CMakeLists.txt defines LOWBIT_EXECUTABLE for this suite"
#endif

namespace {

json sweepJson(const std::filesystem::path &output, const std::filesystem::path &model,
               const std::filesystem::path &tokenizer) {
    return {{"version", 1},
            {"name", "stories"},
            {"output", output.string()},
            {"checkpoints", {{{"checkpoint", model.string()}, {"tokenizer", tokenizer.string()}}}},
            {"methods", {"rtn", {{"name", "gptq"}, {"group_size", 32}}}},
            {"bits", {3, 4}},
            {"tasks",
             {{{"name", "tinystories"}, {"limit", 4}, {"context", 64}},
              {{"name", "wikitext2"}, {"limit", 1}, {"context", 64}}}},
            {"calibration", {{"samples", 4}, {"tokens", 64}}},
            {"threads", 1},
            {"data", lowbit::test::sharedPath("data").string()},
            {"backend", {{"kind", "slurm"}, {"slurm", {{"time", "00:05:00"}}}}}};
}

std::filesystem::path writeJson(const std::filesystem::path &path, const json &value) {
    std::ofstream(path) << value.dump(2);
    return path;
}

// Waits until no task is pending or running (Slurm's view merged with the task databases).
Result<std::vector<SweepTaskStatus>> settle(const std::filesystem::path &manifest,
                                            const SlurmClient &client) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(3);
    for (;;) {
        LOWBIT_TRY(SweepPlan plan, readManifest(manifest));
        LOWBIT_TRY(auto status, sweepStatus(plan, &client));
        const bool busy = std::any_of(status.begin(), status.end(), [](const auto &s) {
            return s.state == "pending" || s.state == "running";
        });
        if (!busy || std::chrono::steady_clock::now() > deadline)
            return status;
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
}

// (method key, task, metric) -> "value n", read from a store.
std::map<std::string, std::string> metricTable(const std::filesystem::path &db) {
    RunStore store = RunStore::open(db, {.readOnly = true}).value();
    std::map<std::string, std::string> table;
    for (const RunRecord &run : store.listRuns().value()) {
        if (run.status != RunStatus::Done)
            continue;
        for (const StoredMetric &m : store.metrics(run.id).value()) {
            char value[64];
            std::snprintf(value, sizeof value, "%.17g n=%lld", m.metric.value,
                          static_cast<long long>(m.metric.n));
            const std::string key = run.methodKey + " " + m.task + " " + m.metric.name;
            if (!table.emplace(key, value).second)
                table[key] = "measured twice";
        }
    }
    return table;
}

Result<MergeReport> collect(const std::filesystem::path &manifest,
                            const std::filesystem::path &db) {
    LOWBIT_TRY(RunStore store, RunStore::open(db));
    LOWBIT_TRY(SweepPlan plan, readManifest(manifest));
    LOWBIT_TRY(CollectReport report, collectSweep(plan, store));
    return report.merged;
}

#define TRY_OR_FAIL(decl, expr)                                                                    \
    auto LOWBIT_CONCAT(tried_, __LINE__) = (expr);                                                 \
    QVERIFY2(LOWBIT_CONCAT(tried_, __LINE__).ok(),                                                 \
             LOWBIT_CONCAT(tried_, __LINE__).ok()                                                  \
                 ? ""                                                                              \
                 : LOWBIT_CONCAT(tried_, __LINE__).error().message.c_str());                       \
    decl = std::move(LOWBIT_CONCAT(tried_, __LINE__)).value()

} // namespace

class TestSweepStories260k : public QObject {
    Q_OBJECT
private slots:
    void initTestCase();
    void slurmSweepMatchesLocal();
    void failedQuantizeIsRetried();

private:
    std::filesystem::path m_model, m_tokenizer;
};

void TestSweepStories260k::initTestCase() {
    LOWBIT_REQUIRE_SHARED_FILE(model, "data/llama2c/stories260K.bin");
    LOWBIT_REQUIRE_SHARED_FILE(tokenizer, "data/llama2c/tok512.bin");
    LOWBIT_REQUIRE_SHARED_FILE(tiny, "data/tinystories/tinystories_val_first1000.txt");
    LOWBIT_REQUIRE_SHARED_FILE(wiki, "data/wikitext2/wiki.test.raw");
    (void)tiny; // the tasks' data, found through the data folder
    (void)wiki;
    m_model = model;
    m_tokenizer = tokenizer;
}

void TestSweepStories260k::slurmSweepMatchesLocal() {
    TempDir dir;
    LOWBIT_REQUIRE_SLURM_CLUSTER(cluster, dir / "cluster");
    // The reference: the same sweep run here by the local backend.
    const auto localSpec =
        writeJson(dir / "local.json", sweepJson(dir / "local", m_model, m_tokenizer));
    QCOMPARE(cli::runSweep({"submit", localSpec.string(), "--backend", "local"}), 0);
    TRY_OR_FAIL(const MergeReport local,
                collect(dir / "local" / "manifest.json", dir / "local.sqlite"));
    QCOMPARE(local.runsImported, 8);

    TRY_OR_FAIL(const SlurmClient client, SlurmClient::detect());
    const auto spec = writeJson(dir / "slurm.json", sweepJson(dir / "sweep", m_model, m_tokenizer));
    const auto manifest = dir / "sweep" / "manifest.json";
    QCOMPARE(cli::runSweep({"submit", spec.string(), "--lowbit", LOWBIT_EXECUTABLE}), 0);
    // Cancel one evaluate task while its array still waits for the quantize array (afterok).
    TRY_OR_FAIL(SweepPlan plan, readManifest(manifest));
    QCOMPARE(plan.submissions.size(), size_t(2));
    QCOMPARE(plan.submissions[0].indices, (std::vector<int>{0, 1, 2, 3}));
    const int victim = plan.tasks.back().index;
    QCOMPARE(cli::runSweep({"cancel", spec.string(), "--task", std::to_string(victim)}), 0);

    TRY_OR_FAIL(auto status, settle(manifest, client));
    for (const SweepTaskStatus &s : status) {
        const std::string expect = s.index == victim ? "cancelled|lost" : "done";
        QVERIFY2(expect.find(s.state) != std::string::npos,
                 ("task " + std::to_string(s.index) + ": " + s.state + " " + s.detail).c_str());
    }
    // Partial results: the 7 finished evaluate runs, and the 4 quantized checkpoints.
    TRY_OR_FAIL(const MergeReport partial, collect(manifest, dir / "slurm.sqlite"));
    QCOMPARE(partial.runsImported, 7);
    QCOMPARE(partial.artifactsImported, 4);

    // Retry resubmits only the cancelled task (its quantize task is done: no dependency).
    QCOMPARE(cli::runSweep({"retry", spec.string(), "--lowbit", LOWBIT_EXECUTABLE}), 0);
    TRY_OR_FAIL(plan, readManifest(manifest));
    QCOMPARE(plan.submissions.size(), size_t(3));
    QCOMPARE(plan.submissions.back().indices, std::vector<int>{victim});
    TRY_OR_FAIL(status, settle(manifest, client));
    for (const SweepTaskStatus &s : status)
        QVERIFY2(s.state == "done", ("task " + std::to_string(s.index) + ": " + s.state).c_str());

    TRY_OR_FAIL(const MergeReport rest, collect(manifest, dir / "slurm.sqlite"));
    QCOMPARE(rest.runsImported, 1);
    QCOMPARE(rest.runsPresent, 7);
    TRY_OR_FAIL(const MergeReport again, collect(manifest, dir / "slurm.sqlite"));
    QCOMPARE(again.runsImported, 0);
    QCOMPARE(again.artifactsImported, 0);
    QVERIFY(again.conflicts.empty());

    // Every evaluate task reused its quantize task's checkpoint instead of quantizing again.
    for (const SweepTask &task : plan.tasks) {
        if (task.stage != StageKind::Evaluate)
            continue;
        TRY_OR_FAIL(RunStore store, RunStore::open(task.dbPath, {.readOnly = true}));
        RunFilter done;
        done.status = RunStatus::Done;
        TRY_OR_FAIL(const auto runs, store.listRuns(done));
        QCOMPARE(runs.size(), size_t(1));
        TRY_OR_FAIL(const auto log, store.logLines(runs[0].id));
        bool reused = false;
        for (const LogLine &line : log)
            reused |= line.message.rfind("reusing quantized checkpoint " +
                                             (dir / "sweep" / "artifacts").string(),
                                         0) == 0;
        QVERIFY2(reused, task.label.c_str());
    }

    // The cluster's results equal the local run's, metric for metric.
    const auto expected = metricTable(dir / "local.sqlite");
    const auto actual = metricTable(dir / "slurm.sqlite");
    QVERIFY(expected.size() >= 8); // every grid point's two tasks, each with its metrics
    for (const auto &[key, value] : expected) {
        QVERIFY2(actual.count(key), key.c_str());
        QCOMPARE(actual.at(key), value);
    }
    QCOMPARE(actual.size(), expected.size());
}

// A quantize task that fails (its calibration file is missing) leaves its evaluate task pending
// on a dependency Slurm can never satisfy; once the file exists, retry resubmits both (the stuck
// one scancelled first) and the sweep completes.
void TestSweepStories260k::failedQuantizeIsRetried() {
    TempDir dir;
    LOWBIT_REQUIRE_SLURM_CLUSTER(cluster, dir / "cluster");
    TRY_OR_FAIL(const SlurmClient client, SlurmClient::detect());
    json value = sweepJson(dir / "sweep", m_model, m_tokenizer);
    value["methods"] = {{{"name", "gptq"}, {"group_size", 32}}};
    value["bits"] = {4};
    value["tasks"] = {{{"name", "tinystories"}, {"limit", 2}, {"context", 64}}};
    value["calibration"]["dataset"] = (dir / "calibration.txt").string();
    const auto spec = writeJson(dir / "sweep.json", value);
    const auto manifest = dir / "sweep" / "manifest.json";
    QCOMPARE(cli::runSweep({"submit", spec.string(), "--lowbit", LOWBIT_EXECUTABLE}), 0);
    // Settle: the quantize task fails; the evaluate task stays pending for good.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(2);
    std::vector<SweepTaskStatus> status;
    while (std::chrono::steady_clock::now() < deadline) {
        TRY_OR_FAIL(SweepPlan plan, readManifest(manifest));
        TRY_OR_FAIL(status, sweepStatus(plan, &client));
        if (status.size() == 2 && status[0].state == "failed" &&
            status[1].detail.find("DependencyNeverSatisfied") != std::string::npos)
            break;
        std::this_thread::sleep_for(std::chrono::milliseconds(300));
    }
    QCOMPARE(status.size(), size_t(2));
    QVERIFY2(status[0].state == "failed", (status[0].state + " " + status[0].detail).c_str());
    QVERIFY2(status[1].detail.find("DependencyNeverSatisfied") != std::string::npos,
             (status[1].state + " " + status[1].detail).c_str());

    std::ofstream(dir / "calibration.txt")
        << test::readFile(test::sharedPath("data/tinystories/tinystories_val_first1000.txt"))
               .substr(0, 4000);
    QCOMPARE(cli::runSweep({"retry", spec.string(), "--lowbit", LOWBIT_EXECUTABLE}), 0);
    TRY_OR_FAIL(SweepPlan plan, readManifest(manifest));
    QCOMPARE(plan.submissions.size(), size_t(4));
    QCOMPARE(plan.submissions[3].indices, std::vector<int>{1});
    TRY_OR_FAIL(status, settle(manifest, client));
    for (const SweepTaskStatus &s : status)
        QVERIFY2(s.state == "done", ("task " + std::to_string(s.index) + ": " + s.state).c_str());
}

QTEST_APPLESS_MAIN(TestSweepStories260k)
#include "test_sweep_stories260k.moc"
