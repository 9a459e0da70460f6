// Reading a sweep's results back: each task's progress from its own database, and `collect`,
// which merges every task database present into the user's run store (RunStore::mergeFrom).
//
// Collect semantics: only done runs are imported, so collecting while the sweep runs brings in
// what has finished (partial results) and a later collect adds the rest; collecting twice changes
// nothing; a run already in the target with other results is a conflict, reported and skipped.
// Quantize tasks contribute their artifact records (the quantized checkpoints stay in the sweep
// folder).
#pragma once

#include "core/result.h"
#include "run_store.h"
#include "sweep/sweep_plan.h"

#include <string>
#include <vector>

namespace lowbit::sweep {

enum class TaskProgress { NotStarted, Running, Done, Failed };
const char *taskProgressName(TaskProgress progress);

struct TaskResultState {
    int index = 0;
    TaskProgress progress = TaskProgress::NotStarted;
    std::string detail; // the failed run's error, or the artifact path
};

// What the task databases say (read-only; a task writing meanwhile is fine).
Result<std::vector<TaskResultState>> taskResults(const SweepPlan &plan);

struct CollectReport {
    int databases = 0; // task databases merged
    int missing = 0;   // tasks without a database yet (or one still being created)
    std::vector<std::string> unreadable; // task databases that could not be read (the error)
    MergeReport merged;                  // summed over the databases; conflicts from all
};

Result<CollectReport> collectSweep(const SweepPlan &plan, RunStore &target);

} // namespace lowbit::sweep
