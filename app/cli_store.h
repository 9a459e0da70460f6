// Pieces shared by the run-store subcommands (run, resume, runs, compare, export): the database
// from --db / $LOWBIT_DB / the XDG data folder, the pipeline context (evaluator tasks from --data,
// the engine's quantization methods), run ids from arguments.
#pragma once

#include "cli_args.h"
#include "pipeline/pipeline_context.h"
#include "run_store.h"

#include <filesystem>
#include <vector>

namespace lowbit::cli {

std::filesystem::path databaseArg(const Args &args);
// Opens the store for writing (creating it when missing).
Result<RunStore> openStoreArg(const Args &args);
// For the reading commands: the store must exist; opened for writing when the file allows it (so
// that runs of dead processes are marked interrupted), else read-only.
Result<RunStore> openStoreForReading(const Args &args);
std::filesystem::path dataDirArg(const Args &args);
PipelineContext cliPipelineContext(const std::filesystem::path &dataDir);
Result<int64_t> parseRunId(const std::string &text);
Result<std::vector<int64_t>> runIdArgs(const std::vector<std::string> &texts, size_t atLeast);

} // namespace lowbit::cli
