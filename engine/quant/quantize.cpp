#include "quant/quantize.h"

#include "quant/linalg.h"
#include "quant/quant_device.h"
#include "quant/quantized_checkpoint.h"

#include <cblas.h>

#include <chrono>
#include <optional>

namespace lowbit {

namespace {

using Clock = std::chrono::steady_clock;

double secondsSince(Clock::time_point start) {
    return std::chrono::duration<double>(Clock::now() - start).count();
}

// The linears whose statistics are taken together: GPTQ llama.py's true-sequential groups.
std::vector<std::vector<LinearKind>> linearGroups(bool trueSequential) {
    using K = LinearKind;
    if (trueSequential)
        return {{K::Q, K::K, K::V}, {K::O}, {K::Gate, K::Up}, {K::Down}};
    return {{K::Q, K::K, K::V, K::O, K::Gate, K::Up, K::Down}};
}

// ||W - Q||^2 / ||W||^2.
double weightRelError(std::span<const float> w, std::span<const float> q) {
    double num = 0, den = 0;
    for (size_t i = 0; i < w.size(); ++i) {
        const double d = double(w[i]) - double(q[i]);
        num += d * d;
        den += double(w[i]) * double(w[i]);
    }
    return den > 0 ? num / den : 0;
}

// ||(W - Q) X^T||^2 / ||W X^T||^2 over the sampled input rows X.
double outputRelError(std::span<const float> w, std::span<const float> q, int64_t rows,
                      int64_t cols, const LinearStats &stats, int threads) {
    const int64_t m = stats.sampleCount;
    if (m == 0)
        return -1;
    std::vector<float> diff(w.size()), y(size_t(m * rows)), dy(size_t(m * rows));
    for (size_t i = 0; i < w.size(); ++i)
        diff[i] = w[i] - q[i];
    BlasThreads blas(threads);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(m), int(rows), int(cols), 1.0f,
                stats.sampleRows.data(), int(cols), w.data(), int(cols), 0.0f, y.data(), int(rows));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(m), int(rows), int(cols), 1.0f,
                stats.sampleRows.data(), int(cols), diff.data(), int(cols), 0.0f, dy.data(),
                int(rows));
    double num = 0, den = 0;
    for (size_t i = 0; i < y.size(); ++i) {
        num += double(dy[i]) * double(dy[i]);
        den += double(y[i]) * double(y[i]);
    }
    return den > 0 ? num / den : 0;
}

// Everything one run carries from layer to layer.
struct Run {
    const Checkpoint &source;
    const QuantizeOptions &options;
    Quantizer &quantizer;
    CalibrationNeeds needs;
    LayerRunner *runner = nullptr;
    ProgressSink &progress;
    std::stop_token stop;
    QuantizedModel &out;
    QuantDevice *device = nullptr;
};

Status gatherStats(Run &run, int64_t layer, const FloatLayer &weights,
                   const std::set<LinearInput> &inputs, LayerStatistics &stats) {
    if (!run.runner || inputs.empty())
        return {};
    StatsWanted wanted{run.needs.hessian, run.needs.channelStats, true};
    StatsHook hook(inputs, wanted, run.options.calibration.precision, run.options.threads,
                   run.options.calibration.seed + uint64_t(layer) * 16, run.device);
    LOWBIT_CHECK(run.runner->run(layer, weights.view(), &hook));
    LOWBIT_CHECK(hook.status());
    LayerStatistics fresh = hook.finish();
    LOWBIT_CHECK(hook.status());
    for (auto &[kind, s] : fresh)
        stats[kind] = std::move(s);
    return {};
}

Status quantizeLinear(Run &run, int64_t layer, LinearKind kind, FloatLayer &weights,
                      const LayerStatistics &stats) {
    if (run.stop.stop_requested())
        return makeError(ErrorCode::Cancelled, "quantization cancelled");
    const auto start = Clock::now();
    LinearReport report;
    report.name = linearTensorName(layer, kind);
    report.rows = weights.rows[size_t(kind)];
    report.cols = weights.cols[size_t(kind)];
    const auto statsIt = stats.find(linearInputOf(kind));
    const LinearStats *linearStats = statsIt == stats.end() ? nullptr : &statsIt->second;
    std::vector<float> &w = weights.weight(kind);
    LinearJob job{layer, kind,        report.name,   report.rows, report.cols,
                  w,     linearStats, &report.notes, run.stop,    run.device};
    auto quantized = run.quantizer.quantize(job);
    if (!quantized)
        return makeError(quantized.error().code, report.name + ": " + quantized.error().message);
    QuantizedTensor &t = *quantized;
    t.name = report.name;
    LOWBIT_TRY(std::vector<float> fake, run.quantizer.dequantize(t));
    if (int64_t(fake.size()) != report.rows * report.cols)
        return makeError(ErrorCode::Internal,
                         report.name + ": dequantized size differs from the weight");
    report.bitsPerWeight = t.bitsPerWeight();
    report.weightRelError = weightRelError(w, fake);
    if (linearStats)
        report.outputRelError =
            outputRelError(w, fake, report.rows, report.cols, *linearStats, run.options.threads);
    w = std::move(fake);
    report.seconds = secondsSince(start);
    run.out.tensors.push_back(std::move(t));
    run.out.report.linears.push_back(std::move(report));
    return {};
}

