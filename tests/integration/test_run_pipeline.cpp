// The job pipeline on stories260K with a real (test-support) task: a run stores every sample and
// the metrics aggregated from them; a cancelled run resumes to exactly the metrics of an
// uninterrupted one; repeated measurements are reported, artifacts reused; bad specs (missing
// checkpoint, unavailable method or device) are refused before a run exists.
#include "pipeline/job_runner.h"
#include "pipeline/run_executor.h"

#include "line_nll_task.h"
#include "shared_data.h"
#include "temp_dir.h"

#include <QtTest>

#include <atomic>
#include <cmath>
#include <fstream>

using namespace lowbit;
using lowbit::test::TempDir;
using nlohmann::json;

namespace {

struct Fixture {
    std::filesystem::path model, tokenizer, text;
};

// A task that fails after `after` samples.
class FailingTask final : public Task {
public:
    std::string name() const override { return "failing"; }
    json protocol(const LanguageModel &, const TaskOptions &) const override {
        return {{"scoring", "none"}};
    }
    Status run(TaskContext &context) override {
        for (int i = 0; i < 5; ++i) {
            if (i == 3)
                return makeError(ErrorCode::Format, "data.jsonl:4: missing field 'label'");
            SampleRecord s;
            s.docId = std::to_string(i);
            s.correct = 1;
            LOWBIT_CHECK(context.samples.onSample(s));
        }
        return {};
    }
    Result<TaskReport> aggregate(std::span<const SampleRecord>, const LanguageModel &,
                                 const TaskOptions &) const override {
        return TaskReport{};
    }
};

PipelineContext makeContext(const Fixture &f) {
    PipelineContext context;
    context.makeTask = [f](const std::string &name) -> Result<std::unique_ptr<Task>> {
        if (name == "lines" || name == "lines2")
            return std::unique_ptr<Task>(std::make_unique<test::LineNllTask>(f.text, name));
        if (name == "failing")
            return std::unique_ptr<Task>(std::make_unique<FailingTask>());
        return makeError(ErrorCode::NotFound, "unknown task '" + name + "'");
    };
    context.dataFiles = [f](const std::string &) {
        return std::vector<std::filesystem::path>{f.text};
    };
    context.sampleBatch = 4;
    return context;
}

json specJson(const Fixture &f,
              json tasks = json::array({{{"name", "lines"}, {"limit", 24}, {"context", 48}}})) {
    return {{"checkpoint", f.model.string()},
            {"tokenizer", f.tokenizer.string()},
            {"method", {{"name", "none"}}},
            {"tasks", tasks},
            {"threads", 1}};
}

JobSpec spec(const json &value) {
    auto parsed = parseJobSpec(value);
    if (!parsed.ok())
        qFatal("%s", parsed.error().toString().c_str());
    return std::move(parsed).value();
}

int64_t submitAndRun(RunStore &store, const JobSpec &job, const PipelineContext &context,
                     bool force = false) {
    auto submission = submitJob(store, job, context, force);
    if (!submission.ok() || !submission->runId)
        qFatal("submit failed");
    NullProgress progress;
    auto outcome = executeRun(store, *submission->runId, context, progress);
    if (!outcome.ok() || outcome->status != RunStatus::Done)
        qFatal("run failed: %s",
               outcome.ok() ? outcome->error.c_str() : outcome.error().toString().c_str());
    return *submission->runId;
}

double metric(RunStore &store, int64_t runId, const std::string &name) {
    const std::vector<StoredMetric> metrics = store.metrics(runId).value();
    for (const StoredMetric &m : metrics)
        if (m.metric.name == name)
            return m.metric.value;
    return NAN;
}

} // namespace

class TestRunPipeline : public QObject {
    Q_OBJECT
private slots:
    void init();
    void runStoresSamplesAndMetrics();
    void cancelThenResumeEqualsUninterrupted();
    void alreadyMeasured();
    void refusedBeforeARunExists();
    void taskFailureIsRecorded();
    void quantizationSeamAndArtifactReuse();
    void destroyingTheRunnerCancels();
    void oneJobPerDeviceInOrder();

private:
    Fixture m_fixture;
};

