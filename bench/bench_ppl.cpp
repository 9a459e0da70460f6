// bench_ppl: perplexity throughput (tokens/s) of lowbit's CPU forward pass under the llama.cpp
// protocol, beside llama.cpp's own `llama-perplexity` on the same GGUF, context, chunk count and
// thread count. Prints one Markdown table row per (model, threads) as soon as it is measured.
//
//   bench_ppl [options] [MODEL ...]
// Without MODEL: ../shared/data/gguf/stories260K.gguf and every *.gguf under the models folder
// (build/bench-models, written by make_random_model). See docs/BENCHMARKS.md.
#include "bench_support.h"
#include "llamacpp_runner.h"

#include "model/checkpoint.h"
#include "perplexity.h"
#include "runtime/model.h"

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace lowbit::bench {
namespace {

namespace fs = std::filesystem;

struct Options {
    std::vector<fs::path> models;
    fs::path modelsDir = defaultModelsDir();
    fs::path text;            // empty: chosen per model from its tokenizer
    std::vector<int> threads; // empty: every hardware thread
    int64_t contextTokens = 512;
    int64_t batchTokens = 2048; // lowbit: chunks evaluated together in one forward
    int64_t llamacppBatch = 0;  // llama-perplexity -b; 0: ctx (one chunk per batch, its fastest)
    int64_t chunks = 0; // 0: by model size (all for tiny models, 8 up to 500M params, else 4)
    int repeat = 1;
    fs::path llamacpp;
    bool withLlamacpp = true;
};

struct Row {
    std::string model;
    int64_t params = 0;
    std::string dtype;
    int threads = 0;
    int64_t chunks = 0;
    int64_t tokens = 0; // evaluated tokens (chunks * ctx)
    double seconds = 0;
    double cpuSeconds = 0; // least process CPU time of an evaluation, every thread summed
    double tokensPerSecond = 0;
    double perplexity = 0;
    std::optional<LlamaCppResult> reference; // its fastest run (wall clock)
    double referenceCpuSeconds = 0;          // its least process CPU time over the runs
    // llama-perplexity's fixed CPU cost (load, tokenizing the whole text, warm-up), estimated from
    // a 1-chunk run as cpu(1) - (cpu(N) - cpu(1)) / (N - 1); subtracted from its CPU figure.
    double referenceOverheadCpu = 0;
    std::string referenceNote; // why there is no reference figure
};

const char *kUsage =
    "usage: bench_ppl [options] [MODEL.gguf ...]\n"
    "  --threads N[,N...]  thread counts to measure (default: every hardware thread)\n"
    "  --ctx N             context per chunk (default 512)\n"
    "  --batch N           lowbit: tokens per forward, several chunks at once (default 2048)\n"
    "  --llamacpp-batch N  llama-perplexity -b, a multiple of ctx (default: ctx; a larger -b "
    "packs\n"
    "                      several chunks in one KV cache and is slower there)\n"
    "  --chunks N          chunks to evaluate (default: all for <10M params, 8 to 500M, else 4)\n"
    "  --text FILE         text for every model (default: TinyStories head for SPM vocabularies,\n"
    "                      wikitext-2 test for the rest, from $LOWBIT_SHARED_DIR)\n"
    "  --models-dir DIR    where to find random models when no MODEL is given\n"
    "  --repeat N          measure N times, keep the fastest (default 1)\n"
    "  --llamacpp PATH     llama-perplexity binary or llama.cpp folder (default: $LLAMACPP_DIR,\n"
    "                      else ../llama.cpp next to the source tree)\n"
    "  --no-llamacpp       measure lowbit only\n";

Result<int64_t> parsePositive(const std::string &flag, const char *value) {
    char *end = nullptr;
    const long long v = std::strtoll(value, &end, 10);
    if (end == value || *end != '\0' || v <= 0)
        return makeError(ErrorCode::InvalidArgument,
                         flag + " wants a positive integer, got '" + value + "'");
    return int64_t(v);
}

Result<std::vector<int>> parseThreadList(const char *value) {
    std::vector<int> out;
    std::stringstream ss(value);
    for (std::string item; std::getline(ss, item, ',');) {
        LOWBIT_TRY(int64_t n, parsePositive("--threads", item.c_str()));
        out.push_back(int(n));
    }
    if (out.empty())
        return makeError(ErrorCode::InvalidArgument, "--threads wants N or N,M,...");
    return out;
}

Result<Options> parseArgs(int argc, char **argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        const bool hasValue = i + 1 < argc;
        auto need = [&]() -> Result<const char *> {
            if (!hasValue)
                return makeError(ErrorCode::InvalidArgument, a + " needs a value");
            return argv[++i];
        };
        if (a == "--no-llamacpp") {
            o.withLlamacpp = false;
        } else if (a == "--threads") {
            LOWBIT_TRY(const char *v, need());
            LOWBIT_TRY(o.threads, parseThreadList(v));
        } else if (a == "--ctx" || a == "--batch" || a == "--llamacpp-batch" || a == "--chunks" ||
                   a == "--repeat") {
            LOWBIT_TRY(const char *v, need());
            LOWBIT_TRY(int64_t n, parsePositive(a, v));
            if (a == "--repeat")
                o.repeat = int(n);
            else if (a == "--llamacpp-batch")
                o.llamacppBatch = n;
            else
                (a == "--ctx" ? o.contextTokens : a == "--batch" ? o.batchTokens : o.chunks) = n;
        } else if (a == "--text" || a == "--models-dir" || a == "--llamacpp") {
            LOWBIT_TRY(const char *v, need());
            (a == "--text" ? o.text : a == "--models-dir" ? o.modelsDir : o.llamacpp) = v;
        } else if (a.starts_with("-")) {
            return makeError(ErrorCode::InvalidArgument, "unknown option " + a + "\n" + kUsage);
        } else {
            o.models.emplace_back(a);
        }
    }
    if (o.llamacppBatch == 0)
        o.llamacppBatch = o.contextTokens;
    if (o.llamacppBatch % o.contextTokens != 0)
        return makeError(
            ErrorCode::InvalidArgument,
            "--llamacpp-batch must be a multiple of --ctx (as llama-perplexity requires)");
    if (o.threads.empty())
        o.threads.push_back(int(std::max(1u, std::thread::hardware_concurrency())));
    return o;
}

std::vector<fs::path> defaultModels(const Options &o) {
    std::vector<fs::path> models{sharedDir() / "data" / "gguf" / "stories260K.gguf"};
    std::error_code ec;
    std::vector<fs::path> found;
    for (const auto &entry : fs::directory_iterator(o.modelsDir, ec))
        if (entry.path().extension() == ".gguf")
            found.push_back(entry.path());
    std::sort(found.begin(), found.end());
    models.insert(models.end(), found.begin(), found.end());
    return models;
}

Result<std::string> readText(const fs::path &path) {
    std::ifstream in(path, std::ios::binary);
    if (!in)
        return makeError(ErrorCode::NotFound, path.string() + ": cannot open the text");
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

fs::path textFor(const Options &o, const Tokenizer &tokenizer) {
    if (!o.text.empty())
        return o.text;
    if (tokenizer.kind() == "spm") // stories260K's 512-piece vocabulary knows only TinyStories
        return sharedDir() / "data" / "gguf" / "ts_val_head50k.txt";
    return sharedDir() / "data" / "wikitext2" / "wiki.test.raw";
}

int64_t chunksFor(const Options &o, int64_t params) {
    if (o.chunks > 0)
        return o.chunks;
    if (params < 10'000'000)
        return 0;
    return params < 500'000'000 ? 8 : 4;
}

class StderrProgress final : public ProgressSink {
public:
    void report(const ProgressEvent &e) override {
        std::fprintf(stderr, "\r  %s %lld/%lld  %.1f tok/s   ", e.phase.c_str(), (long long)e.done,
                     (long long)e.total, e.tokensPerSecond);
        std::fflush(stderr);
    }
};

std::string formatParams(int64_t n) {
    char buf[32];
    if (n >= 1'000'000'000)
        std::snprintf(buf, sizeof buf, "%.2fB", double(n) / 1e9);
    else if (n >= 1'000'000)
        std::snprintf(buf, sizeof buf, "%.1fM", double(n) / 1e6);
    else
        std::snprintf(buf, sizeof buf, "%.0fK", double(n) / 1e3);
    return buf;
}

void printHeader() {
    std::printf(
        "| model | params | dtype | threads | ctx | chunks | tokens | lowbit s | llama.cpp s "
        "| lowbit tok/s | llama.cpp tok/s | speed ratio | lowbit cpu s | llama.cpp cpu s "
        "| cpu ratio | lowbit PPL | llama.cpp PPL |\n");
    std::printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    std::fflush(stdout);
}

// speed ratio: lowbit tok/s over llama.cpp's (wall clock, fastest runs); cpu ratio: llama.cpp's
// CPU seconds (least run, fixed cost removed) over lowbit's (> 1: lowbit spends less CPU). On a
// loaded machine the CPU figures are the steadier ones.
void printRow(const Row &r, int64_t ctx) {
    std::printf("| %s | %s | %s | %d | %lld | %lld | %lld | %.2f |", r.model.c_str(),
                formatParams(r.params).c_str(), r.dtype.c_str(), r.threads, (long long)ctx,
                (long long)r.chunks, (long long)r.tokens, r.seconds);
    if (!r.reference) {
        std::printf(" - | %.1f | - | %s | %.2f | - | - | %.4f | - |\n", r.tokensPerSecond,
                    r.referenceNote.c_str(), r.cpuSeconds, r.perplexity);
        std::fflush(stdout);
        return;
    }
    const LlamaCppResult &ref = *r.reference;
    const double refCpu = r.referenceCpuSeconds - r.referenceOverheadCpu;
    auto ratio = [](double a, double b) { return b > 0 ? a / b : 0.0; };
    std::printf(" %.2f | %.1f | %.1f | %.2fx | %.2f | %.2f | %.2fx | %.4f | %.4f |\n",
                ref.evalSeconds, r.tokensPerSecond, ref.tokensPerSecond,
                ratio(r.tokensPerSecond, ref.tokensPerSecond), r.cpuSeconds, refCpu,
                ratio(refCpu, r.cpuSeconds), r.perplexity, ref.perplexity);
    std::fflush(stdout);
}

double processCpuSeconds() {
    timespec ts{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return double(ts.tv_sec) + double(ts.tv_nsec) * 1e-9;
}

// One lowbit measurement; keeps it in `row` when it is the fastest so far.
Status measureLowbit(Model &model, std::span<const int32_t> tokens, const Options &o,
                     int64_t chunks, Row &row) {
    PerplexityOptions po;
    po.contextTokens = o.contextTokens;
    po.protocol = PerplexityProtocol::LlamaCpp;
    po.maxChunks = chunks;
    po.batchTokens = o.batchTokens;
    StderrProgress progress;
    const double cpuStart = processCpuSeconds();
    LOWBIT_TRY(PerplexityReport report, evaluatePerplexity(model, tokens, po, progress));
    const double cpuSeconds = processCpuSeconds() - cpuStart;
    std::fprintf(stderr, "\n");
    if (row.cpuSeconds == 0 || cpuSeconds < row.cpuSeconds)
        row.cpuSeconds = cpuSeconds;
    if (row.seconds > 0 && report.seconds >= row.seconds)
        return {};
    row.chunks = report.chunks;
    row.tokens = report.chunks * o.contextTokens;
    row.seconds = report.seconds;
    row.tokensPerSecond = report.tokensPerSecond;
    row.perplexity = report.perplexity;
    return {};
}

// One llama-perplexity measurement on the chunks lowbit ran; kept when the fastest so far. The
// first time, a 1-chunk run estimates its fixed CPU cost.
void measureLlamaCpp(Row &row, const Options &o, const std::optional<fs::path> &binary,
                     const fs::path &model, const fs::path &text) {
    if (!binary) {
        row.referenceNote = o.withLlamacpp ? "no llama-perplexity found" : "not run";
        return;
    }
    if (!row.referenceNote.empty())
        return; // failed before; do not retry
    LlamaCppRun run{model, text, o.contextTokens, o.llamacppBatch, row.chunks, row.threads};
    Result<LlamaCppResult> result = runLlamaPerplexity(*binary, run);
    if (!result) {
        std::fprintf(stderr, "  llama.cpp failed: %s\n", result.error().toString().c_str());
        row.referenceNote = "llama.cpp failed (see stderr)";
        return;
    }
    std::fprintf(stderr, "  llama.cpp: %.1f tok/s, %.2f cpu s  (%s)\n", result->tokensPerSecond,
                 result->cpuSeconds, result->commandLine.c_str());
    if (!row.reference && row.chunks > 1) {
        run.chunks = 1;
        if (Result<LlamaCppResult> one = runLlamaPerplexity(*binary, run); one) {
            const double perChunk = (result->cpuSeconds - one->cpuSeconds) / double(row.chunks - 1);
            row.referenceOverheadCpu = std::max(0.0, one->cpuSeconds - perChunk);
            std::fprintf(stderr, "  llama.cpp fixed cost: %.2f cpu s\n", row.referenceOverheadCpu);
        }
    }
    if (row.referenceCpuSeconds == 0 || result->cpuSeconds < row.referenceCpuSeconds)
        row.referenceCpuSeconds = result->cpuSeconds;
    if (!row.reference || result->evalSeconds < row.reference->evalSeconds)
        row.reference = *result;
}

// Measures one model at every thread count, lowbit and llama.cpp taking turns `repeat` times so
// that both see the same machine load; the fastest run of each is kept. Both map the same file,
// so the page cache holds the weights once.
Status benchModel(const fs::path &path, const Options &o, const std::optional<fs::path> &binary) {
    std::fprintf(stderr, "loading %s\n", path.string().c_str());
    LOWBIT_TRY(Checkpoint loaded, loadCheckpoint(path));
    auto checkpoint = std::make_shared<const Checkpoint>(std::move(loaded));
    if (!checkpoint->tokenizer)
        return makeError(ErrorCode::NotFound, path.string() + ": the checkpoint has no tokenizer");
    const fs::path text = textFor(o, *checkpoint->tokenizer);
    LOWBIT_TRY(std::string content, readText(text));
    const auto tokenizeStart = std::chrono::steady_clock::now();
    const std::vector<int32_t> tokens = checkpoint->tokenizer->encode(content, {.addBos = true});
    std::fprintf(stderr, "  %s: %zu tokens (tokenized in %.2f s)\n",
                 text.filename().string().c_str(), tokens.size(), secondsSince(tokenizeStart));

    const int64_t params = checkpoint->config.parameterCount();
    const int64_t chunks = chunksFor(o, params);
    for (int threads : o.threads) {
        LOWBIT_TRY(std::unique_ptr<Model> model, Model::create(checkpoint, {.threads = threads}));
        Row row;
        row.model = path.filename().string();
        row.params = params;
        row.dtype = std::string(dtypeName(checkpoint->weights.layers.at(0).wq.dtype));
        row.threads = threads;
        for (int rep = 0; rep < o.repeat; ++rep) {
            LOWBIT_CHECK(measureLowbit(*model, tokens, o, chunks, row));
            measureLlamaCpp(row, o, binary, path, text);
        }
        printRow(row, o.contextTokens);
    }
    return {};
}

int run(int argc, char **argv) {
    Result<Options> parsed = parseArgs(argc, argv);
    if (!parsed) {
        std::fprintf(stderr, "bench_ppl: %s\n", parsed.error().message.c_str());
        return 2;
    }
    Options o = std::move(*parsed);
    if (o.models.empty())
        o.models = defaultModels(o);
    std::optional<fs::path> binary;
    if (o.withLlamacpp) {
        binary = findLlamaPerplexity(o.llamacpp);
        std::fprintf(stderr, "llama-perplexity: %s\n",
                     binary ? binary->string().c_str() : "not found (lowbit figures only)");
    }
    printHeader();
    int failures = 0;
    for (const fs::path &model : o.models) {
        if (Status s = benchModel(model, o, binary); !s) {
            std::fprintf(stderr, "bench_ppl: %s\n", s.error().toString().c_str());
            ++failures;
        }
    }
    return failures == 0 ? 0 : 1;
}

} // namespace
} // namespace lowbit::bench

int main(int argc, char **argv) {
    return lowbit::bench::run(argc, argv);
}