// The layer's tensors in the source dtypes, from the (partly quantized) float copies.
LayerWeights toStoredLayer(const FloatLayer &f, const LayerWeights &source) {
    LayerWeights w = source;
    w.attnNorm = Tensor::fromFloats(source.attnNorm.name, source.attnNorm.shape, f.attnNorm.data(),
                                    source.attnNorm.dtype);
    w.ffnNorm = Tensor::fromFloats(source.ffnNorm.name, source.ffnNorm.shape, f.ffnNorm.data(),
                                   source.ffnNorm.dtype);
    for (LinearKind kind : kAllLinearKinds) {
        const Tensor &s = linearWeight(source, kind);
        linearWeight(w, kind) = Tensor::fromFloats(s.name, s.shape, f.weight(kind).data(), s.dtype);
    }
    return w;
}

Status quantizeLayer(Run &run, int64_t layer, LayerWeights &outLayer) {
    const LayerWeights &sourceLayer = run.source.weights.layers[size_t(layer)];
    bool any = false;
    for (LinearKind kind : kAllLinearKinds)
        any = any || run.options.selection.contains(layer, kind);
    if (!any)
        return run.runner ? run.runner->advance(layer, sourceLayer) : Status{};

    FloatLayer weights = FloatLayer::fromWeights(sourceLayer);
    LayerStatistics stats;
    const std::set<LinearInput> allInputs = {LinearInput::Attention, LinearInput::AttentionOutput,
                                             LinearInput::Mlp, LinearInput::MlpDown};
    LOWBIT_CHECK(gatherStats(run, layer, weights, allInputs, stats));
    nlohmann::json notes = nlohmann::json::object();
    LayerContext context{layer, weights, stats, run.runner, notes, run.stop};
    LOWBIT_CHECK(run.quantizer.prepareLayer(context));
    if (context.weightsChanged)
        LOWBIT_CHECK(gatherStats(run, layer, weights, allInputs, stats));
    const auto groups = linearGroups(run.options.trueSequential);
    for (size_t g = 0; g < groups.size(); ++g) {
        // Statistics of a later group are taken on the inputs the quantized earlier groups give.
        if (g > 0) {
            std::set<LinearInput> inputs;
            for (LinearKind kind : groups[g])
                if (run.options.selection.contains(layer, kind))
                    inputs.insert(linearInputOf(kind));
            LOWBIT_CHECK(gatherStats(run, layer, weights, inputs, stats));
        }
        for (LinearKind kind : groups[g])
            if (run.options.selection.contains(layer, kind))
                LOWBIT_CHECK(quantizeLinear(run, layer, kind, weights, stats));
    }
    if (!notes.empty())
        run.out.report.layerNotes.push_back({{"layer", layer}, {"notes", notes}});
    if (run.runner)
        LOWBIT_CHECK(run.runner->advance(layer, weights.view()));
    outLayer = toStoredLayer(weights, sourceLayer);
    return {};
}

void finishReport(QuantizeReport &report, const std::vector<QuantizedTensor> &tensors) {
    double bits = 0, weights = 0;
    for (const QuantizedTensor &t : tensors) {
        bits += double(t.storageBits());
        weights += double(t.rows * t.cols);
    }
    report.quantizedWeights = int64_t(weights);
    report.bitsPerWeight = weights > 0 ? bits / weights : 0;
}

} // namespace

