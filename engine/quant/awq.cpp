#include "quant/awq.h"

#include "quant/awq_search.h"
#include "quant/linalg.h"

#include <cblas.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>

namespace lowbit {

GridParams awqGrid(const float *x, int64_t n, int bits, bool symmetric) {
    GridParams p;
    p.maxq = (1 << bits) - 1;
    if (symmetric) {
        float absMax = 0;
        for (int64_t i = 0; i < n; ++i)
            absMax = std::max(absMax, std::abs(x[i]));
        p.scale = std::max(absMax, 1e-5f) / float((1 << (bits - 1)) - 1);
        p.zero = float(1 << (bits - 1));
        return p;
    }
    float lo = std::numeric_limits<float>::max(), hi = std::numeric_limits<float>::lowest();
    for (int64_t i = 0; i < n; ++i) {
        lo = std::min(lo, x[i]);
        hi = std::max(hi, x[i]);
    }
    p.scale = std::max(hi - lo, 1e-5f) / float(p.maxq);
    p.zero = std::clamp(-std::nearbyint(lo / p.scale), 0.0f, float(p.maxq));
    return p;
}

namespace {

int64_t effectiveGroup(int64_t groupSize, int64_t cols) {
    return groupSize <= 0 || groupSize >= cols ? cols : groupSize;
}

} // namespace

void awqFakeQuantize(float *w, int64_t rows, int64_t cols, int bits, int64_t groupSize,
                     bool symmetric) {
    const int64_t g = effectiveGroup(groupSize, cols);
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; c += g) {
            float *x = w + r * cols + c;
            const int64_t n = std::min(g, cols - c);
            const GridParams p = awqGrid(x, n, bits, symmetric);
            for (int64_t j = 0; j < n; ++j)
                x[j] = p.fakeQuant(x[j]);
        }
}

Result<QuantizedTensor> quantizeAwqGrid(std::string name, const float *weight, int64_t rows,
                                        int64_t cols, int bits, int64_t groupSize, bool symmetric) {
    if (symmetric && bits < 2)
        return makeError(ErrorCode::InvalidArgument,
                         name + ": symmetric AWQ needs at least 2 bits");
    LOWBIT_TRY(QuantizedTensor t, QuantizedTensor::create(std::move(name), "awq", rows, cols, bits,
                                                          groupSize, symmetric));
    std::vector<uint8_t> codes(static_cast<size_t>(cols));
    for (int64_t r = 0; r < rows; ++r) {
        const float *w = weight + r * cols;
        for (int64_t g = 0; g < t.groups(); ++g) {
            const int64_t first = g * t.groupSize, count = std::min(t.groupSize, cols - first);
            const GridParams p = awqGrid(w + first, count, bits, symmetric);
            t.scale(r, g) = p.scale;
            t.zero(r, g) = p.zero;
            for (int64_t j = first; j < first + count; ++j)
                codes[size_t(j)] = p.code(w[j]);
        }
        LOWBIT_CHECK(t.setRowCodes(r, codes));
    }
    return t;
}

namespace {

// The partial outputs of one column group [c0, c0 + width) on the sample rows of x:
// err_r = mean_t (x_t . d_r)^2 for each row's difference d_r, through the Gram matrix X_g^T X_g
// when the group is narrower than the sample, else through X_g d_r directly.
class GroupOutputError {
public:
    GroupOutputError(const float *x, int64_t tokens, int64_t cols, int64_t c0, int64_t width)
        : m_x(x + c0), m_tokens(tokens), m_cols(cols), m_width(width), m_gram(width < tokens) {
        if (m_gram) {
            m_g.assign(size_t(width * width), 0.0f);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(width), int(width),
                        int(tokens), 1.0f, m_x, int(cols), m_x, int(cols), 0.0f, m_g.data(),
                        int(width));
        }
    }