void TestRunPipeline::init() {
    LOWBIT_REQUIRE_SHARED_FILE(model, "data/llama2c/stories260K.bin");
    LOWBIT_REQUIRE_SHARED_FILE(tokenizer, "data/llama2c/tok512.bin");
    LOWBIT_REQUIRE_SHARED_FILE(text, "data/tinystories/tinystories_val_first1000.txt");
    m_fixture = {model, tokenizer, text};
}

void TestRunPipeline::runStoresSamplesAndMetrics() {
    TempDir dir;
    RunStore store = RunStore::open(dir / "runs.sqlite").value();
    const PipelineContext context = makeContext(m_fixture);
    const int64_t runId = submitAndRun(store, spec(specJson(m_fixture)), context);
    const RunRecord run = store.run(runId).value();
    QCOMPARE(run.status, RunStatus::Done);
    QVERIFY(run.checkpointId.has_value());
    const CheckpointRecord checkpoint = store.checkpoint(*run.checkpointId).value();
    QCOMPARE(checkpoint.format, std::string("llama2c"));
    QCOMPARE(checkpoint.config["hidden_size"].get<int>(), 64);
    QVERIFY(checkpoint.parameterCount > 200000 && checkpoint.parameterCount < 300000);
    QVERIFY(run.phaseSeconds.contains("load") && run.phaseSeconds.contains("task:lines"));
    const auto samples = store.samples(runId, "lines").value();
    QCOMPARE(samples.size(), size_t(24));
    double nll = 0;
    int64_t tokens = 0;
    for (size_t i = 0; i < samples.size(); ++i) {
        QCOMPARE(samples[i].docId, std::to_string(i));
        QVERIFY(samples[i].tokens > 0 && samples[i].tokens <= 47);
        QVERIFY(samples[i].nll > 0);
        nll += samples[i].nll;
        tokens += samples[i].tokens;
    }
    QCOMPARE(metric(store, runId, "ppl"), std::exp(nll / double(tokens)));
    const auto tasks = store.runTasks(runId).value();
    QCOMPARE(tasks[0].state, TaskState::Done);
    QCOMPARE(tasks[0].protocol["context"].get<int>(), 48);
    QVERIFY(tasks[0].datasetId.has_value());
    const DatasetRecord dataset = store.dataset(*tasks[0].datasetId).value();
    QCOMPARE(dataset.rowCount, int64_t(8659)); // wc -l of the file
}

