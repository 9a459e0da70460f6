// Crash and concurrency, for real, in child processes (this test's own executable started with
// "--child ..."): a run killed with SIGKILL mid-task keeps every committed sample, the database
// passes PRAGMA integrity_check, the run is marked interrupted at the next open, and resuming it
// ends with exactly the metrics of an uninterrupted run. Two processes writing runs into one
// database at once both succeed (a writer waits for the other, also for a long transaction).
#include "pipeline/run_executor.h"

#include "line_nll_task.h"
#include "shared_data.h"
#include "temp_dir.h"

#include <sqlite3.h>

#include <QCoreApplication>
#include <QProcess>
#include <QtTest>

#include <cstdio>
#include <fstream>
#include <thread>

using namespace lowbit;
using lowbit::test::TempDir;
using nlohmann::json;

namespace {

// `real`: the evaluators' tasks (makeTask over the shared data folder); else the test-support
// LineNllTask, which can be told to stall (LOWBIT_TEST_STALL_AFTER).
PipelineContext makeContext(const std::filesystem::path &text, int sampleBatch, bool real = false) {
    PipelineContext context;
    if (real)
        context.makeTask = [](const std::string &name) {
            return makeTask(name, test::sharedPath("data"));
        };
    else
        context.makeTask = [text](const std::string &name) -> Result<std::unique_ptr<Task>> {
            return std::unique_ptr<Task>(std::make_unique<test::LineNllTask>(text, name));
        };
    context.sampleBatch = sampleBatch;
    context.commitIntervalMs =
        3600 * 1000; // commit by count only: the test knows what is committed
    return context;
}

json specJson(const std::string &task, int64_t limit) {
    return {{"checkpoint", test::sharedPath("data/llama2c/stories260K.bin").string()},
            {"tokenizer", test::sharedPath("data/llama2c/tok512.bin").string()},
            {"method", {{"name", "none"}}},
            {"tasks", json::array({{{"name", task}, {"limit", limit}, {"context", 40}}})},
            {"threads", 1}};
}

std::filesystem::path textPath() {
    return test::sharedPath("data/tinystories/tinystories_val_first1000.txt");
}

// Child: submit (forced) and execute `runs` runs of task `task`; prints each run id.
int childRun(const std::string &db, const std::string &task, int64_t limit, int runs, int batch,
             bool real) {
    auto store = RunStore::open(db);
    if (!store.ok()) {
        std::fprintf(stderr, "%s\n", store.error().toString().c_str());
        return 3;
    }
    const PipelineContext context = makeContext(textPath(), batch, real);
    for (int r = 0; r < runs; ++r) {
        auto spec = parseJobSpec(specJson(task, limit));
        auto submission = submitJob(*store, *spec, context, /*force=*/true);
        if (!submission.ok() || !submission->runId) {
            std::fprintf(stderr, "submit: %s\n",
                         submission.ok() ? "nothing" : submission.error().toString().c_str());
            return 4;
        }
        std::printf("%lld\n", static_cast<long long>(*submission->runId));
        std::fflush(stdout);
        NullProgress progress;
        auto outcome = executeRun(*store, *submission->runId, context, progress);
        if (!outcome.ok() || outcome->status != RunStatus::Done) {
            std::fprintf(stderr, "run: %s\n",
                         outcome.ok() ? outcome->error.c_str()
                                      : outcome.error().toString().c_str());
            return 5;
        }
    }
    return 0;
}

// Child: hold the write lock for `ms` milliseconds.
int childHold(const std::string &db, int ms) {
    auto store = RunStore::open(db);
    if (!store.ok())
        return 3;
    auto transaction = Transaction::begin(store->database());
    if (!transaction.ok())
        return 4;
    std::printf("locked\n");
    std::fflush(stdout);
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    return transaction->commit().ok() ? 0 : 5;
}

std::string integrity(const std::filesystem::path &path) {
    sqlite3 *db = nullptr;
    sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr);
    sqlite3_stmt *statement = nullptr;
    sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &statement, nullptr);
    std::string result = sqlite3_step(statement) == SQLITE_ROW
                             ? reinterpret_cast<const char *>(sqlite3_column_text(statement, 0))
                             : "no answer";
    sqlite3_finalize(statement);
    sqlite3_close(db);
    return result;
}

