// RunStore: what is written reads back exactly; WAL/foreign keys/schema version; deletes cascade;
// the content-hash cache; stale runs of dead processes become interrupted.
#include "run_store.h"
#include "schema.h"

#include "core/sha256.h"
#include "temp_dir.h"

#include <QtTest>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <fstream>
#include <random>

using namespace lowbit;
using lowbit::test::TempDir;
using nlohmann::json;

namespace {

std::mt19937_64 &rng() {
    static std::mt19937_64 engine(std::random_device{}());
    return engine;
}

double uniform(double low, double high) {
    return std::uniform_real_distribution<double>(low, high)(rng());
}

std::string randomText(size_t length) {
    static const char kChars[] = "abcdefghijklmnopqrstuvwxyz ,\"'\n|\\{}0123456789";
    std::string text;
    for (size_t i = 0; i < length; ++i)
        text += kChars[rng()() % (sizeof kChars - 1)];
    return text;
}

SampleRecord randomSample(int index) {
    SampleRecord s;
    s.docId = "doc-" + std::to_string(index);
    s.docHash = sha256Hex(randomText(20));
    s.promptHash = sha256Hex(randomText(20));
    s.target = randomText(12);
    s.output = randomText(8);
    for (int c = 0; c < 4; ++c)
        s.choiceLogLikelihoods.push_back(uniform(-80, -0.001));
    s.correct = int(rng()() % 2);
    s.tokens = int64_t(1 + rng()() % 500);
    s.nll = uniform(0.1, 3000);
    s.extra = {{"acc_norm_choice", int(rng()() % 4)}, {"note", randomText(5)}};
    return s;
}

NewRun newRun(const std::string &model = "/models/stories260K.bin",
              const std::string &method = "none") {
    NewRun run;
    run.spec = {{"checkpoint", model}, {"method", {{"name", method}}}};
    run.model = model;
    run.checkpointHash = sha256Hex(model);
    run.method = method;
    run.methodKey = json{{"name", method}}.dump();
    run.device = "cpu";
    run.tasks = {{"tinystories", R"({"name":"tinystories"})", {{"name", "tinystories"}}},
                 {"arc_easy", R"({"name":"arc_easy"})", {{"name", "arc_easy"}}}};
    return run;
}

RunStore openStore(const std::filesystem::path &path) {
    auto store = RunStore::open(path);
    if (!store.ok())
        qFatal("open %s: %s", path.c_str(), store.error().toString().c_str());
    return std::move(store).value();
}

std::string queryText(Database &db, const std::string &sql) {
    auto statement = db.prepare(sql);
    if (!statement.ok())
        return "";
    auto row = statement->step();
    if (!row.ok() || !*row)
        return "";
    return statement->text(0);
}

// A pid that certainly belonged to a process that has ended.
int64_t deadPid() {
    const pid_t child = fork();
    if (child == 0)
        _exit(0);
    int status = 0;
    waitpid(child, &status, 0);
    return child;
}

} // namespace

class TestRunStore : public QObject {
    Q_OBJECT
private slots:
    void freshStoreSettings();
    void roundTrip();
    void batchIsAllOrNothing();
    void listFilters();
    void deleteCascades();
    void measuredAndArtifacts();
    void contentHashCache();
    void staleRunsBecomeInterrupted();
    void claimRules();
};

void TestRunStore::freshStoreSettings() {
    TempDir dir;
    RunStore store = openStore(dir / "sub/folder/runs.sqlite");
    QCOMPARE(queryText(store.database(), "PRAGMA journal_mode"), std::string("wal"));
    QCOMPARE(store.database().queryInteger("PRAGMA foreign_keys")->value(), int64_t(1));
    QCOMPARE(store.database().queryInteger("PRAGMA user_version")->value(),
             int64_t(kSchemaVersion));
    QCOMPARE(store.database().queryInteger("PRAGMA application_id")->value(),
             int64_t(kApplicationId));
    // Opening again (already migrated) changes nothing.
    RunStore again = openStore(dir / "sub/folder/runs.sqlite");
    QCOMPARE(again.database().queryInteger("PRAGMA user_version")->value(),
             int64_t(kSchemaVersion));
}

