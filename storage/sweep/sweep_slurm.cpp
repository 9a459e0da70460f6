#include "sweep/sweep_slurm.h"

#include <algorithm>
#include <chrono>
#include <ctime>
#include <fstream>
#include <map>
#include <set>

namespace lowbit::sweep {

namespace {

// Single-quoted for sh: nothing inside is expanded.
std::string shellQuoted(const std::string &text) {
    std::string out = "'";
    for (char c : text)
        out += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return out + "'";
}

std::string utcNow() {
    const std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
    std::tm tm{};
    gmtime_r(&now, &tm);
    char text[32];
    std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return text;
}

std::filesystem::path slurmDir(const SweepPlan &plan) {
    return plan.spec.output / "slurm";
}

// The latest submission of each task: index -> position in plan.submissions.
std::map<int, size_t> latestSubmissions(const SweepPlan &plan) {
    std::map<int, size_t> latest;
    for (size_t s = 0; s < plan.submissions.size(); ++s)
        for (int index : plan.submissions[s].indices)
            latest[index] = s;
    return latest;
}

std::string slurmStateName(SlurmTaskState state) {
    switch (state) {
    case SlurmTaskState::Pending: return "pending";
    case SlurmTaskState::Running: return "running";
    case SlurmTaskState::Completed: return "completed";
    case SlurmTaskState::Failed: return "failed";
    case SlurmTaskState::Cancelled: return "cancelled";
    case SlurmTaskState::Unknown: return "unknown";
    }
    return "unknown";
}

Result<std::string> submitStage(SweepPlan &plan, const SlurmClient &client,
                                const std::filesystem::path &lowbit, StageKind stage,
                                const std::vector<int> &indices,
                                const std::vector<std::string> &afterOk) {
    ArraySubmission submission = stageSubmission(plan, stage, indices, afterOk);
    std::error_code ec;
    std::filesystem::create_directories(submission.logPattern.parent_path(), ec);
    {
        std::ofstream out(submission.script, std::ios::binary | std::ios::trunc);
        out << batchScript(plan, submission, lowbit);
        if (!out.flush())
            return makeError(ErrorCode::Io, submission.script.string() + ": cannot write");
    }
    LOWBIT_TRY(std::string jobId, client.submitArray(submission));
    plan.submissions.push_back({int(stage), jobId, indices, utcNow()});
    LOWBIT_CHECK(writePlan(plan));
    return jobId;
}

} // namespace

ArraySubmission stageSubmission(const SweepPlan &plan, StageKind stage, std::vector<int> indices,
                                std::vector<std::string> afterOk) {
    ArraySubmission submission;
    submission.jobName = plan.spec.name + "-" + stageName(stage);
    // One script per submission: a retry's script must not overwrite one Slurm still reads.
    submission.script = slurmDir(plan) / (std::string(stageName(stage)) + "-" +
                                          std::to_string(plan.submissions.size()) + ".sh");
    submission.workDir = plan.spec.output;
    submission.logPattern = slurmDir(plan) / "logs" / "%x-%A_%a.log";
    submission.indices = std::move(indices);
    submission.afterOk = std::move(afterOk);
    submission.resources = plan.spec.slurm.resources;
    return submission;
}

std::string batchScript(const SweepPlan &plan, const ArraySubmission &submission,
                        const std::filesystem::path &lowbit) {
    std::string script = SlurmClient::directives(submission);
    if (script.rfind("#!", 0) != 0)
        script = "#!/bin/bash\n" + script;
    if (!script.empty() && script.back() != '\n')
        script += '\n';
    // -e: a failing setup line stops the task; no -u, which breaks many sites' module scripts.
    script += "set -e\n";
    if (!submission.resources.setup.empty())
        script += submission.resources.setup + "\n";
    script += "exec " + shellQuoted(lowbit.string()) + " sweep exec " +
              shellQuoted(plan.manifestPath().string()) + " \"$SLURM_ARRAY_TASK_ID\"\n";
    return script;
}

Result<std::vector<SweepSubmission>> submitToSlurm(SweepPlan &plan, const SlurmClient &client,
                                                   const std::filesystem::path &lowbit,
                                                   std::vector<int> indices) {
    LOWBIT_TRY(auto results, taskResults(plan));
    std::set<int> done;
    for (const TaskResultState &r : results)
        if (r.progress == TaskProgress::Done)
            done.insert(r.index);
    if (indices.empty())
        for (const SweepTask &task : plan.tasks)
            if (!done.count(task.index))
                indices.push_back(task.index);
    const size_t before = plan.submissions.size();
    const auto latest = latestSubmissions(plan);
    std::vector<int> quantize, evaluate;
    for (int index : indices) {
        if (index < 0 || size_t(index) >= plan.tasks.size())
            return makeError(ErrorCode::InvalidArgument, "task " + std::to_string(index) +
                                                             ": the sweep has tasks 0.." +
                                                             std::to_string(plan.tasks.size() - 1));
        (plan.tasks[size_t(index)].stage == StageKind::Quantize ? quantize : evaluate)
            .push_back(index);
    }
    std::string quantizeJob;
    if (!quantize.empty()) {
        LOWBIT_TRY(quantizeJob,
                   submitStage(plan, client, lowbit, StageKind::Quantize, quantize, {}));
    }
    if (!evaluate.empty()) {
        std::set<std::string> afterOk;
        if (!quantizeJob.empty())
            afterOk.insert(quantizeJob);
        for (int index : evaluate)
            for (int dependency : plan.tasks[size_t(index)].dependsOn) {
                if (done.count(dependency) ||
                    std::find(quantize.begin(), quantize.end(), dependency) != quantize.end())
                    continue;
                const auto it = latest.find(dependency);
                if (it == latest.end())
                    return makeError(ErrorCode::InvalidArgument,
                                     "task " + std::to_string(index) + " needs quantize task " +
                                         std::to_string(dependency) +
                                         ", which is neither done nor submitted; submit it too");
                afterOk.insert(plan.submissions[it->second].jobId);
            }
        LOWBIT_CHECK(submitStage(plan, client, lowbit, StageKind::Evaluate, evaluate,
                                 {afterOk.begin(), afterOk.end()}));
    }
    return std::vector<SweepSubmission>(plan.submissions.begin() + long(before),
                                        plan.submissions.end());
}

Result<std::vector<SweepTaskStatus>> sweepStatus(const SweepPlan &plan, const SlurmClient *client) {
    const auto latest = latestSubmissions(plan);
    std::map<std::string, std::map<int, SlurmTaskStatus>> arrays; // job id -> index -> state
    if (client) {
        std::set<std::string> current; // submissions still the latest for some task
        for (const auto &[index, position] : latest)
            current.insert(plan.submissions[position].jobId);
        for (const std::string &jobId : current) {
            auto states = client->arrayStates(jobId);
            if (!states.ok() && states.error().code == ErrorCode::NotFound)
                continue; // Slurm forgot the job: its tasks read as lost below
            if (!states.ok())
                return states.error();
            for (const SlurmTaskStatus &state : *states)
                arrays[jobId][state.arrayIndex] = state;
        }
    }
    // The databases are read after Slurm: a task Slurm saw complete has its results on disk.
    LOWBIT_TRY(auto results, taskResults(plan));
    std::vector<SweepTaskStatus> status;
    for (const TaskResultState &result : results) {
        SweepTaskStatus task;
        task.index = result.index;
        task.state = taskProgressName(result.progress);
        task.detail = result.detail;
        const auto submitted = latest.find(result.index);
        if (submitted != latest.end()) {
            const std::string &jobId = plan.submissions[submitted->second].jobId;
            task.jobId = jobId + "_" + std::to_string(result.index);
            const auto array = arrays.find(jobId);
            const auto state = array == arrays.end()
                                   ? std::map<int, SlurmTaskStatus>::const_iterator()
                                   : array->second.find(result.index);
            const bool known = array != arrays.end() && state != array->second.end();
            if (result.progress != TaskProgress::Done && known) {
                // A running run in a cancelled or failed job died with it: Slurm knows best.
                task.state = slurmStateName(state->second.state);
                task.detail = state->second.rawState +
                              (state->second.reason.empty() ? "" : " " + state->second.reason);
            } else if (result.progress != TaskProgress::Done && client) {
                // Slurm drops an array task cancelled while pending from its records at once.
                task.state = "lost";
                task.detail = "not in Slurm's records (cancelled while pending, or purged)";
            }
        } else if (result.progress == TaskProgress::NotStarted) {
            task.state = "not-submitted";
        }
        status.push_back(std::move(task));
    }
    return status;
}

Status cancelSweep(const SweepPlan &plan, const SlurmClient &client, std::optional<int> index) {
    if (index) {
        const auto latest = latestSubmissions(plan);
        const auto it = latest.find(*index);
        if (it == latest.end())
            return makeError(ErrorCode::InvalidArgument,
                             "task " + std::to_string(*index) + " was never submitted");
        return client.cancel(plan.submissions[it->second].jobId, *index);
    }
    std::set<std::string> cancelled;
    for (const SweepSubmission &s : plan.submissions)
        if (cancelled.insert(s.jobId).second)
            LOWBIT_CHECK(client.cancel(s.jobId));
    return {};
}

std::vector<int> retryIndices(const std::vector<SweepTaskStatus> &status) {
    std::vector<int> indices;
    for (const SweepTaskStatus &task : status) {
        const bool stuck = task.state == "pending" &&
                           task.detail.find("DependencyNeverSatisfied") != std::string::npos;
        if (stuck || (task.state != "done" && task.state != "pending" && task.state != "running"))
            indices.push_back(task.index);
    }
    return indices;
}

Result<std::vector<SweepSubmission>> retrySweep(SweepPlan &plan, const SlurmClient &client,
                                                const std::filesystem::path &lowbit,
                                                std::vector<int> indices) {
    LOWBIT_TRY(auto status, sweepStatus(plan, &client));
    if (indices.empty())
        indices = retryIndices(status);
    if (indices.empty())
        return std::vector<SweepSubmission>();
    for (int index : indices) {
        if (index < 0 || size_t(index) >= status.size())
            return makeError(ErrorCode::InvalidArgument,
                             "task " + std::to_string(index) + ": the sweep has tasks 0.." +
                                 std::to_string(int(status.size()) - 1));
        const std::string &state = status[size_t(index)].state;
        if (state == "pending" || state == "running")
            LOWBIT_CHECK(cancelSweep(plan, client, index)); // never two copies of one task
    }
    return submitToSlurm(plan, client, lowbit, std::move(indices));
}

} // namespace lowbit::sweep
