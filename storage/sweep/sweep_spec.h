// The sweep specification: a grid of runs, checkpoints × methods × bit-widths × tasks, with the
// job fields they share and where and how they run. A versioned JSON document:
//
//   {"version": 1,
//    "name": "table2",                             optional; names the Slurm jobs
//    "output": "/shared/sweeps/table2",            the sweep folder (specs, task databases,
//                                                  quantized checkpoints, manifest), on a
//                                                  filesystem every node sees
//    "checkpoints": ["/models/llama3-8b",          a path, or {"checkpoint": P, "tokenizer": T}
//                    {"checkpoint": "s.bin", "tokenizer": "tok.bin"}],
//    "methods": ["none", {"name": "gptq", "group_size": 128, "symmetric": false,
//                         "layers": "all", "options": {...}}],    as a job spec's method, no bits
//    "bits": [2, 3, 4],                            every method but "none" runs at each
//    "tasks": [{"name": "wikitext2", "limit": 0}, "arc_easy"],   as a job spec's tasks
//    "calibration": {"dataset": "...", "samples": 128, "tokens": 2048, "seed": 0},  optional
//    "device": "cpu", "threads": 0, "seed": 0,     shared job fields
//    "data": "/shared/lowbit-data",                optional: the evaluators' data folder
//    "backend": {"kind": "local" | "slurm",
//                "slurm": {"partition": "gpu", "account": "lab", "time": "04:00:00",
//                          "gres": "gpu:1", "cpus_per_task": 8, "memory": "64G",
//                          "extra": ["--qos=normal"], "setup": "module load cuda",
//                          "lowbit": "/opt/lowbit/bin/lowbit"}}}
//
// Parsing validates every field and rejects unknown ones; errors name the field as job_spec.cpp
// does ("sweep.methods[1].bits: ..."). Relative paths resolve against the current directory.
#pragma once

#include "core/result.h"
#include "pipeline/job_spec.h"
#include "sweep/slurm_client.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <string>
#include <vector>

namespace lowbit::sweep {

constexpr int kSweepSpecVersion = 1;

struct SweepCheckpoint {
    std::filesystem::path checkpoint;
    std::filesystem::path tokenizer; // empty: the checkpoint's own
};

enum class BackendKind { Local, Slurm };
const char *backendName(BackendKind kind);

struct SlurmBackend {
    SlurmResources resources;
    // The lowbit executable the batch script runs; empty: the running lowbit binary.
    std::filesystem::path lowbit;
};

struct SweepSpec {
    int version = kSweepSpecVersion;
    std::string name = "sweep";
    std::filesystem::path output;
    std::vector<SweepCheckpoint> checkpoints;
    // Method objects as a job spec writes them, without "bits" (the sweep's bits apply); checked
    // by parseJobSpec at every bit-width when the sweep is parsed.
    std::vector<nlohmann::json> methods;
    std::vector<int> bits;
    std::vector<TaskSpec> tasks;
    std::optional<CalibrationSpec> calibration;
    std::string device = "cpu";
    int threads = 0;
    uint64_t seed = 0;
    std::filesystem::path dataDir; // empty: the default data folder where the task runs
    BackendKind backend = BackendKind::Local;
    SlurmBackend slurm;
};

Result<SweepSpec> parseSweepSpec(const nlohmann::json &json);
// Reads and parses a sweep file; errors name the file.
Result<SweepSpec> readSweepSpecFile(const std::filesystem::path &path);
// parseSweepSpec of a document already read from `path`, errors prefixed with the path.
Result<SweepSpec> sweepSpecOfFile(const std::filesystem::path &path, const nlohmann::json &value);
// Canonical JSON: every default filled in; parseSweepSpec(toJson(s)) gives s back.
nlohmann::json toJson(const SweepSpec &spec);

// The job spec of one grid point (tasks as given); validated by parseJobSpec, so a method option
// that the job spec refuses is refused here with the grid point named.
Result<JobSpec> gridJob(const SweepSpec &spec, const SweepCheckpoint &checkpoint,
                        const nlohmann::json &method, int bits, const std::vector<TaskSpec> &tasks);
// The method's name ("none", "rtn", ...).
std::string methodName(const nlohmann::json &method);

} // namespace lowbit::sweep
