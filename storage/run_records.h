// What the run store holds, as plain values: runs, their tasks, metrics, samples (the evaluators'
// SampleRecord), checkpoints, datasets, artifacts and log lines.
#pragma once

#include "core/result.h"
#include "task.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace lowbit {

enum class RunStatus { Queued, Running, Done, Failed, Cancelled, Interrupted };
const char *runStatusName(RunStatus status);
Result<RunStatus> parseRunStatus(const std::string &name);
// Queued/running runs are active; the others are finished. Interrupted, failed and cancelled runs
// can be resumed.
bool isResumable(RunStatus status);

struct RunRecord {
    int64_t id = 0;
    RunStatus status = RunStatus::Queued;
    nlohmann::json spec;        // the job spec, as submitted (see pipeline/job_spec.h)
    std::string model;          // checkpoint path from the spec
    std::string checkpointHash; // content hash at submission (see RunStore::contentHash)
    std::optional<int64_t> checkpointId;
    std::string method;    // "none", "gptq", ...
    std::string methodKey; // canonical JSON of the method spec
    std::string device;
    std::string createdAt, startedAt, finishedAt, heartbeatAt; // UTC ISO 8601; empty when unset
    std::string host;
    int64_t pid = 0;
    std::string engineVersion, engineCommit;
    std::string error;
    nlohmann::json phaseSeconds =
        nlohmann::json::object(); // {"load": s, "quantize": s, "task:x": s}
};

// A task of a run, in spec order.
struct NewRunTask {
    std::string name;
    std::string key;        // canonical JSON of the task spec (reuse / "already measured")
    nlohmann::json options; // the task's spec object
};

struct NewRun {
    nlohmann::json spec;
    std::string model;
    std::string checkpointHash;
    std::string method;
    std::string methodKey;
    std::string device;
    std::vector<NewRunTask> tasks;
};

enum class TaskState { Pending, Running, Done, Failed };
const char *taskStateName(TaskState state);

struct RunTaskRecord {
    int64_t runId = 0;
    int ordinal = 0;
    std::string task;
    std::string key;
    nlohmann::json options;
    TaskState state = TaskState::Pending;
    nlohmann::json protocol; // null until the task started
    std::optional<int64_t> datasetId;
    int64_t samples = 0; // stored samples
};

struct StoredMetric {
    std::string task;
    MetricValue metric;
};

struct CheckpointRecord {
    int64_t id = 0;
    std::string path;
    std::string format;
    nlohmann::json config;
    int64_t parameterCount = 0;
    std::string contentHash;
    int64_t sizeBytes = 0;
};

struct DatasetRecord {
    int64_t id = 0;
    std::string path;
    std::string contentHash;
    int64_t rowCount = 0; // newline-terminated lines (+1 for an unterminated last line)
    int64_t sizeBytes = 0;
};

struct ArtifactRecord {
    int64_t id = 0;
    std::optional<int64_t> runId; // the run that produced it (null once that run is deleted)
    std::string checkpointHash;
    std::string methodKey;
    std::string kind; // "quantized-weights", ...
    std::string path;
    int64_t sizeBytes = 0;
    std::string contentHash;
    std::string createdAt;
};

// One optimizer step of a fine-tuning run (the Trainer's ProgressEvent::Training).
struct TrainingStepRecord {
    int64_t step = 0; // 1-based
    double loss = 0;
    double learningRate = 0;
    double gradNorm = 0;        // before clipping
    double tokensPerSecond = 0; // 0: unknown (restored from a training checkpoint)
};

struct LogLine {
    std::string at;
    std::string level; // "info", "warning", "error"
    std::string message;
};

// Every set field must match; empty fields match everything.
struct RunFilter {
    // Initialized members: designated initializers name only the filters they set.
    std::string model{}; // substring of the checkpoint path
    std::string method{};
    std::string task{};
    std::optional<RunStatus> status{};
};

} // namespace lowbit
