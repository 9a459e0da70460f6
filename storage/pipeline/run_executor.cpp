#include "pipeline/run_executor.h"

#include "backend/device.h"
#include "core/sha256.h"
#include "runtime/language_model.h"

#include <chrono>
#include <exception>

namespace lowbit {

using nlohmann::json;

namespace {

using Clock = std::chrono::steady_clock;

double secondsSince(Clock::time_point start) {
    return std::chrono::duration<double>(Clock::now() - start).count();
}

// Buffers a task's samples and commits them in batches (count or age, whichever comes first).
class BatchingSink final : public SampleSink {
public:
    BatchingSink(RunStore &store, int64_t runId, std::string task, const PipelineContext &context)
        : m_store(store), m_runId(runId), m_task(std::move(task)),
          m_batch(std::max(1, context.sampleBatch)),
          m_interval(std::chrono::milliseconds(std::max(0, context.commitIntervalMs))) {}

    Status onSample(const SampleRecord &sample) override {
        if (m_pending.empty())
            m_oldest = Clock::now();
        m_pending.push_back(sample);
        if (int(m_pending.size()) >= m_batch || Clock::now() - m_oldest >= m_interval)
            return flush();
        return {};
    }
    Status flush() {
        if (m_pending.empty())
            return {};
        LOWBIT_CHECK(m_store.appendSamples(m_runId, m_task, m_pending));
        m_committed += int64_t(m_pending.size());
        m_pending.clear();
        return {};
    }
    int64_t committed() const { return m_committed; }

private:
    RunStore &m_store;
    int64_t m_runId;
    std::string m_task;
    int m_batch;
    Clock::duration m_interval;
    Clock::time_point m_oldest{};
    std::vector<SampleRecord> m_pending;
    int64_t m_committed = 0;
};

// Passes progress on and refreshes the run's heartbeat about once a minute, so that a long phase
// without samples (quantizing a large model) does not look dead to a store on another host.
// Training steps (phase "train" events with metrics, engine/train/trainer.h) are stored as the
// run's curve, in batches as samples are: when kStepBatch are waiting, a second after the first,
// at the next event of another phase, and on flush(). A failed write is logged once and the run
// goes on: the curve is a record of the training, not its result (OUT/finetune.json keeps every
// step too).
class RunProgress final : public ProgressSink {
public:
    static constexpr size_t kStepBatch = 64;

    RunProgress(RunStore &store, int64_t runId, ProgressSink &next)
        : m_store(store), m_runId(runId), m_next(next), m_last(Clock::now()) {}
    void report(const ProgressEvent &event) override {
        m_next.report(event);
        if (event.training && event.phase == "train")
            keepStep(event);
        else if (!m_steps.empty())
            flush(); // training is over (or paused for another phase): store its last steps
        if (Clock::now() - m_last >= std::chrono::seconds(60)) {
            m_last = Clock::now();
            (void)m_store.heartbeat(m_runId); // best effort: a missed beat only ages the stamp
        }
    }
    void flush() {
        if (m_steps.empty())
            return;
        Status stored = m_store.appendTrainingSteps(m_runId, m_steps);
        m_steps.clear();
        if (!stored.ok() && !m_failed) {
            m_failed = true;
            (void)m_store.log(m_runId, "warning",
                              "training steps not stored: " + stored.error().toString());
        }
    }

private:
    void keepStep(const ProgressEvent &event) {
        if (m_steps.empty())
            m_firstPending = Clock::now();
        const ProgressEvent::Training &t = *event.training;
        m_steps.push_back({event.done, t.loss, t.learningRate, t.gradNorm,
                           t.restored ? 0.0 : event.tokensPerSecond});
        if (m_steps.size() >= kStepBatch ||
            Clock::now() - m_firstPending >= std::chrono::seconds(1))
            flush();
    }

