#include "quant/billm.h"

#include "core/thread_pool.h"
#include "quant/binarize.h"
#include "quant/linalg.h"
#include "quant/obs_sweep.h"
#include "quant/quant_device.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>

namespace lowbit {

namespace {

enum Label : uint8_t { kConcentrated = 0, kSparse = 1, kSalient = 2 };

// Squared error of `order` rounds of residual binarization (binarize.h) of the entries x[j] with
// mask[j] != 0; `residual` is n floats of scratch.
double residualError(const float *x, const uint8_t *mask, int64_t n, int order, float *residual) {
    std::copy(x, x + n, residual);
    for (int o = 0; o < order; ++o) {
        const BinaryParams p = fitBinary(residual, n, mask);
        for (int64_t j = 0; j < n; ++j)
            if (mask[j])
                residual[j] -= p.fakeQuant(residual[j]);
    }
    double err = 0;
    for (int64_t j = 0; j < n; ++j)
        if (mask[j])
            err += double(residual[j]) * double(residual[j]);
    return err;
}

// One decoder-size block search needs many passes over the rows: they run on a pool, each thread
// with its own scratch, partial sums added in chunk order (deterministic for a thread count).
class RowPool {
public:
    RowPool(int threads, int64_t rows, int64_t width)
        : m_pool(threads), m_rows(rows),
          m_chunk(std::max<int64_t>(1, (rows + m_pool.size() * 4 - 1) / (m_pool.size() * 4))),
          m_partial(size_t((rows + m_chunk - 1) / m_chunk)),
          m_scratch(size_t(m_pool.size()), std::vector<float>(size_t(3 * width))),
          m_masks(size_t(m_pool.size()), std::vector<uint8_t>(size_t(2 * width))) {}

    // sum over rows of f(row, float scratch (3 * width), mask scratch (2 * width))
    double sum(const std::function<double(int64_t, float *, uint8_t *)> &f) {
        m_pool.parallelFor(int64_t(m_partial.size()), [&](int64_t c, int thread) {
            double s = 0;
            for (int64_t r = c * m_chunk; r < std::min(m_rows, (c + 1) * m_chunk); ++r)
                s += f(r, m_scratch[size_t(thread)].data(), m_masks[size_t(thread)].data());
            m_partial[size_t(c)] = s;
        });
        double total = 0;
        for (double s : m_partial)
            total += s;
        return total;
    }
    void forEach(const std::function<void(int64_t)> &f) {
        m_pool.parallelFor(m_rows, [&](int64_t r, int) { f(r); });
    }

private:
    ThreadPool m_pool;
    int64_t m_rows, m_chunk;
    std::vector<double> m_partial;
    std::vector<std::vector<float>> m_scratch;
    std::vector<std::vector<uint8_t>> m_masks;
};

// numpy.quantile's default (linear) on sorted values.
float quantile(const std::vector<float> &sorted, double q) {
    const double pos = q * double(sorted.size() - 1);
    const size_t lo = size_t(pos);
    const size_t hi = std::min(lo + 1, sorted.size() - 1);
    return float(sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - double(lo)));
}

struct BlockChoice {
    std::vector<uint8_t> salient; // per column of the block
    float threshold = 0;          // |w| >= threshold: sparse
};

// Steps 1 and 3 of the header: salient column count, then the split threshold.
BlockChoice searchBlock(const std::vector<float> &b, int64_t rows, int64_t width,
                        const std::vector<double> &columnScore, int64_t maxSalient, RowPool &pool) {
    std::vector<int64_t> order(static_cast<size_t>(width));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t x, int64_t y) {
        return columnScore[size_t(x)] > columnScore[size_t(y)];
    });
    BlockChoice choice;
    choice.salient.assign(size_t(width), 0);
    std::vector<uint8_t> mask(static_cast<size_t>(width), 0), rest(static_cast<size_t>(width), 1);
    double best = INFINITY;
    int64_t bestCount = 0;
    for (int64_t k = 1; k < std::min(maxSalient, width); ++k) {
        mask[size_t(order[size_t(k - 1)])] = 1;
        rest[size_t(order[size_t(k - 1)])] = 0;
        const double err = pool.sum([&](int64_t r, float *scratch, uint8_t *) {
            const float *row = b.data() + r * width;
            return residualError(row, mask.data(), width, 2, scratch) +
                   residualError(row, rest.data(), width, 2, scratch);
        });
        if (err < best) {
            best = err;
            bestCount = k;
        }
    }
    for (int64_t k = 0; k < bestCount; ++k)
        choice.salient[size_t(order[size_t(k)])] = 1;

    std::vector<float> magnitudes(b.size());
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < width; ++j)
            magnitudes[size_t(r * width + j)] =
                choice.salient[size_t(j)] ? 0.0f : std::abs(b[size_t(r * width + j)]);
    std::sort(magnitudes.begin(), magnitudes.end());
    best = INFINITY;
    for (int step = 0; step <= 80; ++step) {
        const float p = quantile(magnitudes, 0.10 + 0.01 * step);
        // The salient part's error does not depend on p: only the two split groups are compared.
        const double err = pool.sum([&](int64_t r, float *scratch, uint8_t *m) {
            const float *row = b.data() + r * width;
            uint8_t *concentrated = m, *sparse = m + width;
            for (int64_t j = 0; j < width; ++j) {
                const bool rest = !choice.salient[size_t(j)];
                concentrated[j] = rest && std::abs(row[j]) < p;
                sparse[j] = rest && std::abs(row[j]) >= p;
            }
            return residualError(row, concentrated, width, 1, scratch) +
                   residualError(row, sparse, width, 1, scratch);
        });
        if (err < best) {
            best = err;
            choice.threshold = p;
        }
    }
    return choice;
}

