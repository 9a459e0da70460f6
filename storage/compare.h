// Comparing runs: a metric table with deltas against the first run, and per task a paired test of
// each later run against the first: for accuracy tasks (samples with a correct flag) the flips
// right->wrong / wrong->right and an exact McNemar test; for perplexity / NLL tasks a paired
// bootstrap interval of the difference. Runs whose task protocols differ (tokenizer, BOS,
// context, shots, prompt format, scoring mode: whatever the task puts in its protocol) are
// flagged with the differences and not tested. Each run is listed with the device it ran on (a
// cpu and a cuda measurement of the same job agree to rounding, not bit for bit).
#pragma once

#include "core/result.h"
#include "run_store.h"
#include "statistics.h"

#include <nlohmann/json.hpp>

#include <optional>
#include <span>
#include <string>
#include <vector>

namespace lowbit {

struct CompareOptions {
    std::string task{}; // empty: every task any of the runs finished
    int bootstrapResamples = 2000;
    double confidence = 0.95;
    uint64_t seed = 0;
};

struct MetricComparison {
    std::string task;
    std::string metric;
    std::vector<std::optional<MetricValue>> values; // one per run, in the order given
};

// Run `otherRun` against the baseline (the first run) on one task.
struct PairComparison {
    int64_t baseRun = 0;
    int64_t otherRun = 0;
    std::string task;
    std::vector<std::string> protocolDifferences; // "context_tokens: 512 vs 2048"; any: no test
    int64_t pairedDocuments = 0;                  // same doc id and content hash in both runs
    int64_t unpairedDocuments = 0;                // in one run only, or with different content
    std::string test;                             // "mcnemar", "bootstrap", or "" when none applies
    int64_t rightToWrong = 0; // mcnemar: correct in the baseline, wrong in the other
    int64_t wrongToRight = 0;
    double pValue = 1;
    NllComparison nll; // bootstrap: other - baseline
};

struct Comparison {
    std::vector<RunRecord> runs;
    std::vector<MetricComparison> metrics;
    std::vector<PairComparison> pairs;
};

// Needs at least two runs. Errors: a run that does not exist, a task no run has.
Result<Comparison> compareRuns(const RunStore &store, std::span<const int64_t> runIds,
                               const CompareOptions &options = {});

// Short label of a run's method: "none", "gptq w4 g128", "rtn w3 per-channel sym".
std::string methodLabel(const RunRecord &run);
// Differences between two protocol objects, one "key: a vs b" line per differing key.
std::vector<std::string> protocolDifferences(const nlohmann::json &a, const nlohmann::json &b);

std::string formatComparison(const Comparison &comparison);
nlohmann::json comparisonJson(const Comparison &comparison);

} // namespace lowbit
