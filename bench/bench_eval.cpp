// bench_eval: what the evaluators cost. (1) MMLU 5-shot context reuse: tokens the model runs per
// question, relative to one prefill of that question's prompt, with the shared header and group
// prefix (the default), with the group prefix only, and with no reuse (lm-eval's 4 requests =
// 4 prefills); target <= 1.3. (2) Throughput per task type: each task run end to end with a small
// limit, samples/s and model tokens/s. Prints Markdown tables (docs/BENCHMARKS.md).
//
//   bench_eval [--model PATH [--tokenizer FILE]] [--threads N] [--questions N] [--limit N] [--ctx N]
// Without --model: build/bench-models/random-100m-f16.gguf (Llama 3 tokenizer, so MMLU prompts
// have their real token counts) when present, else stories260K.
#include "bench_support.h"

#include "loglikelihood.h"
#include "mmlu.h"
#include "model/checkpoint.h"
#include "runtime/model.h"
#include "task.h"

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace lowbit::bench {
namespace {

namespace fs = std::filesystem;

struct Options {
    fs::path model;
    fs::path tokenizer;
    int threads = 0;
    int questions = 20; // per subject, MMLU cost
    int limit = 8;      // documents per task, throughput
    int64_t ctx = 0;
};

Result<Options> parse(int argc, char **argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (i + 1 >= argc)
            return makeError(ErrorCode::InvalidArgument, "bench_eval: " + a + " needs a value");
        const std::string v = argv[++i];
        if (a == "--model")
            o.model = v;
        else if (a == "--tokenizer")
            o.tokenizer = v;
        else if (a == "--threads")
            o.threads = std::atoi(v.c_str());
        else if (a == "--questions")
            o.questions = std::max(1, std::atoi(v.c_str()));
        else if (a == "--limit")
            o.limit = std::max(1, std::atoi(v.c_str()));
        else if (a == "--ctx")
            o.ctx = std::atoll(v.c_str());
        else
            return makeError(ErrorCode::InvalidArgument, "bench_eval: unknown option " + a);
    }
    if (o.model.empty()) {
        o.model = defaultModelsDir() / "random-100m-f16.gguf";
        if (!fs::exists(o.model)) {
            o.model = sharedDir() / "data" / "llama2c" / "stories260K.bin";
            o.tokenizer = sharedDir() / "data" / "llama2c" / "tok512.bin";
        }
    }
    return o;
}

enum class Reuse { None, Group, HeaderAndGroup };

// Tokens run per question / prompt tokens per question, over `questions` questions of `subjects`.
Result<double> mmluCost(Model &model, const fs::path &dataDir, const std::vector<std::string> &subjects,
                        int questions, Reuse reuse, double *tokensPerSecond) {
    LoglikelihoodEngine engine(model, {false, 0});
    int64_t promptTokens = 0;
    const auto start = std::chrono::steady_clock::now();
    for (const std::string &subject : subjects) {
        LOWBIT_TRY(auto dev, readMmluCsv(dataDir / "mmlu" / "data" / "dev" / (subject + "_dev.csv"), subject));
        LOWBIT_TRY(auto test, readMmluCsv(dataDir / "mmlu" / "data" / "test" / (subject + "_test.csv"), subject));
        const std::span<const MmluQuestion> shots(dev.data(), std::min<size_t>(5, dev.size()));
        const std::string header = mmluHeader(subject, shots);
        std::vector<LoglikelihoodRequest> requests;
        for (int q = 0; q < std::min<int>(questions, int(test.size())); ++q) {
            const std::string prompt = mmluPrompt(subject, shots, test[size_t(q)]);
            promptTokens += int64_t(model.tokenizer()->encode(prompt, {false, false}).size());
            for (const char *choice : {" A", " B", " C", " D"})
                requests.push_back({prompt, choice, reuse == Reuse::None ? -1 : q,
                                    reuse == Reuse::HeaderAndGroup ? header : std::string()});
        }
        LOWBIT_TRY(auto results, engine.score(requests));
        (void)results;
    }
    *tokensPerSecond = double(engine.tokensEvaluated()) / secondsSince(start);
    return double(engine.tokensEvaluated()) / double(promptTokens);
}

class CountingSink final : public SampleSink {
public:
    Status onSample(const SampleRecord &s) override {
        ++samples;
        tokens += s.tokens;
        return {};
    }
    int64_t samples = 0, tokens = 0;
};

int run(int argc, char **argv) {
    auto options = parse(argc, argv);
    if (!options) {
        std::fprintf(stderr, "%s\n", options.error().toString().c_str());
        return 2;
    }
    LoadOptions load;
    load.tokenizerPath = options->tokenizer;
    auto checkpoint = loadCheckpoint(options->model, load);
    if (!checkpoint) {
        std::fprintf(stderr, "bench_eval: %s\n", checkpoint.error().toString().c_str());
        return 1;
    }
    auto model = Model::create(std::make_shared<const Checkpoint>(std::move(*checkpoint)), {options->threads});
    if (!model) {
        std::fprintf(stderr, "bench_eval: %s\n", model.error().toString().c_str());
        return 1;
    }
    Model &m = **model;
    const fs::path dataDir = sharedDir() / "data";
    std::printf("model %s, %d threads, context %lld\n\n", options->model.filename().c_str(), m.threads(),
                static_cast<long long>(options->ctx > 0 ? options->ctx : m.config().maxPositions));

    const std::vector<std::string> subjects = {"abstract_algebra", "high_school_geography", "professional_law"};
    std::printf("| MMLU 5-shot reuse | tokens run / prompt tokens per question | tokens/s |\n|---|---:|---:|\n");
    for (auto [reuse, label] : {std::pair{Reuse::HeaderAndGroup, "header + group prefix (default)"},
                                std::pair{Reuse::Group, "group prefix only"}, std::pair{Reuse::None, "none (4 prefills)"}}) {
        double rate = 0;
        auto cost = mmluCost(m, dataDir, subjects, options->questions, reuse, &rate);
        if (!cost) {
            std::fprintf(stderr, "bench_eval: %s\n", cost.error().toString().c_str());
            return 1;
        }
        std::printf("| %s | %.3f | %.0f |\n", label, *cost, rate);
        std::fflush(stdout);
    }

    std::printf("\n| task | type | samples | seconds | samples/s | scored or generated tokens/s |\n"
                "|---|---|---:|---:|---:|---:|\n");
    const std::pair<const char *, const char *> tasks[] = {
        {"wikitext2", "perplexity"}, {"piqa", "multiple choice"}, {"hellaswag", "multiple choice"},
        {"winogrande", "multiple choice (partial)"}, {"mmlu", "multiple choice, 5-shot"},
        {"gsm8k", "generation, 5-shot"}, {"xstest", "generation + refusal"}};
    for (const auto &[name, type] : tasks) {
        auto task = makeTask(name, dataDir);
        if (!task)
            continue;
        TaskOptions taskOptions;
        taskOptions.limit = std::string(name) == "mmlu" ? 1 : options->limit;
        taskOptions.contextTokens = options->ctx;
        taskOptions.batchSize = 8;
        taskOptions.extra["max_tokens"] = 64;
        CountingSink sink;
        NullProgress progress;
        TaskContext context{m, taskOptions, progress, {}, sink, {}};
        const auto start = std::chrono::steady_clock::now();
        if (Status s = (*task)->run(context); !s) {
            std::fprintf(stderr, "bench_eval: %s: %s\n", name, s.error().toString().c_str());
            continue;
        }
        const double seconds = secondsSince(start);
        std::printf("| %s | %s | %lld | %.2f | %.2f | %.0f |\n", name, type, static_cast<long long>(sink.samples),
                    seconds, double(sink.samples) / seconds, double(sink.tokens) / seconds);
        std::fflush(stdout);
    }
    return 0;
}

} // namespace
} // namespace lowbit::bench

int main(int argc, char **argv) { return lowbit::bench::run(argc, argv); }