void startChild(QProcess &process, const QStringList &arguments,
                const QProcessEnvironment &env = QProcessEnvironment::systemEnvironment()) {
    process.setProcessEnvironment(env);
    process.setProcessChannelMode(QProcess::SeparateChannels);
    process.start(QCoreApplication::applicationFilePath(), QStringList{"--child"} + arguments);
}

} // namespace

class TestRunCrash : public QObject {
    Q_OBJECT
private slots:
    void init();
    void killNineThenResume();
    void killNineThenResumePerplexityTask();
    void twoProcessesWriteOneDatabase();
};

void TestRunCrash::init() {
    LOWBIT_REQUIRE_SHARED_FILE(model, "data/llama2c/stories260K.bin");
    LOWBIT_REQUIRE_SHARED_FILE(tokenizer, "data/llama2c/tok512.bin");
    LOWBIT_REQUIRE_SHARED_FILE(text, "data/tinystories/tinystories_val_first1000.txt");
}

void TestRunCrash::killNineThenResume() {
    TempDir dir;
    const auto db = dir / "runs.sqlite";
    const int batch = 5, stallAfter = 13, limit = 30;
    QProcess child;
    QProcessEnvironment env = QProcessEnvironment::systemEnvironment();
    env.insert("LOWBIT_TEST_STALL_AFTER", QString::number(stallAfter));
    startChild(child,
               {"run", QString::fromStdString(db.string()), "lines", QString::number(limit), "1",
                QString::number(batch)},
               env);
    QVERIFY(child.waitForStarted());
    QVERIFY(child.waitForReadyRead(60000));
    const int64_t runId = child.readLine().trimmed().toLongLong();
    QVERIFY(runId > 0);
    // Wait until the child has committed two batches (10 samples); it stalls after 13, so the
    // third batch can never be complete: samples 11..13 exist only in the child's memory.
    std::vector<SampleRecord> committed;
    for (int attempt = 0; attempt < 6000 && committed.size() < 10; ++attempt) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        auto reader = RunStore::open(db, {.readOnly = true});
        if (reader.ok()) {
            auto samples = reader->samples(runId, "lines");
            if (samples.ok())
                committed = *samples;
        }
    }
    QCOMPARE(committed.size(), size_t(10));
    QCOMPARE(child.state(), QProcess::Running);
    child.kill(); // SIGKILL
    QVERIFY(child.waitForFinished());
    QCOMPARE(child.exitStatus(), QProcess::CrashExit);

    QCOMPARE(integrity(db), std::string("ok"));
    {
        RunStore store = RunStore::open(db).value(); // marks the dead child's run
        const RunRecord run = store.run(runId).value();
        QCOMPARE(run.status, RunStatus::Interrupted);
        QVERIFY2(run.error.find(std::to_string(child.processId())) != std::string::npos ||
                     !run.error.empty(),
                 run.error.c_str());
        const auto after = store.samples(runId, "lines").value();
        QCOMPARE(after.size(), committed.size()); // no committed sample lost, none half-written
        for (size_t i = 0; i < after.size(); ++i) {
            QCOMPARE(after[i].docId, committed[i].docId);
            QCOMPARE(after[i].nll, committed[i].nll);
        }
    }
    // Resume in another process, to the end.
    QProcess resumer;
    startChild(resumer, {"resume", QString::fromStdString(db.string()), QString::number(runId)});
    QVERIFY(resumer.waitForFinished(120000));
    QVERIFY2(resumer.exitCode() == 0, resumer.readAllStandardError().constData());
    // An uninterrupted run of the same spec, in this process.
    RunStore store = RunStore::open(db).value();
    const PipelineContext context = makeContext(textPath(), batch);
    auto fresh = submitJob(store, parseJobSpec(specJson("lines", limit)).value(), context, true);
    NullProgress progress;
    QCOMPARE(executeRun(store, *fresh->runId, context, progress)->status, RunStatus::Done);

    QCOMPARE(store.run(runId)->status, RunStatus::Done);
    const auto resumed = store.samples(runId, "lines").value();
    const auto uninterrupted = store.samples(*fresh->runId, "lines").value();
    QCOMPARE(resumed.size(), size_t(limit));
    QCOMPARE(uninterrupted.size(), size_t(limit));
    for (size_t i = 0; i < resumed.size(); ++i) {
        QCOMPARE(resumed[i].docId, uninterrupted[i].docId);
        QCOMPARE(resumed[i].nll, uninterrupted[i].nll);
        QCOMPARE(resumed[i].tokens, uninterrupted[i].tokens);
    }
    const auto a = store.metrics(runId).value(), b = store.metrics(*fresh->runId).value();
    QCOMPARE(a.size(), size_t(2));
    QCOMPARE(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) {
        QCOMPARE(a[i].metric.name, b[i].metric.name);
        QCOMPARE(a[i].metric.value, b[i].metric.value); // bit for bit
        QCOMPARE(a[i].metric.n, b[i].metric.n);
    }
    QCOMPARE(integrity(db), std::string("ok"));
}

