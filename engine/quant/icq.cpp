#include "quant/icq.h"

#include "core/thread_pool.h"

#include <algorithm>
#include <cmath>

namespace lowbit {

namespace {

// The nearest level, the lower one on a tie (as nf4.cpp and the reference's argmin).
template <size_t N> uint8_t nearestLevel(const std::array<float, N> &levels, float x) {
    const auto it = std::lower_bound(levels.begin(), levels.end(), x);
    if (it == levels.begin())
        return 0;
    if (it == levels.end())
        return uint8_t(N - 1);
    const size_t hi = size_t(it - levels.begin());
    return uint8_t(x - levels[hi - 1] <= levels[hi] - x ? hi - 1 : hi);
}

int64_t blockCount(int64_t cols, int64_t block) {
    return block <= 0 || block >= cols ? 1 : (cols + block - 1) / block;
}

// Entropy of the NF4 codes of `values - tau` (one block), with the block's own absmax, exactly as
// quantizeNf4 codes the shifted block, without forming the codes:
//  - absmax: fl(x - τ) is monotone in x, so max |fl(x - τ)| is attained at the block's min or max;
//  - nearest level (lower one on a tie, as nearestLevel): code(x) > m ⇔ x − L[m] > L[m+1] − x
//    (for m below the code both sides have the signs that make it true, above it false, and at
//    m = code − 1 it is nearestLevel's own tie test), so the number of values with code > m is a
//    count of one comparison, which the compiler vectorizes;
//  - histogram: count[c] = above[c − 1] − above[c].
// The codes are exactly those quantizeNf4 gives the shifted block; the entropy is
// codeEntropyBits' up to rounding (~1e-15, far inside the search's 1e-12 tie tolerance).
double shiftedEntropy(const float *values, int64_t n, float lo, float hi, float tau, float *scaled,
                      const std::vector<double> &countLogCount) {
    const float amax = std::max(std::abs(lo - tau), std::abs(hi - tau));
    for (int64_t i = 0; i < n; ++i)
        scaled[i] = amax > 0 ? (values[i] - tau) / amax : 0.0f;
    std::array<int64_t, 17> above{}; // above[m + 1]: values with code > m; above[0] = n
    above[0] = n;
    for (size_t m = 0; m + 1 < kNf4Levels.size(); ++m) {
        const float below = kNf4Levels[m], upper = kNf4Levels[m + 1];
        int64_t count = 0;
        for (int64_t i = 0; i < n; ++i)
            count += (scaled[i] - below > upper - scaled[i]) ? 1 : 0;
        above[m + 1] = count;
    }
    // H = −Σ (c/n)·log2(c/n) = log2 n − Σ c·log2 c / n, with c·log2 c from a table (the log2
    // calls were most of the search's time).
    double sum = 0;
    for (size_t c = 0; c < kNf4Levels.size(); ++c)
        sum += countLogCount[size_t(above[c] - above[c + 1])];
    return std::log2(double(n)) - sum / double(n);
}

// IR-QLoRA ICQ (Sec. 3.2; utils.py search()): τ of maximal code entropy on the grid around the
// block median.
// countLogCount[c] = c·log2 c for c in 0..n.
float searchTau(const float *values, int64_t n, const IcqOptions &options,
                const std::vector<double> &countLogCount, std::vector<float> &scratch) {
    scratch.resize(size_t(2 * n)); // the median's copy, then the scaled values
    std::copy_n(values, n, scratch.begin());
    const size_t mid = size_t(n - 1) / 2; // torch.median: the lower of the two middle values
    std::nth_element(scratch.begin(), scratch.begin() + std::ptrdiff_t(mid),
                     scratch.begin() + std::ptrdiff_t(n));
    const float tau0 = scratch[mid];
    const auto [lo, hi] = std::minmax_element(values, values + n);
    const float a0 = std::max(std::abs(*lo - tau0), std::abs(*hi - tau0));
    const int candidates = 2 * options.tauSteps + 1;
    const double first = -options.tauRange * kIcqSigma,
                 step = 2 * options.tauRange * kIcqSigma / double(candidates - 1);
    float best = tau0;
    double bestEntropy = -1;
    for (int k = 0; k < candidates; ++k) {
        const float tau = float((first + step * k) * double(a0) + double(tau0));
        const double h =
            shiftedEntropy(values, n, *lo, *hi, tau, scratch.data() + n, countLogCount);
        // The first candidate of maximal entropy wins; histograms that are permutations of each
        // other have the same entropy up to summation order, hence the tolerance.
        if (h > bestEntropy + 1e-12) {
            bestEntropy = h;
            best = tau;
        }
    }
    return best;
}

Status checkFinite(const std::string &name, const float *values, size_t n, const char *what) {
    for (size_t i = 0; i < n; ++i)
        if (!std::isfinite(values[i]))
            return makeError(ErrorCode::InvalidArgument,
                             name + ": icq: non-finite " + what + " at index " + std::to_string(i));
    return {};
}

} // namespace

double codeEntropyBits(std::span<const uint8_t> codes) {
    if (codes.empty())
        return 0;
    std::array<int64_t, 256> counts{};
    for (uint8_t c : codes)
        ++counts[c];
    double h = 0;
    for (int64_t count : counts)
        if (count > 0) {
            const double p = double(count) / double(codes.size());
            h -= p * std::log2(p);
        }
    return h;
}

double meanBlockCodeEntropyBits(const QuantizedTensor &tensor) {
    std::vector<uint8_t> row(size_t(tensor.cols));
    double sum = 0;
    int64_t blocks = 0;
    for (int64_t r = 0; r < tensor.rows; ++r) {
        tensor.rowCodes(r, row.data());
        for (int64_t g = 0; g < tensor.groups(); ++g) {
            const int64_t begin = g * tensor.groupSize,
                          end = std::min(tensor.cols, begin + tensor.groupSize);
            sum += codeEntropyBits({row.data() + begin, size_t(end - begin)});
            ++blocks;
        }
    }
    return blocks > 0 ? sum / double(blocks) : 0;
}

Result<QuantizedTensor> quantizeNf4Shifted(std::string name, const float *weight, int64_t rows,
                                           int64_t cols, std::span<const float> tau,
                                           const IcqOptions &options) {
    if (rows <= 0 || cols <= 0)
        return makeError(ErrorCode::InvalidArgument, name + ": icq: empty weight");
    if (options.tauBlock <= 0)
        return makeError(ErrorCode::InvalidArgument, name + ": icq: tau_block must be positive");
    const int64_t groups = blockCount(cols, options.nf4.blockSize),
                  block = groups == 1 ? cols : options.nf4.blockSize;
    if (int64_t(tau.size()) != rows * groups)
        return makeError(ErrorCode::InvalidArgument, name + ": icq: " + std::to_string(tau.size()) +
                                                         " tau values for " +
                                                         std::to_string(rows * groups) + " blocks");
    LOWBIT_CHECK(checkFinite(name, tau.data(), tau.size(), "tau"));
    std::vector<float> shifted(size_t(rows * cols));
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < cols; ++j)
            shifted[size_t(r * cols + j)] =
                weight[r * cols + j] - tau[size_t(r * groups + j / block)];
    LOWBIT_TRY(QuantizedTensor t, quantizeNf4(name, shifted.data(), rows, cols, options.nf4));
    t.method = "icq";
    // τ's own quantization (utils.py nf4_quant: tau2 = max|τ| per run, tau1 = dynamic-map code).
    const auto map = dynamicMap8();
    const int64_t n = rows * groups, runs = (n + options.tauBlock - 1) / options.tauBlock;
    std::vector<uint8_t> codes(static_cast<size_t>(n));
    std::vector<float> scales(static_cast<size_t>(runs));
    for (int64_t b = 0; b < runs; ++b) {
        const int64_t begin = b * options.tauBlock, end = std::min(n, begin + options.tauBlock);
        float amax = 0;
        for (int64_t i = begin; i < end; ++i)
            amax = std::max(amax, std::abs(tau[size_t(i)]));
        scales[size_t(b)] = amax;
        for (int64_t i = begin; i < end; ++i)
            codes[size_t(i)] = nearestLevel(map, amax > 0 ? tau[size_t(i)] / amax : 0.0f);
    }
    t.extra["tau_codes"] = QuantExtra::fromU8({n}, codes, 8);
    t.extra["tau_scales"] = QuantExtra::fromF32({runs}, scales, 32);
    const int32_t run = int32_t(options.tauBlock);
    t.extra["tau_block"] = QuantExtra::fromI32({1}, std::span<const int32_t>(&run, 1), 0);
    return t;
}

