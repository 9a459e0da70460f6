#include "quant/slim_llm.h"

#include "core/thread_pool.h"
#include "quant/binarize.h"
#include "quant/group_quantizers.h"
#include "quant/linalg.h"
#include "quant/minmax_grid.h"
#include "quant/obs_sweep.h"
#include "quant/quant_device.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <numeric>

namespace lowbit {

namespace {

// One (row, group) quantizer: a min-max grid, or a binarizer for 1-bit groups.
struct GroupQuantizer {
    bool binary = false;
    GridParams grid;
    BinaryParams bin;

    uint8_t code(float w) const { return binary ? uint8_t(bin.positive(w)) : grid.code(w); }
    float value(uint8_t code) const { return binary ? bin.value(code != 0) : grid.value(code); }
    ScaleZero scaleZero() const {
        return binary ? binaryScaleZero(bin, false) : ScaleZero{grid.scale, grid.zero};
    }
};

// Round-to-nearest quantizer of n values at `bits` (the reference's block_quantize).
GroupQuantizer rtnQuantizer(const float *x, int64_t n, int bits) {
    GroupQuantizer q;
    q.binary = bits == 1;
    if (q.binary)
        q.bin = fitBinary(x, n);
    else
        q.grid = minMaxGrid(x, n, 1, bits, false);
    return q;
}

// SQC (header, step 2) for n values of one row; salient[i] marks the salient ones.
GridParams sqcGrid(const float *x, int64_t n, const uint8_t *salient, int bits,
                   const SlimLlmOptions &o) {
    float xmin = 0, xmax = 0;
    for (int64_t i = 0; i < n; ++i) {
        xmin = std::min(xmin, x[i]);
        xmax = std::max(xmax, x[i]);
    }
    if (xmin == 0 && xmax == 0) {
        xmin = -1;
        xmax = 1;
    }
    GridParams best;
    best.maxq = (1 << bits) - 1;
    double bestErr = INFINITY;
    const float norm = float(o.norm);
    const int candidates = 1 + 2 * o.tauSteps;
    for (int c = 0; c < candidates; ++c) {
        // The reference's order: 1, then up to 1 + tau, then down to 1 - tau.
        const double p = c == 0            ? 1.0
                         : c <= o.tauSteps ? 1.0 + o.tau * c / o.tauSteps
                                           : 1.0 - o.tau * (c - o.tauSteps) / o.tauSteps;
        GridParams g;
        g.maxq = best.maxq;
        g.scale = float(p) * (xmax - xmin) / float(g.maxq);
        g.zero = std::nearbyint(-float(p) * xmin / g.scale);
        double err = 0;
        for (int64_t i = 0; i < n; ++i) {
            // float pow: this loop is most of SliM-LLM's time (101 candidates per weight)
            const double e = std::pow(std::abs(g.fakeQuant(x[i]) - x[i]), norm);
            err += salient[i] ? o.lambda * e : e;
        }
        if (err < bestErr) {
            bestErr = err;
            best = g;
        }
    }
    return best;
}

// The per-group quantizer of the sweep: widths fixed by SBA, quantizers fitted (SQC) when the
// sweep reaches the group, on the weights as updated so far.
class SlimSweep final : public SweepQuantizer {
public:
    SlimSweep(int64_t rows, int64_t cols, int64_t groupSize, const std::vector<uint8_t> &widths,
              const std::vector<float> &hinvUpper, const SlimLlmOptions &options)
        : m_rows(rows), m_cols(cols), m_widths(widths), m_u(hinvUpper), m_options(options),
          m_pool(options.threads), m_quantizers(rows, cols, groupSize) {}

    void beginBlock(int64_t first, int64_t count, const float *w) override {
        m_quantizers.forGroupsStarting(first, count, [&](int64_t g, int64_t c0, int64_t width) {
            fitGroup(g, c0, width, w);
        });
    }

