// The training curve of a fine-tuning run (issue 8: "loss, learning rate, grad norm and tokens/s
// are streamed as progress events and stored with the run"): the Trainer's progress events carry
// the step metrics (closed form on a one-parameter quadratic), a resumed trainer re-reports its
// restored steps; the run store keeps them per run (round trip, upsert on resume, all-or-none,
// cascade on delete, JSON export, merge into another store) and migrates a schema-1 database; the
// pipeline stores the "train" events a method hook reports, in batches, with nothing lost at the
// end.
#include "core/sha256.h"
#include "export.h"
#include "pipeline/run_executor.h"
#include "run_store.h"
#include "schema.h"
#include "shared_data.h"
#include "temp_dir.h"
#include "train/trainer.h"

#include <QtTest>

#include <cmath>
#include <random>

using namespace lowbit;
using lowbit::test::TempDir;
using nlohmann::json;

namespace {

std::mt19937_64 &rng() {
    static std::mt19937_64 engine(std::random_device{}());
    return engine;
}

double uniform(double lo, double hi) {
    return std::uniform_real_distribution<double>(lo, hi)(rng());
}

std::vector<TrainingStepRecord> randomSteps(int64_t first, int64_t last) {
    std::vector<TrainingStepRecord> steps;
    for (int64_t s = first; s <= last; ++s)
        steps.push_back(
            {s, uniform(0.5, 9), uniform(1e-6, 1e-3), uniform(0.01, 5), uniform(100, 90000)});
    return steps;
}

void compareSteps(const std::vector<TrainingStepRecord> &got,
                  const std::vector<TrainingStepRecord> &want) {
    QCOMPARE(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) {
        QCOMPARE(got[i].step, want[i].step);
        QCOMPARE(got[i].loss, want[i].loss); // REAL columns are IEEE doubles: exact
        QCOMPARE(got[i].learningRate, want[i].learningRate);
        QCOMPARE(got[i].gradNorm, want[i].gradNorm);
        QCOMPARE(got[i].tokensPerSecond, want[i].tokensPerSecond);
    }
}

NewRun newRun(const std::string &method = "qlora") {
    NewRun run;
    run.spec = {{"checkpoint", "/models/m.bin"}, {"method", {{"name", method}}}};
    run.model = "/models/m.bin";
    run.checkpointHash = sha256Hex(run.model);
    run.method = method;
    run.methodKey = json{{"name", method}}.dump();
    run.device = "cpu";
    run.tasks = {{"tinystories", R"({"name":"tinystories"})", {{"name", "tinystories"}}}};
    return run;
}

// Loss of example e: ½(θ − c_e)², one scored token each. With the whole data set as the batch,
// step 1's mean loss and gradient are closed forms of θ0 and the centers.
class OneParameter final : public train::TrainTarget {
public:
    explicit OneParameter(float theta) { m_theta = {"theta", {1}, {theta}, {0}}; }
    std::vector<train::Parameter<float> *> parameters() override { return {&m_theta}; }
    void zeroGrad() override { m_theta.grad[0] = 0; }
    Result<train::LossStats> accumulate(std::span<const train::TrainExample> batch) override {
        train::LossStats s;
        for (const train::TrainExample &e : batch) {
            const double d = double(m_theta.value[0]) - e.tokens[0] / 4.0;
            s.lossSum += 0.5 * d * d;
            m_theta.grad[0] += float(d);
            ++s.scored;
        }
        return s;
    }
    void afterStep() override {}

private:
    train::Parameter<float> m_theta;
};

class Recorder final : public ProgressSink {
public:
    void report(const ProgressEvent &event) override { events.push_back(event); }
    std::vector<ProgressEvent> events;
};

// A "method" that reports training steps as the Trainer does, then writes an empty artifact.
class NoopTask final : public Task {
public:
    std::string name() const override { return "noop"; }
    json protocol(const LanguageModel &, const TaskOptions &) const override { return {{"none", 1}}; }
    Status run(TaskContext &context) override {
        SampleRecord s;
        s.docId = "0";
        s.correct = 1;
        return context.samples.onSample(s);
    }
    Result<TaskReport> aggregate(std::span<const SampleRecord>, const LanguageModel &,
                                 const TaskOptions &) const override {
        return TaskReport{};
    }
};

} // namespace

