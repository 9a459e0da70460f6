#include "quant/fdb.h"

#include "quant/minmax_grid.h"

#include <array>
#include <cmath>

namespace lowbit {

namespace {

// For RTN zero point z: the codes q whose level s·(q - z) is α1, α2 and α1 + α2
// (engine/train/dual_binary.h, the initialization table; z = 1 is the paper's α1 = 2s, α2 = -s).
struct Split {
    uint8_t alpha1, alpha2, both;
};
constexpr std::array<Split, 4> kSplits = {{{1, 2, 3}, {3, 0, 2}, {0, 3, 1}, {2, 1, 0}}};

int64_t effectiveGroup(int64_t groupSize, int64_t cols) {
    return groupSize <= 0 || groupSize >= cols ? cols : groupSize;
}

} // namespace

Result<QuantizedTensor> packFdb(std::string name, int64_t rows, int64_t cols, int64_t groupSize,
                                std::span<const uint8_t> b1, std::span<const uint8_t> b2,
                                std::span<const float> alpha) {
    const int64_t group = effectiveGroup(groupSize, cols);
    LOWBIT_TRY(QuantizedTensor t,
               QuantizedTensor::create(std::move(name), "fdb", rows, cols, 2, group, false));
    const int64_t n = rows * cols;
    if (int64_t(b1.size()) != n || int64_t(b2.size()) != n ||
        int64_t(alpha.size()) != rows * t.groups() * 2)
        return makeError(ErrorCode::InvalidArgument, t.name + ": fdb planes or scales mis-sized");
    std::vector<uint8_t> codes(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
        if (b1[size_t(i)] > 1 || b2[size_t(i)] > 1)
            return makeError(ErrorCode::InvalidArgument, t.name + ": fdb plane value not 0/1");
        codes[size_t(i)] = uint8_t(b1[size_t(i)] | (b2[size_t(i)] << 1));
    }
    LOWBIT_CHECK(t.setCodes(codes));
    t.scaleBits = 0; // α carries the arithmetic; scales and zeros are unused
    t.zeroBits = 0;
    t.extra["fdb_alpha"] = QuantExtra::fromF32({rows, t.groups(), 2}, alpha, 16);
    return t;
}

Result<QuantizedTensor> quantizeFdb(std::string name, const float *weight, int64_t rows,
                                    int64_t cols, int64_t groupSize) {
    if (rows <= 0 || cols <= 0)
        return makeError(ErrorCode::InvalidArgument, name + ": fdb: empty weight");
    const int64_t group = effectiveGroup(groupSize, cols), groups = (cols + group - 1) / group;
    std::vector<uint8_t> b1(static_cast<size_t>(rows * cols)), b2(b1.size());
    std::vector<float> alpha(static_cast<size_t>(rows * groups * 2));
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t g = 0; g < groups; ++g) {
            const int64_t begin = g * group, end = std::min(cols, begin + group);
            for (int64_t j = begin; j < end; ++j)
                if (!std::isfinite(weight[r * cols + j]))
                    return makeError(ErrorCode::InvalidArgument,
                                     name + ": non-finite weight at row " + std::to_string(r) +
                                         " column " + std::to_string(j));
            // DB-LLM Sec. 3.2: FDB starts from the 2-bit uniform quantizer (here RTN's grid).
            const GridParams grid = minMaxGrid(weight + r * cols + begin, end - begin, 1, 2, false);
            const Split split = kSplits[size_t(std::clamp(int(grid.zero), 0, 3))];
            alpha[size_t((r * groups + g) * 2)] = grid.value(split.alpha1);
            alpha[size_t((r * groups + g) * 2 + 1)] = grid.value(split.alpha2);
            for (int64_t j = begin; j < end; ++j) {
                const uint8_t q = grid.code(weight[r * cols + j]);
                b1[size_t(r * cols + j)] = q == split.alpha1 || q == split.both;
                b2[size_t(r * cols + j)] = q == split.alpha2 || q == split.both;
            }
        }
    return packFdb(std::move(name), rows, cols, group, b1, b2, alpha);
}

Result<std::vector<float>> dequantizeFdb(const QuantizedTensor &tensor) {
    const auto it = tensor.extra.find("fdb_alpha");
    if (it == tensor.extra.end() || tensor.groupSize <= 0 || tensor.bits != 2 ||
        int64_t(it->second.f32().size()) != tensor.rows * tensor.groups() * 2)
        return makeError(ErrorCode::Format, tensor.name + ": fdb_alpha missing or mis-sized");
    const std::span<const float> alpha = it->second.f32();
    const std::vector<uint8_t> codes = tensor.codes();
    std::vector<float> w(codes.size());
    for (int64_t r = 0; r < tensor.rows; ++r)
        for (int64_t j = 0; j < tensor.cols; ++j) {
            const size_t i = size_t(r * tensor.cols + j),
                         a = size_t((r * tensor.groups() + tensor.groupOf(j)) * 2);
            w[i] = ((codes[i] & 1) ? alpha[a] : 0.0f) + ((codes[i] & 2) ? alpha[a + 1] : 0.0f);
        }
    return w;
}

namespace {

class FdbQuantizer final : public Quantizer {
public:
    explicit FdbQuantizer(int64_t groupSize) : m_groupSize(groupSize) {}
    std::string_view name() const override { return "fdb"; }
    CalibrationNeeds needs() const override { return {}; }
    Result<QuantizedTensor> quantize(const LinearJob &job) override {
        return quantizeFdb(job.name, job.weight.data(), job.rows, job.cols, m_groupSize);
    }
    Result<std::vector<float>> dequantize(const QuantizedTensor &tensor) const override {
        return dequantizeFdb(tensor);
    }

private:
    int64_t m_groupSize;
};

} // namespace

Result<std::unique_ptr<Quantizer>> makeFdbQuantizer(const QuantizeOptions &options) {
    if (options.bits != 2)
        return makeError(ErrorCode::InvalidArgument,
                         "fdb: dual binarization is two binary planes (--bits 2), got " +
                             std::to_string(options.bits));
    MethodOptions method("fdb", options.methodOptions);
    LOWBIT_CHECK(method.finish());
    return std::unique_ptr<Quantizer>(
        new FdbQuantizer(options.groupSize > 0 ? options.groupSize : 64));
}

} // namespace lowbit