Result<QuantizedTensor> quantizeIcq(std::string name, const float *weight, int64_t rows,
                                    int64_t cols, const IcqOptions &options) {
    if (rows <= 0 || cols <= 0)
        return makeError(ErrorCode::InvalidArgument, name + ": icq: empty weight");
    if (options.tauSteps < 1 || !(options.tauRange > 0) || !std::isfinite(options.tauRange))
        return makeError(ErrorCode::InvalidArgument,
                         name + ": icq: tau_steps must be >= 1 and tau_range positive");
    LOWBIT_CHECK(checkFinite(name, weight, size_t(rows * cols), "weight"));
    const int64_t groups = blockCount(cols, options.nf4.blockSize),
                  block = groups == 1 ? cols : options.nf4.blockSize;
    std::vector<float> tau(size_t(rows * groups));
    std::vector<double> countLogCount(size_t(block) + 1, 0.0);
    for (int64_t c = 2; c <= block; ++c)
        countLogCount[size_t(c)] = double(c) * std::log2(double(c));
    ThreadPool pool(options.threads);
    std::vector<std::vector<float>> scratch(size_t(pool.size()));
    pool.parallelFor(rows, [&](int64_t r, int thread) {
        for (int64_t g = 0; g < groups; ++g) {
            const int64_t begin = g * block, end = std::min(cols, begin + block);
            tau[size_t(r * groups + g)] = searchTau(weight + r * cols + begin, end - begin, options,
                                                    countLogCount, scratch[size_t(thread)]);
        }
    });
    return quantizeNf4Shifted(std::move(name), weight, rows, cols, tau, options);
}