    RunStore &m_store;
    int64_t m_runId;
    ProgressSink &m_next;
    Clock::time_point m_last;
    std::vector<TrainingStepRecord> m_steps;
    Clock::time_point m_firstPending;
    bool m_failed = false;
};

json configJson(const ModelConfig &c) {
    return {{"vocab_size", c.vocabSize},
            {"hidden_size", c.hiddenSize},
            {"intermediate_size", c.intermediateSize},
            {"num_hidden_layers", c.numLayers},
            {"num_attention_heads", c.numHeads},
            {"num_key_value_heads", c.numKvHeads},
            {"head_dim", c.headDim},
            {"max_position_embeddings", c.maxPositions},
            {"rms_norm_eps", c.rmsNormEps},
            {"rope_theta", c.ropeTheta},
            {"tie_word_embeddings", c.tieWordEmbeddings},
            {"bos_token_id", c.bosId}};
}

int64_t bytesOnDisk(const std::filesystem::path &path) {
    std::error_code ec;
    if (!std::filesystem::is_directory(path, ec)) {
        const auto size = std::filesystem::file_size(path, ec);
        return ec ? 0 : int64_t(size);
    }
    int64_t total = 0;
    for (auto it = std::filesystem::recursive_directory_iterator(path, ec);
         !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec))
        if (it->is_regular_file(ec))
            total += int64_t(it->file_size(ec));
    return total;
}

// The identity of what a run evaluates: the checkpoint's content, and the tokenizer file's when
// one is given separately (llama2.c).
Result<std::string> checkpointIdentity(RunStore &store, const JobSpec &spec) {
    LOWBIT_TRY(std::string hash, store.contentHash(spec.checkpoint));
    if (spec.tokenizer.empty())
        return hash;
    LOWBIT_TRY(std::string tokenizerHash, store.contentHash(spec.tokenizer));
    return sha256Hex(hash + "+tokenizer:" + tokenizerHash);
}

// Before anything is stored or computed: a "cuda:N" this build or machine cannot run on.
Status checkDevice(const std::string &text) {
    auto device = parseDevice(text);
    if (!device.ok())
        return makeError(ErrorCode::InvalidArgument, "spec.device: " + device.error().message);
    if (!device->isCuda())
        return {};
    std::string why;
    const int count = cudaDeviceCount(&why);
    if (count == 0)
        return makeError(ErrorCode::Unsupported,
                         "spec.device: " + text + " is not available: " + why);
    if (device->index >= count)
        return makeError(ErrorCode::Unsupported, "spec.device: " + text +
                                                     " is not available: no such device (" +
                                                     std::to_string(count) + " present)");
    return {};
}

Status checkInputs(const JobSpec &spec, const PipelineContext &context) {
    std::error_code ec;
    if (!std::filesystem::exists(spec.checkpoint, ec))
        return makeError(ErrorCode::NotFound, "spec.checkpoint: " + spec.checkpoint.string() +
                                                  ": no such file or directory");
    if (!spec.tokenizer.empty() && !std::filesystem::exists(spec.tokenizer, ec))
        return makeError(ErrorCode::NotFound,
                         "spec.tokenizer: " + spec.tokenizer.string() + ": no such file");
    LOWBIT_CHECK(checkDevice(spec.device));
    if (!spec.method.isNone()) {
        if (!context.quantization.quantize)
            return makeError(ErrorCode::Unsupported, "spec.method.name: quantization method '" +
                                                         spec.method.name +
                                                         "' is not available yet in this build");
        if (context.quantization.validate)
            LOWBIT_CHECK(context.quantization.validate(spec.method));
    }
    for (size_t i = 0; i < spec.tasks.size(); ++i) {
        const std::string &name = spec.tasks[i].name;
        if (name.rfind("text:", 0) == 0 && !std::filesystem::is_regular_file(name.substr(5), ec))
            return makeError(ErrorCode::NotFound, "spec.tasks[" + std::to_string(i) + "].name: " +
                                                      name.substr(5) + ": no such file");
        if (!context.makeTask)
            return makeError(ErrorCode::Internal, "the pipeline was given no task factory");
        auto task = context.makeTask(name);
        if (!task.ok())
            return makeError(task.error().code,
                             "spec.tasks[" + std::to_string(i) + "].name: " + task.error().message);
    }
    return {};
}

class Executor {
public:
    Executor(RunStore &store, RunRecord run, JobSpec spec, const PipelineContext &context,
             ProgressSink &progress, std::stop_token stop)
        : m_store(store), m_run(std::move(run)), m_spec(std::move(spec)), m_context(context),
          m_progress(progress), m_stop(std::move(stop)) {}