void TestRunCrash::killNineThenResumePerplexityTask() {
    // The same with the evaluators' tinystories perplexity task (one sample per 40-token chunk),
    // killed once at least two batches are committed: it cannot be told to stall, so the number
    // stored at the kill is whatever whole batches had been committed by then.
    TempDir dir;
    const auto db = dir / "runs.sqlite";
    const int batch = 5, limit = 1500;
    QProcess child;
    startChild(child, {"run", QString::fromStdString(db.string()), "tinystories",
                       QString::number(limit), "1", QString::number(batch), "real"});
    QVERIFY(child.waitForStarted());
    QVERIFY(child.waitForReadyRead(60000));
    const int64_t runId = child.readLine().trimmed().toLongLong();
    QVERIFY(runId > 0);
    std::vector<SampleRecord> seen;
    for (int attempt = 0; attempt < 6000 && seen.size() < 10; ++attempt) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        auto reader = RunStore::open(db, {.readOnly = true});
        if (!reader.ok())
            continue;
        auto samples = reader->samples(runId, "tinystories");
        if (samples.ok())
            seen = *samples;
    }
    QVERIFY(seen.size() >= 10);
    child.kill();
    QVERIFY(child.waitForFinished());
    QCOMPARE(integrity(db), std::string("ok"));
    {
        RunStore store = RunStore::open(db).value();
        QCOMPARE(store.run(runId)->status, RunStatus::Interrupted);
        const auto after = store.samples(runId, "tinystories").value();
        QVERIFY2(after.size() < size_t(limit), "the child finished before it was killed");
        QCOMPARE(after.size() % batch, size_t(0)); // whole batches only
        QVERIFY(after.size() >= seen.size());
        for (size_t i = 0; i < seen.size(); ++i) { // nothing committed was lost or changed
            QCOMPARE(after[i].docId, seen[i].docId);
            QCOMPARE(after[i].nll, seen[i].nll);
        }
    }
    QProcess resumer;
    startChild(resumer,
               {"resume", QString::fromStdString(db.string()), QString::number(runId), "real"});
    QVERIFY(resumer.waitForFinished(300000));
    QVERIFY2(resumer.exitCode() == 0, resumer.readAllStandardError().constData());
    RunStore store = RunStore::open(db).value();
    const PipelineContext context = makeContext(textPath(), batch, true);
    auto fresh =
        submitJob(store, parseJobSpec(specJson("tinystories", limit)).value(), context, true);
    QVERIFY(fresh.ok() && fresh->runId);
    NullProgress progress;
    QCOMPARE(executeRun(store, *fresh->runId, context, progress)->status, RunStatus::Done);
    const auto resumed = store.samples(runId, "tinystories").value();
    const auto uninterrupted = store.samples(*fresh->runId, "tinystories").value();
    QCOMPARE(resumed.size(), size_t(limit));
    QCOMPARE(resumed.size(), uninterrupted.size());
    const auto a = store.metrics(runId).value(), b = store.metrics(*fresh->runId).value();
    QVERIFY(!a.empty());
    QCOMPARE(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) {
        QCOMPARE(a[i].metric.name, b[i].metric.name);
        QCOMPARE(a[i].metric.value, b[i].metric.value); // bit for bit
        QCOMPARE(a[i].metric.stderr_, b[i].metric.stderr_);
        QCOMPARE(a[i].metric.n, b[i].metric.n);
    }
    QCOMPARE(integrity(db), std::string("ok"));
}