    void quantizeColumn(int64_t col, int64_t r0, int64_t r1, const float *w, float *q) override {
        m_quantizers.quantizeColumn(col, r0, r1, w, q);
    }

    const GroupQuantizers<GroupQuantizer> &quantizers() const { return m_quantizers; }

private:
    void fitGroup(int64_t g, int64_t c0, int64_t width, const float *w) {
        const int bits = m_widths[size_t(g)];
        if (bits == 1) {
            for (int64_t r = 0; r < m_rows; ++r)
                m_quantizers.at(r, g) = rtnQuantizer(w + r * m_cols + c0, width, 1);
            return;
        }
        const std::vector<uint8_t> salient = salientMask(w, c0, width);
        for (int64_t r = 0; r < m_rows; ++r) {
            GroupQuantizer &gq = m_quantizers.at(r, g);
            gq.binary = false;
            gq.grid =
                sqcGrid(w + r * m_cols + c0, width, salient.data() + r * width, bits, m_options);
        }
    }

    // utils/salient_mask.py: salience z-scores over the group (unbiased std), salient above 2.
    std::vector<uint8_t> salientMask(const float *w, int64_t c0, int64_t width) const {
        std::vector<double> s(size_t(m_rows * width));
        double sum = 0;
        for (int64_t r = 0; r < m_rows; ++r)
            for (int64_t j = 0; j < width; ++j) {
                const double x = w[r * m_cols + c0 + j],
                             d = m_u[size_t((c0 + j) * m_cols + c0 + j)];
                s[size_t(r * width + j)] = x * x / (d * d);
                sum += s[size_t(r * width + j)];
            }
        const double mean = sum / double(s.size());
        double var = 0;
        for (double v : s)
            var += (v - mean) * (v - mean);
        const double sd = s.size() > 1 ? std::sqrt(var / double(s.size() - 1)) : 0;
        std::vector<uint8_t> mask(s.size(), 0);
        for (size_t i = 0; i < s.size(); ++i)
            mask[i] = sd > 0 && (s[i] - mean) / sd > 2;
        return mask;
    }