class TestTrainingSteps : public QObject {
    Q_OBJECT
private slots:
    void trainerEventsCarryStepMetrics();
    void resumedTrainerReReportsRestoredSteps();
    void storeRoundTrip();
    void resumeUpsertsWithoutDuplicates();
    void nonFiniteStepRefusedWholeBatch();
    void deleteRunDropsSteps();
    void exportJsonHasSteps();
    void migratesSchemaVersion1();
    void mergeCopiesSteps();
    void pipelineStoresTrainEvents();
};

void TestTrainingSteps::trainerEventsCarryStepMetrics() {
    std::vector<train::TrainExample> data;
    for (int e = 0; e < 5; ++e)
        data.push_back({{int32_t(e * 3 - 4), 1}, {1, train::kIgnoreTarget}});
    const float theta0 = float(uniform(-2, 2));
    OneParameter target(theta0);
    train::TrainerOptions o;
    o.steps = 3;
    o.batchSize = 5; // the whole set: step 1 does not depend on the shuffled order
    o.maxGradNorm = 0;
    o.schedule.peak = 1e-2;
    Recorder progress;
    QVERIFY(train::Trainer(target, data, o).run(progress).ok());
    QCOMPARE(progress.events.size(), size_t(3));
    double loss = 0, grad = 0;
    for (const auto &e : data) {
        const double d = double(theta0) - e.tokens[0] / 4.0;
        loss += 0.5 * d * d / 5;
        grad += d / 5;
    }
    const ProgressEvent &first = progress.events[0];
    QCOMPARE(first.phase, std::string("train"));
    QCOMPARE(first.done, int64_t(1));
    QVERIFY(first.training.has_value());
    QVERIFY(!first.training->restored);
    QVERIFY(std::abs(first.training->loss - loss) < 1e-6 * (1 + loss));
    QVERIFY(std::abs(first.training->gradNorm - std::abs(grad)) < 1e-5 * (1 + std::abs(grad)));
    QCOMPARE(first.training->learningRate, 1e-2);
    QVERIFY(first.tokensPerSecond > 0);
    QCOMPARE(progress.events[2].done, int64_t(3));
}

void TestTrainingSteps::resumedTrainerReReportsRestoredSteps() {
    std::vector<train::TrainExample> data;
    for (int e = 0; e < 7; ++e)
        data.push_back({{int32_t(e * 5 % 7 - 3), 2}, {1, train::kIgnoreTarget}});
    TempDir dir;
    train::TrainerOptions o;
    o.batchSize = 2;
    o.seed = 5;
    o.checkpointDir = dir.path();
    o.steps = 3;
    Recorder first;
    OneParameter a(0.75f);
    QVERIFY(train::Trainer(a, data, o).run(first).ok());
    o.steps = 5;
    o.resume = true;
    Recorder resumed;
    OneParameter b(-9.0f); // everything comes from the checkpoint
    QVERIFY(train::Trainer(b, data, o).run(resumed).ok());
    QCOMPARE(resumed.events.size(), size_t(5));
    for (size_t i = 0; i < 3; ++i) {
        const ProgressEvent &e = resumed.events[i];
        QCOMPARE(e.done, int64_t(i + 1));
        QVERIFY(e.training && e.training->restored);
        QCOMPARE(e.tokensPerSecond, 0.0);
        QCOMPARE(e.training->loss, first.events[i].training->loss);
        QCOMPARE(e.training->gradNorm, first.events[i].training->gradNorm);
    }
    QCOMPARE(resumed.events[3].done, int64_t(4));
    QVERIFY(resumed.events[3].training && !resumed.events[3].training->restored);
}

void TestTrainingSteps::storeRoundTrip() {
    TempDir dir;
    RunStore store = RunStore::open(dir / "runs.sqlite").value();
    const int64_t run = store.createRun(newRun()).value();
    const int64_t other = store.createRun(newRun("gptq")).value();
    QVERIFY(store.trainingSteps(run)->empty());
    const auto steps = randomSteps(1, 40);
    QVERIFY(store.appendTrainingSteps(run, std::span(steps).first(25)).ok());
    QVERIFY(store.appendTrainingSteps(run, std::span(steps).subspan(25)).ok());
    compareSteps(store.trainingSteps(run).value(), steps);
    QVERIFY(store.trainingSteps(other)->empty());
    // Another connection (the GUI's read-only one) sees the same.
    RunStore reader = RunStore::open(dir / "runs.sqlite", {.readOnly = true}).value();
    compareSteps(reader.trainingSteps(run).value(), steps);
}

