#include "quant/quip.h"

#include "quant/group_quantizers.h"
#include "quant/minmax_grid.h"
#include "quant/obs_sweep.h"
#include "quant/quant_device.h"
#include "quant/random_butterfly.h"

#include <algorithm>
#include <cmath>

namespace lowbit {

namespace {

constexpr const char *kSeedsKey = "quip_seeds";
constexpr const char *kRescaleKey = "quip_rescale";

// quant.py quantize_qfnb: 2^b levels evenly spaced over [-S, S]; in grid form
// w = scale * (code - zero) with scale = 2S / maxq and zero = maxq / 2.
GridParams incoherentGrid(double rms, int bits) {
    GridParams p;
    p.maxq = (1 << bits) - 1;
    const double s = 2.4 * rms + 1e-16;
    p.scale = float(2.0 * s / double(p.maxq));
    p.zero = float(p.maxq) / 2.0f;
    return p;
}

// One (row, group)'s grid. qfn b rounds w / scale + zero with the half-integer zero maxq / 2
// (round(((w / S + 1) / 2) * maxq)); qfn a is GPTQ's round(w / scale) + zero.
struct QuipGrid {
    GridParams grid;
    bool centered = true; // qfn b

    uint8_t code(float w) const {
        if (!centered)
            return grid.code(w);
        return uint8_t(std::clamp(std::nearbyint(w / grid.scale + grid.zero), 0.0f,
                                  float(grid.maxq)));
    }
    float value(uint8_t code) const { return grid.value(code); }
};

// The per-column quantizer of the sweep. Grid parameters of a (row, group) are found when the
// sweep's block reaches the group's first column, from the weights as updated so far (GPTQ's rule,
// applied to both grids); with one group per row and qfn b, one S for the whole tensor, found
// before the sweep as the reference does.
class QuipSweep final : public SweepQuantizer {
public:
    QuipSweep(int64_t rows, int64_t cols, int64_t groupSize, int bits, char qfn)
        : m_grids(rows, cols, groupSize), m_cols(cols), m_bits(bits), m_qfn(qfn) {}

    // One S for the tensor, and the target clamped to [-S, S] before rounding (QuIP Alg. 1 lines
    // 6-7; vector_balance.py quantize_weight_vecbal, qfn b): LDLQ then feeds back only rounding
    // error, never the clipping error of the few weights beyond 2.4 RMS.
    void setTensorScale(std::vector<float> &w) {
        double sum = 0;
        for (float v : w)
            sum += double(v) * double(v);
        const GridParams p = incoherentGrid(std::sqrt(sum / double(w.size())), m_bits);
        for (int64_t r = 0; r < m_grids.rows(); ++r)
            for (int64_t g = 0; g < m_grids.groups(); ++g)
                m_grids.at(r, g) = {p, true};
        m_tensorScale = true;
        const float limit = p.scale * p.zero; // S
        for (float &v : w)
            v = std::clamp(v, -limit, limit);
    }

    void beginBlock(int64_t first, int64_t count, const float *w) override {
        if (m_tensorScale)
            return;
        m_grids.forGroupsStarting(first, count, [&](int64_t g, int64_t c, int64_t width) {
            for (int64_t r = 0; r < m_grids.rows(); ++r) {
                const float *x = w + r * m_cols + c;
                if (m_qfn == 'a') {
                    m_grids.at(r, g) = {minMaxGrid(x, width, 1, m_bits, false), false};
                    continue;
                }
                double sum = 0;
                for (int64_t j = 0; j < width; ++j)
                    sum += double(x[j]) * double(x[j]);
                m_grids.at(r, g) = {incoherentGrid(std::sqrt(sum / double(width)), m_bits), true};
            }
        });
    }

    void quantizeColumn(int64_t col, int64_t r0, int64_t r1, const float *w, float *q) override {
        m_grids.quantizeColumn(col, r0, r1, w, q);
    }