Result<QuantizedModel> quantizeModel(const Checkpoint &source, const QuantizeOptions &options,
                                     ProgressSink &progress, std::stop_token stop) {
    const auto start = Clock::now();
    LOWBIT_TRY(std::unique_ptr<Quantizer> quantizer, makeQuantizer(options));
    LOWBIT_TRY(std::unique_ptr<QuantDevice> device, QuantDevice::open(options.device));
    QuantizedModel out;
    QuantizeReport &report = out.report;
    report.method = options.method;
    report.bits = options.bits;
    report.groupSize = options.groupSize;
    report.symmetric = options.symmetric;
    report.selection = options.selection.toString();
    report.trueSequential = options.trueSequential;
    report.methodOptions = options.methodOptions;
    const CalibrationNeeds needs = quantizer->needs();

    auto base = std::make_shared<const Checkpoint>(source);
    std::unique_ptr<Model> model;
    std::optional<CalibrationSet> set;
    std::unique_ptr<LayerRunner> runner;
    if (needs.any()) {
        if (!source.tokenizer)
            return makeError(
                ErrorCode::InvalidArgument,
                source.path.string() + ": " + options.method +
                    " needs calibration text, but the model has no tokenizer (give --tokenizer)");
        progress.report({"calibrate", 0, options.calibration.samples});
        LOWBIT_TRY(set, loadCalibration(*source.tokenizer, options.calibration));
        LOWBIT_TRY(model, Model::create(base, {options.threads}));
        runner = std::make_unique<LayerRunner>(*model, *set, options.calibration.batchTokens);
        LOWBIT_CHECK(runner->embed());
        report.calibrated = true;
        report.calibration = {
            {"source", set->source.string()},
            {"samples", options.calibration.samples},
            {"tokens", options.calibration.tokens},
            {"seed", options.calibration.seed},
            {"document_tokens", set->documentTokens},
            {"hessian_precision", options.calibration.precision == HessianPrecision::Float64
                                      ? "float64"
                                      : "blocked-float32"}};
        report.warnings.insert(report.warnings.end(), set->warnings.begin(), set->warnings.end());
        if (device)
            device->ranOnCpu("forward"); // Model::runLayer has no device path
        progress.report({"calibrate", options.calibration.samples, options.calibration.samples});
    }

    Checkpoint quantized = source;
    Run run{source, options, *quantizer, needs, runner.get(), progress, stop, out, device.get()};
    const int64_t layers = source.config.numLayers;
    for (int64_t layer = 0; layer < layers; ++layer) {
        if (stop.stop_requested())
            return makeError(ErrorCode::Cancelled, "quantization cancelled");
        LOWBIT_CHECK(quantizeLayer(run, layer, quantized.weights.layers[size_t(layer)]));
        const double elapsed = secondsSince(start);
        progress.report({"quantize", layer + 1, layers, 0,
                         elapsed / double(layer + 1) * double(layers - layer - 1)});
    }
    finishReport(report, out.tensors);
    if (device)
        report.device = device->summary(options.method);
    quantized.metadata["quantization"] =
        options.method + " " + std::to_string(options.bits) + "-bit";
    out.checkpoint = std::make_shared<const Checkpoint>(std::move(quantized));
    report.seconds = secondsSince(start);
    return out;
}

Result<QuantizeReport> quantizeCheckpoint(const Checkpoint &source, const QuantizeOptions &options,
                                          const std::filesystem::path &outDir,
                                          ProgressSink &progress, std::stop_token stop) {
    LOWBIT_TRY(QuantizedModel model, quantizeModel(source, options, progress, stop));
    model.report.outDir = outDir;
    LOWBIT_CHECK(
        writeQuantizedCheckpoint(outDir, source, *model.checkpoint, model.tensors, model.report));
    return model.report;
}

nlohmann::json QuantizeReport::toJson() const {
    nlohmann::json linearsJson = nlohmann::json::array();
    for (const LinearReport &l : linears)
        linearsJson.push_back({{"name", l.name},
                               {"rows", l.rows},
                               {"cols", l.cols},
                               {"bits_per_weight", l.bitsPerWeight},
                               {"weight_rel_error", l.weightRelError},
                               {"output_rel_error", l.outputRelError},
                               {"seconds", l.seconds},
                               {"notes", l.notes}});
    return {{"format", "lowbit-quantized"},
            {"version", 1},
            {"method", method},
            {"bits", bits},
            {"group_size", groupSize},
            {"symmetric", symmetric},
            {"selection", selection},
            {"true_sequential", trueSequential},
            {"method_options", methodOptions},
            {"bits_per_weight", bitsPerWeight},
            {"quantized_weights", quantizedWeights},
            {"calibrated", calibrated},
            {"calibration", calibration},
            {"linears", linearsJson},
            {"layer_notes", layerNotes},
            {"warnings", warnings},
            {"device", device},
            {"seconds", seconds}};
}

} // namespace lowbit