    int64_t m_rows, m_cols;
    const std::vector<uint8_t> &m_widths;
    const std::vector<float> &m_u;
    const SlimLlmOptions &m_options;
    ThreadPool m_pool; // SQC's search, over rows (beginBlock runs while the sweep's pool waits)
    GroupQuantizers<GroupQuantizer> m_quantizers;
};

// KL(softmax(yq) || softmax(y)) averaged over m rows of n logits, probabilities clamped at 1e-6
// (utils/reconstruct.py's kl_div with reduction "batchmean").
double meanKl(const std::vector<float> &yq, const std::vector<float> &y, int64_t m, int64_t n) {
    auto softmax = [n](const float *z, std::vector<double> &p) {
        const double top = *std::max_element(z, z + n);
        double sum = 0;
        for (int64_t i = 0; i < n; ++i)
            sum += p[size_t(i)] = std::exp(double(z[i]) - top);
        for (double &v : p)
            v = std::max(v / sum, 1e-6);
    };
    std::vector<double> p(static_cast<size_t>(n)), q(static_cast<size_t>(n));
    double total = 0;
    for (int64_t t = 0; t < m; ++t) {
        softmax(yq.data() + t * n, p);
        softmax(y.data() + t * n, q);
        for (int64_t i = 0; i < n; ++i)
            total += p[size_t(i)] * (std::log(p[size_t(i)]) - std::log(q[size_t(i)]));
    }
    return total / double(m);
}

// ||yq - y||^2 / m: the squared layer-output error per sampled input.
double meanSquaredError(const std::vector<float> &yq, const std::vector<float> &y, int64_t m) {
    double e = 0;
    for (size_t i = 0; i < y.size(); ++i)
        e += (double(yq[i]) - y[i]) * (double(yq[i]) - y[i]);
    return e / double(m);
}

struct Allocation {
    std::vector<uint8_t> widths;
    int64_t pairs = 0;
    double error = 0, errorUniform = 0; // the search criterion: KL or squared output error
};

// The equal-width groups (trading their widths keeps the average at N), by increasing salience
// sum w^2 / [U]_jj^2 (SliM-LLM Eq. 5, the OBS criterion summed over the group).
std::vector<int64_t> rankGroups(const std::vector<float> &w, int64_t rows, int64_t cols,
                                int64_t group, const std::vector<float> &u) {
    const int64_t groups = (cols + group - 1) / group;
    std::vector<int64_t> full;
    std::vector<double> salience(static_cast<size_t>(groups), 0.0);
    for (int64_t g = 0; g < groups; ++g) {
        const int64_t c0 = g * group, width = std::min(group, cols - c0);
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t j = c0; j < c0 + width; ++j) {
                const double x = w[size_t(r * cols + j)], d = u[size_t(j * cols + j)];
                salience[size_t(g)] += x * x / (d * d);
            }
        if (width == group)
            full.push_back(g);
    }
    std::stable_sort(full.begin(), full.end(), [&](int64_t a, int64_t b) {
        return salience[size_t(a)] < salience[size_t(b)];
    });
    return full;
}

// Round-to-nearest values of columns [c0, c0 + width) at `bits` (rows x width).
std::vector<float> rtnGroup(const std::vector<float> &w, int64_t rows, int64_t cols, int64_t c0,
                            int64_t width, int bits) {
    std::vector<float> out(size_t(rows * width));
    for (int64_t r = 0; r < rows; ++r) {
        const GroupQuantizer q = rtnQuantizer(w.data() + r * cols + c0, width, bits);
        for (int64_t j = 0; j < width; ++j)
            out[size_t(r * width + j)] = q.value(q.code(w[size_t(r * cols + c0 + j)]));
    }
    return out;
}

// SBA (header, step 1). The outputs of allocation i are those of i - 1 plus the change of the
// two groups it re-quantizes: one GEMM of the group's width each.
Allocation allocateBits(const std::vector<float> &w, int64_t rows, int64_t cols, int64_t group,
                        int bits, const std::vector<float> &u, const LinearStats &stats,
                        const SlimLlmOptions &options) {
    const int64_t groups = (cols + group - 1) / group, m = stats.sampleCount;
    const std::vector<int64_t> full = rankGroups(w, rows, cols, group, u);
    BlasThreads blas(options.threads);
    std::vector<float> uniform(w.size());
    for (int64_t c0 = 0; c0 < cols; c0 += group) {
        const int64_t width = std::min(group, cols - c0);
        const std::vector<float> v = rtnGroup(w, rows, cols, c0, width, bits);
        for (int64_t r = 0; r < rows; ++r)
            std::copy_n(v.data() + r * width, width, uniform.data() + r * cols + c0);
    }
    std::vector<float> y(size_t(m * rows)), yq(size_t(m * rows));
    const float *x = stats.sampleRows.data();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(m), int(rows), int(cols), 1.0f, x,
                int(cols), w.data(), int(cols), 0.0f, y.data(), int(rows));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(m), int(rows), int(cols), 1.0f, x,
                int(cols), uniform.data(), int(cols), 0.0f, yq.data(), int(rows));
    auto criterion = [&] {
        return options.sbaSquaredError ? meanSquaredError(yq, y, m) : meanKl(yq, y, m, rows);
    };
    Allocation best;
    best.widths.assign(size_t(groups), uint8_t(bits));
    best.error = best.errorUniform = criterion();
    // bitsearch.py: for i in range(1, n_blocks // 2), n_blocks counting a short last group: at
    // most n_blocks / 2 - 1 pairs, so that some groups always keep N bits (a row of two groups
    // stays uniform). Only full groups trade widths here (the average stays exactly N).
    const int64_t f = int64_t(full.size());
    const int64_t maxPairs = options.sba ? std::max<int64_t>(0, std::min(f / 2, groups / 2 - 1)) : 0;
    std::vector<float> delta(size_t(rows * group));
    for (int64_t i = 1; i <= maxPairs; ++i) {
        for (const auto &[g, b] :
             {std::pair{full[size_t(i - 1)], bits - 1}, std::pair{full[size_t(f - i)], bits + 1}}) {
            const std::vector<float> v = rtnGroup(w, rows, cols, g * group, group, b);
            for (int64_t r = 0; r < rows; ++r)
                for (int64_t j = 0; j < group; ++j)
                    delta[size_t(r * group + j)] =
                        v[size_t(r * group + j)] - uniform[size_t(r * cols + g * group + j)];
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(m), int(rows), int(group),
                        1.0f, x + g * group, int(cols), delta.data(), int(group), 1.0f, yq.data(),
                        int(rows));
        }
        const double error = criterion();
        if (error < best.error) {
            best.error = error;
            best.pairs = i;
        }
    }
    for (int64_t i = 1; i <= best.pairs; ++i) {
        best.widths[size_t(full[size_t(i - 1)])] = uint8_t(bits - 1);
        best.widths[size_t(full[size_t(f - i)])] = uint8_t(bits + 1);
    }
    return best;
}

