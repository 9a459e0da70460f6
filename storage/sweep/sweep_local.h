// Executing sweep tasks on this machine: one task (what each Slurm array task runs through
// `lowbit sweep exec`), or the whole plan in dependency order (the local backend). Both backends
// thus run the same code and write the same task databases.
//
// A quantize task loads the checkpoint, quantizes it into <output>/artifacts (the directory name
// the run executor would choose) and records the artifact, with no run, in its task database;
// done already when that database holds the artifact. An evaluate task first merges its stage-1
// task databases into its own (so the artifact is known and the executor reuses it), then
// submits and executes its job spec as `lowbit run SPEC --db TASK_DB` does; done already when a
// done run measured it.
#pragma once

#include "core/progress.h"
#include "core/result.h"
#include "pipeline/pipeline_context.h"
#include "sweep/sweep_plan.h"

#include <stop_token>
#include <vector>

namespace lowbit::sweep {

// `context` as for `lowbit run` (tasks, quantization hooks); its artifactDir is replaced by the
// sweep's. Errors name the task ("task 5 (stories260K.bin rtn 4-bit tinystories): ...").
Status executeSweepTask(const SweepPlan &plan, int index, const PipelineContext &context,
                        ProgressSink &progress, std::stop_token stop = {});

struct LocalOutcome {
    int index = 0;
    bool skipped = false; // a dependency failed
    Status status;
};

// Runs `indices` (empty: every task) in index order, which is dependency order; an evaluate task
// whose quantize task failed is skipped. Stops at a stop request.
std::vector<LocalOutcome> runLocal(const SweepPlan &plan, const PipelineContext &context,
                                   ProgressSink &progress, std::stop_token stop = {},
                                   const std::vector<int> &indices = {});

} // namespace lowbit::sweep
