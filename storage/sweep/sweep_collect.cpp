#include "sweep/sweep_collect.h"

namespace lowbit::sweep {

namespace {

// A task database that its task has just created and not yet given its schema: a read-only open
// cannot use it, and the task is merely starting.
bool beingCreated(const Error &error) {
    return error.code == ErrorCode::Unsupported &&
           error.message.find("schema version 0 ") != std::string::npos;
}

Result<TaskResultState> stateOf(const SweepTask &task) {
    TaskResultState state;
    state.index = task.index;
    std::error_code ec;
    if (!std::filesystem::exists(task.dbPath, ec))
        return state;
    auto opened = RunStore::open(task.dbPath, {.readOnly = true});
    if (!opened.ok()) {
        // One unreadable database must not hide the state of the others.
        state.progress =
            beingCreated(opened.error()) ? TaskProgress::Running : TaskProgress::Failed;
        state.detail = opened.error().message;
        return state;
    }
    RunStore store = std::move(opened).value();
    Database &db = store.database();
    if (task.stage == StageKind::Quantize) {
        LOWBIT_TRY(Statement query, db.prepare("SELECT path FROM artifacts ORDER BY id DESC"));
        LOWBIT_TRY(bool row, query.step());
        if (row && std::filesystem::exists(query.text(0), ec)) {
            state.progress = TaskProgress::Done;
            state.detail = query.text(0);
        } else {
            // The database exists once the task started; without the artifact it is quantizing
            // (or died doing so: the Slurm state tells which).
            state.progress = TaskProgress::Running;
        }
        return state;
    }
    LOWBIT_TRY(auto runs, store.listRuns());
    state.progress = runs.empty() ? TaskProgress::Running : TaskProgress::NotStarted;
    for (const RunRecord &run : runs) {
        if (run.status == RunStatus::Done) {
            state.progress = TaskProgress::Done;
            state.detail = "run " + std::to_string(run.id);
            break;
        }
        if (run.status == RunStatus::Queued || run.status == RunStatus::Running) {
            state.progress = TaskProgress::Running;
        } else if (state.progress != TaskProgress::Running) {
            state.progress = TaskProgress::Failed;
            state.detail = std::string(runStatusName(run.status)) + ": " + run.error;
        }
    }
    return state;
}

} // namespace

const char *taskProgressName(TaskProgress progress) {
    switch (progress) {
    case TaskProgress::NotStarted: return "not-started";
    case TaskProgress::Running: return "running";
    case TaskProgress::Done: return "done";
    case TaskProgress::Failed: return "failed";
    }
    return "?";
}

Result<std::vector<TaskResultState>> taskResults(const SweepPlan &plan) {
    std::vector<TaskResultState> states;
    for (const SweepTask &task : plan.tasks) {
        LOWBIT_TRY(TaskResultState state, stateOf(task));
        states.push_back(std::move(state));
    }
    return states;
}

Result<CollectReport> collectSweep(const SweepPlan &plan, RunStore &target) {
    CollectReport report;
    for (const SweepTask &task : plan.tasks) {
        std::error_code ec;
        if (!std::filesystem::exists(task.dbPath, ec)) {
            ++report.missing;
            continue;
        }
        auto result = target.mergeFrom(task.dbPath);
        if (!result.ok()) {
            if (beingCreated(result.error()))
                ++report.missing;
            else
                report.unreadable.push_back(result.error().message);
            continue;
        }
        const MergeReport &merged = *result;
        ++report.databases;
        report.merged.runsImported += merged.runsImported;
        report.merged.runsPresent += merged.runsPresent;
        report.merged.runsUnfinished += merged.runsUnfinished;
        report.merged.artifactsImported += merged.artifactsImported;
        for (const std::string &conflict : merged.conflicts)
            report.merged.conflicts.push_back(conflict);
    }
    return report;
}

} // namespace lowbit::sweep