Status fillTensor(QuantizedTensor &t, const SlimSweep &sweep, const std::vector<uint8_t> &widths) {
    LOWBIT_CHECK(t.setGroupBits(widths));
    const GroupQuantizers<GroupQuantizer> &quantizers = sweep.quantizers();
    std::vector<float> means;
    int64_t binaryGroups = 0;
    for (uint8_t b : widths)
        binaryGroups += b == 1;
    for (int64_t r = 0; r < t.rows; ++r)
        for (int64_t g = 0; g < t.groups(); ++g)
            if (quantizers.at(r, g).binary)
                means.push_back(quantizers.at(r, g).bin.mean);
    if (binaryGroups > 0)
        t.extra["binary_means"] =
            QuantExtra::fromF32({t.rows, binaryGroups}, means, 16.0 - double(t.zeroBits));
    return quantizers.fill(t, [](const GroupQuantizer &q) { return q.scaleZero(); });
}

} // namespace

Result<QuantizedTensor> quantizeSlimLlm(std::string name, std::span<const float> weight,
                                        int64_t rows, int64_t cols, const LinearStats &stats,
                                        const SlimLlmOptions &options, std::stop_token stop,
                                        nlohmann::json *notes) {
    if (int64_t(weight.size()) != rows * cols)
        return makeError(ErrorCode::InvalidArgument,
                         name + ": weight size does not match its shape");
    if (!stats.hasHessian() || stats.cols != cols || stats.sampleCount <= 0 ||
        int64_t(stats.sampleRows.size()) != stats.sampleCount * cols)
        return makeError(ErrorCode::InvalidArgument,
                         name + ": slim-llm needs the input Hessian and sampled input rows");
    LOWBIT_TRY(QuantizedTensor t, QuantizedTensor::create(name, "slim-llm", rows, cols,
                                                          options.bits, options.groupSize, false));
    auto prepared = prepareHessian(stats.hessian, cols,
                                   {options.damp, false, options.threads, false, options.device});
    if (!prepared)
        return makeError(prepared.error().code, name + ": " + prepared.error().message);
    if (options.device)
        options.device->ranOnCpu("sweep");
    std::vector<float> w(weight.begin(), weight.end());
    zeroDeadColumns(w, rows, cols, *prepared);
    const Allocation alloc =
        allocateBits(w, rows, cols, t.groupSize, options.bits, prepared->hinvUpper, stats, options);
    SlimSweep sweep(rows, cols, t.groupSize, alloc.widths, prepared->hinvUpper, options);
    double loss = 0;
    if (options.gptq) {
        LOWBIT_TRY(SweepResult result, obsSweep(w, rows, cols, prepared->hinvUpper, t.groupSize,
                                                sweep, options.threads, stop));
        loss = result.loss;
    } else {
        std::vector<float> column(static_cast<size_t>(rows)), q(static_cast<size_t>(rows));
        for (int64_t c0 = 0; c0 < cols; c0 += t.groupSize) {
            const int64_t width = std::min(t.groupSize, cols - c0);
            sweep.beginBlock(c0, width, w.data());
            for (int64_t j = c0; j < c0 + width; ++j) {
                for (int64_t r = 0; r < rows; ++r)
                    column[size_t(r)] = w[size_t(r * cols + j)];
                sweep.quantizeColumn(j, 0, rows, column.data(), q.data());
            }
        }
    }
    LOWBIT_CHECK(fillTensor(t, sweep, alloc.widths));
    if (notes) {
        (*notes)["group_bits"] = alloc.widths;
        (*notes)["pairs"] = alloc.pairs;
        (*notes)["sba_error"] = alloc.error;
        (*notes)["sba_error_uniform"] = alloc.errorUniform;
        (*notes)["loss"] = loss;
        (*notes)["damp"] = prepared->dampUsed;
    }
    return t;
}