// Everything a tensor is assembled from, filled block by block.
struct BillmState {
    int64_t rows = 0, cols = 0, blocks = 0;
    std::vector<uint8_t> codes, labels, second; // rows x cols: first sign, Label, second sign
    std::vector<uint8_t> salientColumn;         // cols
    std::vector<float> params;                  // rows x blocks x 6
    std::vector<BinaryParams> concentrated;     // rows x blocks

    static BillmState make(int64_t rows, int64_t cols, int64_t blocks) {
        BillmState s;
        s.rows = rows;
        s.cols = cols;
        s.blocks = blocks;
        s.codes.assign(size_t(rows * cols), 0);
        s.labels.assign(size_t(rows * cols), kConcentrated);
        s.second.assign(size_t(rows * cols), 0);
        s.salientColumn.assign(size_t(cols), 0);
        s.params.assign(size_t(rows * blocks * 6), 0);
        s.concentrated.assign(size_t(rows * blocks), {});
        return s;
    }
};

// Step 2 and the binarization of the split groups for one block; q receives B_b (rows x width).
void binarizeBlock(const std::vector<float> &b, int64_t width, int64_t c0, int64_t block,
                   const BlockChoice &choice, BillmState &s, std::vector<float> &q, RowPool &pool) {
    for (int64_t j = 0; j < width; ++j)
        s.salientColumn[size_t(c0 + j)] = choice.salient[size_t(j)];
    pool.forEach([&](int64_t r) {
        const float *row = b.data() + r * width;
        uint8_t *label = s.labels.data() + r * s.cols + c0;
        std::vector<uint8_t> in(static_cast<size_t>(3 * width));
        for (int64_t j = 0; j < width; ++j) {
            label[j] = choice.salient[size_t(j)]              ? kSalient
                       : std::abs(row[j]) >= choice.threshold ? kSparse
                                                              : kConcentrated;
            for (int l = 0; l < 3; ++l)
                in[size_t(l * width + j)] = label[j] == l;
        }
        const BinaryParams conc = fitBinary(row, width, in.data());
        const BinaryParams sparse = fitBinary(row, width, in.data() + width);
        const ResidualBinary sal = fitResidualBinary(row, width, in.data() + 2 * width);
        float *p = s.params.data() + (r * s.blocks + block) * 6;
        const float values[6] = {sal.first.alpha, sal.first.mean, sal.second.alpha,
                                 sal.second.mean, sparse.alpha,   sparse.mean};
        std::copy(values, values + 6, p);
        s.concentrated[size_t(r * s.blocks + block)] = conc;
        for (int64_t j = 0; j < width; ++j) {
            const size_t at = size_t(r * s.cols + c0 + j);
            const float x = row[j];
            if (label[j] == kSalient) {
                const float b1 = sal.first.fakeQuant(x);
                s.codes[at] = sal.first.positive(x);
                s.second[at] = sal.second.positive(x - b1);
                q[size_t(r * width + j)] = b1 + sal.second.value(s.second[at] != 0);
            } else {
                const BinaryParams &bp = label[j] == kSparse ? sparse : conc;
                s.codes[at] = bp.positive(x);
                q[size_t(r * width + j)] = bp.value(s.codes[at] != 0);
            }
        }
    });
}

// Block-wise OBC (Algorithm 1, last two lines): E = (W_b - B_b) / diag(U_bb), then
// W[:, b+beta:] -= E U[b:b+beta, b+beta:]. Returns the block's share of GPTQ's loss.
double compensate(std::vector<float> &w, int64_t rows, int64_t cols, int64_t c0, int64_t width,
                  const std::vector<float> &b, const std::vector<float> &q,
                  const std::vector<float> &u, int threads) {
    std::vector<float> e(size_t(rows * width));
    double loss = 0;
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < width; ++j) {
            const float err = (b[size_t(r * width + j)] - q[size_t(r * width + j)]) /
                              u[size_t((c0 + j) * cols + c0 + j)];
            e[size_t(r * width + j)] = err;
            loss += double(err) * err / 2;
        }
    const int64_t last = c0 + width;
    if (last < cols) {
        BlasThreads blas(threads);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(rows), int(cols - last),
                    int(width), -1.0f, e.data(), int(width), u.data() + c0 * cols + last, int(cols),
                    1.0f, w.data() + last, int(cols));
    }
    return loss;
}

