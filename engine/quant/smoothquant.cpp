#include "quant/smoothquant.h"

#include "quant/activation_quant.h"

#include <algorithm>
#include <cmath>

namespace lowbit {

std::vector<float> smoothingFactors(std::span<const double> actMax,
                                    const std::vector<std::span<const float>> &weights,
                                    const std::vector<int64_t> &rows, int64_t cols, double alpha) {
    std::vector<double> weightMax(static_cast<size_t>(cols), 0.0);
    for (size_t k = 0; k < weights.size(); ++k)
        for (int64_t r = 0; r < rows[k]; ++r)
            for (int64_t j = 0; j < cols; ++j)
                weightMax[size_t(j)] = std::max(weightMax[size_t(j)],
                                                double(std::abs(weights[k][size_t(r * cols + j)])));
    std::vector<float> s(static_cast<size_t>(cols));
    for (int64_t j = 0; j < cols; ++j) {
        const double w = std::max(weightMax[size_t(j)], 1e-5);
        s[size_t(j)] =
            float(std::max(std::pow(actMax[size_t(j)], alpha) / std::pow(w, 1.0 - alpha), 1e-5));
    }
    return s;
}

void foldSmoothing(std::vector<float> &norm, const std::vector<LinearKind> &linears,
                   FloatLayer &layer, std::span<const float> factors) {
    const int64_t cols = int64_t(factors.size());
    for (int64_t j = 0; j < cols; ++j)
        norm[size_t(j)] /= factors[size_t(j)];
    for (LinearKind kind : linears) {
        std::vector<float> &w = layer.weight(kind);
        const int64_t rows = layer.rows[size_t(kind)];
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t j = 0; j < cols; ++j)
                w[size_t(r * cols + j)] *= factors[size_t(j)];
    }
}

namespace {

Status smoothInput(FloatLayer &layer, const LayerStatistics &stats, LinearInput input,
                   std::vector<float> &norm, const std::vector<LinearKind> &linears, double alpha,
                   nlohmann::json *notes, const char *noteKey) {
    const auto it = stats.find(input);
    const int64_t cols = int64_t(norm.size());
    if (it == stats.end() || int64_t(it->second.maxAbs.size()) != cols)
        return makeError(ErrorCode::InvalidArgument,
                         "smoothquant: no max |x| statistics of width " + std::to_string(cols) +
                             " for the input of " + linearKindName(linears.front()));
    std::vector<std::span<const float>> weights;
    std::vector<int64_t> rows;
    for (LinearKind kind : linears) {
        if (layer.cols[size_t(kind)] != cols)
            return makeError(ErrorCode::InvalidArgument, std::string("smoothquant: ") +
                                                             linearKindName(kind) +
                                                             " width differs from its norm");
        weights.push_back(layer.weight(kind));
        rows.push_back(layer.rows[size_t(kind)]);
    }
    const std::vector<float> s = smoothingFactors(it->second.maxAbs, weights, rows, cols, alpha);
    foldSmoothing(norm, linears, layer, s);
    if (notes) {
        const auto [lo, hi] = std::minmax_element(s.begin(), s.end());
        (*notes)[noteKey] = {{"min", *lo}, {"max", *hi}};
    }
    return {};
}

} // namespace

Status smoothLayer(FloatLayer &layer, const LayerStatistics &stats, double alpha,
                   nlohmann::json *notes) {
    using K = LinearKind;
    LOWBIT_CHECK(smoothInput(layer, stats, LinearInput::Attention, layer.attnNorm,
                             {K::Q, K::K, K::V}, alpha, notes, "attention_factors"));
    return smoothInput(layer, stats, LinearInput::Mlp, layer.ffnNorm, {K::Gate, K::Up}, alpha,
                       notes, "mlp_factors");
}