void TestRunPipeline::cancelThenResumeEqualsUninterrupted() {
    TempDir dir;
    const auto db = dir / "runs.sqlite";
    const PipelineContext context = makeContext(m_fixture);
    const JobSpec job =
        spec(specJson(m_fixture, json::array({{{"name", "lines"}, {"limit", 40}, {"context", 48}},
                                              {{"name", "lines2"}, {"limit", 6}}})));
    int64_t cancelled = 0;
    {
        JobRunner *self = nullptr;
        std::atomic<int> progressEvents = 0;
        std::vector<JobEvent> finished;
        std::mutex mutex;
        JobRunner runner(db, context, [&](const JobEvent &event) {
            if (event.kind == JobEvent::Kind::Progress && event.progress.phase == "lines" &&
                ++progressEvents == 18)
                self->cancel(event.runId);
            if (event.kind == JobEvent::Kind::Finished) {
                std::lock_guard lock(mutex);
                finished.push_back(event);
            }
        });
        self = &runner;
        auto submission = runner.submit(job);
        QVERIFY(submission.ok() && submission->runId);
        cancelled = *submission->runId;
        runner.waitUntilIdle();
        QCOMPARE(finished.size(), size_t(1));
        QCOMPARE(finished[0].status, RunStatus::Cancelled);
    }
    RunStore store = RunStore::open(db).value();
    QCOMPARE(store.run(cancelled)->status, RunStatus::Cancelled);
    const auto partial = store.samples(cancelled, "lines").value();
    QVERIFY2(partial.size() >= 16 && partial.size() < 40,
             qPrintable(QString::number(partial.size())));
    {
        JobRunner runner(db, context);
        QVERIFY(runner.resume(cancelled).ok());
        runner.waitUntilIdle();
    }
    store = RunStore::open(db).value();
    QCOMPARE(store.run(cancelled)->status, RunStatus::Done);
    const auto resumed = store.samples(cancelled, "lines").value();
    QCOMPARE(resumed.size(), size_t(40));
    for (size_t i = 0; i < partial.size();
         ++i) // what was committed before the cancel is kept as is
        QCOMPARE(resumed[i].nll, partial[i].nll);
    QVERIFY(store.logLines(cancelled)->size() >= 2);

    const int64_t fresh = submitAndRun(store, job, context, /*force=*/true);
    const auto uninterrupted = store.samples(fresh, "lines").value();
    QCOMPARE(uninterrupted.size(), resumed.size());
    for (size_t i = 0; i < resumed.size(); ++i) {
        QCOMPARE(resumed[i].docId, uninterrupted[i].docId);
        QCOMPARE(resumed[i].nll, uninterrupted[i].nll);
    }
    const auto a = store.metrics(cancelled).value(), b = store.metrics(fresh).value();
    QCOMPARE(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) {
        QCOMPARE(a[i].task, b[i].task);
        QCOMPARE(a[i].metric.name, b[i].metric.name);
        QCOMPARE(a[i].metric.value, b[i].metric.value); // exactly
        QCOMPARE(a[i].metric.n, b[i].metric.n);
    }
}

void TestRunPipeline::alreadyMeasured() {
    TempDir dir;
    RunStore store = RunStore::open(dir / "runs.sqlite").value();
    const PipelineContext context = makeContext(m_fixture);
    const int64_t first = submitAndRun(store, spec(specJson(m_fixture)), context);
    auto again = submitJob(store, spec(specJson(m_fixture)), context);
    QVERIFY(again.ok());
    QVERIFY(!again->runId);
    QCOMPARE(again->skipped.size(), size_t(1));
    QCOMPARE(again->skipped[0].runId, first);
    // With another task added, only that one runs.
    auto more = submitJob(
        store,
        spec(specJson(m_fixture, json::array({{{"name", "lines"}, {"limit", 24}, {"context", 48}},
                                              {{"name", "lines2"}, {"limit", 3}}}))),
        context);
    QVERIFY(more.ok() && more->runId);
    QCOMPARE(more->skipped.size(), size_t(1));
    QCOMPARE(store.runTasks(*more->runId)->size(), size_t(1));
    QCOMPARE(store.runTasks(*more->runId)->front().task, std::string("lines2"));
    // Another limit is another measurement; --force measures again.
    QVERIFY(submitJob(store,
                      spec(specJson(m_fixture, json::array({{{"name", "lines"}, {"limit", 5}}}))),
                      context)
                ->runId.has_value());
    QVERIFY(submitJob(store, spec(specJson(m_fixture)), context, true)->runId.has_value());
}