Status fillTensor(QuantizedTensor &t, const BillmState &s) {
    t.codebook = kSignLevels;
    t.zeroBits = 16;
    for (int64_t r = 0; r < s.rows; ++r)
        for (int64_t g = 0; g < s.blocks; ++g) {
            const ScaleZero sz = binaryScaleZero(s.concentrated[size_t(r * s.blocks + g)], true);
            t.scale(r, g) = sz.scale;
            t.zero(r, g) = sz.zero;
        }
    LOWBIT_CHECK(t.setCodes(s.codes));
    int64_t salient = 0;
    for (uint8_t v : s.salientColumn)
        salient += v;
    std::vector<uint8_t> second, sparse;
    second.reserve(size_t(s.rows * salient));
    sparse.reserve(size_t(s.rows * (s.cols - salient)));
    for (int64_t r = 0; r < s.rows; ++r)
        for (int64_t j = 0; j < s.cols; ++j) {
            const size_t at = size_t(r * s.cols + j);
            if (s.salientColumn[size_t(j)])
                second.push_back(s.second[at]);
            else
                sparse.push_back(s.labels[at] == kSparse);
        }
    t.extra["salient_columns"] = QuantExtra::fromU8({s.cols}, s.salientColumn, 1);
    t.extra["residual_signs"] = QuantExtra::fromU8({s.rows, salient}, second, 1);
    t.extra["sparse_mask"] = QuantExtra::fromU8({s.rows, s.cols - salient}, sparse, 1);
    t.extra["params"] = QuantExtra::fromF32({s.rows, s.blocks, 6}, s.params, 16);
    return {};
}

} // namespace

Result<QuantizedTensor> quantizeBillm(std::string name, std::span<const float> weight, int64_t rows,
                                      int64_t cols, const std::vector<double> &hessian,
                                      const BillmOptions &options, std::stop_token stop,
                                      nlohmann::json *notes) {
    if (int64_t(weight.size()) != rows * cols)
        return makeError(ErrorCode::InvalidArgument,
                         name + ": weight size does not match its shape");
    LOWBIT_TRY(QuantizedTensor t,
               QuantizedTensor::create(name, "billm", rows, cols, 1, options.blockSize, false));
    auto prepared = prepareHessian(hessian, cols,
                                   {options.damp, false, options.threads, false, options.device});
    if (!prepared)
        return makeError(prepared.error().code, name + ": " + prepared.error().message);
    if (options.device)
        options.device->ranOnCpu("sweep");
    const std::vector<float> &u = prepared->hinvUpper;
    std::vector<float> w(weight.begin(), weight.end());
    zeroDeadColumns(w, rows, cols, *prepared);

    BillmState s = BillmState::make(rows, cols, t.groups());
    RowPool pool(options.threads, rows, t.groupSize);
    double loss = 0;
    std::vector<float> b, q;
    for (int64_t block = 0; block < s.blocks; ++block) {
        if (stop.stop_requested())
            return makeError(ErrorCode::Cancelled, "quantization cancelled");
        const int64_t c0 = block * t.groupSize, width = std::min(t.groupSize, cols - c0);
        b.resize(size_t(rows * width));
        q.assign(size_t(rows * width), 0);
        std::vector<double> score(static_cast<size_t>(width), 0.0);
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t j = 0; j < width; ++j) {
                const float x = w[size_t(r * cols + c0 + j)];
                const double d = u[size_t((c0 + j) * cols + c0 + j)];
                b[size_t(r * width + j)] = x;
                score[size_t(j)] += options.hessianSalience ? double(x) * x / (d * d) : std::abs(x);
            }
        const BlockChoice choice =
            searchBlock(b, rows, width, score, options.maxSalientColumns, pool);
        binarizeBlock(b, width, c0, block, choice, s, q, pool);
        loss += compensate(w, rows, cols, c0, width, b, q, u, options.threads);
    }
    LOWBIT_CHECK(fillTensor(t, s));
    if (notes) {
        int64_t salient = 0;
        for (uint8_t v : s.salientColumn)
            salient += v;
        (*notes)["salient_columns"] = salient;
        (*notes)["nominal_bits"] = 1.0 + double(salient) / double(cols);
        (*notes)["loss"] = loss;
        (*notes)["damp"] = prepared->dampUsed;
    }
    return t;
}

