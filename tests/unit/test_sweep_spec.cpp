// Sweeps without a model: spec parsing and its field-naming errors, expansion into stage-1 and
// stage-2 tasks with their dependencies, the manifest round trip, the batch script, and
// RunStore::mergeFrom on hand-built stores (import, idempotence, unfinished runs left out,
// conflicts detected, artifacts deduplicated).
#include "cli_capture.h"
#include "cli_commands.h"
#include "run_store.h"
#include "sweep/sweep_plan.h"
#include "sweep/sweep_slurm.h"

#include "temp_dir.h"

#include <QtTest>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>

using namespace lowbit;
using namespace lowbit::sweep;
using lowbit::test::TempDir;
using nlohmann::json;

namespace {

json baseSpec(const std::filesystem::path &output) {
    return {{"version", 1},
            {"name", "grid"},
            {"output", output.string()},
            {"checkpoints", {"/m/a.bin", {{"checkpoint", "/m/b"}, {"tokenizer", "/m/tok.bin"}}}},
            {"methods", {"none", "rtn", {{"name", "gptq"}, {"group_size", 32}}}},
            {"bits", {2, 4}},
            {"tasks", {{{"name", "tinystories"}, {"limit", 8}}, "wikitext2"}},
            {"threads", 1}};
}

std::string errorOf(const json &spec) {
    auto parsed = parseSweepSpec(spec);
    return parsed.ok() ? std::string("(parsed)") : parsed.error().message;
}

std::mt19937_64 &rng() {
    static std::mt19937_64 generator{std::random_device{}()};
    return generator;
}

double uniform(double lo, double hi) {
    return std::uniform_real_distribution<double>(lo, hi)(rng());
}

// A done run with `samples` random perplexity samples and their metric, as a task would leave it.
int64_t doneRun(RunStore &store, const std::string &method, int samples) {
    NewRun run;
    run.spec = {{"method", method}, {"salt", uniform(0, 1)}};
    run.model = "/m/a.bin";
    run.checkpointHash = "c0ffee";
    run.method = method;
    run.methodKey = json{{"name", method}}.dump();
    run.device = "cpu";
    run.tasks = {{"tinystories", "key-ts", {{"name", "tinystories"}}}};
    const int64_t id = store.createRun(run).value();
    if (!store.claimRun(id, ProcessIdentity::current()).ok())
        qFatal("claim failed");
    if (!store.startTask(id, "tinystories", {{"context", 64}}, std::nullopt).ok())
        qFatal("start failed");
    std::vector<SampleRecord> records;
    double nll = 0;
    int64_t tokens = 0;
    for (int i = 0; i < samples; ++i) {
        SampleRecord s;
        s.docId = std::to_string(i);
        s.tokens = 10 + i;
        s.nll = uniform(5, 50);
        nll += s.nll;
        tokens += s.tokens;
        records.push_back(s);
    }
    if (!store.appendSamples(id, "tinystories", records).ok())
        qFatal("samples failed");
    const std::vector<MetricValue> metrics = {{"ppl", std::exp(nll / double(tokens)), 0, tokens}};
    if (!store.completeTask(id, "tinystories", metrics).ok() ||
        !store.finishRun(id, RunStatus::Done).ok())
        qFatal("finish failed");
    return id;
}

using Output = test::CliOutput;

// Runs `lowbit sweep ARGS` in-process with stdout and stderr captured into files in `dir`.
Output sweepCommand(const std::vector<std::string> &args, const std::filesystem::path &dir) {
    return test::runCli(cli::runSweep, args, dir);
}

int64_t count(RunStore &store, const std::string &sql) {
    return store.database().queryInteger(sql).value().value_or(-1);
}

} // namespace

class TestSweepSpec : public QObject {
    Q_OBJECT
private slots:
    void parsesAndRoundTrips();
    void namesBadFields();
    void expandsWithDependencies();
    void manifestRoundTrip();
    void batchScript();
    void mergeIsIdempotent();
    void mergeDetectsConflicts();
    void withoutSlurm();
};

