// Exporting runs: CSV and Markdown tables of metrics (one row per run, task and metric), a JSON
// document with everything stored about each run except its samples (its training curve
// included: "training_steps", empty for a run that did not train), and lm-eval: per run a
// results JSON shaped like lm-evaluation-harness's ("results" with "acc,none" and
// "acc_stderr,none" keys, "configs", "versions", "n-shot", "higher_is_better", "n-samples",
// "config") plus a samples JSONL per task, so that runs can be put next to published harness
// numbers.
#pragma once

#include "core/result.h"
#include "run_store.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <span>
#include <string>

namespace lowbit {

enum class ExportFormat { Csv, Json, Markdown, LmEval };
Result<ExportFormat> parseExportFormat(const std::string &name);

// The JSON export as a value: {"format": "lowbit-runs", "version": 1, "runs": [...]}.
Result<nlohmann::json> exportJson(const RunStore &store, std::span<const int64_t> runIds);
Result<std::string> exportCsv(const RunStore &store, std::span<const int64_t> runIds);
Result<std::string> exportMarkdown(const RunStore &store, std::span<const int64_t> runIds);
// lm-evaluation-harness results of one run, and the sample lines of one of its tasks.
Result<nlohmann::json> lmEvalResults(const RunStore &store, int64_t runId);
Result<std::string> lmEvalSamples(const RunStore &store, int64_t runId, const std::string &task);

// Writes the export to `out`: a file for csv/json/markdown; for lm-eval a directory (created)
// holding results_run<ID>.json and samples_<task>_run<ID>.jsonl per run. Files are written to a
// temporary name and renamed, so a failed export leaves no half file.
Status exportRuns(const RunStore &store, std::span<const int64_t> runIds, ExportFormat format,
                  const std::filesystem::path &out);

} // namespace lowbit
