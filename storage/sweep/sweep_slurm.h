// The Slurm backend of sweeps: one job array per stage, the evaluate array held by
// `--dependency=afterok:<quantize array>`, each array task running
//
//   lowbit sweep exec <output>/manifest.json $SLURM_ARRAY_TASK_ID
//
// (sweep_local.h: the same code the local backend runs; the task writes only its own database).
// Submissions (stage, job id, indices) are recorded in the manifest, so status, cancel and retry
// work from any shell on the cluster, later.
#pragma once

#include "core/result.h"
#include "sweep/slurm_client.h"
#include "sweep/sweep_collect.h"
#include "sweep/sweep_plan.h"

#include <optional>
#include <string>
#include <vector>

namespace lowbit::sweep {

// The batch script of one stage: #SBATCH header (SlurmClient::directives), the spec's setup
// snippet, then the exec line. `lowbit` is the executable the nodes run.
std::string batchScript(const SweepPlan &plan, const ArraySubmission &submission,
                        const std::filesystem::path &lowbit);
ArraySubmission stageSubmission(const SweepPlan &plan, StageKind stage, std::vector<int> indices,
                                std::vector<std::string> afterOk);

// Submits `indices` (empty: every task not done yet) stage by stage: the evaluate array waits
// (afterok) for the quantize array submitted with it, and for the latest submission of any
// stage-1 dependency not done yet. Records the submissions in the manifest (written after each
// sbatch, so a failure halfway loses nothing). Returns the new submissions.
Result<std::vector<SweepSubmission>> submitToSlurm(SweepPlan &plan, const SlurmClient &client,
                                                   const std::filesystem::path &lowbit,
                                                   std::vector<int> indices = {});

struct SweepTaskStatus {
    int index = 0;
    // done | failed | running | pending | cancelled | not-submitted | lost (submitted, but Slurm
    // has no record and the task left no results) | ...
    std::string state;
    std::string detail; // Slurm's word and reason, or the run's error
    std::string jobId;  // "<array job>_<index>" of the latest submission; empty when none
};

// Merges what the task databases say (a done run is done whatever Slurm says) with the Slurm
// state of each task's latest submission.
Result<std::vector<SweepTaskStatus>> sweepStatus(const SweepPlan &plan, const SlurmClient *client);

// scancel every submitted array, or one task (its latest submission).
Status cancelSweep(const SweepPlan &plan, const SlurmClient &client, std::optional<int> index = {});

// The tasks a retry resubmits: not done, and neither pending nor running; and those pending on a
// dependency that can no longer be met (their quantize task failed: Slurm's reason
// DependencyNeverSatisfied), which would otherwise wait forever.
std::vector<int> retryIndices(const std::vector<SweepTaskStatus> &status);
// Retry: `indices` (empty: retryIndices of the current status); a task still queued in Slurm is
// scancelled first, then all are submitted again (submitToSlurm). Returns the new submissions
// (none when nothing needed a retry).
Result<std::vector<SweepSubmission>> retrySweep(SweepPlan &plan, const SlurmClient &client,
                                                const std::filesystem::path &lowbit,
                                                std::vector<int> indices = {});

} // namespace lowbit::sweep
