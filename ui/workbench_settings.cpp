#include "workbench_settings.h"

#include "pipeline/engine_finetune.h"
#include "pipeline/engine_quantization.h"
#include "run_store.h"
#include "task.h"

#include <QSettings>

namespace lowbit::ui {

std::filesystem::path databasePath() {
    const QString value = QSettings().value(kDatabaseKey).toString();
    if (value.isEmpty())
        return defaultDatabasePath();
    return std::filesystem::path(value.toStdString());
}

std::filesystem::path dataDir() {
    const QString value = QSettings().value(kDataDirKey).toString();
    if (value.isEmpty())
        return defaultDataDir();
    return std::filesystem::path(value.toStdString());
}

int engineThreads() {
    return qMax(0, QSettings().value(kThreadsKey, 0).toInt());
}

QString engineDevice() {
    return QSettings().value(kDeviceKey, QStringLiteral("cpu")).toString();
}

PipelineContext workbenchPipelineContext(const std::filesystem::path &dir) {
    PipelineContext context;
    context.makeTask = [dir](const std::string &name) { return makeTask(name, dir); };
    context.dataFiles = [dir](const std::string &name) {
        for (const TaskInfo &info : listTasks(dir))
            if (info.name == name)
                return info.dataFiles;
        return std::vector<std::filesystem::path>();
    };
    context.quantization =
        withFinetuneMethods(engineQuantizationHooks(dir)); // + qlora, irqlora, dbllm
    return context;
}

} // namespace lowbit::ui