namespace {

class SlimLlmQuantizer final : public Quantizer {
public:
    explicit SlimLlmQuantizer(const SlimLlmOptions &options) : m_options(options) {}
    std::string_view name() const override { return "slim-llm"; }
    CalibrationNeeds needs() const override { return {.hessian = true}; }
    Result<QuantizedTensor> quantize(const LinearJob &job) override {
        if (!job.stats)
            return makeError(ErrorCode::InvalidArgument, job.name + ": slim-llm needs calibration");
        auto options = m_options;
        options.device = job.device;
        return quantizeSlimLlm(job.name, job.weight, job.rows, job.cols, *job.stats, options,
                               job.stop, job.notes);
    }

private:
    SlimLlmOptions m_options;
};

} // namespace

Result<std::unique_ptr<Quantizer>> makeSlimLlmQuantizer(const QuantizeOptions &options) {
    if (options.bits < 2 || options.bits > 7)
        return makeError(ErrorCode::InvalidArgument,
                         "slim-llm: --bits must be 2..7 (groups use N-1..N+1 bits), got " +
                             std::to_string(options.bits));
    if (options.groupSize < 0)
        return makeError(ErrorCode::InvalidArgument, "slim-llm: group size must be >= 0");
    SlimLlmOptions o;
    o.bits = options.bits;
    o.groupSize = options.groupSize > 0 ? options.groupSize : 128;
    o.threads = options.threads;
    MethodOptions method("slim-llm", options.methodOptions);
    LOWBIT_TRY(o.gptq, method.boolean("gptq", true));
    LOWBIT_TRY(o.sba, method.boolean("sba", true));
    LOWBIT_TRY(o.sbaSquaredError, method.boolean("sba_squared_error", false));
    LOWBIT_TRY(o.lambda, method.number("lambda", 1));
    LOWBIT_TRY(o.tau, method.number("tau", 0.1));
    LOWBIT_TRY(int64_t steps, method.integer("tau_steps", 50));
    LOWBIT_TRY(o.norm, method.number("norm", 2.4));
    LOWBIT_TRY(o.damp, method.number("damp", 0.01));
    LOWBIT_CHECK(method.finish());
    o.tauSteps = int(steps);
    if (!(o.lambda >= 0) || !(o.tau >= 0 && o.tau < 1) || steps < 1 || steps > 10000 ||
        !(o.norm > 0) || !(o.damp > 0))
        return makeError(
            ErrorCode::InvalidArgument,
            "slim-llm: need lambda >= 0, 0 <= tau < 1, tau_steps 1..10000, norm > 0, damp > 0");
    return std::unique_ptr<Quantizer>(new SlimLlmQuantizer(o));
}

} // namespace lowbit
