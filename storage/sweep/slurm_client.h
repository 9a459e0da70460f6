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
#include <string_view>
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

    // sbatch --parsable --array=... --job-name --chdir --output [--dependency=afterok:..] script;
    // returns the array job id. The per-task resources travel in the script, not on the command
    // line: its header (before the first command) must hold directives(submission) verbatim,
    // else an InvalidArgument error (so resources are never silently dropped). `setup` is the
    // script writer's to place after that header.
    Result<std::string> submitArray(const ArraySubmission &submission) const;
    // State of every task of array job `jobId` (squeue for live tasks, sacct or scontrol for
    // finished ones).
    Result<std::vector<SlurmTaskStatus>> arrayStates(const std::string &jobId) const;
    // scancel the whole array, or one task of it (held first with scontrol, so a still-pending
    // task keeps a CANCELLED record instead of silently leaving the array).
    Status cancel(const std::string &jobId, std::optional<int> arrayIndex = {}) const;

    // The #SBATCH header lines for `submission`'s resources, one per set field, in the order
    // partition, account, time, gres, cpus-per-task, mem, then extraDirectives; each line ends
    // in '\n'. Job name, folder, log and array indices are per submission (command line).
    // (Exposed for tests and `sweep plan`.)
    static std::string directives(const ArraySubmission &submission);

private:
    std::filesystem::path m_binDir; // empty: PATH
};

// The pure parts of SlurmClient, exposed for tests.

// Slurm's --array syntax for `indices`, sorted and deduplicated: {5,0,1,2,7} -> "0-2,5,7".
std::string compactArrayRange(std::vector<int> indices);
// Slurm's state word -> SlurmTaskState: long names (squeue %T, scontrol JobState, sacct State,
// where "CANCELLED by 0" and "CANCELLED+" count as CANCELLED) and squeue's short codes (PD, R..).
SlurmTaskState mapSlurmState(std::string_view state);
// `squeue -h -r -j ID -o %F|%K|%T|%r` output -> the tasks of array job `jobId`.
std::vector<SlurmTaskStatus> parseSqueueTasks(std::string_view output, std::string_view jobId);
// `scontrol -o show job ID` output -> the tasks of array job `jobId`; a record that still
// bundles pending tasks (ArrayTaskId=3-5,7%2) gives one status per task.
std::vector<SlurmTaskStatus> parseScontrolTasks(std::string_view output, std::string_view jobId);
// `sacct -n -P -X -j ID -o JobID,State,ExitCode` output -> the tasks of array job `jobId`.
std::vector<SlurmTaskStatus> parseSacctTasks(std::string_view output, std::string_view jobId);

} // namespace lowbit::sweep
