// lowbit run / resume: a job spec (file or flags) submitted to the run store and executed here,
// progress on stderr, metrics and finally the run id on stdout. Ctrl-C cancels: what finished is
// kept, and `lowbit resume RUN` continues after the last committed sample.
#include "cli_commands.h"
#include "cli_store.h"
#include "cli_support.h"

#include "pipeline/run_executor.h"

#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <thread>

namespace lowbit::cli {

using nlohmann::json;

namespace {

const std::set<std::string> kSpecOptions = {
    "model",         "tokenizer", "method",       "bits",           "group",   "layers", "calib",
    "calib-samples", "calib-len", "calib-seed",   "method-options", "tasks",   "limit",  "shots",
    "ctx",           "batch",     "task-options", "device",         "threads", "seed"};

std::atomic<bool> g_interrupted = false;

extern "C" void onInterrupt(int) {
    g_interrupted = true;
}

Result<json> jsonOption(const Args &args, const std::string &name) {
    const json value = json::parse(*args.value(name), nullptr, false);
    if (value.is_discarded() || !value.is_object())
        return makeError(ErrorCode::InvalidArgument, "--" + name + ": not a JSON object");
    return value;
}

std::vector<std::string> splitList(const std::string &text) {
    std::vector<std::string> items;
    size_t pos = 0;
    while (pos <= text.size()) {
        const size_t comma = std::min(text.find(',', pos), text.size());
        if (comma > pos)
            items.push_back(text.substr(pos, comma - pos));
        pos = comma + 1;
    }
    return items;
}

// Integers go into the spec as JSON numbers so that the spec parser names the field on bad values.
Status putInteger(const Args &args, const std::string &option, json &target,
                  const std::string &key) {
    if (!args.value(option))
        return {};
    LOWBIT_TRY(int64_t value, args.integer(option, 0));
    target[key] = value;
    return {};
}

Result<json> methodFromFlags(const Args &args) {
    json method = {{"name", args.value("method").value_or("none")}};
    LOWBIT_CHECK(putInteger(args, "bits", method, "bits"));
    LOWBIT_CHECK(putInteger(args, "group", method, "group_size"));
    if (args.has("sym"))
        method["symmetric"] = true;
    if (auto layers = args.value("layers"))
        method["layers"] = *layers;
    json calibration = json::object();
    if (auto calib = args.value("calib"))
        calibration["dataset"] = *calib;
    LOWBIT_CHECK(putInteger(args, "calib-samples", calibration, "samples"));
    LOWBIT_CHECK(putInteger(args, "calib-len", calibration, "tokens"));
    LOWBIT_CHECK(putInteger(args, "calib-seed", calibration, "seed"));
    if (!calibration.empty())
        method["calibration"] = calibration;
    if (args.value("method-options")) {
        LOWBIT_TRY(method["options"], jsonOption(args, "method-options"));
    }
    return method;
}

Result<JobSpec> specFromFlags(const Args &args) {
    const auto model = args.value("model");
    const auto tasks = args.value("tasks");
    if (!model || !tasks)
        return makeError(ErrorCode::InvalidArgument,
                         "run: give SPEC.json, or --model MODEL and --tasks a,b,c");
    json spec = {{"version", kJobSpecVersion}, {"checkpoint", *model}};
    if (auto tokenizer = args.value("tokenizer"))
        spec["tokenizer"] = *tokenizer;
    LOWBIT_TRY(spec["method"], methodFromFlags(args));
    json taskList = json::array();
    for (const std::string &name : splitList(*tasks)) {
        json task = {{"name", name}};
        LOWBIT_CHECK(putInteger(args, "limit", task, "limit"));
        LOWBIT_CHECK(putInteger(args, "shots", task, "shots"));
        LOWBIT_CHECK(putInteger(args, "ctx", task, "context"));
        LOWBIT_CHECK(putInteger(args, "batch", task, "batch_size"));
        if (args.value("task-options")) {
            LOWBIT_TRY(task["options"], jsonOption(args, "task-options"));
        }
        taskList.push_back(task);
    }
    spec["tasks"] = taskList;
    if (auto device = args.value("device"))
        spec["device"] = *device;
    LOWBIT_CHECK(putInteger(args, "threads", spec, "threads"));
    LOWBIT_CHECK(putInteger(args, "seed", spec, "seed"));
    return parseJobSpec(spec);
}

Result<JobSpec> specArg(const Args &args) {
    if (args.positionals().size() > 1)
        return makeError(ErrorCode::InvalidArgument, "run: one SPEC.json at most");
    if (args.positionals().empty())
        return specFromFlags(args);
    for (const std::string &option : kSpecOptions)
        if (args.has(option))
            return makeError(ErrorCode::InvalidArgument,
                             "run: --" + option +
                                 " cannot be combined with a spec file (edit the spec)");
    return readJobSpecFile(args.positionals().front());
}

void printMetrics(RunStore &store, int64_t runId) {
    auto metrics = store.metrics(runId);
    if (!metrics.ok())
        return;
    for (const StoredMetric &m : *metrics)
        std::printf("%-24s %-20s %.6g +/- %.3g  (n=%lld)\n", m.task.c_str(), m.metric.name.c_str(),
                    m.metric.value, m.metric.stderr_, static_cast<long long>(m.metric.n));
}

// Executes the run with a progress line on stderr; Ctrl-C requests its stop token.
int executeHere(RunStore &store, int64_t runId, const PipelineContext &context) {
    std::stop_source stop;
    g_interrupted = false;
    auto previous = std::signal(SIGINT, onInterrupt);
    std::atomic<bool> finished = false;
    std::thread watcher([&] {
        while (!finished) {
            if (g_interrupted)
                stop.request_stop();
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
    });
    StderrProgress progress;
    std::fprintf(stderr, "lowbit: run %lld in %s\n", static_cast<long long>(runId),
                 store.path().c_str());
    auto outcome = executeRun(store, runId, context, progress, stop.get_token());
    finished = true;
    watcher.join();
    std::signal(SIGINT, previous);
    progress.finish();
    if (!outcome.ok())
        return fail(outcome.error());
    printMetrics(store, runId);
    std::printf("%lld\n", static_cast<long long>(runId));
    if (outcome->status == RunStatus::Cancelled) {
        std::fprintf(stderr, "lowbit: run %lld cancelled; continue it with `lowbit resume %lld`\n",
                     static_cast<long long>(runId), static_cast<long long>(runId));
        return 130;
    }
    if (outcome->status != RunStatus::Done) {
        std::fprintf(stderr, "lowbit: run %lld failed: %s\n", static_cast<long long>(runId),
                     outcome->error.c_str());
        return 1;
    }
    return 0;
}

std::set<std::string> runValueOptions() {
    std::set<std::string> options = kSpecOptions;
    options.insert({"db", "data"});
    return options;
}

} // namespace

int runRun(const std::vector<std::string> &argv) {
    auto args = Args::parse(argv, runValueOptions(), {"force", "sym"});
    if (!args)
        return fail(args.error());
    auto spec = specArg(*args);
    if (!spec)
        return fail(spec.error());
    auto store = openStoreArg(*args);
    if (!store)
        return fail(store.error());
    const PipelineContext context = cliPipelineContext(dataDirArg(*args));
    auto submission = submitJob(*store, *spec, context, args->has("force"));
    if (!submission)
        return fail(submission.error());
    for (const AlreadyMeasured &m : submission->skipped)
        std::fprintf(stderr,
                     "lowbit: %s already measured in run %lld (--force measures it again)\n",
                     m.task.c_str(), static_cast<long long>(m.runId));
    if (!submission->runId) {
        std::printf("%lld\n", static_cast<long long>(submission->skipped.back().runId));
        return 0;
    }
    return executeHere(*store, *submission->runId, context);
}

int runResume(const std::vector<std::string> &argv) {
    auto args = Args::parse(argv, {"db", "data"}, {});
    if (!args)
        return fail(args.error());
    auto ids = runIdArgs(args->positionals(), 1);
    if (!ids)
        return fail(ids.error());
    if (ids->size() != 1)
        return fail("resume: one run id");
    auto store = openStoreForReading(*args);
    if (!store)
        return fail(store.error());
    auto run = store->run(ids->front());
    if (!run)
        return fail(run.error());
    if (run->status == RunStatus::Done)
        return fail("resume: run " + std::to_string(run->id) + " is already done");
    return executeHere(*store, run->id, cliPipelineContext(dataDirArg(*args)));
}

} // namespace lowbit::cli
