// What the job pipeline needs from the layers beside it, given by the front end (CLI, GUI, tests):
// how a task name becomes a Task (the evaluators), and the quantization seam (engine/quant).
// Keeping these as values instead of direct calls lets tests run the pipeline with their own
// tasks, and lets the pipeline build before every quantization method exists.
#pragma once

#include "backend/device.h"
#include "core/progress.h"
#include "core/result.h"
#include "model/checkpoint.h"
#include "pipeline/job_spec.h"
#include "task.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <functional>
#include <memory>
#include <stop_token>
#include <string>
#include <vector>

namespace lowbit {

// "wikitext2" -> a Task (the front end passes the evaluators' makeTask with its data folder).
using TaskFactory = std::function<Result<std::unique_ptr<Task>>(const std::string &name)>;
// The data files a task reads, recorded as datasets of the run (hash, rows); may be empty.
using TaskDataFiles = std::function<std::vector<std::filesystem::path>(const std::string &name)>;

// The seam to the quantization methods. Without `quantize`, every method other than "none" is
// refused with "not available yet". The front end fills it from engine/quant.
struct QuantizationHooks {
    // Method-specific validation at submission (unknown method, bad options); may be null.
    std::function<Status(const MethodSpec &method)> validate;
    // Quantizes `source` into the directory `outDir` (created by the hook) as a checkpoint that
    // `load` reads back, its calibration on `device` (the job's) where the method can use a GPU.
    // Returns facts for the run log (bits/weight, errors, warnings).
    std::function<Result<nlohmann::json>(const Checkpoint &source, const MethodSpec &method,
                                         int threads, const DeviceSpec &device,
                                         const std::filesystem::path &outDir,
                                         ProgressSink &progress, std::stop_token stop)>
        quantize;
    // Loads a directory written by `quantize` (default: loadCheckpoint).
    std::function<Result<Checkpoint>(const std::filesystem::path &dir, const LoadOptions &options)>
        load;
};

struct PipelineContext {
    TaskFactory makeTask;
    TaskDataFiles dataFiles;
    QuantizationHooks quantization;
    // Where quantized checkpoints are written; empty: "artifacts" next to the database file.
    std::filesystem::path artifactDir;
    // Samples are committed when this many are waiting, or `commitIntervalMs` after the first.
    int sampleBatch = 32;
    int commitIntervalMs = 2000;
};

} // namespace lowbit
