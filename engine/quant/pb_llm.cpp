#include "quant/pb_llm.h"

#include "quant/binarize.h"
#include "quant/group_quantizers.h"
#include "quant/minmax_grid.h"
#include "quant/obs_sweep.h"
#include "quant/quant_device.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <utility>

namespace lowbit {

namespace {

int ceilLog2(int64_t n) {
    int bits = 0;
    while ((int64_t(1) << bits) < n)
        ++bits;
    return bits;
}
int indexBits(int64_t cols) {
    return std::max(1, ceilLog2(cols));
}
int countBits(int64_t cols) {
    return ceilLog2(cols + 1);
}

// The salient mask (1 = salient): in each column group, the `k` weights of highest score over all
// rows (reference: thresh = sort(score)[numel * low_frac] per group, salient = score > thresh).
std::vector<uint8_t> selectSalient(const std::vector<float> &w, int64_t rows, int64_t cols,
                                   int64_t groupSize, int64_t salient,
                                   const std::vector<float> &hinvUpper, bool hessian) {
    std::vector<uint8_t> mask(w.size(), 0);
    const int64_t groups = (cols + groupSize - 1) / groupSize;
    std::vector<int64_t> quota(static_cast<size_t>(groups));
    int64_t assigned = 0;
    for (int64_t g = 0; g < groups; ++g) {
        const int64_t width = std::min(groupSize, cols - g * groupSize);
        quota[size_t(g)] = salient * width / cols; // floor: the budget is never exceeded
        assigned += quota[size_t(g)];
    }
    for (int64_t g = 0; assigned < salient && g < groups; ++g, ++assigned)
        ++quota[size_t(g)];
    std::vector<float> score;
    std::vector<int64_t> order;
    for (int64_t g = 0; g < groups; ++g) {
        const int64_t c0 = g * groupSize, width = std::min(groupSize, cols - c0);
        const int64_t k = std::min(quota[size_t(g)], rows * width);
        if (k <= 0)
            continue;
        score.assign(size_t(rows * width), 0);
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t j = 0; j < width; ++j) {
                const float v = w[size_t(r * cols + c0 + j)];
                const float d = hinvUpper[size_t((c0 + j) * cols + c0 + j)];
                score[size_t(r * width + j)] = hessian ? v * v / (d * d) : std::abs(v);
            }
        order.resize(score.size());
        std::iota(order.begin(), order.end(), 0);
        std::nth_element(order.begin(), order.begin() + (k - 1), order.end(),
                         [&](int64_t a, int64_t b) { return score[size_t(a)] > score[size_t(b)]; });
        for (int64_t i = 0; i < k; ++i)
            mask[size_t(order[size_t(i)] / width * cols + c0 + order[size_t(i)] % width)] = 1;
    }
    return mask;
}

// A binarizer as a one-group quantizer: code 1 = w >= mu (+alpha), 0 = below.
struct SignCode {
    BinaryParams params;
    uint8_t code(float w) const { return params.positive(w) ? 1 : 0; }
    float value(uint8_t code) const { return params.value(code != 0); }
};

// The per-column quantizer of the sweep: the mask and both quantizers are fixed beforehand.
class PbSweep final : public SweepQuantizer {
public:
    PbSweep(int64_t cols, const std::vector<uint8_t> &mask, GroupQuantizers<SignCode> binary,
            const std::vector<GridParams> &high)
        : m_cols(cols), m_mask(mask), m_binary(std::move(binary)), m_high(high),
          m_highCodes(mask.size(), 0) {}

    void quantizeColumn(int64_t col, int64_t r0, int64_t r1, const float *w, float *q) override {
        for (int64_t r = r0; r < r1; ++r) {
            const size_t at = size_t(r * m_cols + col);
            if (m_mask[at]) {
                m_highCodes[at] = m_high[size_t(r)].code(w[r - r0]);
                q[r - r0] = m_high[size_t(r)].value(m_highCodes[at]);
            } else {
                q[r - r0] = m_binary.quantize(r, col, w[r - r0]);
            }
        }
    }

