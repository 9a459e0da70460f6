#include "quant/nf4.h"

#include <algorithm>
#include <cmath>

namespace lowbit {

const std::array<float, 16> kNf4Levels = {-1.0f,
                                          -0.6961928009986877f,
                                          -0.5250730514526367f,
                                          -0.39491748809814453f,
                                          -0.28444138169288635f,
                                          -0.18477343022823334f,
                                          -0.09105003625154495f,
                                          0.0f,
                                          0.07958029955625534f,
                                          0.16093020141124725f,
                                          0.24611230194568634f,
                                          0.33791524171829224f,
                                          0.44070982933044434f,
                                          0.5626170039176941f,
                                          0.7229568362236023f,
                                          1.0f};

std::array<float, 256> dynamicMap8() {
    // 7 exponent steps 10^(i-6); step i has 2^i fraction values, the midpoints of
    // linspace(0.1, 1, 2^i + 1), each with both signs; plus 0 and 1: 2 * 127 + 2 = 256 values.
    std::array<float, 256> map{};
    size_t n = 0;
    for (int i = 0; i < 7; ++i) {
        const int items = (1 << i) + 1;
        const double exponent = std::pow(10.0, double(i - 6));
        for (int k = 0; k + 1 < items; ++k) {
            const float lo = float(0.1 + 0.9 * double(k) / double(items - 1));
            const float hi = float(0.1 + 0.9 * double(k + 1) / double(items - 1));
            const float mean = (lo + hi) / 2.0f;
            map[n++] = float(exponent * mean);
            map[n++] = float(-exponent * mean);
        }
    }
    map[n++] = 0.0f;
    map[n++] = 1.0f;
    std::sort(map.begin(), map.end());
    return map;
}

namespace {

template <size_t N> uint8_t nearestLevel(const std::array<float, N> &levels, float x) {
    const auto it = std::lower_bound(levels.begin(), levels.end(), x);
    if (it == levels.begin())
        return 0;
    if (it == levels.end())
        return uint8_t(N - 1);
    const size_t hi = size_t(it - levels.begin());
    return uint8_t(x - levels[hi - 1] <= levels[hi] - x ? hi - 1 : hi);
}

// QLoRA's double quantization of the block absmax values c: c - mean(c) in blocks, each scaled by
// its own absmax into [-1, 1] and coded with the 8-bit dynamic map.
void doubleQuantize(QuantizedTensor &t, const std::vector<float> &absmax, int64_t block) {
    const auto map = dynamicMap8();
    double sum = 0;
    for (float a : absmax)
        sum += a;
    const float offset = float(sum / double(absmax.size()));
    const int64_t n = int64_t(absmax.size()), blocks = (n + block - 1) / block;
    std::vector<uint8_t> codes(static_cast<size_t>(n));
    std::vector<float> scales(static_cast<size_t>(blocks));
    for (int64_t b = 0; b < blocks; ++b) {
        float amax = 0;
        for (int64_t i = b * block; i < std::min(n, (b + 1) * block); ++i)
            amax = std::max(amax, std::abs(absmax[size_t(i)] - offset));
        scales[size_t(b)] = amax;
        for (int64_t i = b * block; i < std::min(n, (b + 1) * block); ++i)
            codes[size_t(i)] = amax > 0 ? nearestLevel(map, (absmax[size_t(i)] - offset) / amax)
                                        : nearestLevel(map, 0.0f);
    }
    t.extra["absmax_codes"] = QuantExtra::fromU8({n}, codes, 8);
    t.extra["absmax_scales"] = QuantExtra::fromF32({blocks}, scales, 32);
    t.extra["absmax_offset"] = QuantExtra::fromF32({1}, std::span<const float>(&offset, 1), 32);
    const int32_t blockSize = int32_t(block); // a format constant: costs no bits per weight
    t.extra["absmax_block"] = QuantExtra::fromI32({1}, std::span<const int32_t>(&blockSize, 1), 0);
    t.scaleBits = 0; // the scales are derived from the extra data
}

// The block scales as the packed form defines them.
Result<std::vector<float>> blockScales(const QuantizedTensor &t) {
    const auto codes = t.extra.find("absmax_codes");
    if (codes == t.extra.end())
        return t.scales;
    const auto scales = t.extra.find("absmax_scales"), offset = t.extra.find("absmax_offset");
    const auto blockIt = t.extra.find("absmax_block");
    const int64_t n = int64_t(t.scales.size());
    if (scales == t.extra.end() || offset == t.extra.end() || blockIt == t.extra.end() ||
        int64_t(codes->second.u8().size()) != n || offset->second.f32().size() != 1 ||
        blockIt->second.i32().size() != 1 || blockIt->second.i32()[0] <= 0)
        return makeError(ErrorCode::Format,
                         t.name + ": nf4 double-quantization data is incomplete");
    const int64_t block = blockIt->second.i32()[0];
    if (int64_t(scales->second.f32().size()) != (n + block - 1) / block)
        return makeError(ErrorCode::Format, t.name + ": nf4 absmax_scales has the wrong length");
    const auto map = dynamicMap8();
    std::vector<float> out(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i)
        out[size_t(i)] =
            map[codes->second.u8()[size_t(i)]] * scales->second.f32()[size_t(i / block)] +
            offset->second.f32()[0];
    return out;
}

} // namespace

Result<QuantizedTensor> quantizeNf4(std::string name, const float *weight, int64_t rows,
                                    int64_t cols, const Nf4Options &options) {
    LOWBIT_TRY(QuantizedTensor t, QuantizedTensor::create(std::move(name), "nf4", rows, cols, 4,
                                                          options.blockSize, true));
    t.codebook.assign(kNf4Levels.begin(), kNf4Levels.end());
    t.scaleBits = 32; // bitsandbytes keeps fp32 absmax without double quantization
    std::vector<float> absmax(size_t(rows * t.groups()));
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t g = 0; g < t.groups(); ++g) {
            float a = 0;
            for (int64_t j = g * t.groupSize; j < std::min(cols, (g + 1) * t.groupSize); ++j)
                a = std::max(a, std::abs(weight[r * cols + j]));
            absmax[size_t(r * t.groups() + g)] = a;
        }
    if (options.doubleQuant) {
        doubleQuantize(t, absmax, options.doubleQuantBlock);
        LOWBIT_TRY(t.scales, blockScales(t));
    } else {
        t.scales = absmax;
    }
    // Codes come from the exact absmax (bitsandbytes quantizes before compressing the statistics).
    std::vector<uint8_t> codes(static_cast<size_t>(cols));
    for (int64_t r = 0; r < rows; ++r) {
        for (int64_t j = 0; j < cols; ++j) {
            const float a = absmax[size_t(r * t.groups() + t.groupOf(j))];
            codes[size_t(j)] = nearestLevel(kNf4Levels, a > 0 ? weight[r * cols + j] / a : 0.0f);
        }
        LOWBIT_CHECK(t.setRowCodes(r, codes));
    }
    return t;
}

