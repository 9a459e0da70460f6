// SlurmClient: the workbench's only contact with a Slurm cluster — the standard command-line
// tools (sbatch, squeue, sacct/scontrol, scancel), never a home-made scheduler. Used by the sweep
// backend (sweep_slurm.h) to submit job arrays and follow them.
//
//   SlurmClient::detect() ─▶ submitArray(script, resources, dependencies) ─▶ job id
//                         ─▶ arrayStates(job id) ─▶ per array task: pending/running/done/failed
//                         ─▶ cancel(job id[, task])
//
// Every tool failure becomes an error value quoting the command and its stderr.
#pragma once

#include "core/result.h"

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace lowbit::sweep {

// Per-task resources and site specifics of a submission (#SBATCH directives).
struct SlurmResources {
    std::string partition;                    // empty: the cluster default
    std::string account;
    std::string time = "04:00:00";            // --time
    std::string gres;                         // e.g. "gpu:1"; empty: none
    int cpusPerTask = 1;
    std::string memory;                       // --mem, e.g. "32G"; empty: default
    std::vector<std::string> extraDirectives; // verbatim "#SBATCH ..." lines, without the prefix
    std::string setup;                        // shell snippet run before the task (module load ..)
};

enum class SlurmTaskState { Pending, Running, Completed, Failed, Cancelled, Unknown };

struct SlurmTaskStatus {
    int arrayIndex = 0;
    SlurmTaskState state = SlurmTaskState::Unknown;
    std::string rawState; // Slurm's own word (PENDING, RUNNING, COMPLETED, FAILED, TIMEOUT, ...)
    std::string reason;   // pending reason / exit code, when Slurm gives one
};

struct ArraySubmission {
    std::string jobName;
    std::filesystem::path script;       // the batch script to submit (written by the caller)
    std::filesystem::path workDir;      // --chdir
    std::filesystem::path logPattern;   // --output, e.g. dir/slurm-%A_%a.log
    std::vector<int> indices;           // --array indices (e.g. {0,1,2} or a retry subset)
    std::vector<std::string> afterOk;   // job ids this array waits for (--dependency=afterok:..)
    SlurmResources resources;
};

class SlurmClient {
public:
    // Finds the tools on PATH (or under `binDir`). Error when Slurm is absent:
    // "Slurm not found (sbatch not on PATH); use the local backend or install slurm-client".
    static Result<SlurmClient> detect(const std::filesystem::path &binDir = {});

    // sbatch --parsable --array=...; returns the array job id.
    Result<std::string> submitArray(const ArraySubmission &submission) const;
    // State of every task of array job `jobId` (squeue for live tasks, sacct or scontrol for
    // finished ones).
    Result<std::vector<SlurmTaskStatus>> arrayStates(const std::string &jobId) const;
    // scancel the whole array, or one task of it.
    Status cancel(const std::string &jobId, std::optional<int> arrayIndex = {}) const;

    // The #SBATCH header lines for `submission` (exposed for tests and `sweep plan`).
    static std::string directives(const ArraySubmission &submission);

private:
    std::filesystem::path m_binDir; // empty: PATH
};

} // namespace lowbit::sweep