Result<QuantizedTensor> quantizeAbsmax(std::string name, const float *weight, int64_t rows,
                                       int64_t cols, int bits, int64_t groupSize,
                                       std::string method) {
    if (bits < 2 || bits > 8)
        return makeError(ErrorCode::InvalidArgument,
                         name + ": absmax quantization needs 2..8 bits");
    LOWBIT_TRY(QuantizedTensor t, QuantizedTensor::create(std::move(name), std::move(method), rows,
                                                          cols, bits, groupSize, true));
    const int qmax = (1 << (bits - 1)) - 1, offset = 1 << (bits - 1);
    std::vector<uint8_t> codes(static_cast<size_t>(cols));
    for (int64_t r = 0; r < rows; ++r) {
        const float *w = weight + r * cols;
        for (int64_t g = 0; g < t.groups(); ++g) {
            const int64_t first = g * t.groupSize, count = std::min(t.groupSize, cols - first);
            float absMax = 0;
            for (int64_t j = first; j < first + count; ++j)
                absMax = std::max(absMax, std::abs(w[j]));
            const float scale = std::max(absMax, 1e-5f) / float(qmax);
            t.scale(r, g) = scale;
            t.zero(r, g) = float(offset);
            for (int64_t j = first; j < first + count; ++j) {
                const float q = std::clamp(std::nearbyint(w[j] / scale), float(-qmax), float(qmax));
                codes[size_t(j)] = uint8_t(int(q) + offset);
            }
        }
        LOWBIT_CHECK(t.setRowCodes(r, codes));
    }
    return t;
}

namespace {

class SmoothQuantQuantizer final : public Quantizer {
public:
    SmoothQuantQuantizer(const QuantizeOptions &options, double alpha, int actBits)
        : m_options(options), m_alpha(alpha), m_actBits(actBits) {}
    std::string_view name() const override { return "smoothquant"; }
    CalibrationNeeds needs() const override { return {.channelStats = true}; }
    Status prepareLayer(LayerContext &context) override {
        context.notes["alpha"] = m_alpha;
        context.notes["activation_bits"] = m_actBits;
        LOWBIT_CHECK(smoothLayer(context.weights, context.stats, m_alpha, &context.notes));
        context.weightsChanged = true;
        return {};
    }
    Result<QuantizedTensor> quantize(const LinearJob &job) override {
        if (job.notes)
            (*job.notes)["activation_bits"] = m_actBits;
        return quantizeAbsmax(job.name, job.weight.data(), job.rows, job.cols, m_options.bits,
                              m_options.groupSize);
    }

private:
    QuantizeOptions m_options;
    double m_alpha;
    int m_actBits;
};

} // namespace

Result<std::unique_ptr<Quantizer>> makeSmoothQuantQuantizer(const QuantizeOptions &options) {
    if (options.bits < 2 || options.bits > 8)
        return makeError(ErrorCode::InvalidArgument,
                         "smoothquant: --bits must be 2..8 (symmetric absmax), got " +
                             std::to_string(options.bits));
    if (options.groupSize < 0)
        return makeError(ErrorCode::InvalidArgument, "smoothquant: group size must be >= 0");
    MethodOptions method("smoothquant", options.methodOptions);
    LOWBIT_TRY(double alpha, method.number("alpha", 0.5));
    LOWBIT_TRY(int64_t actBits, method.integer("act_bits", options.bits));
    LOWBIT_CHECK(method.finish());
    if (!(alpha >= 0 && alpha <= 1))
        return makeError(ErrorCode::InvalidArgument, "smoothquant: alpha must be in [0, 1]");
    if (actBits != 16 && (actBits < 2 || actBits > 8))
        return makeError(ErrorCode::InvalidArgument,
                         "smoothquant: act_bits must be 2..8, or 16 (none)");
    return std::unique_ptr<Quantizer>(new SmoothQuantQuantizer(
        options, alpha, actBits == 16 ? kNoActivationQuant : int(actBits)));
}

} // namespace lowbit