void TestSweepSpec::parsesAndRoundTrips() {
    auto spec = parseSweepSpec(baseSpec("/shared/sweeps/grid"));
    QVERIFY2(spec.ok(), spec.ok() ? "" : spec.error().message.c_str());
    QCOMPARE(spec->checkpoints.size(), size_t(2));
    QCOMPARE(spec->checkpoints[1].tokenizer.string(), std::string("/m/tok.bin"));
    QCOMPARE(spec->methods.size(), size_t(3));
    QCOMPARE(spec->bits, (std::vector<int>{2, 4}));
    QCOMPARE(spec->tasks[0].limit, int64_t(8));
    QCOMPARE(spec->tasks[1].name, std::string("wikitext2"));
    QVERIFY(spec->backend == BackendKind::Local);
    json withSlurm = baseSpec("/s/g");
    withSlurm["backend"] = {{"kind", "slurm"},
                            {"slurm",
                             {{"partition", "gpu"},
                              {"gres", "gpu:1"},
                              {"cpus_per_task", 8},
                              {"memory", "64G"},
                              {"extra", {"--qos=high"}},
                              {"setup", "module load cuda"}}}};
    auto slurm = parseSweepSpec(withSlurm);
    QVERIFY2(slurm.ok(), slurm.ok() ? "" : slurm.error().message.c_str());
    QCOMPARE(slurm->slurm.resources.cpusPerTask, 8);
    QCOMPARE(slurm->slurm.resources.extraDirectives, std::vector<std::string>{"--qos=high"});
    // Canonical JSON parses back to the same canonical JSON.
    auto again = parseSweepSpec(toJson(*slurm));
    QVERIFY(again.ok());
    QCOMPARE(toJson(*again).dump(), toJson(*slurm).dump());
}

void TestSweepSpec::namesBadFields() {
    const struct {
        const char *key;
        json value;
        const char *expected;
    } cases[] = {
        {"colour", "red", "sweep.colour: unknown field"},
        {"bits", json::array({2, 9}), "sweep.bits[1]: must be an integer in [1, 8]"},
        {"bits", json::array({3, 3}), "sweep.bits[1]: appears twice"},
        {"methods", json::array({"rtn", {{"name", "rtn"}, {"bits", 4}}}), "sweep.methods[1].bits"},
        {"methods", json::array({{{"name", "rtn"}, {"group_size", "x"}}}),
         "sweep.methods[0].group_size: must be an integer"},
        {"methods", json::array({{{"name", "rtn"}, {"colour", 1}}}),
         "sweep.methods[0].colour: unknown field"},
        {"tasks", json::array({{{"name", "ppl"}, {"limit", -3}}}),
         "sweep.tasks[0].limit: must be an integer"},
        {"checkpoints", json::array({42}), "sweep.checkpoints[0]: must be a path"},
        {"backend", {{"kind", "pbs"}}, "sweep.backend.kind: must be \"local\" or \"slurm\""},
        {"backend",
         {{"kind", "slurm"}, {"slurm", {{"cpus_per_task", 0}}}},
         "sweep.backend.slurm.cpus_per_task"},
        {"backend",
         {{"kind", "slurm"}, {"slurm", {{"extra", {"a\nb"}}}}},
         "sweep.backend.slurm.extra[0]"},
        {"calibration", {{"samples", 0}}, "sweep.calibration.samples"},
        {"device", "tpu", "sweep.device"},
        {"version", 2, "sweep.version: version 2 is newer"},
        {"name", "a b", "sweep.name"},
    };
    for (const auto &c : cases) {
        json spec = baseSpec("/s/g");
        spec[c.key] = c.value;
        const std::string error = errorOf(spec);
        QVERIFY2(error.find(c.expected) != std::string::npos, (c.key + (": " + error)).c_str());
    }
    json noOutput = baseSpec("/s/g");
    noOutput.erase("output");
    QVERIFY(errorOf(noOutput).find("sweep.output: missing") != std::string::npos);
    json noBits = baseSpec("/s/g");
    noBits.erase("bits");
    QVERIFY(errorOf(noBits).find("sweep.bits") != std::string::npos);
    noBits["methods"] = {"none"}; // the baseline alone needs no bit-widths
    QCOMPARE(errorOf(noBits), std::string("(parsed)"));
    TempDir dir;
    std::ofstream(dir / "bad.json") << "{not json";
    auto file = readSweepSpecFile(dir / "bad.json");
    QVERIFY(!file.ok() &&
            file.error().message.find("bad.json: not valid JSON") != std::string::npos);
}