    Status execute() {
        LOWBIT_TRY(auto source, loadSource());
        LOWBIT_TRY(auto evaluated, quantizeOrReuse(std::move(source)));
        LOWBIT_CHECK(cancelled());
        LOWBIT_TRY(auto model, openModel(std::move(evaluated)));
        LOWBIT_TRY(auto tasks, m_store.runTasks(m_run.id));
        for (const RunTaskRecord &task : tasks) {
            if (task.state == TaskState::Done)
                continue;
            LOWBIT_CHECK(cancelled());
            const Status status = runTask(*model, task);
            if (!status.ok()) {
                if (status.error().code != ErrorCode::Cancelled)
                    (void)m_store.failTask(m_run.id, task.task);
                return status;
            }
        }
        return {};
    }

private:
    Status cancelled() const {
        if (m_stop.stop_requested())
            return makeError(ErrorCode::Cancelled, "cancelled");
        return {};
    }

    Result<std::shared_ptr<const Checkpoint>> loadSource() {
        const auto start = Clock::now();
        m_progress.report({"load", 0, 1, 0, -1});
        LOWBIT_CHECK(checkInputs(m_spec, m_context));
        LOWBIT_TRY(std::string identity, checkpointIdentity(m_store, m_spec));
        if (identity != m_run.checkpointHash)
            return makeError(ErrorCode::InvalidArgument,
                             m_spec.checkpoint.string() + ": the checkpoint changed since run " +
                                 std::to_string(m_run.id) + " was created (content hash " +
                                 m_run.checkpointHash.substr(0, 12) + " then, " +
                                 identity.substr(0, 12) + " now); start a new run");
        LOWBIT_TRY(Checkpoint checkpoint, loadCheckpoint(m_spec.checkpoint, {m_spec.tokenizer}));
        CheckpointRecord record;
        record.path = m_spec.checkpoint.string();
        record.format = checkpointFormatName(checkpoint.format);
        record.config = configJson(checkpoint.config);
        record.parameterCount = checkpoint.config.parameterCount();
        record.contentHash = identity;
        record.sizeBytes = bytesOnDisk(m_spec.checkpoint);
        LOWBIT_TRY(int64_t checkpointId, m_store.registerCheckpoint(record));
        LOWBIT_CHECK(m_store.setRunCheckpoint(m_run.id, checkpointId));
        LOWBIT_CHECK(m_store.addPhaseSeconds(m_run.id, "load", secondsSince(start)));
        m_progress.report({"load", 1, 1, 0, 0});
        return std::make_shared<const Checkpoint>(std::move(checkpoint));
    }

