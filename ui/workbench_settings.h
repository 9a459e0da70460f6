// The workbench's settings (QSettings keys and their defaults) and the pipeline context it runs
// jobs with. Every panel reads settings through these functions, so a key has one home.
#pragma once

#include "pipeline/pipeline_context.h"

#include <QString>

#include <filesystem>

namespace lowbit::ui {

inline constexpr const char *kDatabaseKey = "workbench/database";
inline constexpr const char *kDataDirKey = "workbench/dataDir";
inline constexpr const char *kThreadsKey = "workbench/threads";
inline constexpr const char *kDeviceKey = "workbench/device";

// The run database: the setting, else defaultDatabasePath() ($LOWBIT_DB, XDG data folder).
std::filesystem::path databasePath();
// The datasets folder: the setting, else defaultDataDir() ($LOWBIT_DATA_DIR, shared/data).
std::filesystem::path dataDir();
// Engine threads per job (0: every hardware thread).
int engineThreads();
// "cpu" or "cuda:N".
QString engineDevice();

// Evaluator tasks from `dataDir`, the engine's quantization methods and the fine-tuning methods
// (qlora, irqlora, dbllm), as the CLI uses them.
PipelineContext workbenchPipelineContext(const std::filesystem::path &dataDir);

inline QString toQString(const std::string &text) {
    return QString::fromUtf8(text.data(), qsizetype(text.size()));
}

} // namespace lowbit::ui
