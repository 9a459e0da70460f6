#include "quant/gptq.h"

#include "backend/cuda/cuda_gptq.h"
#include "quant/group_quantizers.h"
#include "quant/minmax_grid.h"
#include "quant/obs_sweep.h"
#include "quant/quant_device.h"

namespace lowbit {

namespace {

// The LDL form rounds exactly as the inverse form only when the grid comes from the original
// weights (per-channel): group grids are found from partially updated columns, and those partial
// sums differ between the two forms (only complete ones agree, QuIP Thm. 6).
bool useLdl(const GptqOptions &options, int64_t cols) {
    return options.groupSize <= 0 || options.groupSize >= cols;
}

HessianOptions hessianOptions(const GptqOptions &options, int64_t cols) {
    return {options.damp, options.actOrder, options.threads, useLdl(options, cols), options.device};
}

// The device sweep when there is a device and it can do this one (blocks up to 128 columns).
bool sweepOnDevice(const GptqOptions &options) {
    return options.device && options.blockSize <= kCudaGptqMaxBlock;
}

// The per-column quantizer of the sweep: the min-max grid of each (row, group), found when the
// sweep enters the block holding the group's first column (gptq.py: find_params on
// W[:, i1+i : i1+i+groupsize] when (i1 + i) % groupsize == 0).
class GridSweep final : public SweepQuantizer {
public:
    GridSweep(int64_t rows, int64_t cols, int64_t groupSize, int bits, bool symmetric)
        : m_grids(rows, cols, groupSize), m_cols(cols), m_bits(bits), m_symmetric(symmetric) {}

    void beginBlock(int64_t first, int64_t count, const float *w) override {
        m_grids.forGroupsStarting(first, count, [&](int64_t g, int64_t c, int64_t width) {
            for (int64_t r = 0; r < m_grids.rows(); ++r)
                m_grids.at(r, g) = minMaxGrid(w + r * m_cols + c, width, 1, m_bits, m_symmetric);
        });
    }

    void quantizeColumn(int64_t col, int64_t r0, int64_t r1, const float *w, float *q) override {
        m_grids.quantizeColumn(col, r0, r1, w, q);
    }

