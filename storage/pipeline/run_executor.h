// The job pipeline, synchronous part: submitting a job spec as a run, and executing (or resuming)
// a run to its end on the calling thread. JobRunner (job_runner.h) puts these on engine threads;
// the CLI calls them directly.
//
//   spec ──submitJob──▶ run row (queued, tasks pending)
//        ──executeRun──▶ load checkpoint (hash, register) ─▶ quantize or reuse artifact
//                      ─▶ per task: Task::run ─▶ samples committed in batches
//                                   Task::aggregate(all stored samples) ─▶ metrics, task done
//                      ─▶ run done | failed | cancelled
#pragma once

#include "core/progress.h"
#include "core/result.h"
#include "pipeline/job_spec.h"
#include "pipeline/pipeline_context.h"
#include "run_store.h"

#include <optional>
#include <stop_token>
#include <string>
#include <vector>

namespace lowbit {

struct AlreadyMeasured {
    std::string task;
    int64_t runId = 0;
};

struct Submission {
    std::optional<int64_t> runId;         // none when every task was already measured
    std::vector<AlreadyMeasured> skipped; // tasks left out because a done run measured them
};

// Validates what the spec points at (checkpoint present, device available, method available and
// its options valid), hashes the checkpoint (cached), and creates a queued run with the tasks not
// yet measured for this checkpoint content and method (all of them with `force`).
Result<Submission> submitJob(RunStore &store, const JobSpec &spec, const PipelineContext &context,
                             bool force = false);

struct RunOutcome {
    RunStatus status = RunStatus::Done;
    std::string error; // why a run failed or was cancelled
};

// Claims run `runId` for this process and executes its unfinished tasks: a queued run starts, an
// interrupted/failed/cancelled one resumes after its last committed sample. The run ends done,
// failed (the error recorded) or cancelled (stop requested; committed samples stay). Returns an
// error only when the store itself fails or the run cannot be claimed.
Result<RunOutcome> executeRun(RunStore &store, int64_t runId, const PipelineContext &context,
                              ProgressSink &progress, std::stop_token stop = {});

} // namespace lowbit