void TestSweepSpec::expandsWithDependencies() {
    const SweepSpec spec = parseSweepSpec(baseSpec("/s/g")).value();
    const SweepPlan plan = planSweep(spec).value();
    // 2 checkpoints × (rtn, gptq) × 2 bits quantize tasks; 2 checkpoints × (1 baseline + 4)
    // grid points × 2 tasks evaluate tasks.
    const auto quantize = plan.stageIndices(StageKind::Quantize);
    const auto evaluate = plan.stageIndices(StageKind::Evaluate);
    QCOMPARE(quantize.size(), size_t(2 * 2 * 2));
    QCOMPARE(evaluate.size(), size_t(2 * 5 * 2));
    std::set<std::string> quantizeKeys, measureKeys;
    for (const SweepTask &task : plan.tasks) {
        QCOMPARE(task.index, int(&task - plan.tasks.data()));
        QCOMPARE(task.dbPath.parent_path(), std::filesystem::path("/s/g/results"));
        const std::string point = task.job.checkpoint.string() + methodKey(task.job.method);
        if (task.stage == StageKind::Quantize) {
            QVERIFY(!task.job.method.isNone());
            QVERIFY(task.dependsOn.empty());
            QCOMPARE(task.job.tasks.size(), size_t(2));
            QVERIFY(quantizeKeys.insert(point).second); // one quantization per grid point
            continue;
        }
        QCOMPARE(task.job.tasks.size(), size_t(1));
        QVERIFY(measureKeys.insert(point + task.job.tasks[0].name).second);
        if (task.job.method.isNone()) {
            QVERIFY(task.dependsOn.empty());
            continue;
        }
        // The evaluate task depends on exactly the quantize task of its grid point, run earlier.
        QCOMPARE(task.dependsOn.size(), size_t(1));
        const SweepTask &stage1 = plan.tasks[size_t(task.dependsOn[0])];
        QVERIFY(stage1.stage == StageKind::Quantize);
        QVERIFY(stage1.index < task.index);
        QCOMPARE(methodKey(stage1.job.method), methodKey(task.job.method));
        QCOMPARE(stage1.job.checkpoint, task.job.checkpoint);
        QCOMPARE(stage1.job.tokenizer, task.job.tokenizer);
        QCOMPARE(task.job.threads, 1);
    }
    QCOMPARE(measureKeys.size(), evaluate.size());
}

void TestSweepSpec::manifestRoundTrip() {
    TempDir dir;
    const SweepSpec spec = parseSweepSpec(baseSpec(dir / "sweep")).value();
    SweepPlan plan = planSweep(spec).value();
    plan.submissions.push_back({1, "4242", {0, 1, 2}, "2026-11-27T00:00:00Z"});
    QVERIFY(writePlan(plan).ok());
    auto back = readManifest(plan.manifestPath());
    QVERIFY2(back.ok(), back.ok() ? "" : back.error().message.c_str());
    QCOMPARE(back->tasks.size(), plan.tasks.size());
    QCOMPARE(back->submissions.size(), size_t(1));
    QCOMPARE(back->submissions[0].jobId, std::string("4242"));
    QCOMPARE(back->submissions[0].indices, (std::vector<int>{0, 1, 2}));
    // Every task's spec file is a job spec that parses to the task's job.
    for (const SweepTask &task : plan.tasks) {
        auto job = readJobSpecFile(task.specPath);
        QVERIFY2(job.ok(), task.specPath.c_str());
        QCOMPARE(toJson(*job), toJson(task.job));
    }
    // Re-planning the same sweep keeps the submissions; another grid in the folder is refused.
    QCOMPARE(planWithManifest(spec).value().submissions.size(), size_t(1));
    json other = baseSpec(dir / "sweep");
    other["bits"] = {3};
    auto refused = planWithManifest(parseSweepSpec(other).value());
    QVERIFY(!refused.ok() && refused.error().message.find("different sweep") != std::string::npos);
    // A hand-edited manifest is caught.
    json manifest = manifestJson(plan);
    manifest["tasks"][3]["depends_on"] = {0};
    std::ofstream(plan.manifestPath()) << manifest.dump();
    auto edited = readManifest(plan.manifestPath());
    QVERIFY(!edited.ok() && edited.error().message.find("manifest.tasks") != std::string::npos);
}