    Status fill(QuantizedTensor &t) const {
        return m_grids.fill(t, [](const GridParams &p) { return p; });
    }

private:
    GroupQuantizers<GridParams> m_grids;
    int64_t m_cols;
    int m_bits;
    bool m_symmetric;
};

} // namespace

Result<QuantizedTensor> quantizeGptq(std::string name, std::span<const float> weight, int64_t rows,
                                     int64_t cols, const PreparedHessian &prepared,
                                     const GptqOptions &options, std::stop_token stop,
                                     nlohmann::json *notes) {
    if (int64_t(weight.size()) != rows * cols || prepared.cols != cols)
        return makeError(ErrorCode::InvalidArgument,
                         name + ": weight or Hessian size does not match its shape");
    if (sweepOnDevice(options)) {
        options.device->ranOnDevice("sweep");
        double loss = 0;
        LOWBIT_TRY(QuantizedTensor t,
                   cudaGptqSweep(options.device->backend(), std::move(name), weight, rows, cols,
                                 prepared, options, &loss, stop));
        if (notes) {
            (*notes)["loss"] = loss;
            (*notes)["damp"] = prepared.dampUsed;
        }
        return t;
    }
    if (options.device)
        options.device->ranOnCpu("sweep (block " + std::to_string(options.blockSize) + " > " +
                                 std::to_string(kCudaGptqMaxBlock) + ")");
    LOWBIT_TRY(QuantizedTensor t, QuantizedTensor::create(name, "gptq", rows, cols, options.bits,
                                                          options.groupSize, options.symmetric));
    std::vector<float> w(weight.begin(), weight.end());
    zeroDeadColumns(w, rows, cols, prepared);
    if (!prepared.permutation.empty())
        w = permuteColumns(w, rows, cols, prepared.permutation);
    GridSweep sweep(rows, cols, t.groupSize, options.bits, options.symmetric);
    LOWBIT_TRY(SweepResult result,
               obsSweep(w, rows, cols, prepared, options.blockSize, sweep, options.threads, stop));
    LOWBIT_CHECK(sweep.fill(t));
    t.permutation = prepared.permutation;
    if (notes) {
        (*notes)["loss"] = result.loss;
        (*notes)["damp"] = prepared.dampUsed;
    }
    return t;
}

Result<QuantizedTensor> quantizeGptq(std::string name, std::span<const float> weight, int64_t rows,
                                     int64_t cols, const std::vector<double> &hessian,
                                     const GptqOptions &options, std::stop_token stop,
                                     nlohmann::json *notes) {
    auto prepared = prepareHessian(hessian, cols, hessianOptions(options, cols));
    if (!prepared)
        return makeError(prepared.error().code, name + ": " + prepared.error().message);
    return quantizeGptq(std::move(name), weight, rows, cols, *prepared, options, stop, notes);
}

namespace {

class GptqQuantizer final : public Quantizer {
public:
    explicit GptqQuantizer(const GptqOptions &options) : m_options(options) {}
    std::string_view name() const override { return "gptq"; }
    CalibrationNeeds needs() const override { return {.hessian = true}; }
    Result<QuantizedTensor> quantize(const LinearJob &job) override {
        if (!job.stats || !job.stats->hasHessian())
            return makeError(ErrorCode::InvalidArgument,
                             job.name + ": gptq needs a calibration Hessian");
        // q/k/v (and gate/up) share their input's statistics: prepare H^-1 once for them.
        GptqOptions options = m_options;
        options.device = job.device;
        const Key key{job.layer, linearInputOf(job.kind), job.stats, job.stats->tokens, job.device};
        if (!(key == m_key) || m_prepared.cols != job.cols) {
            auto prepared =
                prepareHessian(job.stats->hessian, job.cols, hessianOptions(options, job.cols));
            if (!prepared)
                return prepared.error();
            m_prepared = std::move(*prepared);
            m_key = key;
        }
        return quantizeGptq(job.name, job.weight, job.rows, job.cols, m_prepared, options, job.stop,
                            job.notes);
    }

private:
    struct Key {
        int64_t layer = -1;
        LinearInput input = LinearInput::Attention;
        const LinearStats *stats = nullptr;
        int64_t tokens = 0;
        const QuantDevice *device = nullptr; // the hinvUpper form on a device, LDL on the CPU
        bool operator==(const Key &) const = default;
    };
    GptqOptions m_options;
    Key m_key;
    PreparedHessian m_prepared;
};

} // namespace

Result<std::unique_ptr<Quantizer>> makeGptqQuantizer(const QuantizeOptions &options) {
    if (options.bits < 1 || options.bits > 8)
        return makeError(ErrorCode::InvalidArgument,
                         "gptq: --bits must be 1..8, got " + std::to_string(options.bits));
    if (options.groupSize < 0)
        return makeError(ErrorCode::InvalidArgument, "gptq: group size must be >= 0");
    GptqOptions o;
    o.bits = options.bits;
    o.groupSize = options.groupSize;
    o.symmetric = options.symmetric;
    o.threads = options.threads;
    MethodOptions method("gptq", options.methodOptions);
    LOWBIT_TRY(o.damp, method.number("damp", 0.01));
    LOWBIT_TRY(o.blockSize, method.integer("block", 128));
    LOWBIT_TRY(o.actOrder, method.boolean("act_order", false));
    LOWBIT_CHECK(method.finish());
    if (!(o.damp > 0) || o.blockSize <= 0)
        return makeError(ErrorCode::InvalidArgument, "gptq: damp and block must be positive");
    return std::unique_ptr<Quantizer>(new GptqQuantizer(o));
}

} // namespace lowbit