void TestRunStore::roundTrip() {
    TempDir dir;
    RunStore store = openStore(dir / "runs.sqlite");
    const NewRun spec = newRun();
    auto runId = store.createRun(spec);
    QVERIFY(runId.ok());
    QVERIFY(store.claimRun(*runId, ProcessIdentity::current()).ok());
    std::vector<SampleRecord> written;
    for (int i = 0; i < 70; ++i)
        written.push_back(randomSample(i));
    QVERIFY(store.appendSamples(*runId, "tinystories", std::span(written).first(30)).ok());
    QVERIFY(store.appendSamples(*runId, "tinystories", std::span(written).subspan(30)).ok());
    auto read = store.samples(*runId, "tinystories");
    QVERIFY(read.ok());
    QCOMPARE(read->size(), written.size());
    for (size_t i = 0; i < written.size(); ++i) {
        const SampleRecord &a = written[i], &b = (*read)[i];
        QCOMPARE(b.docId, a.docId);
        QCOMPARE(b.docHash, a.docHash);
        QCOMPARE(b.promptHash, a.promptHash);
        QCOMPARE(b.target, a.target);
        QCOMPARE(b.output, a.output);
        QCOMPARE(b.choiceLogLikelihoods, a.choiceLogLikelihoods); // bit-exact doubles
        QCOMPARE(b.correct, a.correct);
        QCOMPARE(b.tokens, a.tokens);
        QCOMPARE(b.nll, a.nll);
        QCOMPARE(b.extra, a.extra);
    }
    QCOMPARE(store.sampleDocIds(*runId, "tinystories")->size(), size_t(70));
    QVERIFY(store.sampleDocIds(*runId, "arc_easy")->empty());

    const std::vector<MetricValue> metrics = {{"ppl", uniform(1, 100), uniform(0, 1), 70},
                                              {"nll", uniform(0, 5), uniform(0, 1), 12345}};
    QVERIFY(store.startTask(*runId, "tinystories", {{"context", 256}}, std::nullopt).ok());
    QVERIFY(store.completeTask(*runId, "tinystories", metrics).ok());
    QVERIFY(store.addPhaseSeconds(*runId, "load", 1.5).ok());
    QVERIFY(store.addPhaseSeconds(*runId, "load", 0.25).ok());
    QVERIFY(store.log(*runId, "info", "hello").ok());
    QVERIFY(store.finishRun(*runId, RunStatus::Done).ok());

    auto run = store.run(*runId);
    QVERIFY(run.ok());
    QCOMPARE(run->status, RunStatus::Done);
    QCOMPARE(run->model, spec.model);
    QCOMPARE(run->checkpointHash, spec.checkpointHash);
    QCOMPARE(run->spec, spec.spec);
    QCOMPARE(run->host, currentHostName());
    QCOMPARE(run->pid, int64_t(getpid()));
    QVERIFY(!run->createdAt.empty() && !run->startedAt.empty() && !run->finishedAt.empty());
    QCOMPARE(run->phaseSeconds["load"].get<double>(), 1.75);
    auto stored = store.metrics(*runId);
    QCOMPARE(stored->size(), size_t(2));
    QCOMPARE((*stored)[0].metric.value, metrics[0].value);
    QCOMPARE((*stored)[1].metric.stderr_, metrics[1].stderr_);
    QCOMPARE((*stored)[1].metric.n, int64_t(12345));
    auto tasks = store.runTasks(*runId);
    QCOMPARE(tasks->size(), size_t(2));
    QCOMPARE((*tasks)[0].state, TaskState::Done);
    QCOMPARE((*tasks)[0].protocol["context"].get<int>(), 256);
    QCOMPARE((*tasks)[0].samples, int64_t(70));
    QCOMPARE((*tasks)[1].state, TaskState::Pending);
    QCOMPARE(store.logLines(*runId)->back().message, std::string("hello"));
}