    const GroupQuantizers<SignCode> &binary() const { return m_binary; }
    const std::vector<uint8_t> &highCodes() const { return m_highCodes; }

private:
    int64_t m_cols;
    const std::vector<uint8_t> &m_mask;
    GroupQuantizers<SignCode> m_binary; // salient weights keep code 0 here
    const std::vector<GridParams> &m_high;
    std::vector<uint8_t> m_highCodes;
};

Status fillTensor(QuantizedTensor &t, const PbSweep &sweep, const std::vector<uint8_t> &mask,
                  const std::vector<GridParams> &high, int highBits) {
    t.codebook = kSignLevels;
    t.zeroBits = 16;
    LOWBIT_CHECK(sweep.binary().fill(
        t, [](const SignCode &b) { return binaryScaleZero(b.params, true); }));
    std::vector<int32_t> counts(size_t(t.rows), 0), index;
    std::vector<uint8_t> values;
    std::vector<float> scales(size_t(t.rows)), zeros(size_t(t.rows));
    for (int64_t r = 0; r < t.rows; ++r) {
        for (int64_t j = 0; j < t.cols; ++j)
            if (mask[size_t(r * t.cols + j)]) {
                ++counts[size_t(r)];
                index.push_back(int32_t(j));
                values.push_back(sweep.highCodes()[size_t(r * t.cols + j)]);
            }
        scales[size_t(r)] = high[size_t(r)].scale;
        zeros[size_t(r)] = high[size_t(r)].zero;
    }
    const int64_t n = int64_t(index.size());
    t.extra["salient_count"] = QuantExtra::fromI32({t.rows}, counts, countBits(t.cols));
    t.extra["salient_index"] = QuantExtra::fromI32({n}, index, indexBits(t.cols));
    t.extra["salient_codes"] = QuantExtra::fromU8({n}, values, highBits);
    t.extra["salient_scale"] = QuantExtra::fromF32({t.rows}, scales, 16);
    t.extra["salient_zero"] = QuantExtra::fromF32({t.rows}, zeros, highBits);
    return {};
}

} // namespace

double pbLlmPayloadBits(int64_t rows, int64_t cols, int64_t salient, int highBits) {
    const double weights = double(rows) * double(cols);
    return (weights + double(salient) * (highBits + indexBits(cols)) +
            double(rows) * countBits(cols)) /
           weights;
}

int64_t pbLlmSalientCount(int64_t rows, int64_t cols, double targetBits, int highBits) {
    const double weights = double(rows) * double(cols);
    const double budget = (targetBits - 1) * weights - double(rows) * countBits(cols);
    if (!(budget > 0))
        return 0;
    return std::min(rows * cols, int64_t(std::floor(budget / (highBits + indexBits(cols)))));
}

Result<QuantizedTensor> quantizePbLlm(std::string name, std::span<const float> weight, int64_t rows,
                                      int64_t cols, const std::vector<double> &hessian,
                                      const PbLlmOptions &options, std::stop_token stop,
                                      nlohmann::json *notes) {
    if (int64_t(weight.size()) != rows * cols)
        return makeError(ErrorCode::InvalidArgument,
                         name + ": weight size does not match its shape");
    LOWBIT_TRY(QuantizedTensor t,
               QuantizedTensor::create(name, "pb-llm", rows, cols, 1, options.groupSize, false));
    auto prepared = prepareHessian(hessian, cols,
                                   {options.damp, false, options.threads, false, options.device});
    if (!prepared)
        return makeError(prepared.error().code, name + ": " + prepared.error().message);
    if (options.device)
        options.device->ranOnCpu("sweep");
    std::vector<float> w(weight.begin(), weight.end());
    zeroDeadColumns(w, rows, cols, *prepared);

    const int64_t salient =
        options.salientFraction >= 0
            ? int64_t(std::llround(options.salientFraction * double(rows * cols)))
            : pbLlmSalientCount(rows, cols, options.targetBits, options.highBits);
    const std::vector<uint8_t> mask = selectSalient(w, rows, cols, t.groupSize, salient,
                                                    prepared->hinvUpper, options.hessianSalience);
    std::vector<GridParams> high(static_cast<size_t>(rows));
    GroupQuantizers<SignCode> binary(rows, cols, t.groupSize);
    std::vector<uint8_t> binarized(static_cast<size_t>(cols));
    for (int64_t r = 0; r < rows; ++r) {
        const float *row = w.data() + r * cols;
        high[size_t(r)] = minMaxGrid(row, cols, 1, options.highBits, false);
        for (int64_t j = 0; j < cols; ++j)
            binarized[size_t(j)] = mask[size_t(r * cols + j)] ? 0 : 1;
        for (int64_t g = 0; g < t.groups(); ++g) {
            const int64_t c0 = g * t.groupSize, width = std::min(t.groupSize, cols - c0);
            binary.at(r, g) = {fitBinary(row + c0, width, binarized.data() + c0)};
        }
    }
    PbSweep sweep(cols, mask, std::move(binary), high);
    LOWBIT_TRY(SweepResult result, obsSweep(w, rows, cols, prepared->hinvUpper, options.blockSize,
                                            sweep, options.threads, stop));
    LOWBIT_CHECK(fillTensor(t, sweep, mask, high, options.highBits));
    if (notes) {
        (*notes)["salient"] = salient;
        (*notes)["salient_fraction"] = double(salient) / double(rows * cols);
        (*notes)["payload_bits"] = pbLlmPayloadBits(rows, cols, salient, options.highBits);
        (*notes)["loss"] = result.loss;
        (*notes)["damp"] = prepared->dampUsed;
    }
    return t;
}