void TestTrainingSteps::resumeUpsertsWithoutDuplicates() {
    TempDir dir;
    RunStore store = RunStore::open(dir / "runs.sqlite").value();
    const int64_t run = store.createRun(newRun()).value();
    auto steps = randomSteps(1, 10);
    QVERIFY(store.appendTrainingSteps(run, steps).ok());
    // A resumed run: restored steps 1..6 again (tokens/s unknown), then 7..14 recomputed.
    std::vector<TrainingStepRecord> again(steps.begin(), steps.begin() + 6);
    for (auto &s : again)
        s.tokensPerSecond = 0;
    auto recomputed = randomSteps(7, 14);
    again.insert(again.end(), recomputed.begin(), recomputed.end());
    QVERIFY(store.appendTrainingSteps(run, again).ok());
    std::vector<TrainingStepRecord> want(steps.begin(), steps.begin() + 6); // measured tok/s kept
    want.insert(want.end(), recomputed.begin(), recomputed.end());
    compareSteps(store.trainingSteps(run).value(), want);
    QCOMPARE(store.database()
                 .queryInteger("SELECT count(*) FROM training_steps WHERE run_id = " +
                               std::to_string(run))
                 ->value(),
             int64_t(14));
}

void TestTrainingSteps::nonFiniteStepRefusedWholeBatch() {
    TempDir dir;
    RunStore store = RunStore::open(dir / "runs.sqlite").value();
    const int64_t run = store.createRun(newRun()).value();
    auto steps = randomSteps(1, 5);
    steps[3].loss = std::nan("");
    const Status refused = store.appendTrainingSteps(run, steps);
    QVERIFY(!refused.ok());
    QVERIFY2(refused.error().message.find("training step 4") != std::string::npos,
             refused.error().message.c_str());
    QVERIFY(store.trainingSteps(run)->empty()); // all or none
    const auto fine = randomSteps(1, 2);
    QVERIFY(!store.appendTrainingSteps(run + 100, fine).ok()); // no such run: foreign key
}

void TestTrainingSteps::deleteRunDropsSteps() {
    TempDir dir;
    RunStore store = RunStore::open(dir / "runs.sqlite").value();
    const int64_t run = store.createRun(newRun()).value();
    QVERIFY(store.appendTrainingSteps(run, randomSteps(1, 3)).ok());
    QVERIFY(store.finishRun(run, RunStatus::Failed, "x").ok());
    QVERIFY(store.deleteRun(run).ok());
    QCOMPARE(store.database().queryInteger("SELECT count(*) FROM training_steps")->value(),
             int64_t(0));
}

void TestTrainingSteps::exportJsonHasSteps() {
    TempDir dir;
    RunStore store = RunStore::open(dir / "runs.sqlite").value();
    const int64_t run = store.createRun(newRun()).value();
    const int64_t plain = store.createRun(newRun("rtn")).value();
    const auto steps = randomSteps(1, 4);
    QVERIFY(store.appendTrainingSteps(run, steps).ok());
    const std::vector<int64_t> ids = {run, plain};
    const json exported = exportJson(store, ids).value();
    const json &curve = exported["runs"][0]["training_steps"];
    QCOMPARE(curve.size(), size_t(4));
    QCOMPARE(curve[2]["step"].get<int64_t>(), int64_t(3));
    QCOMPARE(curve[2]["loss"].get<double>(), steps[2].loss);
    QCOMPARE(curve[3]["learning_rate"].get<double>(), steps[3].learningRate);
    QCOMPARE(curve[1]["grad_norm"].get<double>(), steps[1].gradNorm);
    QCOMPARE(curve[0]["tokens_per_s"].get<double>(), steps[0].tokensPerSecond);
    QVERIFY(exported["runs"][1]["training_steps"].empty());
}

// A schema-1 database is today's minus the training_steps table, at user_version 1 (what the
// previous lowbit wrote); opening it migrates in place and keeps its runs.
void TestTrainingSteps::migratesSchemaVersion1() {
    TempDir dir;
    const auto path = dir / "old.sqlite";
    int64_t run = 0;
    {
        RunStore store = RunStore::open(path).value();
        run = store.createRun(newRun()).value();
        QVERIFY(store.log(run, "info", "written by schema 1").ok());
        QVERIFY(store.database().exec("DROP TABLE training_steps").ok());
        QVERIFY(store.database().exec("PRAGMA user_version = 1").ok());
    }
    {
        auto readOnly = RunStore::open(path, {.readOnly = true});
        QVERIFY(!readOnly.ok()); // an upgrade needs a writer
        QVERIFY2(readOnly.error().message.find("schema version 1") != std::string::npos,
                 readOnly.error().message.c_str());
    }
    RunStore store = RunStore::open(path).value();
    QCOMPARE(store.database().queryInteger("PRAGMA user_version")->value(),
             int64_t(kSchemaVersion));
    QCOMPARE(kSchemaVersion, 2);
    QCOMPARE(store.run(run)->method, std::string("qlora"));
    QCOMPARE(store.logLines(run)->back().message, std::string("written by schema 1"));
    const auto steps = randomSteps(1, 3);
    QVERIFY(store.appendTrainingSteps(run, steps).ok());
    compareSteps(store.trainingSteps(run).value(), steps);
}