    void errors(const std::vector<float> &diff, int64_t rows, std::vector<double> &out) {
        const int64_t inner = m_gram ? m_width : m_tokens;
        m_product.resize(size_t(rows * inner));
        if (m_gram)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(rows), int(m_width),
                        int(m_width), 1.0f, diff.data(), int(m_width), m_g.data(), int(m_width),
                        0.0f, m_product.data(), int(m_width));
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(rows), int(m_tokens),
                        int(m_width), 1.0f, diff.data(), int(m_width), m_x, int(m_cols), 0.0f,
                        m_product.data(), int(m_tokens));
        out.assign(size_t(rows), 0.0);
        for (int64_t r = 0; r < rows; ++r) {
            const float *p = m_product.data() + r * inner;
            double err = 0;
            for (int64_t k = 0; k < inner; ++k)
                err +=
                    double(p[k]) * (m_gram ? double(diff[size_t(r * m_width + k)]) : double(p[k]));
            out[size_t(r)] = err / double(m_tokens);
        }
    }

private:
    const float *m_x;
    int64_t m_tokens, m_cols, m_width;
    bool m_gram;
    std::vector<float> m_g, m_product;
};

} // namespace

std::vector<float> awqClipSearch(const float *w, int64_t rows, int64_t cols, const float *x,
                                 int64_t tokens, const AwqOptions &options) {
    const int64_t g = effectiveGroup(options.groupSize, cols), groups = (cols + g - 1) / g;
    const int64_t steps = int64_t(options.maxShrink * double(options.clipGrid));
    std::vector<float> best(static_cast<size_t>(rows * groups)), orgMax(static_cast<size_t>(rows));
    std::vector<float> diff, clamped;
    std::vector<double> minErr, err;
    BlasThreads blas(options.threads);
    for (int64_t gi = 0; gi < groups; ++gi) {
        const int64_t c0 = gi * g, width = std::min(g, cols - c0);
        GroupOutputError groupError(x, tokens, cols, c0, width);
        diff.resize(size_t(rows * width));
        clamped.resize(size_t(width));
        minErr.assign(size_t(rows), std::numeric_limits<double>::infinity());
        for (int64_t r = 0; r < rows; ++r) {
            float m = 0;
            for (int64_t j = 0; j < width; ++j)
                m = std::max(m, std::abs(w[r * cols + c0 + j]));
            orgMax[size_t(r)] = best[size_t(r * groups + gi)] = m;
        }
        for (int64_t i = 0; i < steps; ++i) { // max_val = org_max * (1 - i / n_grid)
            const float shrink = 1.0f - float(i) / float(options.clipGrid);
            for (int64_t r = 0; r < rows; ++r) {
                const float maxVal = orgMax[size_t(r)] * shrink, *src = w + r * cols + c0;
                for (int64_t j = 0; j < width; ++j)
                    clamped[size_t(j)] = std::clamp(src[j], -maxVal, maxVal);
                const GridParams p =
                    awqGrid(clamped.data(), width, options.bits, options.symmetric);
                for (int64_t j = 0; j < width; ++j)
                    diff[size_t(r * width + j)] = p.fakeQuant(clamped[size_t(j)]) - src[j];
            }
            groupError.errors(diff, rows, err);
            for (int64_t r = 0; r < rows; ++r)
                if (err[size_t(r)] < minErr[size_t(r)]) {
                    minErr[size_t(r)] = err[size_t(r)];
                    best[size_t(r * groups + gi)] = orgMax[size_t(r)] * shrink;
                }
        }
    }
    return best;
}

void applyAwqClip(float *w, int64_t rows, int64_t cols, int64_t groupSize,
                  std::span<const float> maxVal) {
    const int64_t g = effectiveGroup(groupSize, cols), groups = (cols + g - 1) / g;
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < cols; ++j) {
            const float m = maxVal[size_t(r * groups + j / g)];
            w[r * cols + j] = std::clamp(w[r * cols + j], -m, m);
        }
}

