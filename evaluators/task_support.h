// Pieces every task shares: the seeded --limit subsample, standard errors (lm-eval's
// mean_stderr and bootstrap), the protocol fields common to all tasks, option lookups, and the
// bookkeeping of run(): skipping stored documents, cancellation, progress.
#pragma once

#include "loglikelihood.h"
#include "task.h"

#include <functional>
#include <string>
#include <vector>

namespace lowbit {

// Indices of the documents a run scores, ascending: all n when limit <= 0 or limit >= n, else
// random.Random(seed).sample(range(n), limit) sorted (a deterministic subsample).
std::vector<int64_t> subsampleIndices(int64_t n, int64_t limit, uint64_t seed);

// Mean with lm-eval's mean_stderr: sample standard deviation (n - 1) / sqrt(n); 0 when n < 2.
MetricValue meanMetric(const std::string &name, std::span<const double> values);
// Standard deviation of `statistic` over `iterations` resamples (with replacement) of n items,
// seeded: lm-eval's bootstrap_stderr for aggregations that are not means (perplexity).
double bootstrapStderr(int64_t n, const std::function<double(std::span<const int64_t>)> &statistic,
                       int iterations = 1000, uint64_t seed = 1234);

// The protocol fields of every task: tokenizer, vocabulary, BOS policy, context length, limit,
// seed, shots, and the evaluator version.
nlohmann::json commonProtocol(const std::string &task, const LanguageModel &model, const TaskOptions &options,
                              int shots);
// options.extra["add_bos"] (default false: lm-eval's causal-LM default).
bool addBosOption(const TaskOptions &options);
int64_t maxLengthOption(const LanguageModel &model, const TaskOptions &options);
LoglikelihoodOptions loglikelihoodOptions(const LanguageModel &model, const TaskOptions &options);
const std::string *extraString(const TaskOptions &options, const char *key);

// Runs `score` over the documents at `indices` not yet in context.done, `chunk` at a time,
// checking the stop token and reporting progress between chunks. score() gets the chunk's
// document indices and emits its samples through context.samples.
Status forEachChunk(TaskContext &context, const std::string &phase, const std::vector<int64_t> &indices,
                    const std::function<std::string(int64_t)> &docId, size_t chunk,
                    const std::function<Status(std::span<const int64_t>)> &score);

// Accuracy metrics from samples: mean of sample.correct (acc) and of extra[key] (acc_norm).
MetricValue accuracyMetric(std::span<const SampleRecord> samples, const std::string &name,
                           const char *extraKey = nullptr);

} // namespace lowbit
