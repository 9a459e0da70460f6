// bench_quant_methods: AWQ, SmoothQuant and QuIP beside RTN.
//
//   bench_quant_methods stories [--calib FILE] [--calib-samples N] [--chunks N] [--threads N]
//                               [--only LABEL-PART]
//     stories260K (../shared/data/llama2c), calibrated on WikiText-2 train windows of 512 tokens
//     (the study's calibration text), scored on TinyStories validation (first 1000 stories, read
//     whole with BOS) in the paper protocol at context 512: PPL, and KL(P_fp || Q) per predicted
//     token over the full vocabulary in float64, for every method at its bit-widths, groups of 32
//     (and RTN / QuIP per channel, QuIP's reference setting).
//
//   bench_quant_methods layer [--tokens N] [--search-tokens N] [--threads N]
//     one LLaMA-3-8B-shaped decoder layer (hidden 4096, FFN 14336, 32 / 8 heads of 128, random
//     weights, a 1-layer model with a 256-token vocabulary) over N random calibration tokens
//     (16 x 512): AWQ 4-bit g128 (capture + scale search + fold, then clip search + RTN per
//     linear; the search on --search-tokens), QuIP 2-bit (the seven linears given their
//     Hessians) and RTN 4-bit g128, in seconds.
//
//   bench_quant_methods nf4 [--threads N]
//     the seven linears of one LLaMA-3-8B-shaped layer (random weights): NF4 (QLoRA) and ICQ
//     (IR-QLoRA's entropy search over 201 shifts per 64-block) in seconds, with the mean block
//     code entropy of each; x32 layers is a LLaMA-3-8B base.
#include "bench_support.h"

#include "model/checkpoint.h"
#include "perplexity_tasks.h"
#include "quant/activation_quant.h"
#include "quant/awq.h"
#include "quant/calibration.h"
#include "quant/icq.h"
#include "quant/nf4.h"
#include "quant/quantize.h"
#include "quant/quip.h"
#include "quant/rtn.h"
#include "runtime/model.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <random>
#include <string>
#include <vector>

using namespace lowbit;

