#include "pipeline/engine_quantization.h"

#include "quant/quantize.h"

#include <algorithm>

namespace lowbit {

using nlohmann::json;

Result<QuantizeOptions> quantizeOptions(const MethodSpec &method, int threads, int64_t maxPositions,
                                        const std::filesystem::path &dataDir) {
    QuantizeOptions options;
    options.method = method.name;
    options.bits = method.bits;
    options.groupSize = method.groupSize;
    options.symmetric = method.symmetric;
    options.threads = threads;
    options.methodOptions = method.options;
    auto selection = LayerSelection::parse(method.layers);
    if (!selection.ok())
        return makeError(ErrorCode::InvalidArgument,
                         "spec.method.layers: " + selection.error().message);
    options.selection = std::move(selection).value();
    options.calibration.tokens = std::min<int64_t>(2048, maxPositions > 0 ? maxPositions : 2048);
    const std::filesystem::path defaultText = dataDir / "wikitext2" / "wiki.train.raw.prefix";
    if (!dataDir.empty() && std::filesystem::exists(defaultText))
        options.calibration.textPath = defaultText;
    if (method.calibration) {
        const CalibrationSpec &c = *method.calibration;
        if (!c.dataset.empty() && c.dataset.find('/') == std::string::npos)
            return makeError(
                ErrorCode::InvalidArgument,
                "spec.method.calibration.dataset: '" + c.dataset +
                    "' is not a file path (give a text or .jsonl file, or leave it out for the "
                    "WikiText-2 train prefix)");
        if (!c.dataset.empty())
            options.calibration.textPath = c.dataset;
        options.calibration.samples = c.samples;
        options.calibration.tokens = c.tokens;
        options.calibration.seed = c.seed;
    }
    return options;
}

QuantizationHooks engineQuantizationHooks(const std::filesystem::path &dataDir) {
    QuantizationHooks hooks;
    hooks.validate = [](const MethodSpec &method) -> Status {
        LOWBIT_TRY(QuantizeOptions options, quantizeOptions(method, 0, 0));
        auto quantizer = makeQuantizer(options); // unknown method or options: its message
        if (!quantizer.ok())
            return makeError(quantizer.error().code, "spec.method: " + quantizer.error().message);
        return {};
    };
    hooks.quantize = [dataDir](const Checkpoint &source, const MethodSpec &method, int threads,
                               const DeviceSpec &device, const std::filesystem::path &outDir,
                               ProgressSink &progress, std::stop_token stop) -> Result<json> {
        LOWBIT_TRY(QuantizeOptions options,
                   quantizeOptions(method, threads, source.config.maxPositions, dataDir));
        options.device = device;
        LOWBIT_TRY(QuantizeReport report,
                   quantizeCheckpoint(source, options, outDir, progress, stop));
        return json{{"method", report.method},
                    {"bits", report.bits},
                    {"group_size", report.groupSize},
                    {"bits_per_weight", report.bitsPerWeight},
                    {"quantized_weights", report.quantizedWeights},
                    {"calibration", report.calibration},
                    {"warnings", report.warnings},
                    {"device", report.device},
                    {"seconds", report.seconds}};
    };
    hooks.load = [](const std::filesystem::path &dir, const LoadOptions &options) {
        return loadCheckpoint(dir, options);
    };
    return hooks;
}

} // namespace lowbit