void TestRunStore::batchIsAllOrNothing() {
    TempDir dir;
    RunStore store = openStore(dir / "runs.sqlite");
    const int64_t runId = store.createRun(newRun()).value();
    std::vector<SampleRecord> batch = {randomSample(1), randomSample(2)};
    QVERIFY(store.appendSamples(runId, "tinystories", batch).ok());
    // The second batch repeats document 2 after a new document 3: nothing of it may be kept.
    std::vector<SampleRecord> bad = {randomSample(3), randomSample(2)};
    auto status = store.appendSamples(runId, "tinystories", bad);
    QVERIFY(!status.ok());
    QVERIFY2(status.error().message.find("doc-2") != std::string::npos,
             status.error().message.c_str());
    QCOMPARE(store.samples(runId, "tinystories")->size(), size_t(2));
    // A non-finite NLL is refused, not stored as something else.
    SampleRecord nan = randomSample(4);
    nan.nll = std::numeric_limits<double>::quiet_NaN();
    QVERIFY(!store.appendSamples(runId, "tinystories", std::span(&nan, 1)).ok());
    QCOMPARE(store.samples(runId, "tinystories")->size(), size_t(2));
}

void TestRunStore::listFilters() {
    TempDir dir;
    RunStore store = openStore(dir / "runs.sqlite");
    const int64_t a = store.createRun(newRun("/m/llama3-8b", "none")).value();
    NewRun gptq = newRun("/m/llama3-8b", "gptq");
    gptq.tasks = {{"wikitext2", "{}", json::object()}};
    const int64_t b = store.createRun(gptq).value();
    const int64_t c = store.createRun(newRun("/m/stories260K.bin", "rtn")).value();
    QVERIFY(store.finishRun(c, RunStatus::Failed, "boom").ok());
    auto ids = [&](const RunFilter &filter) {
        std::vector<int64_t> out;
        const std::vector<RunRecord> runs = store.listRuns(filter).value();
        for (const RunRecord &run : runs)
            out.push_back(run.id);
        return out;
    };
    QCOMPARE(ids({}), (std::vector<int64_t>{a, b, c}));
    QCOMPARE(ids({.model = "llama3"}), (std::vector<int64_t>{a, b}));
    QCOMPARE(ids({.method = "gptq"}), (std::vector<int64_t>{b}));
    QCOMPARE(ids({.task = "arc_easy"}), (std::vector<int64_t>{a, c}));
    QCOMPARE(ids({.status = RunStatus::Failed}), (std::vector<int64_t>{c}));
    QCOMPARE(store.run(c)->error, std::string("boom"));
    QVERIFY(!parseRunStatus("finished").ok());
}

void TestRunStore::deleteCascades() {
    TempDir dir;
    RunStore store = openStore(dir / "runs.sqlite");
    const int64_t keep = store.createRun(newRun()).value();
    const int64_t gone = store.createRun(newRun()).value();
    for (int64_t id : {keep, gone}) {
        std::vector<SampleRecord> batch = {randomSample(1), randomSample(2)};
        QVERIFY(store.appendSamples(id, "tinystories", batch).ok());
        std::vector<MetricValue> metrics = {{"ppl", 2.5, 0.1, 2}};
        QVERIFY(store.completeTask(id, "tinystories", metrics).ok());
        QVERIFY(store.log(id, "info", "x").ok());
    }
    ArtifactRecord artifact{0,          gone, "hash", "key", "quantized-checkpoint",
                            "/nowhere", 10,   "h",    ""};
    QVERIFY(store.addArtifact(artifact).ok());
    QVERIFY(store.finishRun(gone, RunStatus::Done).ok());
    QVERIFY(store.deleteRun(gone).ok());
    QVERIFY(!store.run(gone).ok());
    QCOMPARE(store.run(gone).error().code, ErrorCode::NotFound);
    Database &db = store.database();
    for (const char *table : {"samples", "metrics", "run_tasks", "run_log"})
        QCOMPARE(db.queryInteger(std::string("SELECT count(*) FROM ") + table +
                                 " WHERE run_id = " + std::to_string(gone))
                     ->value(),
                 int64_t(0));
    QCOMPARE(db.queryInteger("SELECT count(*) FROM artifacts WHERE run_id IS NULL")->value(),
             int64_t(1));
    QCOMPARE(store.samples(keep, "tinystories")->size(), size_t(2));
    QVERIFY(!store.deleteRun(gone).ok());
}

