#include "cli_store.h"

#include "pipeline/engine_finetune.h"
#include "pipeline/engine_quantization.h"
#include "task.h"

#include <charconv>

namespace lowbit::cli {

std::filesystem::path databaseArg(const Args &args) {
    if (auto db = args.value("db"))
        return *db;
    return defaultDatabasePath();
}

Result<RunStore> openStoreArg(const Args &args) {
    return RunStore::open(databaseArg(args));
}

Result<RunStore> openStoreForReading(const Args &args) {
    const std::filesystem::path path = databaseArg(args);
    if (!std::filesystem::exists(path))
        return makeError(ErrorCode::NotFound, path.string() + ": no run store there");
    auto store = RunStore::open(path);
    if (!store.ok() && store.error().code == ErrorCode::Io)
        return RunStore::open(path, {.readOnly = true});
    return store;
}

std::filesystem::path dataDirArg(const Args &args) {
    if (auto dir = args.value("data"))
        return *dir;
    return defaultDataDir();
}

PipelineContext cliPipelineContext(const std::filesystem::path &dataDir) {
    PipelineContext context;
    context.makeTask = [dataDir](const std::string &name) { return makeTask(name, dataDir); };
    context.dataFiles = [dataDir](const std::string &name) {
        for (const TaskInfo &info : listTasks(dataDir))
            if (info.name == name)
                return info.dataFiles;
        return std::vector<std::filesystem::path>();
    };
    context.quantization = withFinetuneMethods(engineQuantizationHooks(dataDir));
    return context;
}

Result<int64_t> parseRunId(const std::string &text) {
    int64_t id = 0;
    const char *begin = text.data() + (text.size() > 1 && text[0] == '#' ? 1 : 0);
    auto [end, ec] = std::from_chars(begin, text.data() + text.size(), id);
    if (ec != std::errc() || end != text.data() + text.size() || id <= 0)
        return makeError(ErrorCode::InvalidArgument,
                         "'" + text + "' is not a run id (a positive integer)");
    return id;
}

Result<std::vector<int64_t>> runIdArgs(const std::vector<std::string> &texts, size_t atLeast) {
    if (texts.size() < atLeast)
        return makeError(ErrorCode::InvalidArgument, "give at least " + std::to_string(atLeast) +
                                                         " run id" + (atLeast > 1 ? "s" : ""));
    std::vector<int64_t> ids;
    for (const std::string &text : texts) {
        LOWBIT_TRY(int64_t id, parseRunId(text));
        ids.push_back(id);
    }
    return ids;
}

} // namespace lowbit::cli