Result<std::vector<float>> dequantizeBillm(const QuantizedTensor &t) {
    auto bad = [&](const std::string &what) {
        return makeError(ErrorCode::Format, "billm tensor '" + t.name + "': " + what);
    };
    auto find = [&](const char *key, QuantExtra::Type type) -> const QuantExtra * {
        const auto it = t.extra.find(key);
        return it != t.extra.end() && it->second.type == type ? &it->second : nullptr;
    };
    const QuantExtra *columns = find("salient_columns", QuantExtra::Type::U8);
    const QuantExtra *second = find("residual_signs", QuantExtra::Type::U8);
    const QuantExtra *sparse = find("sparse_mask", QuantExtra::Type::U8);
    const QuantExtra *params = find("params", QuantExtra::Type::F32);
    if (!columns || !second || !sparse || !params)
        return bad(
            "salient_columns/residual_signs/sparse_mask/params missing or of the wrong type");
    if (t.bits != 1 || t.codebook.size() != 2 || !t.groupBits.empty() || !t.permutation.empty())
        return bad("expected 1-bit sign codes with a 2-level codebook and no permutation");
    if (columns->numel() != t.cols)
        return bad("salient_columns must have one entry per column");
    int64_t salient = 0;
    for (uint8_t v : columns->u8())
        salient += v != 0;
    if (second->numel() != t.rows * salient || sparse->numel() != t.rows * (t.cols - salient) ||
        params->numel() != t.rows * t.groups() * 6)
        return bad("residual_signs/sparse_mask/params sizes do not match the salient columns");
    const std::vector<uint8_t> codes = t.codes();
    std::vector<float> out(size_t(t.rows * t.cols));
    size_t nextSecond = 0, nextSparse = 0;
    for (int64_t r = 0; r < t.rows; ++r)
        for (int64_t j = 0; j < t.cols; ++j) {
            const int64_t g = t.groupOf(j);
            const float *p = params->f32().data() + (r * t.groups() + g) * 6;
            const bool plus = codes[size_t(r * t.cols + j)] != 0;
            float v;
            if (columns->u8()[size_t(j)]) {
                const BinaryParams first{p[0], p[1]}, residual{p[2], p[3]};
                v = first.value(plus) + residual.value(second->u8()[nextSecond++] != 0);
            } else if (sparse->u8()[nextSparse++]) {
                v = BinaryParams{p[4], p[5]}.value(plus);
            } else {
                v = t.scale(r, g) * (t.level(codes[size_t(r * t.cols + j)]) - t.zero(r, g));
            }
            out[size_t(r * t.cols + j)] = v;
        }
    return out;
}

namespace {

class BillmQuantizer final : public Quantizer {
public:
    explicit BillmQuantizer(const BillmOptions &options) : m_options(options) {}
    std::string_view name() const override { return "billm"; }
    CalibrationNeeds needs() const override { return {.hessian = true}; }
    Result<QuantizedTensor> quantize(const LinearJob &job) override {
        if (!job.stats || !job.stats->hasHessian())
            return makeError(ErrorCode::InvalidArgument,
                             job.name + ": billm needs a calibration Hessian");
        auto options = m_options;
        options.device = job.device;
        return quantizeBillm(job.name, job.weight, job.rows, job.cols, job.stats->hessian, options,
                             job.stop, job.notes);
    }
    Result<std::vector<float>> dequantize(const QuantizedTensor &tensor) const override {
        return dequantizeBillm(tensor);
    }

private:
    BillmOptions m_options;
};

} // namespace

Result<std::unique_ptr<Quantizer>> makeBillmQuantizer(const QuantizeOptions &options) {
    if (options.bits != 1)
        return makeError(ErrorCode::InvalidArgument,
                         "billm binarizes weights: give --bits 1 (got " +
                             std::to_string(options.bits) + ")");
    BillmOptions o;
    o.threads = options.threads;
    MethodOptions method("billm", options.methodOptions);
    LOWBIT_TRY(bool magnitude, method.boolean("magnitude_salience", false));
    // The blocks are BiLLM's groups (one set of binarizers per row and block): --group sets them.
    LOWBIT_TRY(o.blockSize,
               method.integer("block", options.groupSize > 0 ? options.groupSize : 128));
    LOWBIT_TRY(o.maxSalientColumns, method.integer("max_salient_columns", 50));
    LOWBIT_TRY(o.damp, method.number("damp", 0.01));
    LOWBIT_CHECK(method.finish());
    o.hessianSalience = !magnitude;
    if (!(o.damp > 0) || o.blockSize <= 0 || o.maxSalientColumns < 1)
        return makeError(ErrorCode::InvalidArgument,
                         "billm: damp, block and max_salient_columns must be positive");
    return std::unique_ptr<Quantizer>(new BillmQuantizer(o));
}

} // namespace lowbit
