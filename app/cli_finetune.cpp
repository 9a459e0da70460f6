// lowbit finetune: QLoRA / IR-QLoRA / DB-LLM fine-tuning of a checkpoint (engine/train/finetune.h)
// into OUT (adapter in the PEFT layout, merged HF model, trainer checkpoint, finetune.json).
// One progress line per step on stderr (throttled to ~5 lines/s). Ctrl-C or SIGTERM saves the
// trainer state and exits 130; `--resume` (or rerunning with it after a kill -9) continues from
// the last saved step with the same data order.
#include "cli_commands.h"
#include "cli_support.h"

#include "train/finetune.h"

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <thread>

namespace lowbit::cli {

namespace {

using namespace lowbit::train;

volatile std::sig_atomic_t g_stopSignal = 0;
void onStopSignal(int) {
    g_stopSignal = 1;
}

class StepPrinter final : public TrainObserver, public ProgressSink {
public:
    explicit StepPrinter(int64_t steps) : m_steps(steps) {}
    void onStep(const StepMetrics &m) override {
        const auto now = std::chrono::steady_clock::now();
        if (m.step != m_steps && m.step != 1 && now - m_last < std::chrono::milliseconds(200))
            return;
        m_last = now;
        std::fprintf(stderr,
                     "[train] step %lld/%lld  loss %.4f  lr %.3g  grad-norm %.3f  %.0f tok/s\n",
                     static_cast<long long>(m.step), static_cast<long long>(m_steps), m.loss,
                     m.learningRate, m.gradNorm, m.tokensPerSecond);
    }
    void onCheckpoint(int64_t step) override {
        std::fprintf(stderr, "[train] checkpoint at step %lld\n", static_cast<long long>(step));
    }
    void report(const ProgressEvent &e) override {
        if (e.phase == "quantize")
            std::fprintf(stderr, "[base] layer %lld/%lld quantized\n",
                         static_cast<long long>(e.done), static_cast<long long>(e.total));
        else if (e.phase == "generate")
            std::fprintf(stderr, "[distill] the FP model writes %lld sequences\n",
                         static_cast<long long>(e.total));
        else if (e.phase == "merge")
            std::fprintf(stderr, "[merge] writing the merged model\n");
    }

private:
    int64_t m_steps;
    std::chrono::steady_clock::time_point m_last{};
};

Result<FinetuneOptions> parseOptions(const Args &args) {
    FinetuneOptions o;
    LOWBIT_TRY(o.method, parseFinetuneMethod(args.value("method").value_or("qlora")));
    const auto data = args.value("data");
    const auto out = args.value("out");
    if (!out || (!data && o.method != FinetuneMethod::DbLlm))
        return makeError(ErrorCode::InvalidArgument,
                         "finetune: --data FILE and --out DIR are required (dbllm without "
                         "--data distills on text the FP model generates)");
    if (data)
        o.dataPath = *data;
    o.outDir = *out;
    LOWBIT_TRY(o.data.format, parseDataFormat(args.value("format").value_or("auto")));
    LOWBIT_TRY(o.data.sourceMaxTokens, args.integer("source-len", 384));
    LOWBIT_TRY(o.data.targetMaxTokens, args.integer("target-len", 128));
    LOWBIT_TRY(o.data.textWindowTokens, args.integer("seq-len", 512));
    LOWBIT_TRY(o.data.maxExamples, args.integer("max-examples", 0));
    o.data.trainOnSource = args.has("train-on-source");
    TrainerOptions &t = o.trainer;
    LOWBIT_TRY(t.steps, args.integer("steps", 10000));
    LOWBIT_TRY(t.batchSize, args.integer("batch", 16));
    LOWBIT_TRY(t.microBatchSize, args.integer("micro-batch", 0));
    LOWBIT_TRY(t.schedule.peak, args.number("lr", 2e-4));
    LOWBIT_TRY(t.schedule.kind, parseLrSchedule(args.value("schedule").value_or("constant")));
    LOWBIT_TRY(t.schedule.warmupSteps, args.integer("warmup", 0));
    LOWBIT_TRY(t.maxGradNorm, args.number("max-grad-norm", 0.3));
    LOWBIT_TRY(t.adam.weightDecay, args.number("weight-decay", 0.0));
    LOWBIT_TRY(t.saveEverySteps, args.integer("save-every", 250));
    LOWBIT_TRY(int64_t seed, args.integer("seed", 0));
    t.seed = uint64_t(seed);
    t.resume = args.has("resume");
    LOWBIT_TRY(int64_t rank, args.integer("rank", 64));
    LOWBIT_TRY(o.lora.alpha, args.number("alpha", 16));
    o.lora.rank = int(rank);
    o.lora.seed = uint64_t(seed);
    LOWBIT_TRY(o.blockSize, args.integer("block", 64));
    LOWBIT_TRY(int64_t threads, args.integer("threads", 0));
    o.threads = int(threads);
    LOWBIT_TRY(o.device, parseDevice(args.value("device").value_or("cpu")));
    o.writeMerged = !args.has("no-merge");
    LOWBIT_TRY(o.dualBinary.groupSize, args.integer("dual-group", 64));
    o.dualBinary.trainLatent = !args.has("no-latent");
    LOWBIT_TRY(o.distill.weighting,
               parseDistillWeighting(args.value("weighting").value_or("ambiguity")));
    LOWBIT_TRY(o.distill.temperature, args.number("temperature", 1.0));
    LOWBIT_TRY(o.distill.ceWeight, args.number("ce-weight", 0.0));
    LOWBIT_TRY(o.distillData.sequences, args.integer("distill-seqs", 64));
    LOWBIT_TRY(int64_t distillLen, args.integer("distill-len", 256));
    o.distillData.tokensPerSequence = int(distillLen);
    LOWBIT_TRY(int64_t greedy, args.integer("distill-greedy", 0));
    o.distillData.greedyPrefixTokens = int(greedy);
    o.distillData.sampling.seed = uint64_t(seed);
    if (rank < 1 || o.blockSize < 1)
        return makeError(ErrorCode::InvalidArgument, "finetune: --rank and --block must be >= 1");
    return o;
}

} // namespace

int runFinetune(const std::vector<std::string> &argv) {
    auto args = Args::parse(argv, {"model",         "tokenizer",    "method",        "data",
                                   "format",        "out",          "steps",         "batch",
                                   "micro-batch",   "lr",           "schedule",      "warmup",
                                   "max-grad-norm", "weight-decay", "save-every",    "seed",
                                   "rank",          "alpha",        "seq-len",       "source-len",
                                   "target-len",    "max-examples", "block",         "threads",
                                   "dual-group",    "weighting",    "temperature",   "ce-weight",
                                   "distill-seqs",  "distill-len",  "distill-greedy", "device"},
                            {"resume", "train-on-source", "no-merge", "no-latent", "json"});
    if (!args)
        return fail(args.error());
    auto options = parseOptions(*args);
    if (!options)
        return fail(options.error());
    auto checkpoint = loadModelArg(*args);
    if (!checkpoint)
        return fail(checkpoint.error());

    std::stop_source stop;
    g_stopSignal = 0;
    auto previousInt = std::signal(SIGINT, onStopSignal);
    auto previousTerm = std::signal(SIGTERM, onStopSignal);
    std::atomic<bool> finished = false;
    std::thread watcher([&] {
        while (!finished) {
            if (g_stopSignal)
                stop.request_stop();
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
    });
    StepPrinter printer(options->trainer.steps);
    auto report = train::runFinetune(*checkpoint, *options, printer, stop.get_token(), &printer);
    finished = true;
    watcher.join();
    std::signal(SIGINT, previousInt);
    std::signal(SIGTERM, previousTerm);
    if (!report) {
        if (report.error().code == ErrorCode::Cancelled) {
            const auto state = options->outDir / "checkpoint" / train::kTrainerStateFile;
            if (std::filesystem::exists(state))
                std::fprintf(stderr,
                             "lowbit: finetune cancelled; state saved in %s, continue "
                             "with --resume\n",
                             state.c_str());
            else
                std::fprintf(stderr, "lowbit: finetune cancelled before training started\n");
            return 130;
        }
        return fail(report.error());
    }
    if (args->has("json")) {
        std::printf("%s\n", report->toJson().dump().c_str());
        return 0;
    }
    const auto &h = report->train.history;
    std::printf("%s: %lld steps on %lld examples (%s), final loss %.4f, %.0f tok/s -> %s\n",
                finetuneMethodName(report->method), static_cast<long long>(report->train.stepsDone),
                static_cast<long long>(report->examples), dataFormatName(report->dataFormat),
                h.empty() ? 0.0 : h.back().loss, report->train.tokensPerSecond,
                options->outDir.c_str());
    return 0;
}

} // namespace lowbit::cli