    Result<std::shared_ptr<const Checkpoint>>
    quantizeOrReuse(std::shared_ptr<const Checkpoint> source) {
        if (m_spec.method.isNone())
            return source;
        const auto start = Clock::now();
        const QuantizationHooks &hooks = m_context.quantization;
        auto load = [&](const std::filesystem::path &dir) -> Result<Checkpoint> {
            return hooks.load ? hooks.load(dir, {}) : loadCheckpoint(dir);
        };
        const std::string kind = "quantized-checkpoint";
        LOWBIT_TRY(auto reusable,
                   m_store.findArtifact(m_run.checkpointHash, m_run.methodKey, kind));
        if (reusable) {
            LOWBIT_CHECK(m_store.log(m_run.id, "info",
                                     "reusing quantized checkpoint " + reusable->path +
                                         " (artifact " + std::to_string(reusable->id) + ")"));
            LOWBIT_TRY(Checkpoint checkpoint, load(reusable->path));
            return std::make_shared<const Checkpoint>(std::move(checkpoint));
        }
        std::filesystem::path root = m_context.artifactDir;
        if (root.empty())
            root = m_store.path().parent_path() / "artifacts";
        const std::filesystem::path dir =
            root / (m_run.checkpointHash.substr(0, 12) + "-" + m_spec.method.name + "-" +
                    sha256Hex(m_run.methodKey).substr(0, 12));
        LOWBIT_TRY(DeviceSpec device, parseDevice(m_spec.device));
        LOWBIT_TRY(json facts, hooks.quantize(*source, m_spec.method, m_spec.threads, device, dir,
                                              m_progress, m_stop));
        LOWBIT_TRY(std::string hash, m_store.contentHash(dir));
        ArtifactRecord artifact;
        artifact.runId = m_run.id;
        artifact.checkpointHash = m_run.checkpointHash;
        artifact.methodKey = m_run.methodKey;
        artifact.kind = kind;
        artifact.path = dir.string();
        artifact.sizeBytes = bytesOnDisk(dir);
        artifact.contentHash = hash;
        LOWBIT_TRY(int64_t artifactId, m_store.addArtifact(artifact));
        (void)artifactId;
        LOWBIT_CHECK(
            m_store.log(m_run.id, "info", "quantized into " + dir.string() + ": " + facts.dump()));
        LOWBIT_CHECK(m_store.addPhaseSeconds(m_run.id, "quantize", secondsSince(start)));
        LOWBIT_TRY(Checkpoint checkpoint, load(dir));
        return std::make_shared<const Checkpoint>(std::move(checkpoint));
    }

    // The evaluated model on the spec's device (a SmoothQuant checkpoint with its recorded
    // activation quantization); the run log says where it runs.
    Result<std::unique_ptr<LanguageModel>> openModel(std::shared_ptr<const Checkpoint> checkpoint) {
        LOWBIT_TRY(DeviceSpec device, parseDevice(m_spec.device));
        LanguageModelOptions options;
        options.threads = m_spec.threads;
        LOWBIT_TRY(auto model, openLanguageModel(std::move(checkpoint), device, options));
        LOWBIT_CHECK(m_store.log(m_run.id, "info", "evaluating on " + model->deviceDescription()));
        return model;
    }

    Result<std::optional<int64_t>> registerData(const std::string &name) {
        std::vector<std::filesystem::path> files;
        if (name.rfind("text:", 0) == 0)
            files.push_back(name.substr(5));
        else if (m_context.dataFiles)
            files = m_context.dataFiles(name);
        if (files.empty())
            return std::optional<int64_t>();
        LOWBIT_TRY(int64_t id, m_store.registerDataset(files.front()));
        return std::optional<int64_t>(id);
    }

    Status runTask(LanguageModel &model, const RunTaskRecord &record) {
        const auto start = Clock::now();
        const std::string &name = record.task;
        const auto fail = [&](const Error &error) {
            return makeError(error.code, "task " + name + ": " + error.message);
        };
        auto made = m_context.makeTask(name);
        if (!made.ok())
            return fail(made.error());
        std::unique_ptr<Task> task = std::move(made).value();
        auto spec = std::find_if(m_spec.tasks.begin(), m_spec.tasks.end(),
                                 [&](const TaskSpec &t) { return t.name == name; });
        if (spec == m_spec.tasks.end())
            return makeError(ErrorCode::Internal, "task " + name + " is not in the run's spec");
        const TaskOptions options = taskOptions(m_spec, *spec);
        const json protocol = task->protocol(model, options);
        if (!record.protocol.is_null() && record.protocol != protocol)
            return fail(makeError(ErrorCode::InvalidArgument,
                                  "the protocol changed since the run started (stored " +
                                      record.protocol.dump() + ", now " + protocol.dump() +
                                      "); start a new run"));
        LOWBIT_TRY(auto datasetId, registerData(name));
        LOWBIT_CHECK(m_store.startTask(m_run.id, name, protocol, datasetId));
        LOWBIT_TRY(std::set<std::string> done, m_store.sampleDocIds(m_run.id, name));
        if (!done.empty())
            LOWBIT_CHECK(m_store.log(m_run.id, "info",
                                     "task " + name + ": resuming after " +
                                         std::to_string(done.size()) + " stored samples"));
        BatchingSink sink(m_store, m_run.id, name, m_context);
        TaskContext context{model, options, m_progress, m_stop, sink, std::move(done)};
        const Status ran = task->run(context);
        // What finished is kept even when the task stopped early (cancel, error): a resume skips
        // it.
        LOWBIT_CHECK(sink.flush());
        LOWBIT_CHECK(m_store.addPhaseSeconds(m_run.id, "task:" + name, secondsSince(start)));
        if (!ran.ok())
            return ran.error().code == ErrorCode::Cancelled ? ran : Status(fail(ran.error()));
        LOWBIT_CHECK(cancelled());
        // Metrics always come from the stored samples, so a resumed run aggregates exactly what an
        // uninterrupted one would.
        LOWBIT_TRY(std::vector<SampleRecord> samples, m_store.samples(m_run.id, name));
        auto report = task->aggregate(samples, model, options);
        if (!report.ok())
            return fail(report.error());
        LOWBIT_CHECK(m_store.completeTask(m_run.id, name, report->metrics));
        return m_store.log(m_run.id, "info",
                           "task " + name + " done: " + std::to_string(samples.size()) +
                               " samples, " + std::to_string(sink.committed()) + " new");
    }

