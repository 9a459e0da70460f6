// The headless subcommands of `lowbit`. Each takes the arguments after its name, prints its result
// on stdout (JSON with --json), progress and errors on stderr, and returns the process exit code.
#pragma once

#include <string>
#include <vector>

namespace lowbit::cli {

int runInfo(const std::vector<std::string> &args);
int runTokenize(const std::vector<std::string> &args);
int runLogits(const std::vector<std::string> &args);
int runGenerate(const std::vector<std::string> &args);
int runPerplexity(const std::vector<std::string> &args);
int runEval(const std::vector<std::string> &args);
int runTasks(const std::vector<std::string> &args);
int runQuantize(const std::vector<std::string> &args);
int runRun(const std::vector<std::string> &args);
int runResume(const std::vector<std::string> &args);
int runRuns(const std::vector<std::string> &args);
int runCompare(const std::vector<std::string> &args);
int runExport(const std::vector<std::string> &args);
int runExportModel(const std::vector<std::string> &args);
int runFinetune(const std::vector<std::string> &args);
int runSweep(const std::vector<std::string> &args);

} // namespace lowbit::cli