void TestRunCrash::twoProcessesWriteOneDatabase() {
    TempDir dir;
    const auto db = dir / "runs.sqlite";
    QVERIFY(RunStore::open(db).ok());
    // One process holds the write lock for a while: the writers must wait, not fail.
    QProcess holder;
    startChild(holder, {"hold", QString::fromStdString(db.string()), "1500"});
    QVERIFY(holder.waitForReadyRead(30000));
    QProcess first, second;
    startChild(first, {"run", QString::fromStdString(db.string()), "lines", "12", "3", "1"});
    startChild(second, {"run", QString::fromStdString(db.string()), "lines2", "12", "3", "1"});
    // This process reads meanwhile (WAL: readers never block).
    for (int i = 0; i < 20; ++i) {
        auto reader = RunStore::open(db, {.readOnly = true});
        QVERIFY(reader.ok());
        QVERIFY(reader->listRuns().ok());
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    for (QProcess *process : {&holder, &first, &second}) {
        QVERIFY(process->waitForFinished(180000));
        QVERIFY2(process->exitStatus() == QProcess::NormalExit && process->exitCode() == 0,
                 process->readAllStandardError().constData());
    }
    QCOMPARE(integrity(db), std::string("ok"));
    RunStore store = RunStore::open(db).value();
    const auto runs = store.listRuns().value();
    QCOMPARE(runs.size(), size_t(6));
    std::map<std::string, std::vector<double>> perplexities;
    for (const RunRecord &run : runs) {
        QCOMPARE(run.status, RunStatus::Done);
        const auto tasks = store.runTasks(run.id).value();
        QCOMPARE(tasks.size(), size_t(1));
        QCOMPARE(tasks[0].samples, int64_t(12));
        perplexities[tasks[0].task].push_back(store.metrics(run.id)->front().metric.value);
    }
    // The same measurement gives the same number whichever process made it.
    for (const auto &[task, values] : perplexities) {
        QCOMPARE(values.size(), size_t(3));
        QCOMPARE(values[1], values[0]);
        QCOMPARE(values[2], values[0]);
    }
}

int main(int argc, char **argv) {
    if (argc >= 2 && std::string(argv[1]) == "--child") {
        const std::vector<std::string> args(argv + 2, argv + argc);
        if ((args.size() == 6 || args.size() == 7) && args[0] == "run")
            return childRun(args[1], args[2], std::stoll(args[3]), std::stoi(args[4]),
                            std::stoi(args[5]), args.size() == 7);
        if (args.size() == 3 && args[0] == "hold")
            return childHold(args[1], std::stoi(args[2]));
        if ((args.size() == 3 || args.size() == 4) && args[0] == "resume") {
            auto store = RunStore::open(args[1]);
            if (!store.ok())
                return 3;
            NullProgress progress;
            auto outcome = executeRun(*store, std::stoll(args[2]),
                                      makeContext(textPath(), 5, args.size() == 4), progress);
            return outcome.ok() && outcome->status == RunStatus::Done ? 0 : 5;
        }
        return 2;
    }
    QCoreApplication app(argc, argv);
    TestRunCrash test;
    return QTest::qExec(&test, argc, argv);
}

#include "test_run_crash.moc"