void TestRunPipeline::refusedBeforeARunExists() {
    TempDir dir;
    RunStore store = RunStore::open(dir / "runs.sqlite").value();
    const PipelineContext context = makeContext(m_fixture);
    struct Case {
        json patch;
        std::string expected;
        ErrorCode code;
    };
    const std::vector<Case> cases = {
        {{{"checkpoint", (dir / "missing.bin").string()}},
         "spec.checkpoint: " + (dir / "missing.bin").string(),
         ErrorCode::NotFound},
        {{{"tokenizer", (dir / "tok.bin").string()}}, "spec.tokenizer", ErrorCode::NotFound},
        {{{"method", {{"name", "gptq"}, {"bits", 4}}}},
         "'gptq' is not available yet",
         ErrorCode::Unsupported},
        // cuda:99: unavailable here (no GPU) and on GPU hosts alike.
        {{{"device", "cuda:99"}}, "spec.device: cuda:99 is not available", ErrorCode::Unsupported},
        {{{"tasks", {"nosuchtask"}}}, "spec.tasks[0].name: unknown task", ErrorCode::NotFound},
        {{{"tasks", {"text:" + (dir / "none.txt").string()}}},
         "none.txt: no such file",
         ErrorCode::NotFound},
    };
    for (const Case &c : cases) {
        json value = specJson(m_fixture);
        value.merge_patch(c.patch);
        auto submission = submitJob(store, spec(value), context);
        QVERIFY2(!submission.ok(), c.expected.c_str());
        QVERIFY2(submission.error().message.find(c.expected) != std::string::npos,
                 submission.error().message.c_str());
        QCOMPARE(submission.error().code, c.code);
    }
    QVERIFY(store.listRuns()->empty());
}

void TestRunPipeline::taskFailureIsRecorded() {
    TempDir dir;
    RunStore store = RunStore::open(dir / "runs.sqlite").value();
    const PipelineContext context = makeContext(m_fixture);
    auto submission =
        submitJob(store, spec(specJson(m_fixture, json::array({"failing"}))), context);
    QVERIFY(submission.ok());
    NullProgress progress;
    auto outcome = executeRun(store, *submission->runId, context, progress);
    QVERIFY(outcome.ok());
    QCOMPARE(outcome->status, RunStatus::Failed);
    const RunRecord run = store.run(*submission->runId).value();
    QCOMPARE(run.status, RunStatus::Failed);
    QVERIFY2(run.error.find("task failing: data.jsonl:4: missing field 'label'") !=
                 std::string::npos,
             run.error.c_str());
    QCOMPARE(store.samples(run.id, "failing")->size(), size_t(3)); // produced before the failure
    QCOMPARE(store.runTasks(run.id)->front().state, TaskState::Failed);
}

void TestRunPipeline::quantizationSeamAndArtifactReuse() {
    TempDir dir;
    RunStore store = RunStore::open(dir / "runs.sqlite").value();
    PipelineContext context = makeContext(m_fixture);
    int quantized = 0, loaded = 0;
    const Fixture f = m_fixture;
    context.quantization.validate = [](const MethodSpec &method) -> Status {
        if (method.name != "fake")
            return makeError(ErrorCode::NotFound,
                             "spec.method.name: unknown method '" + method.name + "'");
        return {};
    };
    context.quantization.quantize = [&](const Checkpoint &source, const MethodSpec &method, int,
                                        const DeviceSpec &, const std::filesystem::path &out,
                                        ProgressSink &,
                                        std::stop_token) -> Result<json> {
        ++quantized;
        std::filesystem::create_directories(out);
        std::ofstream(out / "weights.txt")
            << method.bits << " bits of " << source.config.hiddenSize;
        return json{{"bits_per_weight", method.bits}};
    };
    context.quantization.load = [&](const std::filesystem::path &, const LoadOptions &) {
        ++loaded;
        return loadCheckpoint(f.model, {f.tokenizer});
    };
    json value = specJson(m_fixture);
    value["method"] = {{"name", "fake"}, {"bits", 3}, {"group_size", 32}};
    const int64_t first = submitAndRun(store, spec(value), context);
    QCOMPARE(quantized, 1);
    const auto artifacts = store.artifacts(first).value();
    QCOMPARE(artifacts.size(), size_t(1));
    QCOMPARE(artifacts[0].kind, std::string("quantized-checkpoint"));
    QVERIFY(std::filesystem::exists(std::filesystem::path(artifacts[0].path) / "weights.txt"));
    QVERIFY(store.run(first)->phaseSeconds.contains("quantize"));
    // Same checkpoint + method, another task: the artifact is reused, not quantized again.
    value["tasks"] = json::array({{{"name", "lines2"}, {"limit", 3}}});
    const int64_t second = submitAndRun(store, spec(value), context);
    QCOMPARE(quantized, 1);
    QCOMPARE(loaded, 2);
    QVERIFY(store.logLines(second)->front().message.find("reusing quantized checkpoint") !=
            std::string::npos);
    // Another bit width is another artifact.
    value["method"]["bits"] = 2;
    submitAndRun(store, spec(value), context);
    QCOMPARE(quantized, 2);
    value["method"]["name"] = "other";
    auto refused = submitJob(store, spec(value), context);
    QVERIFY(!refused.ok());
    QVERIFY(refused.error().message.find("unknown method 'other'") != std::string::npos);
}

