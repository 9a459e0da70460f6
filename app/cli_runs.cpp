// lowbit runs list|show|delete, compare, export: reading the run store.
#include "cli_commands.h"
#include "cli_store.h"
#include "cli_support.h"

#include "compare.h"
#include "export.h"

#include <nlohmann/json.hpp>

#include <cstdio>

namespace lowbit::cli {

using nlohmann::json;

namespace {

std::string shortModel(const std::string &path) {
    const std::filesystem::path p(path);
    return p.filename().empty() ? p.parent_path().filename().string() : p.filename().string();
}

// "tinystories ppl=5.123 | arc_easy acc=0.51" from the first metric of each task.
std::string metricSummary(const RunStore &store, int64_t runId) {
    auto metrics = store.metrics(runId);
    if (!metrics.ok())
        return "";
    std::string out, lastTask;
    for (const StoredMetric &m : *metrics) {
        if (m.task == lastTask)
            continue;
        char value[48];
        std::snprintf(value, sizeof value, "%.4g", m.metric.value);
        out += (out.empty() ? "" : " | ") + m.task + " " + m.metric.name + "=" + value;
        lastTask = m.task;
    }
    return out;
}

int listRuns(const Args &args) {
    RunFilter filter;
    filter.model = args.value("model").value_or("");
    filter.method = args.value("method").value_or("");
    filter.task = args.value("task").value_or("");
    if (auto status = args.value("status")) {
        auto parsed = parseRunStatus(*status);
        if (!parsed)
            return fail(parsed.error());
        filter.status = *parsed;
    }
    auto store = openStoreForReading(args);
    if (!store && store.error().code == ErrorCode::NotFound)
        return 0; // no database yet: no runs
    if (!store)
        return fail(store.error());
    auto runs = store->listRuns(filter);
    if (!runs)
        return fail(runs.error());
    json list = json::array();
    for (const RunRecord &run : *runs) {
        auto tasks = store->runTasks(run.id);
        std::string names;
        for (const RunTaskRecord &task : tasks.ok() ? *tasks : std::vector<RunTaskRecord>{})
            names += (names.empty() ? "" : ",") + task.task;
        if (args.has("json")) {
            list.push_back({{"id", run.id},
                            {"status", runStatusName(run.status)},
                            {"created_at", run.createdAt},
                            {"model", run.model},
                            {"method", methodLabel(run)},
                            {"tasks", names}});
            continue;
        }
        std::printf("%lld  %-11s %s  %s  %s  [%s]  %s\n", static_cast<long long>(run.id),
                    runStatusName(run.status), run.createdAt.substr(0, 19).c_str(),
                    shortModel(run.model).c_str(), methodLabel(run).c_str(), names.c_str(),
                    metricSummary(*store, run.id).c_str());
    }
    if (args.has("json"))
        std::printf("%s\n", list.dump().c_str());
    return 0;
}

// "200 steps, loss 3.41 -> 2.87 (min 2.80 at step 187), lr 0.0002, grad norm 0.41, 5120 tok/s"
void printTrainingSummary(const json &steps) {
    if (!steps.is_array() || steps.empty())
        return;
    const json &first = steps.front(), &last = steps.back();
    const json *best = &first;
    double tokensPerSecond = 0;
    int64_t timed = 0;
    for (const json &s : steps) {
        if (s["loss"].get<double>() < (*best)["loss"].get<double>())
            best = &s;
        if (s["tokens_per_s"].get<double>() > 0) {
            tokensPerSecond += s["tokens_per_s"].get<double>();
            ++timed;
        }
    }
    std::printf("  training   %zu steps, loss %.4g -> %.4g (min %.4g at step %lld), lr %.3g, "
                "grad norm %.3g",
                steps.size(), first["loss"].get<double>(), last["loss"].get<double>(),
                (*best)["loss"].get<double>(),
                static_cast<long long>((*best)["step"].get<int64_t>()),
                last["learning_rate"].get<double>(), last["grad_norm"].get<double>());
    if (timed > 0)
        std::printf(", %.4g tok/s", tokensPerSecond / double(timed));
    std::printf("\n");
}

json runShowJson(const RunStore &store, int64_t runId) {
    auto exported = exportJson(store, std::span<const int64_t>(&runId, 1));
    json run = exported.ok() ? exported->at("runs").at(0) : json::object();
    json log = json::array();
    if (auto lines = store.logLines(runId, 20); lines.ok())
        for (const LogLine &line : *lines)
            log.push_back(line.at + " " + line.level + " " + line.message);
    run["log"] = log;
    return run;
}

int showRun(const Args &args) {
    if (args.positionals().size() != 2)
        return fail("runs show: one run id");
    auto id = parseRunId(args.positionals()[1]);
    if (!id)
        return fail(id.error());
    auto store = openStoreForReading(args);
    if (!store)
        return fail(store.error());
    auto run = store->run(*id);
    if (!run)
        return fail(run.error());
    const json shown = runShowJson(*store, *id);
    if (args.has("json")) {
        std::printf("%s\n", shown.dump().c_str());
        return 0;
    }
    std::printf("run %lld: %s\n", static_cast<long long>(run->id), runStatusName(run->status));
    std::printf("  model      %s\n  method     %s\n  device     %s\n", run->model.c_str(),
                methodLabel(*run).c_str(), run->device.c_str());
    std::printf("  created    %s\n  started    %s\n  finished   %s\n", run->createdAt.c_str(),
                run->startedAt.c_str(), run->finishedAt.c_str());
    std::printf("  host       %s (pid %lld)\n  engine     lowbit %s (%s)\n", run->host.c_str(),
                static_cast<long long>(run->pid), run->engineVersion.c_str(),
                run->engineCommit.c_str());
    std::printf("  phases     %s\n", run->phaseSeconds.dump().c_str());
    if (!run->error.empty())
        std::printf("  error      %s\n", run->error.c_str());
    for (const json &task : shown.value("tasks", json::array())) {
        std::printf("  task %s: %s, %lld samples, protocol %s\n",
                    task["name"].get<std::string>().c_str(),
                    task["status"].get<std::string>().c_str(),
                    static_cast<long long>(task["samples"].get<int64_t>()),
                    task["protocol"].dump().c_str());
        for (const auto &[name, m] : task["metrics"].items())
            std::printf("    %-20s %.6g +/- %.3g  (n=%lld)\n", name.c_str(),
                        m["value"].get<double>(), m["stderr"].get<double>(),
                        static_cast<long long>(m["n"].get<int64_t>()));
    }
    printTrainingSummary(shown.value("training_steps", json::array()));
    for (const json &artifact : shown.value("artifacts", json::array()))
        std::printf("  artifact   %s %s (%lld bytes)\n",
                    artifact["kind"].get<std::string>().c_str(),
                    artifact["path"].get<std::string>().c_str(),
                    static_cast<long long>(artifact["size_bytes"].get<int64_t>()));
    for (const json &line : shown["log"])
        std::printf("  log        %s\n", line.get<std::string>().c_str());
    std::printf("  spec       %s\n", run->spec.dump().c_str());
    return 0;
}

int deleteRun(const Args &args) {
    auto ids = runIdArgs(
        std::vector<std::string>(args.positionals().begin() + 1, args.positionals().end()), 1);
    if (!ids)
        return fail(ids.error());
    auto store = openStoreForReading(args);
    if (!store)
        return fail(store.error());
    for (int64_t id : *ids) {
        if (auto status = store->deleteRun(id); !status.ok())
            return fail(status.error());
        std::fprintf(stderr, "lowbit: deleted run %lld\n", static_cast<long long>(id));
    }
    return 0;
}

} // namespace

int runRuns(const std::vector<std::string> &argv) {
    auto args = Args::parse(argv, {"db", "model", "method", "task", "status"}, {"json"});
    if (!args)
        return fail(args.error());
    const std::string verb = args->positionals().empty() ? "list" : args->positionals().front();
    if (verb == "list")
        return listRuns(*args);
    if (verb == "show")
        return showRun(*args);
    if (verb == "delete")
        return deleteRun(*args);
    return fail("runs: unknown action '" + verb + "' (list, show RUN, delete RUN)");
}

int runCompare(const std::vector<std::string> &argv) {
    auto args = Args::parse(argv, {"db", "task", "resamples", "seed"}, {"json"});
    if (!args)
        return fail(args.error());
    auto ids = runIdArgs(args->positionals(), 2);
    if (!ids)
        return fail(ids.error());
    CompareOptions options;
    options.task = args->value("task").value_or("");
    auto resamples = args->integer("resamples", options.bootstrapResamples);
    auto seed = args->integer("seed", 0);
    if (!resamples)
        return fail(resamples.error());
    if (!seed)
        return fail(seed.error());
    if (*resamples < 100 || *resamples > 1000000)
        return fail("compare: --resamples must be in [100, 1000000]");
    options.bootstrapResamples = int(*resamples);
    options.seed = uint64_t(*seed);
    auto store = openStoreForReading(*args);
    if (!store)
        return fail(store.error());
    auto comparison = compareRuns(*store, *ids, options);
    if (!comparison)
        return fail(comparison.error());
    if (args->has("json"))
        std::printf("%s\n", comparisonJson(*comparison).dump().c_str());
    else
        std::fputs(formatComparison(*comparison).c_str(), stdout);
    return 0;
}

int runExport(const std::vector<std::string> &argv) {
    auto args = Args::parse(argv, {"db", "format", "out"}, {});
    if (!args)
        return fail(args.error());
    auto ids = runIdArgs(args->positionals(), 1);
    if (!ids)
        return fail(ids.error());
    const auto format = parseExportFormat(args->value("format").value_or(""));
    if (!format)
        return fail(format.error());
    const auto out = args->value("out");
    if (!out)
        return fail("export: --out PATH is required");
    auto store = openStoreForReading(*args);
    if (!store)
        return fail(store.error());
    if (auto status = exportRuns(*store, *ids, *format, *out); !status.ok())
        return fail(status.error());
    std::fprintf(stderr, "lowbit: exported %zu run(s) to %s\n", ids->size(), out->c_str());
    return 0;
}

} // namespace lowbit::cli
