// Task: one benchmark (a perplexity corpus, a multiple-choice set, MMLU, GSM8K, a safety set)
// run over a LanguageModel (cpu or cuda). The contract between the evaluators and the pipeline / run store:
//  - run() scores documents one by one and hands each finished SampleRecord to the SampleSink
//    (the store commits them in batches); documents whose ids are in context.done are skipped,
//    which is how an interrupted run resumes;
//  - aggregate() turns the complete list of samples (old and new) into metrics, so a resumed run
//    ends with exactly the metrics of an uninterrupted one;
//  - protocol() states everything that makes two runs comparable (tokenizer, BOS, context, shots,
//    prompt format, scoring mode); the comparison flags runs whose protocols differ.
#pragma once

#include "core/progress.h"
#include "core/result.h"
#include "runtime/language_model.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <memory>
#include <set>
#include <span>
#include <stop_token>
#include <string>
#include <vector>

namespace lowbit {

struct TaskOptions {
    int64_t limit = 0;          // 0: every document; else a seeded deterministic subsample
    int shots = -1;             // -1: the task's default
    int64_t contextTokens = 0;  // 0: the task's default (perplexity window)
    int batchSize = 1;
    uint64_t seed = 0;
    nlohmann::json extra = nlohmann::json::object(); // task-specific options (e.g. "mode")
};

struct MetricValue {
    std::string name;       // "ppl", "acc", "acc_norm", "exact_match,strict", "refusal_rate"
    double value = 0;
    double stderr_ = 0;     // standard error (0 when not defined)
    int64_t n = 0;          // documents (or tokens for perplexity) behind the value
};

struct SampleRecord {
    std::string docId;                 // stable within the task's data file
    std::string docHash;               // hash of the document's content
    std::string promptHash;            // hash of the exact prompt/context fed to the model
    std::string target;                // gold answer / label / continuation
    std::string output;                // model output (generation) or chosen option
    std::vector<double> choiceLogLikelihoods;
    int correct = -1;                  // 1/0, or -1 where not applicable
    int64_t tokens = 0;                // scored tokens (perplexity) or generated tokens
    double nll = 0;                    // summed NLL over `tokens` (perplexity)
    nlohmann::json extra = nlohmann::json::object(); // e.g. acc_norm choice, per-choice lengths
};

class SampleSink {
public:
    virtual ~SampleSink() = default;
    // Called on the worker thread; an error stops the task with that error.
    virtual Status onSample(const SampleRecord &sample) = 0;
};

struct TaskReport {
    std::string task;
    std::vector<MetricValue> metrics;
    nlohmann::json protocol = nlohmann::json::object();
};

struct TaskContext {
    LanguageModel &model;
    const TaskOptions &options;
    ProgressSink &progress;
    std::stop_token stop;
    SampleSink &samples;
    std::set<std::string> done; // doc ids already stored (resume)
};

class Task {
public:
    virtual ~Task() = default;
    virtual std::string name() const = 0;
    virtual nlohmann::json protocol(const LanguageModel &model, const TaskOptions &options) const = 0;
    virtual Status run(TaskContext &context) = 0;
    virtual Result<TaskReport> aggregate(std::span<const SampleRecord> samples, const LanguageModel &model,
                                         const TaskOptions &options) const = 0;
};

struct TaskInfo {
    std::string name;
    std::string description;
    std::vector<std::filesystem::path> dataFiles;
    bool dataFound = false;
};

// Where datasets are looked up: $LOWBIT_DATA_DIR, else $LOWBIT_SHARED_DIR/data, else ../shared/data
// next to the executable's source tree.
std::filesystem::path defaultDataDir();

// "wikitext2", "c4", "ptb", "tinystories", "text:PATH", "arc_easy", "mmlu", "gsm8k", ...
Result<std::unique_ptr<Task>> makeTask(const std::string &name, const std::filesystem::path &dataDir);
std::vector<TaskInfo> listTasks(const std::filesystem::path &dataDir);

} // namespace lowbit