Result<std::vector<float>> icqTau(const QuantizedTensor &tensor) {
    const int64_t n = tensor.rows * tensor.groups();
    const auto codes = tensor.extra.find("tau_codes");
    if (codes == tensor.extra.end())
        return std::vector<float>(size_t(n), 0.0f);
    const auto scales = tensor.extra.find("tau_scales"), run = tensor.extra.find("tau_block");
    if (scales == tensor.extra.end() || run == tensor.extra.end() ||
        int64_t(codes->second.u8().size()) != n || run->second.i32().size() != 1 ||
        run->second.i32()[0] <= 0)
        return makeError(ErrorCode::Format, tensor.name + ": icq tau data is incomplete");
    const int64_t block = run->second.i32()[0];
    if (int64_t(scales->second.f32().size()) != (n + block - 1) / block)
        return makeError(ErrorCode::Format, tensor.name + ": icq tau_scales has the wrong length");
    const auto map = dynamicMap8();
    std::vector<float> tau(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i)
        tau[size_t(i)] =
            map[codes->second.u8()[size_t(i)]] * scales->second.f32()[size_t(i / block)];
    return tau;
}

Result<std::vector<float>> dequantizeIcq(const QuantizedTensor &tensor) {
    if (tensor.groupSize <= 0 || !tensor.permutation.empty())
        return makeError(ErrorCode::Format, tensor.name + ": icq tensor has no block layout");
    LOWBIT_TRY(std::vector<float> tau, icqTau(tensor));
    LOWBIT_TRY(std::vector<float> w, dequantizeNf4(tensor));
    if (int64_t(w.size()) != tensor.rows * tensor.cols)
        return makeError(ErrorCode::Format, tensor.name + ": icq dequantized size mismatch");
    for (int64_t r = 0; r < tensor.rows; ++r)
        for (int64_t j = 0; j < tensor.cols; ++j)
            w[size_t(r * tensor.cols + j)] += tau[size_t(r * tensor.groups() + tensor.groupOf(j))];
    return w;
}

namespace {

class IcqQuantizer final : public Quantizer {
public:
    explicit IcqQuantizer(const IcqOptions &options) : m_options(options) {}
    std::string_view name() const override { return "icq"; }
    CalibrationNeeds needs() const override { return {}; }
    Result<QuantizedTensor> quantize(const LinearJob &job) override {
        LOWBIT_TRY(QuantizedTensor t,
                   quantizeIcq(job.name, job.weight.data(), job.rows, job.cols, m_options));
        if (job.notes)
            (*job.notes)["icq_mean_code_entropy_bits"] = meanBlockCodeEntropyBits(t);
        return t;
    }
    Result<std::vector<float>> dequantize(const QuantizedTensor &tensor) const override {
        return dequantizeIcq(tensor);
    }

private:
    IcqOptions m_options;
};

} // namespace

Result<std::unique_ptr<Quantizer>> makeIcqQuantizer(const QuantizeOptions &options) {
    if (options.bits != 4)
        return makeError(ErrorCode::InvalidArgument,
                         "icq: IR-QLoRA ICQ calibrates NF4, a 4-bit format (--bits 4), got " +
                             std::to_string(options.bits));
    IcqOptions o;
    if (options.groupSize > 0)
        o.nf4.blockSize = options.groupSize;
    o.threads = options.threads;
    MethodOptions method("icq", options.methodOptions);
    LOWBIT_TRY(o.nf4.doubleQuant, method.boolean("double_quant", true));
    LOWBIT_TRY(o.nf4.doubleQuantBlock, method.integer("dq_block", 256));
    LOWBIT_TRY(o.tauRange, method.number("tau_range", 0.1));
    LOWBIT_TRY(int64_t steps, method.integer("tau_steps", 100));
    LOWBIT_TRY(o.tauBlock, method.integer("tau_block", 256));
    LOWBIT_CHECK(method.finish());
    if (o.nf4.doubleQuantBlock <= 0 || o.tauBlock <= 0)
        return makeError(ErrorCode::InvalidArgument,
                         "icq: dq_block and tau_block must be positive");
    if (!(o.tauRange > 0) || !std::isfinite(o.tauRange) || steps < 1 || steps > 100000)
        return makeError(ErrorCode::InvalidArgument,
                         "icq: tau_range must be positive and tau_steps in 1..100000");
    o.tauSteps = int(steps);
    return std::unique_ptr<Quantizer>(new IcqQuantizer(o));
}

} // namespace lowbit