    Status fill(QuantizedTensor &t) const {
        return m_grids.fill(t, [](const QuipGrid &g) { return g.grid; });
    }

private:
    GroupQuantizers<QuipGrid> m_grids;
    int64_t m_cols;
    int m_bits;
    char m_qfn;
    bool m_tensorScale = false;
};

std::vector<float> transposed(const std::vector<float> &a, int64_t rows, int64_t cols) {
    std::vector<float> t(a.size());
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c)
            t[size_t(c * rows + r)] = a[size_t(r * cols + c)];
    return t;
}

// Step 1: W <- W diag(d), H <- diag(d)^-1 H diag(d)^-1 / max|H|; returns d.
std::vector<float> rescale(std::vector<float> &w, std::vector<double> &h, int64_t rows,
                           int64_t cols) {
    double maxAbs = 0;
    for (double v : h)
        maxAbs = std::max(maxAbs, std::abs(v));
    if (maxAbs == 0)
        maxAbs = 1;
    std::vector<double> w2(static_cast<size_t>(cols), 0.0);
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < cols; ++j)
            w2[size_t(j)] += double(w[size_t(r * cols + j)]) * double(w[size_t(r * cols + j)]);
    std::vector<float> d(static_cast<size_t>(cols));
    for (int64_t j = 0; j < cols; ++j) {
        const double diag = std::max(h[size_t(j * cols + j)] / maxAbs, 1e-8);
        d[size_t(j)] =
            float(std::max(std::sqrt(std::sqrt(diag / std::max(w2[size_t(j)], 1e-8))), 1e-8));
    }
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < cols; ++j)
            w[size_t(r * cols + j)] *= d[size_t(j)];
    for (int64_t i = 0; i < cols; ++i)
        for (int64_t j = 0; j < cols; ++j)
            h[size_t(i * cols + j)] /= maxAbs * double(d[size_t(i)]) * double(d[size_t(j)]);
    return d;
}

// Step 2: H <- H n / tr(H) + 0.01 I, then W <- U W V^T, H <- V H V^T.
void incoherence(std::vector<float> &w, std::vector<double> &h, int64_t rows, int64_t cols,
                 const RandomButterfly *u, const RandomButterfly &v, int threads) {
    double trace = 0;
    for (int64_t j = 0; j < cols; ++j)
        trace += h[size_t(j * cols + j)];
    const double factor = double(cols) / (trace + 1e-8);
    for (double &x : h)
        x *= factor;
    for (int64_t j = 0; j < cols; ++j)
        h[size_t(j * cols + j)] += 1e-2;
    v.applyRows(w.data(), rows, false, threads); // W V^T
    if (u) {
        std::vector<float> wt = transposed(w, rows, cols);
        u->applyRows(wt.data(), cols, false, threads); // (U W)^T
        w = transposed(wt, cols, rows);
    }
    v.applyRows(h.data(), cols, false, threads); // H V^T, whose transpose is V H
    for (int64_t i = 0; i < cols; ++i)
        for (int64_t j = i + 1; j < cols; ++j)
            std::swap(h[size_t(i * cols + j)], h[size_t(j * cols + i)]);
    v.applyRows(h.data(), cols, false, threads); // V H V^T
    for (int64_t i = 0; i < cols; ++i)
        for (int64_t j = i + 1; j < cols; ++j) {
            const double s = 0.5 * (h[size_t(i * cols + j)] + h[size_t(j * cols + i)]);
            h[size_t(i * cols + j)] = s;
            h[size_t(j * cols + i)] = s;
        }
}

} // namespace

std::pair<int32_t, int32_t> quipSeeds(uint64_t seed, int64_t layer, int kind) {
    // splitmix64 of (seed, layer, kind, side): distinct, well-mixed 31-bit seeds.
    auto mix = [](uint64_t x) {
        x += 0x9e3779b97f4a7c15ull;
        x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
        x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
        return x ^ (x >> 31);
    };
    const uint64_t base = mix(seed ^ mix(uint64_t(layer) * 16 + uint64_t(kind)));
    return {int32_t(mix(base) & 0x7fffffff), int32_t(mix(base + 1) & 0x7fffffff)};
}