    RunStore &m_store;
    RunRecord m_run;
    JobSpec m_spec;
    const PipelineContext &m_context;
    ProgressSink &m_progress;
    std::stop_token m_stop;
};

} // namespace

Result<Submission> submitJob(RunStore &store, const JobSpec &spec, const PipelineContext &context,
                             bool force) {
    LOWBIT_CHECK(checkInputs(spec, context));
    LOWBIT_TRY(std::string identity, checkpointIdentity(store, spec));
    const std::string method = methodKey(spec.method);
    Submission submission;
    JobSpec toRun = spec;
    toRun.tasks.clear();
    for (const TaskSpec &task : spec.tasks) {
        LOWBIT_TRY(auto measured, store.findMeasured(identity, method, taskKey(spec, task)));
        if (measured && !force)
            submission.skipped.push_back({task.name, *measured});
        else
            toRun.tasks.push_back(task);
    }
    if (toRun.tasks.empty())
        return submission;
    NewRun run;
    run.spec = toJson(toRun);
    run.model = spec.checkpoint.string();
    run.checkpointHash = identity;
    run.method = spec.method.name;
    run.methodKey = method;
    run.device = spec.device;
    for (const TaskSpec &task : toRun.tasks)
        run.tasks.push_back({task.name, taskKey(toRun, task), toJson(task)});
    LOWBIT_TRY(int64_t runId, store.createRun(run));
    submission.runId = runId;
    return submission;
}

Result<RunOutcome> executeRun(RunStore &store, int64_t runId, const PipelineContext &context,
                              ProgressSink &progress, std::stop_token stop) {
    LOWBIT_CHECK(store.claimRun(runId, ProcessIdentity::current()));
    Status status;
    try {
        LOWBIT_TRY(RunRecord run, store.run(runId));
        auto spec = parseJobSpec(run.spec);
        if (!spec.ok()) {
            status =
                makeError(ErrorCode::Format, "the stored spec of run " + std::to_string(runId) +
                                                 " is unreadable: " + spec.error().message);
        } else {
            RunProgress beating(store, runId, progress);
            Executor executor(store, std::move(run), std::move(spec).value(), context, beating,
                              stop);
            status = executor.execute();
            beating.flush();
        }
    } catch (const std::exception &e) { // third-party code (nlohmann, std) at the job boundary
        status = makeError(ErrorCode::Internal, std::string("unexpected exception: ") + e.what());
    }
    RunOutcome outcome;
    if (status.ok()) {
        outcome.status = RunStatus::Done;
    } else {
        outcome.status =
            status.error().code == ErrorCode::Cancelled ? RunStatus::Cancelled : RunStatus::Failed;
        outcome.error = status.error().toString();
        (void)store.log(runId, "error", outcome.error);
    }
    LOWBIT_CHECK(store.finishRun(runId, outcome.status, outcome.error));
    return outcome;
}

} // namespace lowbit