std::vector<float> awqSearchLinearScales(const float *w, int64_t rows, int64_t cols, const float *x,
                                         int64_t tokens, const AwqOptions &options,
                                         double *bestRatio) {
    const std::vector<float> weight(w, w + rows * cols);
    std::vector<float> reference(static_cast<size_t>(tokens * rows)), candidate(reference.size());
    BlasThreads blas(options.threads);
    auto output = [&](const float *m, float *y) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(tokens), int(rows), int(cols),
                    1.0f, x, int(cols), m, int(cols), 0.0f, y, int(rows));
    };
    output(weight.data(), reference.data());
    auto scales = awqScaleSearch(
        meanAbsColumns(x, tokens, cols), {&weight}, {rows}, cols, options,
        [&](const std::vector<std::vector<float>> &c) {
            output(c[0].data(), candidate.data());
            double sum = 0;
            for (size_t i = 0; i < candidate.size(); ++i) {
                const double d = double(candidate[i]) - double(reference[i]);
                sum += d * d;
            }
            return sum;
        },
        bestRatio);
    return scales ? std::move(*scales) : std::vector<float>(size_t(cols), 1.0f);
}

namespace {

// 0::stride rows of x (tokens x cols) with stride = max(1, tokens / n), divided by s when given.
std::vector<float> stridedRows(const float *x, int64_t tokens, int64_t cols, int64_t n,
                               const std::vector<float> &s, int64_t *count) {
    const int64_t stride = std::max<int64_t>(1, tokens / std::max<int64_t>(n, 1));
    std::vector<float> out;
    *count = 0;
    for (int64_t t = 0; t < tokens; t += stride, ++*count)
        for (int64_t j = 0; j < cols; ++j)
            out.push_back(s.empty() ? x[t * cols + j] : x[t * cols + j] / s[size_t(j)]);
    return out;
}

} // namespace

Result<std::vector<float>> awqQuantizeLinear(const float *w, int64_t rows, int64_t cols,
                                             const float *x, int64_t tokens,
                                             const AwqOptions &options,
                                             std::vector<float> *scalesOut) {
    std::vector<float> s = options.scaleSearch
                               ? awqSearchLinearScales(w, rows, cols, x, tokens, options)
                               : std::vector<float>(size_t(cols), 1.0f);
    std::vector<float> scaled(w, w + rows * cols);
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < cols; ++j)
            scaled[size_t(r * cols + j)] *= s[size_t(j)];
    if (options.clipSearch) {
        int64_t count = 0;
        const std::vector<float> xs = stridedRows(x, tokens, cols, options.clipTokens, s, &count);
        const std::vector<float> maxVal =
            awqClipSearch(scaled.data(), rows, cols, xs.data(), count, options);
        applyAwqClip(scaled.data(), rows, cols, options.groupSize, maxVal);
    }
    LOWBIT_TRY(QuantizedTensor t, quantizeAwqGrid("linear", scaled.data(), rows, cols, options.bits,
                                                  options.groupSize, options.symmetric));
    std::vector<float> q = t.dequantize();
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < cols; ++j)
            q[size_t(r * cols + j)] /= s[size_t(j)];
    if (scalesOut)
        *scalesOut = std::move(s);
    return q;
}

namespace {

class AwqQuantizer final : public Quantizer {
public:
    explicit AwqQuantizer(const AwqOptions &options) : m_options(options) {}
    std::string_view name() const override { return "awq"; }
    CalibrationNeeds needs() const override { return {.layerInputs = true}; }

