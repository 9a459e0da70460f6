// The job specification: what one run measures. A versioned JSON document:
//
//   {"version": 1,
//    "checkpoint": "/models/llama3-8b",          HF directory, .gguf or llama2.c .bin
//    "tokenizer": "/models/tok.bin",             optional (llama2.c checkpoints)
//    "method": {"name": "gptq", "bits": 4, "group_size": 128, "symmetric": false,
//               "layers": "all",
//               "calibration": {"dataset": "c4", "samples": 128, "tokens": 2048, "seed": 0},
//               "options": {...}},                method-specific keys; {"name": "none"} = FP
//               baseline
//    "tasks": [{"name": "wikitext2", "limit": 0, "shots": -1, "context": 2048, "batch_size": 1,
//               "options": {...}}, "arc_easy"],  a bare string is a task with default options
//    "device": "cpu",                            "cpu", "cuda" or "cuda:N" (stored as "cuda:N")
//    "threads": 0,                               0: every hardware thread
//    "seed": 0}
//
// Parsing validates every field and rejects unknown ones; an error names the field
// ("spec.tasks[1].limit: must be an integer >= 0, got -3"). Relative paths are resolved against
// the current directory, so a stored spec is self-contained. Canonical JSON (toJson) has every
// default filled in and sorted keys: equal jobs give equal text.
#pragma once

#include "core/result.h"
#include "task.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace lowbit {

constexpr int kJobSpecVersion = 1;

struct CalibrationSpec {
    std::string dataset;   // a file path, or empty: the quantizer's default calibration text
    int64_t samples = 128; // windows
    int64_t tokens = 2048; // tokens per window
    uint64_t seed = 0;
};

struct MethodSpec {
    std::string name = "none";
    int bits = 0;          // 1..8; 0 for none
    int64_t groupSize = 0; // 0: per-channel (-1 in the spec means the same, as in GPTQ)
    bool symmetric = false;
    std::string layers = "all";
    std::optional<CalibrationSpec> calibration;
    nlohmann::json options = nlohmann::json::object();

    bool isNone() const { return name == "none"; }
};

struct TaskSpec {
    std::string name;          // "wikitext2", "arc_easy", "text:/abs/path.txt", ...
    int64_t limit = 0;         // 0: every document
    int shots = -1;            // -1: the task's default
    int64_t contextTokens = 0; // 0: the task's default
    int batchSize = 1;
    nlohmann::json options = nlohmann::json::object();
};

struct JobSpec {
    int version = kJobSpecVersion;
    std::filesystem::path checkpoint;
    std::filesystem::path tokenizer; // empty: the checkpoint's own
    MethodSpec method;
    std::vector<TaskSpec> tasks;
    std::string device = "cpu";
    int threads = 0;
    uint64_t seed = 0;
};

Result<JobSpec> parseJobSpec(const nlohmann::json &json);
// Reads and parses a spec file; errors name the file.
Result<JobSpec> readJobSpecFile(const std::filesystem::path &path);

nlohmann::json toJson(const JobSpec &spec);
nlohmann::json toJson(const MethodSpec &method);
nlohmann::json toJson(const TaskSpec &task);

// Keys for reuse: canonical JSON text. The method key identifies a quantized artifact (with the
// checkpoint's content hash); the task key identifies a measurement (with both), and includes the
// job seed because it picks the task's subsample.
std::string methodKey(const MethodSpec &method);
std::string taskKey(const JobSpec &spec, const TaskSpec &task);

TaskOptions taskOptions(const JobSpec &spec, const TaskSpec &task);

} // namespace lowbit