Result<std::vector<float>> dequantizeNf4(const QuantizedTensor &tensor) {
    QuantizedTensor copy = tensor;
    LOWBIT_TRY(copy.scales, blockScales(tensor));
    return copy.dequantize();
}

namespace {

class Nf4Quantizer final : public Quantizer {
public:
    explicit Nf4Quantizer(const Nf4Options &options) : m_options(options) {}
    std::string_view name() const override { return "nf4"; }
    CalibrationNeeds needs() const override { return {}; }
    Result<QuantizedTensor> quantize(const LinearJob &job) override {
        return quantizeNf4(job.name, job.weight.data(), job.rows, job.cols, m_options);
    }
    Result<std::vector<float>> dequantize(const QuantizedTensor &tensor) const override {
        return dequantizeNf4(tensor);
    }

private:
    Nf4Options m_options;
};

} // namespace

Result<std::unique_ptr<Quantizer>> makeNf4Quantizer(const QuantizeOptions &options) {
    if (options.bits != 4)
        return makeError(ErrorCode::InvalidArgument,
                         "nf4: NormalFloat is a 4-bit format (--bits 4), got " +
                             std::to_string(options.bits));
    Nf4Options o;
    if (options.groupSize > 0)
        o.blockSize = options.groupSize;
    MethodOptions method("nf4", options.methodOptions);
    LOWBIT_TRY(o.doubleQuant, method.boolean("double_quant", true));
    LOWBIT_TRY(o.doubleQuantBlock, method.integer("dq_block", 256));
    LOWBIT_CHECK(method.finish());
    if (o.doubleQuantBlock <= 0)
        return makeError(ErrorCode::InvalidArgument, "nf4: dq_block must be positive");
    return std::unique_ptr<Quantizer>(new Nf4Quantizer(o));
}

} // namespace lowbit
