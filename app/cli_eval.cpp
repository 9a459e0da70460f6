// lowbit eval / tasks: benchmark tasks (evaluators/task.h) over one model, headless.
#include "cli_commands.h"
#include "cli_support.h"

#include "task.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <set>

namespace lowbit::cli {

using nlohmann::json;

namespace {

// Keeps every sample in memory for aggregate(); optionally appends them to a JSONL file.
class CollectingSink final : public SampleSink {
public:
    explicit CollectingSink(std::ofstream *out) : m_out(out) {}
    Status onSample(const SampleRecord &s) override {
        m_samples.push_back(s);
        if (m_out) {
            const json row = {{"task", m_task}, {"doc_id", s.docId}, {"doc_hash", s.docHash},
                              {"prompt_hash", s.promptHash}, {"target", s.target}, {"output", s.output},
                              {"choice_loglikelihoods", s.choiceLogLikelihoods}, {"correct", s.correct},
                              {"tokens", s.tokens}, {"nll", s.nll}, {"extra", s.extra}};
            *m_out << row.dump(-1, ' ', false, json::error_handler_t::replace) << '\n';
            if (!*m_out)
                return makeError(ErrorCode::Io, "eval: writing the samples file failed");
        }
        return {};
    }
    void start(const std::string &task) {
        m_task = task;
        m_samples.clear();
    }
    const std::vector<SampleRecord> &samples() const { return m_samples; }

private:
    std::ofstream *m_out;
    std::string m_task;
    std::vector<SampleRecord> m_samples;
};

std::vector<std::string> splitList(const std::string &text) {
    std::vector<std::string> out;
    size_t at = 0;
    while (at <= text.size()) {
        size_t comma = text.find(',', at);
        if (comma == std::string::npos)
            comma = text.size();
        if (comma > at)
            out.push_back(text.substr(at, comma - at));
        at = comma + 1;
    }
    return out;
}

Result<TaskOptions> taskOptions(const Args &args) {
    TaskOptions options;
    LOWBIT_TRY(options.limit, args.integer("limit", 0));
    LOWBIT_TRY(int64_t shots, args.integer("shots", -1));
    LOWBIT_TRY(options.contextTokens, args.integer("ctx", 0));
    LOWBIT_TRY(int64_t batch, args.integer("batch", 1));
    LOWBIT_TRY(int64_t seed, args.integer("seed", 0));
    LOWBIT_TRY(int64_t maxTokens, args.integer("max-tokens", 0));
    if (options.limit < 0 || shots < -1 || options.contextTokens < 0 || batch < 1 || batch > 256 || seed < 0 ||
        maxTokens < 0)
        return makeError(ErrorCode::InvalidArgument,
                         "eval: need --limit >= 0, --shots >= 0, --ctx >= 0, 1 <= --batch <= 256, --seed >= 0");
    options.shots = int(shots);
    options.batchSize = int(batch);
    options.seed = uint64_t(seed);
    if (auto mode = args.value("mode"))
        options.extra["mode"] = *mode;
    if (auto guard = args.value("guard"))
        options.extra["guard"] = *guard;
    if (auto base = args.value("kld-base"))
        options.extra["kld_base"] = *base;
    if (auto write = args.value("kld-write"))
        options.extra["kld_write"] = *write;
    if (maxTokens > 0)
        options.extra["max_tokens"] = maxTokens;
    if (args.has("bos"))
        options.extra["add_bos"] = true;
    if (args.has("chat"))
        options.extra["chat"] = true;
    if (args.has("no-chat"))
        options.extra["chat"] = false;
    if (auto extra = args.value("options")) {
        const json parsed = json::parse(*extra, nullptr, false);
        if (!parsed.is_object())
            return makeError(ErrorCode::InvalidArgument, "eval: --options must be a JSON object");
        options.extra.update(parsed);
    }
    return options;
}

json metricsJson(const TaskReport &report) {
    json metrics = json::array();
    for (const MetricValue &m : report.metrics)
        metrics.push_back({{"name", m.name}, {"value", m.value}, {"stderr", m.stderr_}, {"n", m.n}});
    return metrics;
}

} // namespace

int runEval(const std::vector<std::string> &argv) {
    auto args = Args::parse(argv,
                            {"model", "tokenizer", "threads", "device", "tasks", "limit", "shots", "batch", "ctx", "seed", "mode",
                             "guard", "kld-base", "kld-write", "max-tokens", "data", "samples", "options"},
                            {"json", "bos", "chat", "no-chat"});
    if (!args) return fail(args.error());
    const auto taskList = args->value("tasks");
    if (!taskList) return fail("eval: --tasks a,b,c is required (see lowbit tasks)");
    auto options = taskOptions(*args);
    if (!options) return fail(options.error());
    const std::filesystem::path dataDir = args->value("data").value_or(defaultDataDir().string());
    std::vector<std::unique_ptr<Task>> tasks;
    for (const std::string &name : splitList(*taskList)) {
        auto task = makeTask(name, dataDir);
        if (!task) return fail(task.error());
        tasks.push_back(std::move(*task));
    }
    auto device = deviceArg(*args);
    if (!device) return fail(device.error());
    auto checkpoint = loadModelArg(*args);
    if (!checkpoint) return fail(checkpoint.error());
    auto model = openModelArg(*args, *checkpoint, *device); // W8A8: with its activation quantization
    if (!model) return fail(model.error());
    if (!args->has("json"))
        std::fprintf(stderr, "evaluating on %s\n", (*model)->deviceDescription().c_str());
    std::ofstream samplesFile;
    if (auto path = args->value("samples")) {
        samplesFile.open(*path, std::ios::binary | std::ios::trunc);
        if (!samplesFile) return fail(makeError(ErrorCode::Io, *path + ": cannot create"));
    }
    CollectingSink sink(samplesFile.is_open() ? &samplesFile : nullptr);
    const bool asJson = args->has("json");
    json results = json::array();
    for (auto &task : tasks) {
        StderrProgress progress;
        sink.start(task->name());
        TaskContext context{**model, *options, progress, {}, sink, {}};
        const auto start = std::chrono::steady_clock::now();
        Status status = task->run(context);
        progress.finish();
        if (!status) return fail(status.error());
        auto report = task->aggregate(sink.samples(), **model, *options);
        if (!report) return fail(report.error());
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        results.push_back({{"task", report->task}, {"metrics", metricsJson(*report)}, {"protocol", report->protocol},
                           {"samples", sink.samples().size()}, {"seconds", seconds}});
        if (!asJson) {
            std::printf("%s  (%zu samples, %.1f s)\n", report->task.c_str(), sink.samples().size(), seconds);
            for (const MetricValue &m : report->metrics)
                std::printf("  %-36s %12.6f  +/- %.6f  (n=%lld)\n", m.name.c_str(), m.value, m.stderr_,
                            static_cast<long long>(m.n));
        }
    }
    if (asJson)
        std::printf("%s\n", json({{"model", (*checkpoint)->path.string()}, {"device", (*model)->device().toString()},
                                  {"results", results}}).dump().c_str());
    return 0;
}

int runTasks(const std::vector<std::string> &argv) {
    auto args = Args::parse(argv, {"data"}, {"json"});
    if (!args) return fail(args.error());
    const std::filesystem::path dataDir = args->value("data").value_or(defaultDataDir().string());
    json out = json::array();
    for (const TaskInfo &info : listTasks(dataDir)) {
        json files = json::array();
        for (const auto &f : info.dataFiles)
            files.push_back(f.string());
        out.push_back({{"name", info.name}, {"description", info.description}, {"data_files", files},
                       {"data_found", info.dataFound}});
        if (!args->has("json")) {
            std::printf("%-14s %-8s %s\n", info.name.c_str(), info.dataFound ? "found" : "MISSING",
                        info.description.c_str());
            for (const auto &f : info.dataFiles)
                std::printf("%-14s          %s\n", "", f.string().c_str());
        }
    }
    if (args->has("json"))
        std::printf("%s\n", json({{"data_dir", dataDir.string()}, {"tasks", out}}).dump().c_str());
    return 0;
}

} // namespace lowbit::cli
