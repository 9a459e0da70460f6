#include "sweep/sweep_local.h"

#include "core/sha256.h"
#include "pipeline/run_executor.h"
#include "run_store.h"

#include <set>

namespace lowbit::sweep {

namespace {

constexpr const char *kArtifactKind = "quantized-checkpoint";

// As the run executor identifies what a run evaluates (run_executor.cpp, checkpointIdentity):
// the checkpoint's content hash, combined with the tokenizer file's when one is given. Both
// must agree, or the evaluate task would not find the artifact (it then quantizes again: slower,
// never wrong).
Result<std::string> checkpointIdentity(RunStore &store, const JobSpec &job) {
    LOWBIT_TRY(std::string hash, store.contentHash(job.checkpoint));
    if (job.tokenizer.empty())
        return hash;
    LOWBIT_TRY(std::string tokenizerHash, store.contentHash(job.tokenizer));
    return sha256Hex(hash + "+tokenizer:" + tokenizerHash);
}

int64_t bytesIn(const std::filesystem::path &dir) {
    int64_t total = 0;
    std::error_code ec;
    for (auto it = std::filesystem::recursive_directory_iterator(dir, ec);
         !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec))
        if (it->is_regular_file(ec))
            total += int64_t(it->file_size(ec));
    return total;
}

Status quantizeTask(const SweepPlan &plan, const SweepTask &task, const PipelineContext &context,
                    ProgressSink &progress, std::stop_token stop) {
    const JobSpec &job = task.job;
    const QuantizationHooks &hooks = context.quantization;
    if (!hooks.quantize)
        return makeError(ErrorCode::Unsupported,
                         "quantization method '" + job.method.name + "' is not available");
    if (hooks.validate)
        LOWBIT_CHECK(hooks.validate(job.method));
    LOWBIT_TRY(RunStore store, RunStore::open(task.dbPath));
    LOWBIT_TRY(std::string identity, checkpointIdentity(store, job));
    const std::string key = methodKey(job.method);
    LOWBIT_TRY(auto existing, store.findArtifact(identity, key, kArtifactKind));
    if (existing)
        return {};
    progress.report({"load", 0, 1, 0, -1});
    LOWBIT_TRY(Checkpoint source, loadCheckpoint(job.checkpoint, {job.tokenizer}));
    progress.report({"load", 1, 1, 0, 0});
    // The run executor's naming, so that a plain `lowbit run` with --artifacts would agree.
    const std::filesystem::path dir =
        plan.artifactDir() /
        (identity.substr(0, 12) + "-" + job.method.name + "-" + sha256Hex(key).substr(0, 12));
    LOWBIT_TRY(DeviceSpec device, parseDevice(job.device));
    LOWBIT_TRY(nlohmann::json facts,
               hooks.quantize(source, job.method, job.threads, device, dir, progress, stop));
    (void)facts;
    LOWBIT_TRY(std::string hash, store.contentHash(dir));
    ArtifactRecord artifact;
    artifact.checkpointHash = identity;
    artifact.methodKey = key;
    artifact.kind = kArtifactKind;
    artifact.path = dir.string();
    artifact.sizeBytes = bytesIn(dir);
    artifact.contentHash = hash;
    LOWBIT_CHECK(store.addArtifact(artifact));
    return {};
}

Result<bool> measured(RunStore &store) {
    RunFilter filter;
    filter.status = RunStatus::Done;
    LOWBIT_TRY(auto runs, store.listRuns(filter));
    return !runs.empty();
}

Status evaluateTask(const SweepPlan &plan, const SweepTask &task, const PipelineContext &context,
                    ProgressSink &progress, std::stop_token stop) {
    LOWBIT_TRY(RunStore store, RunStore::open(task.dbPath));
    LOWBIT_TRY(bool done, measured(store));
    if (done)
        return {};
    for (int dependency : task.dependsOn) {
        const SweepTask &stage1 = plan.tasks.at(size_t(dependency));
        std::error_code ec;
        if (!std::filesystem::exists(stage1.dbPath, ec))
            return makeError(ErrorCode::NotFound,
                             "its quantize task " + std::to_string(dependency) + " has not run (" +
                                 stage1.dbPath.string() + " is missing)");
        LOWBIT_CHECK(store.mergeFrom(stage1.dbPath));
    }
    LOWBIT_TRY(Submission submission, submitJob(store, task.job, context));
    if (!submission.runId)
        return {};
    LOWBIT_TRY(RunOutcome outcome, executeRun(store, *submission.runId, context, progress, stop));
    if (outcome.status != RunStatus::Done)
        return makeError(
            outcome.status == RunStatus::Cancelled ? ErrorCode::Cancelled : ErrorCode::Internal,
            "run " + std::to_string(*submission.runId) + " in " + task.dbPath.string() + " " +
                runStatusName(outcome.status) + ": " + outcome.error);
    return {};
}

} // namespace

Status executeSweepTask(const SweepPlan &plan, int index, const PipelineContext &context,
                        ProgressSink &progress, std::stop_token stop) {
    if (index < 0 || size_t(index) >= plan.tasks.size())
        return makeError(ErrorCode::InvalidArgument,
                         "task " + std::to_string(index) + ": the sweep has tasks 0.." +
                             std::to_string(int(plan.tasks.size()) - 1));
    const SweepTask &task = plan.tasks[size_t(index)];
    PipelineContext here = context;
    here.artifactDir = plan.artifactDir();
    std::error_code ec;
    std::filesystem::create_directories(task.dbPath.parent_path(), ec);
    const Status status = task.stage == StageKind::Quantize
                              ? quantizeTask(plan, task, here, progress, stop)
                              : evaluateTask(plan, task, here, progress, stop);
    if (status.ok())
        return status;
    return makeError(status.error().code, "task " + std::to_string(index) + " (" + task.label +
                                              "): " + status.error().message);
}

std::vector<LocalOutcome> runLocal(const SweepPlan &plan, const PipelineContext &context,
                                   ProgressSink &progress, std::stop_token stop,
                                   const std::vector<int> &indices) {
    std::set<int> wanted(indices.begin(), indices.end());
    std::set<int> failed;
    std::vector<LocalOutcome> outcomes;
    for (const SweepTask &task : plan.tasks) {
        if (!wanted.empty() && !wanted.count(task.index))
            continue;
        if (stop.stop_requested())
            break;
        LocalOutcome outcome;
        outcome.index = task.index;
        for (int dependency : task.dependsOn)
            if (failed.count(dependency)) {
                outcome.skipped = true;
                outcome.status =
                    makeError(ErrorCode::Cancelled, "task " + std::to_string(task.index) +
                                                        ": skipped, its quantize task " +
                                                        std::to_string(dependency) + " failed");
            }
        if (!outcome.skipped)
            outcome.status = executeSweepTask(plan, task.index, context, progress, stop);
        if (!outcome.status.ok())
            failed.insert(task.index);
        outcomes.push_back(std::move(outcome));
    }
    return outcomes;
}

} // namespace lowbit::sweep
