// bench_finetune: whole QLoRA optimizer steps through the Trainer (data order, micro-batches,
// forward + backward, gradient scaling, global-norm clipping, AdamW, base refresh) on real text,
// plus the cost of the optimizer alone. bench_train times the model's forward/backward only.
//   bench_finetune [MODEL] [--tokenizer FILE] [--data TEXT] [--batch N] [--micro N] [--seq T]
//                  [--rank R] [--steps S] [--threads N]
// Defaults: stories260K + tok512, TinyStories validation text, batch 8 x 256 tokens, rank 64,
// 4 steps after one warm-up step. Prints a Markdown table row.
#include "bench_support.h"

#include "model/checkpoint.h"
#include "train/finetune.h"
#include "train/optimizer.h"
#include "train/trainable_model.h"

#include <cstdio>
#include <random>

namespace lowbit::bench {
namespace {

struct Options {
    std::filesystem::path model, tokenizer, data;
    int64_t batch = 8, micro = 0, seq = 256, steps = 4;
    int rank = 64;
    int threads = 0;
};

Result<Options> parseArgs(int argc, char **argv) {
    Options o;
    o.model = sharedDir() / "data" / "llama2c" / "stories260K.bin";
    o.tokenizer = sharedDir() / "data" / "llama2c" / "tok512.bin";
    o.data = sharedDir() / "data" / "tinystories" / "tinystories_val_first1000.txt";
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (!a.starts_with("--")) {
            o.model = a;
            o.tokenizer.clear();
            continue;
        }
        if (i + 1 >= argc)
            return makeError(ErrorCode::InvalidArgument, a + " needs a value");
        const std::string v = argv[++i];
        char *end = nullptr;
        const long long n = std::strtoll(v.c_str(), &end, 10);
        const bool numeric = end && *end == '\0';
        if (a == "--tokenizer")
            o.tokenizer = v;
        else if (a == "--data")
            o.data = v;
        else if (!numeric)
            return makeError(ErrorCode::InvalidArgument, a + ": not an integer or unknown option");
        else if (a == "--batch")
            o.batch = n;
        else if (a == "--micro")
            o.micro = n;
        else if (a == "--seq")
            o.seq = n;
        else if (a == "--rank")
            o.rank = int(n);
        else if (a == "--steps")
            o.steps = n;
        else if (a == "--threads")
            o.threads = int(n);
        else
            return makeError(ErrorCode::InvalidArgument, "unknown option " + a);
    }
    return o;
}

// Milliseconds of one AdamW step over `params` (random gradients), clipping included.
double optimizerMs(std::vector<train::Parameter<float> *> params) {
    std::mt19937 rng(3);
    std::normal_distribution<float> g(0.0f, 1e-3f);
    for (train::Parameter<float> *p : params)
        for (float &x : p->grad)
            x = g(rng);
    train::AdamW<float> adam;
    (void)adam.step(params, 0.0); // sizes the moments; lr 0 keeps the values
    const int reps = 5;
    const auto start = std::chrono::steady_clock::now();
    for (int r = 0; r < reps; ++r) {
        (void)train::clipGradNorm<float>(params, 0.3);
        (void)adam.step(params, 0.0);
    }
    return secondsSince(start) * 1e3 / reps;
}

int run(int argc, char **argv) {
    auto options = parseArgs(argc, argv);
    if (!options) {
        std::fprintf(stderr, "bench_finetune: %s\n", options.error().message.c_str());
        return 2;
    }
    const Options &o = *options;
    auto loaded = loadCheckpoint(o.model, {o.tokenizer});
    if (!loaded) {
        std::fprintf(stderr, "bench_finetune: %s\n", loaded.error().message.c_str());
        return 1;
    }
    const auto source = std::make_shared<const Checkpoint>(std::move(*loaded));
    train::FinetuneOptions fo;
    fo.threads = o.threads;
    fo.lora.rank = o.rank;
    NullProgress progress;
    auto start = std::chrono::steady_clock::now();
    auto base = train::finetuneBase(*source, fo, progress);
    const double baseSeconds = secondsSince(start);
    auto model = base ? train::TrainableModel<float>::create(**base, fo.lora, {}, o.threads)
                      : Result<std::unique_ptr<train::TrainableModel<float>>>(base.error());
    train::DataOptions dataOptions;
    dataOptions.textWindowTokens = o.seq;
    auto data = train::loadTrainingData(o.data, *source->tokenizer, dataOptions);
    if (!model || !data) {
        std::fprintf(stderr, "bench_finetune: %s\n",
                     (!model ? model.error() : data.error()).message.c_str());
        return 1;
    }
    class Target final : public train::TrainTarget {
    public:
        explicit Target(train::TrainableModel<float> &m) : m_m(m) {}
        std::vector<train::Parameter<float> *> parameters() override { return m_m.parameters(); }
        void zeroGrad() override { m_m.zeroGrad(); }
        Result<train::LossStats> accumulate(std::span<const train::TrainExample> b) override {
            return m_m.accumulate(b);
        }
        void afterStep() override { m_m.afterStep(); }

    private:
        train::TrainableModel<float> &m_m;
    } target(**model);
    train::TrainerOptions to;
    to.steps = o.steps + 1; // the first step warms up
    to.batchSize = o.batch;
    to.microBatchSize = o.micro;
    auto report = train::Trainer(target, data->examples, to).run(progress);
    if (!report) {
        std::fprintf(stderr, "bench_finetune: %s\n", report.error().message.c_str());
        return 1;
    }
    double seconds = 0;
    int64_t tokens = 0;
    for (size_t s = 1; s < report->history.size(); ++s) {
        seconds += double(report->history[s].tokens) / report->history[s].tokensPerSecond;
        tokens += report->history[s].tokens;
    }
    int64_t trainable = 0;
    for (const auto *p : (*model)->parameters())
        trainable += int64_t(p->value.size());
    const double adamMs = optimizerMs((*model)->parameters());
    std::printf(
        "| model | batch x seq (micro) | rank | trainable | threads | NF4 base s | s/step | "
        "tokens/s | AdamW+clip ms/step |\n|---|---|---|---|---|---|---|---|---|\n");
    std::printf("| %s | %lld x %lld (%lld) | %d | %lld | %d | %.2f | %.3f | %.0f | %.2f |\n",
                o.model.filename().string().c_str(), (long long)o.batch, (long long)o.seq,
                (long long)(o.micro > 0 ? o.micro : o.batch), o.rank, (long long)trainable,
                o.threads, baseSeconds, seconds / double(o.steps), double(tokens) / seconds,
                adamMs);
    return 0;
}

} // namespace
} // namespace lowbit::bench

int main(int argc, char **argv) {
    return lowbit::bench::run(argc, argv);
}