    Status prepareLayer(LayerContext &context) override {
        m_clipLayer = -1;
        if (!m_options.scaleSearch && !m_options.clipSearch)
            return {};
        if (!context.runner)
            return makeError(ErrorCode::InvalidArgument, "awq needs calibration windows");
        LOWBIT_TRY(AwqLayerInputs inputs,
                   captureLayerInputs(*context.runner, context.layer, context.weights.view(),
                                      m_options.searchTokens, m_options.batchTokens));
        AwqLayerScales scales;
        if (m_options.scaleSearch) {
            LOWBIT_TRY(scales,
                       searchLayerScales(context.weights, inputs, context.runner->model().config(),
                                         m_options, context.stop));
            foldLayerScales(context.weights, scales);
            context.weightsChanged = true;
            context.notes["awq_scales"] = scales.notes;
        }
        if (m_options.clipSearch) {
            // apply_scale divides the kept inputs by the folded scales, ready for clipping.
            const std::pair<LinearInput, const std::vector<float> *> kinds[] = {
                {LinearInput::Attention, &scales.qkv},
                {LinearInput::AttentionOutput, &scales.vo},
                {LinearInput::Mlp, &scales.mlp},
                {LinearInput::MlpDown, &scales.down}};
            for (const auto &[input, s] : kinds) {
                const std::vector<float> &x = inputs.of(input);
                const int64_t cols = int64_t(x.size()) / inputs.tokens;
                ClipInput &c = m_clip[size_t(input)];
                c.cols = cols;
                c.rows =
                    stridedRows(x.data(), inputs.tokens, cols, m_options.clipTokens, *s, &c.count);
            }
            m_clipLayer = context.layer;
        }
        return {};
    }

    Result<QuantizedTensor> quantize(const LinearJob &job) override {
        std::vector<float> w(job.weight.begin(), job.weight.end());
        const bool clip =
            m_options.clipSearch && job.kind != LinearKind::Q && job.kind != LinearKind::K;
        if (clip) { // auto_clip_block skips q_proj and k_proj
            const ClipInput &c = m_clip[size_t(linearInputOf(job.kind))];
            if (m_clipLayer != job.layer || c.cols != job.cols)
                return makeError(ErrorCode::Internal,
                                 job.name + ": awq clip inputs missing for this layer");
            const std::vector<float> maxVal =
                awqClipSearch(w.data(), job.rows, job.cols, c.rows.data(), c.count, m_options);
            applyAwqClip(w.data(), job.rows, job.cols, m_options.groupSize, maxVal);
        }
        return quantizeAwqGrid(job.name, w.data(), job.rows, job.cols, m_options.bits,
                               m_options.groupSize, m_options.symmetric);
    }

private:
    struct ClipInput {
        int64_t cols = 0, count = 0;
        std::vector<float> rows;
    };
    AwqOptions m_options;
    int64_t m_clipLayer = -1;
    std::array<ClipInput, 4> m_clip;
};

} // namespace

Result<std::unique_ptr<Quantizer>> makeAwqQuantizer(const QuantizeOptions &options) {
    if (options.bits < 1 || options.bits > 8 || (options.symmetric && options.bits < 2))
        return makeError(ErrorCode::InvalidArgument,
                         "awq: --bits must be 1..8 (2..8 with --sym), got " +
                             std::to_string(options.bits));
    if (options.groupSize < 0)
        return makeError(ErrorCode::InvalidArgument, "awq: group size must be >= 0");
    AwqOptions o;
    o.bits = options.bits;
    o.groupSize = options.groupSize;
    o.symmetric = options.symmetric;
    o.threads = options.threads;
    o.batchTokens = options.calibration.batchTokens;
    MethodOptions method("awq", options.methodOptions);
    LOWBIT_TRY(o.scaleSearch, method.boolean("scale", true));
    LOWBIT_TRY(o.clipSearch, method.boolean("clip", true));
    LOWBIT_TRY(o.scaleGrid, method.integer("grid", 20));
    LOWBIT_TRY(o.clipGrid, method.integer("clip_grid", 20));
    LOWBIT_TRY(o.maxShrink, method.number("max_shrink", 0.5));
    LOWBIT_TRY(o.clipTokens, method.integer("clip_tokens", 512));
    LOWBIT_TRY(o.searchTokens, method.integer("search_tokens", 65536));
    LOWBIT_CHECK(method.finish());
    if (o.scaleGrid < 1 || o.clipGrid < 1 || o.clipTokens < 1 || o.searchTokens < 1 ||
        !(o.maxShrink >= 0 && o.maxShrink < 1))
        return makeError(ErrorCode::InvalidArgument,
                         "awq: grid, clip_grid, clip_tokens and search_tokens must be positive, "
                         "max_shrink in [0, 1)");
    return std::unique_ptr<Quantizer>(new AwqQuantizer(o));
}

} // namespace lowbit