Result<std::vector<float>> dequantizePbLlm(const QuantizedTensor &t) {
    auto bad = [&](const std::string &what) {
        return makeError(ErrorCode::Format, "pb-llm tensor '" + t.name + "': " + what);
    };
    auto find = [&](const char *key, QuantExtra::Type type) -> const QuantExtra * {
        const auto it = t.extra.find(key);
        return it != t.extra.end() && it->second.type == type ? &it->second : nullptr;
    };
    const QuantExtra *counts = find("salient_count", QuantExtra::Type::I32);
    const QuantExtra *index = find("salient_index", QuantExtra::Type::I32);
    const QuantExtra *codes = find("salient_codes", QuantExtra::Type::U8);
    const QuantExtra *scales = find("salient_scale", QuantExtra::Type::F32);
    const QuantExtra *zeros = find("salient_zero", QuantExtra::Type::F32);
    if (!counts || !index || !codes || !scales || !zeros)
        return bad("salient_count/index/codes/scale/zero missing or of the wrong type");
    if (counts->numel() != t.rows || scales->numel() != t.rows || zeros->numel() != t.rows ||
        index->numel() != codes->numel())
        return bad("salient extras have inconsistent sizes");
    if (t.bits != 1 || t.codebook.size() != 2 || !t.groupBits.empty() || !t.permutation.empty())
        return bad("expected 1-bit sign codes with a 2-level codebook and no permutation");
    std::vector<float> out = t.dequantize();
    int64_t at = 0;
    for (int64_t r = 0; r < t.rows; ++r) {
        const int32_t n = counts->i32()[size_t(r)];
        if (n < 0 || n > t.cols || at + n > index->numel())
            return bad("salient_count of row " + std::to_string(r) + " out of range");
        int32_t previous = -1;
        for (int64_t i = at; i < at + n; ++i) {
            const int32_t j = index->i32()[size_t(i)];
            if (j <= previous || j >= t.cols)
                return bad("salient_index of row " + std::to_string(r) + " not increasing in 0.." +
                           std::to_string(t.cols - 1));
            previous = j;
            out[size_t(r * t.cols + j)] = scales->f32()[size_t(r)] *
                                          (float(codes->u8()[size_t(i)]) - zeros->f32()[size_t(r)]);
        }
        at += n;
    }
    if (at != index->numel())
        return bad("salient_count does not add up to the salient entries");
    return out;
}

namespace {

class PbLlmQuantizer final : public Quantizer {
public:
    explicit PbLlmQuantizer(const PbLlmOptions &options) : m_options(options) {}
    std::string_view name() const override { return "pb-llm"; }
    CalibrationNeeds needs() const override { return {.hessian = true}; }
    Result<QuantizedTensor> quantize(const LinearJob &job) override {
        if (!job.stats || !job.stats->hasHessian())
            return makeError(ErrorCode::InvalidArgument,
                             job.name + ": pb-llm needs a calibration Hessian");
        auto options = m_options;
        options.device = job.device;
        return quantizePbLlm(job.name, job.weight, job.rows, job.cols, job.stats->hessian, options,
                             job.stop, job.notes);
    }
    Result<std::vector<float>> dequantize(const QuantizedTensor &tensor) const override {
        return dequantizePbLlm(tensor);
    }

private:
    PbLlmOptions m_options;
};

} // namespace

Result<std::unique_ptr<Quantizer>> makePbLlmQuantizer(const QuantizeOptions &options) {
    if (options.bits < 1 || options.bits > 8)
        return makeError(ErrorCode::InvalidArgument,
                         "pb-llm: --bits must be 1..8, got " + std::to_string(options.bits));
    if (options.groupSize < 0)
        return makeError(ErrorCode::InvalidArgument, "pb-llm: group size must be >= 0");
    PbLlmOptions o;
    o.groupSize = options.groupSize;
    o.threads = options.threads;
    MethodOptions method("pb-llm", options.methodOptions);
    LOWBIT_TRY(o.targetBits, method.number("target_bits", double(options.bits)));
    LOWBIT_TRY(o.salientFraction, method.number("salient_fraction", -1));
    LOWBIT_TRY(bool magnitude, method.boolean("magnitude_salience", false));
    LOWBIT_TRY(int64_t highBits, method.integer("high_bits", 8));
    LOWBIT_TRY(o.damp, method.number("damp", 0.01));
    LOWBIT_TRY(o.blockSize, method.integer("block", 128));
    LOWBIT_CHECK(method.finish());
    o.hessianSalience = !magnitude;
    o.highBits = int(highBits);
    if (highBits < 2 || highBits > 8)
        return makeError(ErrorCode::InvalidArgument, "pb-llm: high_bits must be 2..8");
    if (!(o.targetBits >= 1) || o.targetBits > double(o.highBits))
        return makeError(ErrorCode::InvalidArgument,
                         "pb-llm: target_bits must be in [1, high_bits]");
    if (o.salientFraction > 1 || (o.salientFraction < 0 && o.salientFraction != -1))
        return makeError(ErrorCode::InvalidArgument, "pb-llm: salient_fraction must be in [0, 1]");
    if (!(o.damp > 0) || o.blockSize <= 0)
        return makeError(ErrorCode::InvalidArgument, "pb-llm: damp and block must be positive");
    return std::unique_ptr<Quantizer>(new PbLlmQuantizer(o));
}

} // namespace lowbit