void TestRunStore::measuredAndArtifacts() {
    TempDir dir;
    RunStore store = openStore(dir / "runs.sqlite");
    const NewRun spec = newRun();
    const int64_t runId = store.createRun(spec).value();
    QVERIFY(
        !store.findMeasured(spec.checkpointHash, spec.methodKey, spec.tasks[0].key)->has_value());
    std::vector<MetricValue> metrics = {{"ppl", 2.5, 0.1, 2}};
    QVERIFY(store.completeTask(runId, "tinystories", metrics).ok());
    QCOMPARE(store.findMeasured(spec.checkpointHash, spec.methodKey, spec.tasks[0].key)->value(),
             runId);
    QVERIFY(
        !store.findMeasured(spec.checkpointHash, spec.methodKey, spec.tasks[1].key)->has_value());
    QVERIFY(!store.findMeasured("other", spec.methodKey, spec.tasks[0].key)->has_value());

    // An artifact is found only while its file exists with the recorded content.
    const auto file = dir / "weights.bin";
    std::ofstream(file) << randomText(100);
    ArtifactRecord artifact{
        0, runId, "ck", "mk", "quantized-checkpoint", file.string(), 100, sha256File(file).value(),
        ""};
    QVERIFY(store.addArtifact(artifact).ok());
    QCOMPARE(store.findArtifact("ck", "mk", "quantized-checkpoint")->value().path, file.string());
    QVERIFY(!store.findArtifact("ck", "other", "quantized-checkpoint")->has_value());
    std::ofstream(file) << randomText(101);
    QVERIFY(!store.findArtifact("ck", "mk", "quantized-checkpoint")->has_value());
    std::filesystem::remove(file);
    QVERIFY(!store.findArtifact("ck", "mk", "quantized-checkpoint")->has_value());
}

void TestRunStore::contentHashCache() {
    TempDir dir;
    RunStore store = openStore(dir / "runs.sqlite");
    const auto file = dir / "model.bin";
    const std::string first = randomText(4000);
    std::ofstream(file, std::ios::binary) << first;
    QCOMPARE(store.contentHash(file).value(), sha256Hex(first));
    struct stat before {};
    ::stat(file.c_str(), &before);
    // Same size, same mtime, other bytes: the cached hash is returned (the file is not re-read).
    std::string second = first;
    second[100] = second[100] == 'x' ? 'y' : 'x';
    std::ofstream(file, std::ios::binary) << second;
    const timespec times[2] = {before.st_atim, before.st_mtim};
    QCOMPARE(::utimensat(AT_FDCWD, file.c_str(), times, 0), 0);
    QCOMPARE(store.contentHash(file).value(), sha256Hex(first));
    // A new mtime invalidates the entry.
    const timespec later[2] = {before.st_atim, {before.st_mtim.tv_sec + 5, before.st_mtim.tv_nsec}};
    QCOMPARE(::utimensat(AT_FDCWD, file.c_str(), later, 0), 0);
    QCOMPARE(store.contentHash(file).value(), sha256Hex(second));

    // A directory: "relative path \t file hash \n" lines, sorted, hidden entries skipped.
    const auto model = dir / "hf";
    std::filesystem::create_directories(model / "sub");
    std::filesystem::create_directories(model / ".cache");
    std::ofstream(model / "config.json") << "{\"a\": 1}";
    std::ofstream(model / "sub" / "b.safetensors") << "weights";
    std::ofstream(model / ".cache" / "junk") << "ignored";
    const std::string expected = sha256Hex("config.json\t" + sha256Hex("{\"a\": 1}") + "\n" +
                                           "sub/b.safetensors\t" + sha256Hex("weights") + "\n");
    QCOMPARE(store.contentHash(model).value(), expected);
    auto missing = store.contentHash(dir / "nope");
    QVERIFY(!missing.ok());
    QCOMPARE(missing.error().code, ErrorCode::NotFound);
}

