// bench_train: training tokens/s of TrainableModel<float> (forward + hand-written backward, LoRA
// on all seven projections) and forward-only tokens/s, on stories260K or any checkpoint.
//   bench_train [MODEL] [--batch N] [--seq T] [--rank R] [--steps S] [--threads N]
// Every position is scored (plain language modelling). Prints one table row per mode.
#include "bench_support.h"

#include "model/checkpoint.h"
#include "train/trainable_model.h"

#include <cstdio>
#include <random>

namespace lowbit::bench {
namespace {

struct Options {
    std::filesystem::path model;
    int64_t batch = 8, seq = 256, steps = 3;
    int rank = 64;
    int threads = 0;
};

Result<Options> parseArgs(int argc, char **argv) {
    Options o;
    o.model = sharedDir() / "data" / "llama2c" / "stories260K.bin";
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto value = [&]() -> Result<int64_t> {
            if (i + 1 >= argc)
                return makeError(ErrorCode::InvalidArgument, a + " needs a value");
            return std::stoll(argv[++i]);
        };
        if (a == "--batch") {
            LOWBIT_TRY(o.batch, value());
        } else if (a == "--seq") {
            LOWBIT_TRY(o.seq, value());
        } else if (a == "--steps") {
            LOWBIT_TRY(o.steps, value());
        } else if (a == "--rank") {
            LOWBIT_TRY(int64_t r, value());
            o.rank = int(r);
        } else if (a == "--threads") {
            LOWBIT_TRY(int64_t t, value());
            o.threads = int(t);
        } else if (!a.starts_with("--")) {
            o.model = a;
        } else {
            return makeError(ErrorCode::InvalidArgument, "unknown option " + a);
        }
    }
    return o;
}

std::vector<train::TrainExample> randomBatch(const Options &o, int64_t vocab) {
    std::mt19937_64 rng(1);
    std::uniform_int_distribution<int32_t> token(0, int32_t(vocab - 1));
    std::vector<train::TrainExample> batch(size_t(o.batch));
    for (train::TrainExample &ex : batch) {
        for (int64_t t = 0; t <= o.seq; ++t)
            ex.tokens.push_back(token(rng));
        ex.targets.assign(ex.tokens.begin() + 1, ex.tokens.end());
        ex.tokens.pop_back();
    }
    return batch;
}

int run(int argc, char **argv) {
    auto options = parseArgs(argc, argv);
    if (!options) {
        std::fprintf(stderr, "bench_train: %s\n", options.error().message.c_str());
        return 2;
    }
    const Options &o = *options;
    auto checkpoint = loadCheckpoint(o.model);
    if (!checkpoint) {
        std::fprintf(stderr, "bench_train: %s\n", checkpoint.error().message.c_str());
        return 1;
    }
    train::LoraOptions lora;
    lora.rank = o.rank;
    auto model = train::TrainableModel<float>::create(*checkpoint, lora, {}, o.threads);
    if (!model) {
        std::fprintf(stderr, "bench_train: %s\n", model.error().message.c_str());
        return 1;
    }
    const auto batch = randomBatch(o, checkpoint->config.vocabSize);
    const double tokens = double(o.batch * o.seq);
    std::printf("| model | batch x seq | rank | threads | mode | tokens/s | s/step "
                "|\n|---|---|---|---|---|---|---|\n");
    for (bool backward : {false, true}) {
        (void)(backward ? (*model)->accumulate(batch) : (*model)->evaluate(batch)); // warm-up
        const auto start = std::chrono::steady_clock::now();
        for (int64_t s = 0; s < o.steps; ++s) {
            auto r = backward ? (*model)->accumulate(batch) : (*model)->evaluate(batch);
            if (!r) {
                std::fprintf(stderr, "bench_train: %s\n", r.error().message.c_str());
                return 1;
            }
        }
        const double seconds = secondsSince(start) / double(o.steps);
        std::printf("| %s | %lld x %lld | %d | %d | %s | %.0f | %.3f |\n",
                    o.model.filename().string().c_str(), (long long)o.batch, (long long)o.seq,
                    o.rank, o.threads, backward ? "fwd+bwd" : "fwd", tokens / seconds, seconds);
    }
    return 0;
}

} // namespace
} // namespace lowbit::bench

int main(int argc, char **argv) {
    return lowbit::bench::run(argc, argv);
}