void TestSweepSpec::batchScript() {
    json value = baseSpec("/shared/s");
    value["backend"] = {{"kind", "slurm"},
                        {"slurm",
                         {{"partition", "gpu"},
                          {"time", "01:00:00"},
                          {"setup", "module load cuda/12"},
                          {"extra", {"--qos=high"}}}}};
    const SweepPlan plan = planSweep(parseSweepSpec(value).value()).value();
    const ArraySubmission submission =
        stageSubmission(plan, StageKind::Evaluate, plan.stageIndices(StageKind::Evaluate), {"7"});
    QCOMPARE(submission.afterOk, std::vector<std::string>{"7"});
    QCOMPARE(submission.indices.front(), 8);
    const std::string script = sweep::batchScript(plan, submission, "/opt/lowbit it's/lowbit");
    QVERIFY(script.rfind("#!/bin/bash\n", 0) == 0);
    QVERIFY(script.find("#SBATCH --partition=gpu\n") != std::string::npos);
    QVERIFY(script.find("#SBATCH --time=01:00:00\n") != std::string::npos);
    QVERIFY(script.find("#SBATCH --qos=high\n") != std::string::npos);
    const size_t setup = script.find("module load cuda/12\n");
    const size_t exec = script.find("exec '/opt/lowbit it'\\''s/lowbit' sweep exec "
                                    "'/shared/s/manifest.json' \"$SLURM_ARRAY_TASK_ID\"\n");
    QVERIFY2(setup != std::string::npos && exec != std::string::npos && setup < exec,
             script.c_str());
    // Retry picks what is neither done nor queued nor running, and what waits on a failed
    // quantize task (it would wait forever).
    const std::vector<SweepTaskStatus> status = {
        {0, "done", "", ""},
        {1, "cancelled", "", ""},
        {2, "pending", "PENDING Dependency", ""},
        {3, "failed", "", ""},
        {4, "running", "", ""},
        {5, "not-submitted", "", ""},
        {6, "pending", "PENDING DependencyNeverSatisfied", ""},
        {7, "lost", "", ""}};
    QCOMPARE(retryIndices(status), (std::vector<int>{1, 3, 5, 6, 7}));
}

void TestSweepSpec::mergeIsIdempotent() {
    TempDir dir;
    RunStore task = RunStore::open(dir / "task.sqlite").value();
    const int64_t done = doneRun(task, "rtn", 7);
    NewRun unfinished;
    unfinished.spec = {{"x", 1}};
    unfinished.model = "/m/a.bin";
    unfinished.checkpointHash = "c0ffee";
    unfinished.method = "gptq";
    unfinished.methodKey = "{}";
    unfinished.device = "cpu";
    unfinished.tasks = {{"tinystories", "k", json::object()}};
    const int64_t failed = task.createRun(unfinished).value();
    QVERIFY(task.finishRun(failed, RunStatus::Failed, "boom").ok());
    ArtifactRecord artifact;
    artifact.checkpointHash = "c0ffee";
    artifact.methodKey = "{\"name\":\"rtn\"}";
    artifact.kind = "quantized-checkpoint";
    artifact.path = (dir / "artifacts" / "x").string();
    artifact.contentHash = "abc";
    QVERIFY(task.addArtifact(artifact).ok());
    std::ofstream(dir / "weights.bin") << "some weights " << uniform(0, 1);
    const std::string weightsHash = task.contentHash(dir / "weights.bin").value();

    RunStore user = RunStore::open(dir / "user.sqlite").value();
    const int64_t own = doneRun(user, "none", 3); // the user's earlier run stays as it is
    auto first = user.mergeFrom(dir / "task.sqlite");
    QVERIFY2(first.ok(), first.ok() ? "" : first.error().message.c_str());
    QCOMPARE(first->runsImported, 1);
    QCOMPARE(first->runsUnfinished, 1);
    QCOMPARE(first->artifactsImported, 1);
    QVERIFY(first->conflicts.empty());
    // The hash cache came along: the same file hashes to the same value without being re-read.
    QCOMPARE(count(user, "SELECT count(*) FROM file_hashes WHERE sha256 = '" + weightsHash + "'"),
             int64_t(1));
    const auto runs = user.listRuns().value();
    QCOMPARE(runs.size(), size_t(2));
    const int64_t imported = runs[0].id == own ? runs[1].id : runs[0].id;
    // The imported run reads back exactly: metrics, samples in order, task state, origin.
    const RunRecord theirs = task.run(done).value(), ours = user.run(imported).value();
    QCOMPARE(ours.createdAt, theirs.createdAt);
    QCOMPARE(ours.spec, theirs.spec);
    QVERIFY(ours.status == RunStatus::Done);
    const auto m0 = task.metrics(done).value(), m1 = user.metrics(imported).value();
    QCOMPARE(m1.size(), size_t(1));
    QCOMPARE(m1[0].metric.value, m0[0].metric.value);
    QCOMPARE(m1[0].metric.n, m0[0].metric.n);
    const auto s0 = task.samples(done, "tinystories").value();
    const auto s1 = user.samples(imported, "tinystories").value();
    QCOMPARE(s1.size(), size_t(7));
    for (size_t i = 0; i < s0.size(); ++i) {
        QCOMPARE(s1[i].docId, s0[i].docId);
        QCOMPARE(s1[i].nll, s0[i].nll);
    }
    QVERIFY(user.runTasks(imported).value()[0].state == TaskState::Done);
    // Merging again changes nothing.
    const int64_t samplesBefore = count(user, "SELECT count(*) FROM samples");
    auto second = user.mergeFrom(dir / "task.sqlite");
    QVERIFY(second.ok());
    QCOMPARE(second->runsImported, 0);
    QCOMPARE(second->runsPresent, 1);
    QCOMPARE(second->artifactsImported, 0);
    QCOMPARE(user.listRuns().value().size(), size_t(2));
    QCOMPARE(count(user, "SELECT count(*) FROM samples"), samplesBefore);
    QCOMPARE(count(user, "SELECT count(*) FROM artifacts"), int64_t(1));
    // A store cannot merge itself; a missing or foreign file is an error naming it.
    QVERIFY(!user.mergeFrom(dir / "user.sqlite").ok());
    std::ofstream(dir / "junk.sqlite") << "not a database at all, just text";
    auto junk = user.mergeFrom(dir / "junk.sqlite");
    QVERIFY(!junk.ok() && junk.error().message.find("junk.sqlite") != std::string::npos);
}

