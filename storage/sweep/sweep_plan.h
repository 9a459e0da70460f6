// A sweep's plan: the grid expanded into tasks with shared artifacts, and the manifest that
// records it in the sweep folder.
//
//   stage 1 "quantize": one per (checkpoint, method, bits) other than the baseline; quantizes
//            into <output>/artifacts and records the artifact in its own task database.
//   stage 2 "evaluate": one per (checkpoint, method, bits, task); depends on its stage-1 task
//            (Slurm: afterok), imports that task's artifact record, so the run reuses the
//            quantized checkpoint instead of quantizing again. The baseline ("none") has no
//            stage-1 task.
//
// Sweep folder:  manifest.json   the plan (and the Slurm submissions, see sweep_slurm.h)
//                specs/task-NNNN.json     each a self-contained `lowbit run` job spec
//                results/task-NNNN.sqlite each task's own run store (one writer per file, safe
//                                          on network filesystems); `sweep collect` merges them
//                artifacts/                quantized checkpoints
// Task indices are global and stable; they are the Slurm array indices.
#pragma once

#include "core/result.h"
#include "pipeline/job_spec.h"
#include "sweep/sweep_spec.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <string>
#include <vector>

namespace lowbit::sweep {

enum class StageKind { Quantize = 1, Evaluate = 2 };

struct SweepTask {
    int index = 0;
    StageKind stage = StageKind::Evaluate;
    std::string label; // "stories260K.bin rtn 4-bit tinystories"
    JobSpec job;       // quantize: the grid point with all its tasks; evaluate: one task
    std::filesystem::path specPath; // absolute
    std::filesystem::path dbPath;   // absolute
    std::vector<int> dependsOn;     // indices of stage-1 tasks
};

struct SweepSubmission {
    int stage = 0;
    std::string jobId;
    std::vector<int> indices;
    std::string submittedAt; // UTC ISO 8601
};

struct SweepPlan {
    SweepSpec spec;
    std::vector<SweepTask> tasks;             // index order: all of stage 1, then stage 2
    std::vector<SweepSubmission> submissions; // oldest first (retries come later)

    std::filesystem::path manifestPath() const { return spec.output / "manifest.json"; }
    std::filesystem::path artifactDir() const { return spec.output / "artifacts"; }
    std::vector<int> stageIndices(StageKind stage) const;
};

// Expands the grid (checkpoint-major, then method, bits, task). Pure: touches no file.
Result<SweepPlan> planSweep(const SweepSpec &spec);

// Writes the job specs and the manifest (keeping `plan.submissions`). Creates the folder.
Status writePlan(const SweepPlan &plan);
// Reads a manifest back (errors name the file and field).
Result<SweepPlan> readManifest(const std::filesystem::path &manifest);
// What the front ends open: the manifest.json of a planned sweep folder (as readManifest), or a
// sweep spec file, planned with planWithManifest. The file is read once.
Result<SweepPlan> loadSweep(const std::filesystem::path &path);
nlohmann::json manifestJson(const SweepPlan &plan);

// The plan of `spec`, carrying over the submissions of the manifest already in its folder; an
// error when that manifest holds a different plan with submissions (a changed grid would
// renumber the tasks that Slurm is running).
Result<SweepPlan> planWithManifest(const SweepSpec &spec);

const char *stageName(StageKind stage);

} // namespace lowbit::sweep