void TestRunStore::staleRunsBecomeInterrupted() {
    TempDir dir;
    const auto path = dir / "runs.sqlite";
    int64_t dead = 0, mine = 0, remoteOld = 0, remoteFresh = 0, rebooted = 0;
    {
        RunStore store = openStore(path);
        dead = store.createRun(newRun()).value();
        mine = store.createRun(newRun()).value();
        remoteOld = store.createRun(newRun()).value();
        remoteFresh = store.createRun(newRun()).value();
        rebooted = store.createRun(newRun()).value();
        for (int64_t id : {dead, mine, remoteOld, remoteFresh, rebooted})
            QVERIFY(store.claimRun(id, ProcessIdentity::current()).ok());
        QVERIFY(store.database()
                    .exec("UPDATE runs SET pid = " + std::to_string(deadPid()) +
                          " WHERE id = " + std::to_string(dead))
                    .ok());
        QVERIFY(store.database()
                    .exec("UPDATE runs SET host = 'elsewhere', heartbeat_at = "
                          "'2001-01-01T00:00:00.000Z' WHERE id = " +
                          std::to_string(remoteOld))
                    .ok());
        QVERIFY(store.database()
                    .exec("UPDATE runs SET host = 'elsewhere' WHERE id = " +
                          std::to_string(remoteFresh))
                    .ok());
        QVERIFY(store.database()
                    .exec("UPDATE runs SET boot_id = 'an-earlier-boot' WHERE id = " +
                          std::to_string(rebooted))
                    .ok());
    }
    RunStore store = openStore(path);
    QCOMPARE(store.run(dead)->status, RunStatus::Interrupted);
    QVERIFY(store.run(dead)->error.find("ended without finishing") != std::string::npos);
    QCOMPARE(store.run(mine)->status, RunStatus::Running);
    QCOMPARE(store.run(remoteOld)->status, RunStatus::Interrupted);
    QCOMPARE(store.run(remoteFresh)->status, RunStatus::Running);
    QCOMPARE(store.run(rebooted)->status, RunStatus::Interrupted);
    QVERIFY(isResumable(RunStatus::Interrupted));
    QVERIFY(store.logLines(dead)->back().message.find("marked interrupted") != std::string::npos);
}

void TestRunStore::claimRules() {
    TempDir dir;
    RunStore store = openStore(dir / "runs.sqlite");
    const int64_t runId = store.createRun(newRun()).value();
    // Running in our parent, a live process: another process may not take it.
    ProcessIdentity parent;
    parent.host = currentHostName();
    parent.pid = getppid();
    parent.startTicks = processStartTicks(parent.pid);
    parent.bootId = currentBootId();
    QVERIFY(parent.alive());
    QVERIFY(store.database()
                .exec("UPDATE runs SET status = 'running', pid = " + std::to_string(parent.pid) +
                      ", pid_start = " + std::to_string(parent.startTicks))
                .ok());
    auto refused = store.claimRun(runId, ProcessIdentity::current());
    QVERIFY(!refused.ok());
    QVERIFY2(refused.error().message.find(std::to_string(parent.pid)) != std::string::npos,
             refused.error().message.c_str());
    QVERIFY(!store.deleteRun(runId).ok());
    QVERIFY(store.finishRun(runId, RunStatus::Cancelled, "stop").ok());
    QVERIFY(store.claimRun(runId, ProcessIdentity::current()).ok());
    QVERIFY(store.finishRun(runId, RunStatus::Done).ok());
    QVERIFY(!store.claimRun(runId, ProcessIdentity::current()).ok());
    QCOMPARE(store.claimRun(999, ProcessIdentity::current()).error().code, ErrorCode::NotFound);
    // A queued run of this (live) process may be executing in a runner here: not deleted.
    const int64_t queued = store.createRun(newRun()).value();
    QVERIFY(!store.deleteRun(queued).ok());
    QVERIFY(store.finishRun(queued, RunStatus::Cancelled).ok());
    QVERIFY(store.deleteRun(queued).ok());
}

QTEST_APPLESS_MAIN(TestRunStore)
#include "test_run_store.moc"