void TestSweepSpec::mergeDetectsConflicts() {
    TempDir dir;
    {
        RunStore task = RunStore::open(dir / "task.sqlite").value();
        doneRun(task, "rtn", 5);
        doneRun(task, "gptq", 4);
    }
    RunStore user = RunStore::open(dir / "user.sqlite").value();
    QCOMPARE(user.mergeFrom(dir / "task.sqlite").value().runsImported, 2);
    // The task database's copy of one run changes under the same origin (a rerun that wrote
    // into the same file, a hand edit): the next merge reports it and keeps the user's copy.
    {
        RunStore task = RunStore::open(dir / "task.sqlite").value();
        QVERIFY(task.database()
                    .exec("UPDATE metrics SET value = value * 1.5 WHERE run_id = "
                          "(SELECT id FROM runs WHERE method = 'gptq')")
                    .ok());
    }
    const auto gptqMetric = [&] {
        for (const RunRecord &run : user.listRuns().value())
            if (run.method == "gptq")
                return user.metrics(run.id).value().at(0).metric.value;
        return -1.0;
    };
    const double before = gptqMetric();
    auto merged = user.mergeFrom(dir / "task.sqlite");
    QVERIFY(merged.ok());
    QCOMPARE(merged->runsImported, 0);
    QCOMPARE(merged->runsPresent, 1);
    QCOMPARE(merged->conflicts.size(), size_t(1));
    QVERIFY2(merged->conflicts[0].find("results differ") != std::string::npos,
             merged->conflicts[0].c_str());
    QCOMPARE(user.listRuns().value().size(), size_t(2));
    QCOMPARE(gptqMetric(), before);
}

void TestSweepSpec::withoutSlurm() {
    TempDir dir;
    std::filesystem::create_directories(dir / "empty-bin");
    const std::string path = std::getenv("PATH") ? std::getenv("PATH") : "";
    ::setenv("PATH", (dir / "empty-bin").c_str(), 1); // no sbatch anywhere
    const auto spec = dir / "sweep.json";
    std::ofstream(spec) << baseSpec(dir / "sweep").dump();
    const Output submitted =
        sweepCommand({"submit", spec.string(), "--backend", "slurm"}, dir.path());
    const Output planned = sweepCommand({"plan", spec.string()}, dir.path());
    const Output status = sweepCommand({"status", spec.string()}, dir.path());
    const Output bad = sweepCommand({"launch", spec.string()}, dir.path());
    ::setenv("PATH", path.c_str(), 1);
    QVERIFY(submitted.code != 0);
    QVERIFY2(submitted.err.find("Slurm") != std::string::npos &&
                 submitted.err.find("--backend local") != std::string::npos,
             submitted.err.c_str());
    QVERIFY(readManifest(dir / "sweep" / "manifest.json").value().submissions.empty());
    // Planning and status need no Slurm: every task listed, none submitted.
    QCOMPARE(planned.code, 0);
    QVERIFY(planned.out.find("28 tasks") != std::string::npos);
    QCOMPARE(status.code, 0);
    QVERIFY2(status.out.find("not-submitted") != std::string::npos, status.out.c_str());
    QVERIFY(bad.code != 0 && bad.err.find("unknown action 'launch'") != std::string::npos);
}

QTEST_APPLESS_MAIN(TestSweepSpec)
#include "test_sweep_spec.moc"