Result<QuantizedTensor> quantizeQuip(std::string name, std::span<const float> weight, int64_t rows,
                                     int64_t cols, const std::vector<double> &hessian,
                                     std::pair<int32_t, int32_t> seeds, const QuipOptions &options,
                                     std::stop_token stop, nlohmann::json *notes) {
    if (int64_t(weight.size()) != rows * cols || int64_t(hessian.size()) != cols * cols)
        return makeError(ErrorCode::InvalidArgument,
                         name + ": weight or Hessian size does not match the shape");
    const bool symmetric = options.qfn == 'b';
    LOWBIT_TRY(QuantizedTensor t, QuantizedTensor::create(name, "quip", rows, cols, options.bits,
                                                          options.groupSize, symmetric));
    std::vector<float> w(weight.begin(), weight.end());
    std::vector<double> h = hessian;
    std::vector<float> d;
    if (options.rescale)
        d = rescale(w, h, rows, cols);
    LOWBIT_TRY(RandomButterfly u, RandomButterfly::create(rows, uint64_t(seeds.first)));
    LOWBIT_TRY(RandomButterfly v, RandomButterfly::create(cols, uint64_t(seeds.second)));
    if (options.incoherence)
        incoherence(w, h, rows, cols, options.rotateRows ? &u : nullptr, v, options.threads);
    // One grid per row (or tensor), fixed before the sweep: the LDL form (one Cholesky, no
    // inverse; obs_sweep.h) gives the same rounding. Groups found mid-sweep need GPTQ's form.
    const bool ldl = t.groupSize == cols;
    auto prepared =
        prepareHessian(h, cols, {options.damp, false, options.threads, ldl, options.device});
    if (!prepared)
        return makeError(prepared.error().code, name + ": " + prepared.error().message);
    if (options.device)
        options.device->ranOnCpu("sweep");
    zeroDeadColumns(w, rows, cols, *prepared);
    QuipSweep sweep(rows, cols, t.groupSize, options.bits, options.qfn);
    if (options.qfn == 'b' && t.groupSize == cols)
        sweep.setTensorScale(w);
    LOWBIT_TRY(SweepResult result,
               obsSweep(w, rows, cols, *prepared, options.blockSize, sweep, options.threads, stop));
    LOWBIT_CHECK(sweep.fill(t));
    const int32_t seedValues[2] = {options.incoherence && options.rotateRows ? seeds.first : -1,
                                   options.incoherence ? seeds.second : -1};
    t.extra[kSeedsKey] = QuantExtra::fromI32({2}, seedValues, 32);
    if (options.rescale)
        t.extra[kRescaleKey] = QuantExtra::fromF32({cols}, d, 16);
    if (notes) {
        (*notes)["loss"] = result.loss;
        (*notes)["damp"] = prepared->dampUsed;
        (*notes)["butterfly_rows"] = {u.p1(), u.p2()};
        (*notes)["butterfly_cols"] = {v.p1(), v.p2()};
    }
    return t;
}

Result<std::vector<float>> dequantizeQuip(const QuantizedTensor &tensor, int threads) {
    const auto seedsIt = tensor.extra.find(kSeedsKey);
    if (seedsIt == tensor.extra.end() || seedsIt->second.i32().size() != 2)
        return makeError(ErrorCode::Format, tensor.name + ": quip tensor without its I32[2] '" +
                                                std::string(kSeedsKey) + "'");
    if (!tensor.permutation.empty())
        return makeError(ErrorCode::Format,
                         tensor.name + ": quip tensors have no column permutation");
    const int64_t rows = tensor.rows, cols = tensor.cols;
    std::vector<float> w = tensor.dequantizeStored();
    const auto seeds = seedsIt->second.i32();
    if (seeds[1] >= 0) { // Q V
        LOWBIT_TRY(RandomButterfly v, RandomButterfly::create(cols, uint64_t(seeds[1])));
        v.applyRows(w.data(), rows, true, threads);
    }
    if (seeds[0] >= 0) { // U^T (Q V)
        LOWBIT_TRY(RandomButterfly u, RandomButterfly::create(rows, uint64_t(seeds[0])));
        std::vector<float> wt = transposed(w, rows, cols);
        u.applyRows(wt.data(), cols, true, threads);
        w = transposed(wt, cols, rows);
    }
    const auto rescaleIt = tensor.extra.find(kRescaleKey);
    if (rescaleIt != tensor.extra.end()) {
        const auto d = rescaleIt->second.f32();
        if (int64_t(d.size()) != cols)
            return makeError(ErrorCode::Format, tensor.name + ": '" + std::string(kRescaleKey) +
                                                    "' must be F32 with one value per column");
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t j = 0; j < cols; ++j)
                w[size_t(r * cols + j)] /= d[size_t(j)];
    }
    return w;
}