void TestTrainingSteps::mergeCopiesSteps() {
    TempDir dir;
    const auto steps = randomSteps(1, 9);
    {
        RunStore source = RunStore::open(dir / "source.sqlite").value();
        const int64_t run = source.createRun(newRun()).value();
        QVERIFY(source.appendTrainingSteps(run, steps).ok());
        QVERIFY(source.finishRun(run, RunStatus::Done).ok());
    }
    RunStore target = RunStore::open(dir / "target.sqlite").value();
    target.createRun(newRun("rtn")).value(); // ids differ between the stores
    const auto report = target.mergeFrom(dir / "source.sqlite");
    QVERIFY2(report.ok(), report.ok() ? "" : report.error().toString().c_str());
    QCOMPARE(report->runsImported, 1);
    const auto runs = target.listRuns().value();
    int64_t imported = 0;
    for (const RunRecord &r : runs)
        if (r.method == "qlora")
            imported = r.id;
    QVERIFY(imported > 0);
    compareSteps(target.trainingSteps(imported).value(), steps);
}

// executeRun stores the "train" events a method reports: more than one batch (kStepBatch 64),
// restored ones not overwriting measured tokens/s, the tail flushed when another phase starts.
void TestTrainingSteps::pipelineStoresTrainEvents() {
    LOWBIT_REQUIRE_SHARED_FILE(model, "data/llama2c/stories260K.bin");
    LOWBIT_REQUIRE_SHARED_FILE(tokenizer, "data/llama2c/tok512.bin");
    TempDir dir;
    RunStore store = RunStore::open(dir / "runs.sqlite").value();
    const auto steps = randomSteps(1, 150);
    PipelineContext context;
    context.makeTask = [](const std::string &) -> Result<std::unique_ptr<Task>> {
        return std::unique_ptr<Task>(std::make_unique<NoopTask>());
    };
    context.quantization.validate = [](const MethodSpec &) { return Status(); };
    context.quantization.quantize = [&](const Checkpoint &, const MethodSpec &, int,
                                        const DeviceSpec &, const std::filesystem::path &out,
                                        ProgressSink &progress,
                                        std::stop_token) -> Result<json> {
        auto report = [&](const TrainingStepRecord &s, bool restored) {
            ProgressEvent e{"train", s.step, 150, restored ? 0.0 : s.tokensPerSecond, -1};
            e.training = ProgressEvent::Training{s.loss, s.learningRate, s.gradNorm, restored};
            progress.report(e);
        };
        for (size_t i = 0; i < 100; ++i)
            report(steps[i], false);
        for (size_t i = 0; i < 100; ++i) // a resume at step 100 re-reports what it restored
            report(steps[i], true);
        for (size_t i = 100; i < steps.size(); ++i)
            report(steps[i], false);
        progress.report({"merge", 1, 1, 0, 0});
        std::filesystem::create_directories(out);
        return json::object();
    };
    context.quantization.load = [&](const std::filesystem::path &, const LoadOptions &) {
        return loadCheckpoint(model, {tokenizer});
    };
    json spec = {{"checkpoint", model.string()},
                 {"tokenizer", tokenizer.string()},
                 {"method", {{"name", "fakeft"}, {"bits", 4}}},
                 {"tasks", json::array({{{"name", "noop"}}})},
                 {"threads", 1}};
    auto submission = submitJob(store, parseJobSpec(spec).value(), context);
    QVERIFY2(submission.ok(), submission.ok() ? "" : submission.error().toString().c_str());
    NullProgress progress;
    auto outcome = executeRun(store, *submission->runId, context, progress);
    QVERIFY(outcome.ok());
    QCOMPARE(outcome->status, RunStatus::Done);
    compareSteps(store.trainingSteps(*submission->runId).value(), steps);
}

QTEST_APPLESS_MAIN(TestTrainingSteps)
#include "test_training_steps.moc"