void TestRunPipeline::destroyingTheRunnerCancels() {
    TempDir dir;
    const auto db = dir / "runs.sqlite";
    int64_t runId = 0;
    std::atomic<bool> started = false;
    {
        JobRunner runner(db, makeContext(m_fixture), [&](const JobEvent &event) {
            if (event.kind == JobEvent::Kind::Progress && event.progress.phase == "lines")
                started = true;
        });
        auto submission = runner.submit(
            spec(specJson(m_fixture, json::array({{{"name", "lines"}, {"limit", 5000}}}))));
        QVERIFY(submission.ok());
        runId = *submission->runId;
        // A second job queued behind it on the same device never starts.
        auto queued = runner.submit(
            spec(specJson(m_fixture, json::array({{{"name", "lines2"}, {"limit", 5}}}))));
        QVERIFY(queued.ok());
        QCOMPARE(runner.activeJobs(), size_t(2));
        for (int i = 0; i < 12000 && !started; ++i) // a bound, not a timing check
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        QVERIFY(started);
    }
    RunStore store = RunStore::open(db).value();
    QCOMPARE(store.run(runId)->status, RunStatus::Cancelled);
    QVERIFY(store.samples(runId, "lines")->size() < 5000);
    // The queued one stays queued, owned by this (live) process; it can be resumed later.
    QCOMPARE(store.listRuns({.status = RunStatus::Queued})->size(), size_t(1));
}

void TestRunPipeline::oneJobPerDeviceInOrder() {
    TempDir dir;
    std::mutex mutex;
    std::vector<std::pair<JobEvent::Kind, int64_t>> events;
    std::vector<std::string> phases;
    JobRunner runner(dir / "runs.sqlite", makeContext(m_fixture), [&](const JobEvent &event) {
        std::lock_guard lock(mutex);
        if (event.kind == JobEvent::Kind::Progress) {
            if (phases.empty() || phases.back() != event.progress.phase)
                phases.push_back(event.progress.phase);
            return;
        }
        events.emplace_back(event.kind, event.runId);
    });
    auto first =
        runner.submit(spec(specJson(m_fixture, json::array({{{"name", "lines"}, {"limit", 8}}}))));
    auto second =
        runner.submit(spec(specJson(m_fixture, json::array({{{"name", "lines2"}, {"limit", 8}}}))));
    QVERIFY(first.ok() && second.ok());
    runner.waitUntilIdle();
    QCOMPARE(runner.activeJobs(), size_t(0));
    std::lock_guard lock(mutex);
    auto position = [&](JobEvent::Kind kind, int64_t run) {
        return std::find(events.begin(), events.end(), std::make_pair(kind, run)) - events.begin();
    };
    const int64_t a = *first->runId, b = *second->runId;
    QVERIFY(position(JobEvent::Kind::Queued, a) < position(JobEvent::Kind::Started, a));
    QVERIFY(position(JobEvent::Kind::Finished, a) < position(JobEvent::Kind::Started, b));
    QVERIFY(position(JobEvent::Kind::Finished, b) < int64_t(events.size()));
    // Progress phases: loading, then the task, for each job in turn.
    QCOMPARE(phases, (std::vector<std::string>{"load", "lines", "load", "lines2"}));
}

QTEST_APPLESS_MAIN(TestRunPipeline)
#include "test_run_pipeline.moc"