namespace {

class QuipQuantizer final : public Quantizer {
public:
    explicit QuipQuantizer(const QuipOptions &options) : m_options(options) {}
    std::string_view name() const override { return "quip"; }
    CalibrationNeeds needs() const override { return {.hessian = true}; }
    Result<QuantizedTensor> quantize(const LinearJob &job) override {
        if (!job.stats || !job.stats->hasHessian())
            return makeError(ErrorCode::InvalidArgument,
                             job.name + ": quip needs a calibration Hessian");
        auto options = m_options;
        options.device = job.device;
        return quantizeQuip(job.name, job.weight, job.rows, job.cols, job.stats->hessian,
                            quipSeeds(options.seed, job.layer, int(job.kind)), options, job.stop,
                            job.notes);
    }
    Result<std::vector<float>> dequantize(const QuantizedTensor &tensor) const override {
        return dequantizeQuip(tensor, m_options.threads);
    }

private:
    QuipOptions m_options;
};

} // namespace

Result<std::unique_ptr<Quantizer>> makeQuipQuantizer(const QuantizeOptions &options) {
    if (options.bits < 1 || options.bits > 8)
        return makeError(ErrorCode::InvalidArgument,
                         "quip: --bits must be 1..8 (the paper uses 2-4), got " +
                             std::to_string(options.bits));
    if (options.groupSize < 0)
        return makeError(ErrorCode::InvalidArgument, "quip: group size must be >= 0");
    QuipOptions o;
    o.bits = options.bits;
    o.groupSize = options.groupSize;
    o.threads = options.threads;
    nlohmann::json rest =
        options.methodOptions.is_object() ? options.methodOptions : nlohmann::json::object();
    if (rest.contains("qfn")) {
        const nlohmann::json &q = rest["qfn"];
        if (!q.is_string() || (q != "a" && q != "b"))
            return makeError(ErrorCode::InvalidArgument,
                             "quip: method option qfn must be \"a\" or \"b\"");
        o.qfn = q.get<std::string>()[0];
        rest.erase("qfn");
    }
    if (options.symmetric && o.qfn == 'a')
        return makeError(ErrorCode::InvalidArgument,
                         "quip: --sym needs qfn b (qfn a is asymmetric)");
    MethodOptions method("quip", rest);
    LOWBIT_TRY(o.rescale, method.boolean("rescale", true));
    LOWBIT_TRY(o.incoherence, method.boolean("incoherence", true));
    LOWBIT_TRY(o.rotateRows, method.boolean("rotate_rows", true));
    LOWBIT_TRY(o.damp, method.number("damp", 0.01));
    LOWBIT_TRY(o.blockSize, method.integer("block", 128));
    LOWBIT_TRY(int64_t seed, method.integer("seed", 0));
    LOWBIT_CHECK(method.finish());
    if (!(o.damp > 0) || o.blockSize <= 0 || seed < 0)
        return makeError(ErrorCode::InvalidArgument,
                         "quip: damp and block must be positive, seed >= 0");
    o.seed = uint64_t(seed);
    return std::unique_ptr<Quantizer>(new QuipQuantizer(o));
}

} // namespace lowbit
