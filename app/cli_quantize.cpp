// lowbit quantize: post-training quantization of a checkpoint into a quantized checkpoint directory
// (engine/quant/quantize.h), with one progress line per decoder layer on stderr.
#include "cli_commands.h"
#include "cli_support.h"

#include "quant/quantize.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>

namespace lowbit::cli {

namespace {

using nlohmann::json;

class LayerProgress final : public ProgressSink {
public:
    void report(const ProgressEvent &e) override {
        if (e.phase == "quantize")
            std::fprintf(stderr, "[quantize] layer %lld/%lld done  ETA %.0fs\n",
                         static_cast<long long>(e.done), static_cast<long long>(e.total),
                         std::max(0.0, e.etaSeconds));
        else if (e.done == 0)
            std::fprintf(stderr, "[%s] %lld windows...\n", e.phase.c_str(),
                         static_cast<long long>(e.total));
    }
};

Result<QuantizeOptions> parseOptions(const Args &args, const Checkpoint &checkpoint) {
    QuantizeOptions o;
    o.method = args.value("method").value_or("rtn");
    LOWBIT_TRY(int64_t bits, args.integer("bits", 4));
    LOWBIT_TRY(o.groupSize, args.integer("group", 0));
    LOWBIT_TRY(int64_t threads, args.integer("threads", 0));
    o.bits = int(bits);
    o.threads = int(threads);
    o.symmetric = args.has("sym");
    o.trueSequential = !args.has("no-true-sequential");
    LOWBIT_TRY(o.selection, LayerSelection::parse(args.value("layers").value_or("all")));
    if (auto calib = args.value("calib"))
        o.calibration.textPath = *calib;
    // Small models were trained on short contexts: the window never exceeds what they know.
    const int64_t defaultLen = std::min<int64_t>(2048, checkpoint.config.maxPositions);
    LOWBIT_TRY(o.calibration.samples, args.integer("calib-samples", 128));
    LOWBIT_TRY(o.calibration.tokens, args.integer("calib-len", defaultLen));
    LOWBIT_TRY(int64_t seed, args.integer("seed", 0));
    o.calibration.seed = uint64_t(seed);
    const std::string hessian = args.value("hessian").value_or("f32");
    if (hessian != "f32" && hessian != "f64")
        return makeError(ErrorCode::InvalidArgument, "quantize: --hessian must be f32 or f64");
    o.calibration.precision =
        hessian == "f64" ? HessianPrecision::Float64 : HessianPrecision::BlockedFloat32;
    if (auto extra = args.value("method-options")) {
        o.methodOptions = json::parse(*extra, nullptr, false);
        if (o.methodOptions.is_discarded() || !o.methodOptions.is_object())
            return makeError(ErrorCode::InvalidArgument,
                             "quantize: --method-options must be a JSON object");
    }
    if (args.has("act-order"))
        o.methodOptions["act_order"] = true;
    LOWBIT_TRY(o.device, parseDevice(args.value("device").value_or("cpu")));
    return o;
}

} // namespace

int runQuantize(const std::vector<std::string> &argv) {
    auto args = Args::parse(argv,
                            {"model", "tokenizer", "threads", "method", "bits", "group", "calib",
                             "calib-samples", "calib-len", "seed", "layers", "out", "hessian",
                             "method-options", "device"},
                            {"sym", "act-order", "no-true-sequential", "json"});
    if (!args)
        return fail(args.error());
    const auto out = args->value("out");
    if (!out)
        return fail("quantize: --out DIR is required");
    auto checkpoint = loadModelArg(*args);
    if (!checkpoint)
        return fail(checkpoint.error());
    auto options = parseOptions(*args, **checkpoint);
    if (!options)
        return fail(options.error());
    LayerProgress progress;
    auto report = quantizeCheckpoint(**checkpoint, *options, *out, progress);
    if (!report)
        return fail(report.error());
    for (const std::string &w : report->warnings)
        std::fprintf(stderr, "lowbit: warning: %s\n", w.c_str());
    if (args->has("json")) {
        std::printf("%s\n", report->toJson().dump().c_str());
        return 0;
    }
    double meanOutErr = 0;
    int64_t withErr = 0;
    for (const LinearReport &l : report->linears)
        if (l.outputRelError >= 0) {
            meanOutErr += l.outputRelError;
            ++withErr;
        }
    std::printf("%s %d-bit%s%s: %lld weights in %zu linears, %.4f bits/weight",
                report->method.c_str(), report->bits,
                report->groupSize > 0 ? (" g" + std::to_string(report->groupSize)).c_str() : "",
                report->symmetric ? " sym" : "", static_cast<long long>(report->quantizedWeights),
                report->linears.size(), report->bitsPerWeight);
    if (withErr > 0)
        std::printf(", mean relative output error %.4g", meanOutErr / double(withErr));
    std::printf(", %.1f s -> %s\n", report->seconds, out->c_str());
    if (report->device != "cpu")
        std::printf("device: %s\n", report->device.c_str());
    return 0;
}

} // namespace lowbit::cli