namespace {

struct Config {
    std::string label, method;
    int bits;
    nlohmann::json methodOptions = nlohmann::json::object();
    int activationBits = 0;
    int64_t group = 32; // 0: per channel (QuIP: one S per tensor, the reference's grid)
};

struct Scores {
    double ppl = 0, kl = 0, bitsPerWeight = 0, seconds = 0;
};

// Log-softmax of one logit row, float64.
void logSoftmax(const float *logits, int64_t vocab, std::vector<double> &out) {
    out.resize(size_t(vocab));
    double m = -1e300;
    for (int64_t i = 0; i < vocab; ++i)
        m = std::max(m, double(logits[i]));
    double sum = 0;
    for (int64_t i = 0; i < vocab; ++i)
        sum += std::exp(double(logits[i]) - m);
    const double lse = m + std::log(sum);
    for (int64_t i = 0; i < vocab; ++i)
        out[size_t(i)] = double(logits[i]) - lse;
}

// Paper-protocol NLL and KL against the FP model over the chunks.
Result<Scores> score(Model &fp, Model &q, const std::vector<std::vector<int32_t>> &chunks) {
    double nll = 0, kl = 0;
    int64_t n = 0;
    std::vector<double> p, lq;
    for (const auto &chunk : chunks) {
        KvCache c1 = fp.makeCache(1, int64_t(chunk.size())),
                c2 = q.makeCache(1, int64_t(chunk.size()));
        SequenceInput in{0, chunk, LogitsWanted::All};
        LOWBIT_TRY(Logits a, fp.forward(c1, {&in, 1}));
        LOWBIT_TRY(Logits b, q.forward(c2, {&in, 1}));
        for (size_t t = 0; t + 1 < chunk.size(); ++t) {
            logSoftmax(a.row(int64_t(t)), a.vocab, p);
            logSoftmax(b.row(int64_t(t)), b.vocab, lq);
            nll -= lq[size_t(chunk[t + 1])];
            for (int64_t v = 0; v < a.vocab; ++v)
                kl += std::exp(p[size_t(v)]) * (p[size_t(v)] - lq[size_t(v)]);
            ++n;
        }
    }
    return Scores{std::exp(nll / double(n)), kl / double(n), 0, 0};
}

int runStories(int argc, char **argv) {
    int64_t samples = 128, chunksWanted = 0;
    int threads = 0;
    std::string only, calib;
    for (int i = 2; i < argc; ++i) {
        if (!std::strcmp(argv[i], "--calib") && i + 1 < argc)
            calib = argv[++i];
        else if (!std::strcmp(argv[i], "--calib-samples") && i + 1 < argc)
            samples = std::atoll(argv[++i]);
        else if (!std::strcmp(argv[i], "--chunks") && i + 1 < argc)
            chunksWanted = std::atoll(argv[++i]);
        else if (!std::strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = std::atoi(argv[++i]);
        else if (!std::strcmp(argv[i], "--only") && i + 1 < argc)
            only = argv[++i];
        else {
            std::fprintf(stderr, "usage: bench_quant_methods stories [--calib-samples N] [--chunks "
                                 "N] [--threads N] [--only METHOD]\n");
            return 2;
        }
    }
    const auto data = bench::sharedDir() / "data";
    auto loaded =
        loadCheckpoint(data / "llama2c" / "stories260K.bin", {data / "llama2c" / "tok512.bin"});
    if (!loaded) {
        std::fprintf(stderr, "bench_quant_methods: %s\n", loaded.error().message.c_str());
        return 1;
    }
    const Checkpoint source = std::move(*loaded);
    auto spec = corpusSpec("tinystories", data);
    TaskOptions taskOptions;
    taskOptions.contextTokens = 512;
    auto corpus = loadCorpusChunks(*spec, *source.tokenizer, 512, taskOptions);
    if (!corpus) {
        std::fprintf(stderr, "bench_quant_methods: %s\n", corpus.error().message.c_str());
        return 1;
    }
    std::vector<std::vector<int32_t>> chunks = corpus->chunks;
    if (chunksWanted > 0 && int64_t(chunks.size()) > chunksWanted)
        chunks.resize(size_t(chunksWanted));
    auto fp = Model::create(std::make_shared<const Checkpoint>(source), {threads});
    std::printf("stories260K, TinyStories val (%zu chunks of 512, paper protocol), calibration: "
                "WikiText-2 train, %lld x 512 tokens, groups of 32 (SmoothQuant: per channel)\n\n",
                chunks.size(), static_cast<long long>(samples));
    // QuIP "V only" is an ablation (rotate_rows false): the input-side rotation without the
    // output-side one, which this model's k_proj does not tolerate (docs/BENCHMARKS.md).
    const nlohmann::json vOnly = {{"rotate_rows", false}};
    const std::vector<Config> configs = {
        {"RTN W8 g32", "rtn", 8},
        {"RTN W4 g32", "rtn", 4},
        {"RTN W3 g32", "rtn", 3},
        {"RTN W2 g32", "rtn", 2},
        {"AWQ W8 g32", "awq", 8},
        {"AWQ W4 g32", "awq", 4},
        {"AWQ W3 g32", "awq", 3},
        {"AWQ W2 g32", "awq", 2},
        {"QuIP W4 g32", "quip", 4},
        {"QuIP W3 g32", "quip", 3},
        {"QuIP W2 g32", "quip", 2},
        {"QuIP V-only W4 g32", "quip", 4, vOnly},
        {"QuIP V-only W3 g32", "quip", 3, vOnly},
        {"QuIP V-only W2 g32", "quip", 2, vOnly},
        // The reference's own setting (it has no groups): one S per tensor, beside RTN per row.
        {"RTN W4 per channel", "rtn", 4, {}, 0, 0},
        {"RTN W3 per channel", "rtn", 3, {}, 0, 0},
        {"RTN W2 per channel", "rtn", 2, {}, 0, 0},
        {"QuIP W4 per tensor", "quip", 4, {}, 0, 0},
        {"QuIP W3 per tensor", "quip", 3, {}, 0, 0},
        {"QuIP W2 per tensor", "quip", 2, {}, 0, 0},
        {"SmoothQuant W8A8", "smoothquant", 8, {}, 8},
        {"SmoothQuant W6A6", "smoothquant", 6, {}, 6},
        {"SmoothQuant W4A4", "smoothquant", 4, {}, 4},
    };
    std::printf("| method | bits/weight | PPL | KL vs FP (nats/token) | quantize s "
                "|\n|---|---|---|---|---|\n");
    auto self = score(**fp, **fp, chunks);
    std::printf("| FP32 | 32 | %.4f | 0 | - |\n", self->ppl);
    for (const Config &c : configs) {
        if (!only.empty() && c.label.find(only) == std::string::npos)
            continue;
        QuantizeOptions o;
        o.method = c.method;
        o.bits = c.bits;
        o.groupSize = c.method == "smoothquant" ? 0 : c.group;
        o.threads = threads;
        o.methodOptions = c.methodOptions;
        o.calibration.samples = samples;
        o.calibration.tokens = 512;
        o.calibration.textPath = calib;
        NullProgress progress;
        auto q = quantizeModel(source, o, progress);
        if (!q) {
            std::fprintf(stderr, "%s: %s\n", c.label.c_str(), q.error().message.c_str());
            return 1;
        }
        auto model = Model::create(q->checkpoint, {threads});
        if (c.activationBits)
            (*model)->setLinearHook(activationQuantHook(c.activationBits));
        auto s = score(**fp, **model, chunks);
        if (!s) {
            std::fprintf(stderr, "%s: %s\n", c.label.c_str(), s.error().message.c_str());
            return 1;
        }
        std::printf("| %s | %.3f | %.4f | %.5f | %.1f |\n", c.label.c_str(),
                    q->report.bitsPerWeight, s->ppl, s->kl, q->report.seconds);
        std::fflush(stdout);
    }
    return 0;
}

// Wall and process CPU seconds (all threads; the comparable measure on a shared machine).
struct Timer {
    std::chrono::steady_clock::time_point wallStart = std::chrono::steady_clock::now();
    std::clock_t cpuStart = std::clock();
    double wall() const { return bench::secondsSince(wallStart); }
    double cpu() const { return double(std::clock() - cpuStart) / CLOCKS_PER_SEC; }
};

// A one-layer model of LLaMA-3-8B's layer shape with random weights (vocabulary 256).
std::shared_ptr<const Checkpoint> randomLayerModel() {
    ModelConfig c = bench::presetConfig({"8b-layer", 4096, 1, 32, 8, 14336});
    c.headDim = 128;
    c.vocabSize = 256;
    auto ckpt = std::make_shared<Checkpoint>();
    ckpt->config = c;
    std::mt19937 rng(7);
    auto tensor = [&](std::vector<int64_t> shape, float sigma) {
        std::normal_distribution<float> d(0, sigma);
        int64_t n = 1;
        for (int64_t s : shape)
            n *= s;
        std::vector<float> v(static_cast<size_t>(n));
        for (float &x : v)
            x = sigma == 0 ? 1.0f : d(rng);
        return Tensor::fromFloats("t", std::move(shape), v.data());
    };
    const int64_t h = c.hiddenSize, q = c.numHeads * c.headDim, kv = c.numKvHeads * c.headDim;
    ckpt->weights.tokenEmbedding = tensor({c.vocabSize, h}, 1.0f);
    LayerWeights l;
    l.attnNorm = tensor({h}, 0);
    l.ffnNorm = tensor({h}, 0);
    l.wq = tensor({q, h}, 0.02f);
    l.wk = tensor({kv, h}, 0.02f);
    l.wv = tensor({kv, h}, 0.02f);
    l.wo = tensor({h, q}, 0.02f);
    l.wGate = tensor({c.intermediateSize, h}, 0.02f);
    l.wUp = tensor({c.intermediateSize, h}, 0.02f);
    l.wDown = tensor({h, c.intermediateSize}, 0.02f);
    ckpt->weights.layers.push_back(std::move(l));
    ckpt->weights.finalNorm = tensor({h}, 0);
    ckpt->weights.output = tensor({c.vocabSize, h}, 0.02f);
    return ckpt;
}

int runLayer(int argc, char **argv) {
    int64_t tokens = 16 * 512, searchTokens = 2048;
    int threads = 0;
    for (int i = 2; i < argc; ++i) {
        if (!std::strcmp(argv[i], "--tokens") && i + 1 < argc)
            tokens = std::atoll(argv[++i]);
        else if (!std::strcmp(argv[i], "--search-tokens") && i + 1 < argc)
            searchTokens = std::atoll(argv[++i]);
        else if (!std::strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = std::atoi(argv[++i]);
        else {
            std::fprintf(stderr, "usage: bench_quant_methods layer [--tokens N] [--search-tokens "
                                 "N] [--threads N]\n");
            return 2;
        }
    }
    auto checkpoint = randomLayerModel();
    auto model = Model::create(checkpoint, {threads});
    if (!model) {
        std::fprintf(stderr, "bench_quant_methods: %s\n", model.error().message.c_str());
        return 1;
    }
    CalibrationSet set;
    std::mt19937 rng(3);
    std::uniform_int_distribution<int32_t> id(0, 255);
    for (int64_t w = 0; w < std::max<int64_t>(1, tokens / 512); ++w) {
        std::vector<int32_t> window(512);
        for (int32_t &v : window)
            v = id(rng);
        set.windows.push_back(std::move(window));
    }
    LayerRunner runner(**model, set, 4096);
    if (!runner.embed().ok())
        return 1;
    const LayerWeights &source = checkpoint->weights.layers[0];
    std::printf("bench_quant_methods: one LLaMA-3-8B-shaped layer, %lld calibration tokens, "
                "threads %d (0 = all)\n\n",
                static_cast<long long>(runner.rows()), threads);

    // AWQ 4-bit g128.
    QuantizeOptions o;
    o.method = "awq";
    o.bits = 4;
    o.groupSize = 128;
    o.threads = threads;
    o.methodOptions = {{"search_tokens", searchTokens}};
    auto awq = makeQuantizer(o);
    FloatLayer layer = FloatLayer::fromWeights(source);
    LayerStatistics stats;
    nlohmann::json notes = nlohmann::json::object();
    Timer search;
    LayerContext context{0, layer, stats, &runner, notes, {}};
    if (const Status s = (*awq)->prepareLayer(context); !s.ok()) {
        std::fprintf(stderr, "awq: %s\n", s.error().message.c_str());
        return 1;
    }
    const double searchWall = search.wall(), searchCpu = search.cpu();
    Timer clip;
    for (LinearKind kind : kAllLinearKinds) {
        LinearJob job{0,
                      kind,
                      linearKindName(kind),
                      layer.rows[size_t(kind)],
                      layer.cols[size_t(kind)],
                      layer.weight(kind),
                      nullptr,
                      nullptr,
                      {},
                      nullptr};
        if (!(*awq)->quantize(job))
            return 1;
    }
    std::printf("AWQ 4-bit g128: scale search on %lld tokens (capture; 20-point grids for q/k/v, "
                "gate/up, down; fold) %.1f s (%.1f CPU-s); clip search + RTN of the seven linears "
                "%.1f s (%.1f CPU-s)\n",
                static_cast<long long>(std::min(searchTokens, runner.rows())), searchWall,
                searchCpu, clip.wall(), clip.cpu());

    // QuIP 2-bit, given the Hessians.
    StatsHook hook({LinearInput::Attention, LinearInput::AttentionOutput, LinearInput::Mlp,
                    LinearInput::MlpDown},
                   {true, false, false}, HessianPrecision::BlockedFloat32, threads);
    Timer hessians;
    if (!runner.run(0, source, &hook).ok())
        return 1;
    stats = hook.finish();
    std::printf("Hessians of the four inputs (layer forward + ssyrk): %.1f s (%.1f CPU-s)\n",
                hessians.wall(), hessians.cpu());
    QuipOptions qo;
    qo.bits = 2;
    qo.threads = threads;
    const FloatLayer original = FloatLayer::fromWeights(source);
    Timer quip;
    for (LinearKind kind : kAllLinearKinds) {
        Timer one;
        auto t =
            quantizeQuip(linearKindName(kind), original.weight(kind), original.rows[size_t(kind)],
                         original.cols[size_t(kind)], stats.at(linearInputOf(kind)).hessian,
                         quipSeeds(0, 0, int(kind)), qo);
        if (!t) {
            std::fprintf(stderr, "quip: %s\n", t.error().message.c_str());
            return 1;
        }
        const double quantWall = one.wall(), quantCpu = one.cpu();
        Timer dequant;
        if (!dequantizeQuip(*t, threads))
            return 1;
        std::printf("  QuIP 2-bit %-9s %5lld x %5lld: %6.1f s (%.1f CPU-s), dequantize %.1f s\n",
                    linearKindName(kind), static_cast<long long>(original.rows[size_t(kind)]),
                    static_cast<long long>(original.cols[size_t(kind)]), quantWall, quantCpu,
                    dequant.wall());
    }
    std::printf(
        "QuIP 2-bit, seven linears given the Hessians (with dequantization): %.1f s (%.1f CPU-s)\n",
        quip.wall(), quip.cpu());

    Timer rtn;
    for (LinearKind kind : kAllLinearKinds)
        if (!quantizeRtn("w", original.weight(kind).data(), original.rows[size_t(kind)],
                         original.cols[size_t(kind)], 4, 128, false))
            return 1;
    std::printf("RTN 4-bit g128, seven linears: %.2f s (%.2f CPU-s)\n", rtn.wall(), rtn.cpu());
    return 0;
}

int runNf4(int argc, char **argv) {
    int threads = 0;
    for (int i = 2; i < argc; ++i) {
        if (!std::strcmp(argv[i], "--threads") && i + 1 < argc) {
            threads = std::atoi(argv[++i]);
        } else {
            std::fprintf(stderr, "usage: bench_quant_methods nf4 [--threads N]\n");
            return 2;
        }
    }
    auto checkpoint = randomLayerModel();
    const FloatLayer layer = FloatLayer::fromWeights(checkpoint->weights.layers[0]);
    std::printf("bench_quant_methods: NF4 and ICQ of one LLaMA-3-8B-shaped layer (random "
                "weights), threads %d (0 = all)\n\n| method | seconds | CPU-s | mean block code "
                "entropy (bits) |\n|---|---|---|---|\n",
                threads);
    IcqOptions icq;
    icq.threads = threads;
    for (const bool calibrated : {false, true}) {
        Timer timer;
        double entropy = 0;
        for (LinearKind kind : kAllLinearKinds) {
            const std::vector<float> &w = layer.weight(kind);
            const int64_t rows = layer.rows[size_t(kind)], cols = layer.cols[size_t(kind)];
            auto t = calibrated ? quantizeIcq(linearKindName(kind), w.data(), rows, cols, icq)
                                : quantizeNf4(linearKindName(kind), w.data(), rows, cols, {});
            if (!t) {
                std::fprintf(stderr, "%s\n", t.error().message.c_str());
                return 1;
            }
            entropy += meanBlockCodeEntropyBits(*t) / double(kAllLinearKinds.size());
        }
        std::printf("| %s | %.2f | %.2f | %.4f |\n", calibrated ? "ICQ (IR-QLoRA)" : "NF4",
                    timer.wall(), timer.cpu(), entropy);
    }
    return 0;
}

} // namespace

int main(int argc, char **argv) {
    if (argc >= 2 && !std::strcmp(argv[1], "stories"))
        return runStories(argc, argv);
    if (argc >= 2 && !std::strcmp(argv[1], "nf4"))
        return runNf4(argc, argv);
    if (argc >= 2 && !std::strcmp(argv[1], "layer"))
        return runLayer(argc, argv);
    std::fprintf(stderr, "usage: bench_quant_methods stories|layer|nf4 [options]\n");
    return 2;
}
