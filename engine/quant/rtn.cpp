#include "quant/rtn.h"

#include "quant/minmax_grid.h"

namespace lowbit {

Result<QuantizedTensor> quantizeRtn(std::string name, const float *weight, int64_t rows,
                                    int64_t cols, int bits, int64_t groupSize, bool symmetric,
                                    std::string method) {
    LOWBIT_TRY(QuantizedTensor t, QuantizedTensor::create(std::move(name), std::move(method), rows,
                                                          cols, bits, groupSize, symmetric));
    std::vector<uint8_t> codes(static_cast<size_t>(cols));
    for (int64_t r = 0; r < rows; ++r) {
        const float *w = weight + r * cols;
        for (int64_t g = 0; g < t.groups(); ++g) {
            const int64_t first = g * t.groupSize, count = std::min(t.groupSize, cols - first);
            const GridParams p = minMaxGrid(w + first, count, 1, bits, symmetric);
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

class RtnQuantizer final : public Quantizer {
public:
    explicit RtnQuantizer(const QuantizeOptions &options) : m_options(options) {}
    std::string_view name() const override { return "rtn"; }
    CalibrationNeeds needs() const override { return {}; }
    Result<QuantizedTensor> quantize(const LinearJob &job) override {
        return quantizeRtn(job.name, job.weight.data(), job.rows, job.cols, m_options.bits,
                           m_options.groupSize, m_options.symmetric);
    }

private:
    QuantizeOptions m_options;
};

} // namespace

Result<std::unique_ptr<Quantizer>> makeRtnQuantizer(const QuantizeOptions &options) {
    if (options.bits < 1 || options.bits > 8)
        return makeError(ErrorCode::InvalidArgument,
                         "rtn: --bits must be 1..8, got " + std::to_string(options.bits));
    if (options.groupSize < 0)
        return makeError(ErrorCode::InvalidArgument, "rtn: group size must be >= 0");
    MethodOptions method("rtn", options.methodOptions);
    LOWBIT_CHECK(method.finish());
    return std::unique_ptr<Quantizer>(new RtnQuantizer(options));
}

} // namespace lowbit
