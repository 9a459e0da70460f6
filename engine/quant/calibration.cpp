#include "quant/calibration.h"

#include "backend/cuda/cuda_gptq.h"
#include "core/mapped_file.h"
#include "quant/linalg.h"
#include "quant/quant_device.h"

#include <cblas.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <random>

namespace lowbit {

namespace fs = std::filesystem;

std::filesystem::path defaultCalibrationText() {
    const fs::path relative = fs::path("wikitext2") / "wiki.train.raw.prefix";
    if (const char *env = std::getenv("LOWBIT_DATA_DIR"); env && *env)
        return fs::path(env) / relative;
    if (const char *env = std::getenv("LOWBIT_SHARED_DIR"); env && *env)
        return fs::path(env) / "data" / relative;
    return fs::path("..") / "shared" / "data" / relative;
}

namespace {

// Files that the study and the evaluators score models on (test/validation splits).
bool isKnownEvaluationText(const fs::path &path) {
    const std::string name = path.filename().string();
    for (const char *prefix : {"wiki.test", "wiki.valid", "c4_validation", "ptb.test", "ptb.valid",
                               "tinystories_val", "ts_val"})
        if (name.rfind(prefix, 0) == 0)
            return true;
    return false;
}

std::vector<std::string> evaluationWarnings(const fs::path &source,
                                            const std::vector<fs::path> &evaluationTexts) {
    std::vector<std::string> warnings;
    std::error_code ec;
    for (const fs::path &eval : evaluationTexts)
        if (fs::equivalent(source, eval, ec)) {
            warnings.push_back("calibration text " + source.string() +
                               " is also an evaluation text: its perplexity will be optimistic");
            return warnings;
        }
    if (isKnownEvaluationText(source))
        warnings.push_back("calibration text " + source.string() +
                           " is an evaluation split (test/validation): scores on it will be "
                           "optimistic");
    return warnings;
}

bool isJsonLines(const fs::path &path) {
    const std::string ext = path.extension().string();
    return ext == ".jsonl" || ext == ".json";
}

Result<std::vector<std::string>> readJsonLinesTexts(const std::string &content,
                                                    const fs::path &path) {
    std::vector<std::string> texts;
    size_t pos = 0;
    int64_t lineNo = 0;
    while (pos < content.size()) {
        const size_t end = std::min(content.find('\n', pos), content.size());
        const std::string_view line(content.data() + pos, end - pos);
        pos = end + 1;
        ++lineNo;
        if (line.find_first_not_of(" \t\r") == std::string_view::npos)
            continue;
        nlohmann::json row = nlohmann::json::parse(line, nullptr, false);
        if (row.is_discarded() || !row.is_object() || !row.contains("text") ||
            !row["text"].is_string())
            return makeError(ErrorCode::Format, path.string() + ": line " + std::to_string(lineNo) +
                                                    ": not a JSON object with a \"text\" string");
        texts.push_back(row["text"].get<std::string>());
    }
    return texts;
}

// GPTQ's get_c4: a uniformly chosen document longer than the window, then a window inside it.
Result<std::vector<std::vector<int32_t>>>
windowsFromDocuments(const std::vector<std::vector<int32_t>> &docs, const CalibrationOptions &o,
                     std::mt19937_64 &rng, const fs::path &path) {
    std::vector<size_t> eligible;
    for (size_t i = 0; i < docs.size(); ++i)
        if (int64_t(docs[i].size()) > o.tokens)
            eligible.push_back(i);
    if (eligible.empty())
        return makeError(ErrorCode::InvalidArgument,
                         path.string() + ": no document is longer than the " +
                             std::to_string(o.tokens) + "-token calibration window");
    std::vector<std::vector<int32_t>> windows;
    for (int64_t s = 0; s < o.samples; ++s) {
        const auto &doc =
            docs[eligible[std::uniform_int_distribution<size_t>(0, eligible.size() - 1)(rng)]];
        const int64_t start =
            std::uniform_int_distribution<int64_t>(0, int64_t(doc.size()) - o.tokens - 1)(rng);
        windows.emplace_back(doc.begin() + start, doc.begin() + start + o.tokens);
    }
    return windows;
}

} // namespace

Result<CalibrationSet> loadCalibration(const Tokenizer &tokenizer,
                                       const CalibrationOptions &options) {
    if (options.samples <= 0 || options.tokens <= 1)
        return makeError(ErrorCode::InvalidArgument,
                         "calibration: samples must be positive and window length above 1");
    CalibrationSet set;
    set.source = options.textPath.empty() ? defaultCalibrationText() : options.textPath;
    auto file = MappedFile::open(set.source);
    if (!file)
        return makeError(file.error().code,
                         "calibration text: " + file.error().message +
                             (options.textPath.empty()
                                  ? " (set LOWBIT_SHARED_DIR or LOWBIT_DATA_DIR, or pass --calib)"
                                  : ""));
    const std::string content(reinterpret_cast<const char *>((*file)->data()), (*file)->size());
    std::mt19937_64 rng(options.seed);
    const EncodeOptions encode{false, false};
    if (isJsonLines(set.source)) {
        LOWBIT_TRY(std::vector<std::string> texts, readJsonLinesTexts(content, set.source));
        std::vector<std::vector<int32_t>> docs;
        for (const std::string &t : texts) {
            docs.push_back(tokenizer.encode(t, encode));
            set.documentTokens += int64_t(docs.back().size());
        }
        LOWBIT_TRY(set.windows, windowsFromDocuments(docs, options, rng, set.source));
    } else {
        const std::vector<int32_t> ids = tokenizer.encode(content, encode);
        set.documentTokens = int64_t(ids.size());
        if (int64_t(ids.size()) < options.tokens)
            return makeError(ErrorCode::InvalidArgument,
                             set.source.string() + ": " + std::to_string(ids.size()) +
                                 " tokens, shorter than one calibration window of " +
                                 std::to_string(options.tokens));
        const int64_t last = std::max<int64_t>(0, int64_t(ids.size()) - options.tokens - 1);
        for (int64_t s = 0; s < options.samples; ++s) {
            const int64_t start = std::uniform_int_distribution<int64_t>(0, last)(rng);
            set.windows.emplace_back(ids.begin() + start, ids.begin() + start + options.tokens);
        }
    }
    set.warnings = evaluationWarnings(set.source, options.evaluationTexts);
    return set;
}

struct StatsHook::Accumulator {
    int64_t cols = 0;
    int64_t tokens = 0;
    std::vector<double> hessian;                   // upper triangle (row-major) is the running sum
    std::unique_ptr<CudaHessianSum> deviceHessian; // instead, with a device
    std::vector<float> block;
    std::vector<double> converted;
    std::vector<double> absSum, absMax;
    std::vector<float> samples;
    int64_t sampleCount = 0;
    std::mt19937_64 rng;
};

StatsHook::StatsHook(std::set<LinearInput> inputs, StatsWanted wanted, HessianPrecision precision,
                     int threads, uint64_t seed, QuantDevice *device)
    : m_inputs(std::move(inputs)), m_wanted(wanted), m_precision(precision), m_threads(threads),
      m_seed(seed), m_device(device) {}

StatsHook::~StatsHook() = default;

namespace {

void accumulateHessian(std::vector<double> &sum, std::vector<float> &block,
                       std::vector<double> &converted, const float *x, int64_t rows, int64_t cols,
                       HessianPrecision precision) {
    const int n = int(cols);
    if (precision == HessianPrecision::BlockedFloat32) {
        block.resize(size_t(cols * cols));
        cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, n, int(rows), 1.0f, x, n, 0.0f,
                    block.data(), n);
        for (int64_t i = 0; i < cols; ++i) {
            double *s = sum.data() + i * cols;
            const float *b = block.data() + i * cols;
            for (int64_t j = i; j < cols; ++j)
                s[j] += double(b[j]);
        }
        return;
    }
    // Float64: converted in slabs of rows so the copy stays small next to the input.
    const int64_t slab = std::max<int64_t>(256, (int64_t(1) << 24) / std::max<int64_t>(cols, 1));
    for (int64_t r0 = 0; r0 < rows; r0 += slab) {
        const int64_t k = std::min(slab, rows - r0);
        converted.resize(size_t(k * cols));
        for (int64_t i = 0; i < k * cols; ++i)
            converted[size_t(i)] = double(x[r0 * cols + i]);
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, n, int(k), 1.0, converted.data(), n, 1.0,
                    sum.data(), n);
    }
}

// Reservoir sampling (Vitter's algorithm R) of whole input rows.
void sampleRows(std::vector<float> &samples, int64_t &count, int64_t seenBefore,
                std::mt19937_64 &rng, const float *x, int64_t rows, int64_t cols) {
    for (int64_t r = 0; r < rows; ++r) {
        const int64_t seen = seenBefore + r;
        int64_t slot = count < kStatsSampleRows ? count : -1;
        if (slot < 0) {
            const int64_t j = std::uniform_int_distribution<int64_t>(0, seen)(rng);
            if (j >= kStatsSampleRows)
                continue;
            slot = j;
        } else {
            ++count;
            samples.resize(size_t(count * cols));
        }
        std::copy(x + r * cols, x + (r + 1) * cols, samples.begin() + slot * cols);
    }
}

} // namespace

void StatsHook::onLinearInput(int64_t, LinearInput kind, float *input, int64_t rows, int64_t cols) {
    if (!m_inputs.count(kind) || rows <= 0)
        return;
    auto &slot = m_acc[kind];
    if (!slot) {
        slot = std::make_shared<Accumulator>();
        slot->cols = cols;
        slot->rng.seed(m_seed + uint64_t(kind));
        if (m_wanted.hessian && m_device && m_precision == HessianPrecision::BlockedFloat32) {
            auto sum = m_device->hessianSum(cols);
            if (sum)
                slot->deviceHessian = std::move(*sum);
            else if (m_status.ok())
                m_status = sum.error();
        } else if (m_wanted.hessian) {
            if (m_device) // the device sums float32 blocks only
                m_device->ranOnCpu("hessian (float64)");
            slot->hessian.assign(size_t(cols * cols), 0.0);
        }
        if (m_wanted.channelStats) {
            slot->absSum.assign(size_t(cols), 0.0);
            slot->absMax.assign(size_t(cols), 0.0);
        }
    }
    Accumulator &a = *slot;
    if (a.deviceHessian && m_status.ok()) {
        if (Status added = a.deviceHessian->add({input, size_t(rows * cols)}, rows); !added.ok())
            m_status = added;
    } else if (m_wanted.hessian && !a.hessian.empty()) {
        BlasThreads threads(m_threads);
        accumulateHessian(a.hessian, a.block, a.converted, input, rows, cols, m_precision);
    }
    if (m_wanted.channelStats)
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t j = 0; j < cols; ++j) {
                const double v = std::abs(double(input[r * cols + j]));
                a.absSum[size_t(j)] += v;
                a.absMax[size_t(j)] = std::max(a.absMax[size_t(j)], v);
            }
    if (m_wanted.samples)
        sampleRows(a.samples, a.sampleCount, a.tokens, a.rng, input, rows, cols);
    a.tokens += rows;
}

LayerStatistics StatsHook::finish() {
    LayerStatistics out;
    for (auto &[kind, acc] : m_acc) {
        Accumulator &a = *acc;
        LinearStats s;
        s.cols = a.cols;
        s.tokens = a.tokens;
        const double n = double(std::max<int64_t>(a.tokens, 1));
        if (a.deviceHessian && m_status.ok()) {
            auto sum = a.deviceHessian->sum(); // both triangles; the scaling below reads one
            if (sum)
                a.hessian = std::move(*sum);
            else
                m_status = sum.error();
        }
        a.deviceHessian.reset();
        if (!a.hessian.empty()) {
            s.hessian = std::move(a.hessian);
            for (int64_t i = 0; i < a.cols; ++i)
                for (int64_t j = i; j < a.cols; ++j) {
                    const double v = s.hessian[size_t(i * a.cols + j)] * 2.0 / n;
                    s.hessian[size_t(i * a.cols + j)] = v;
                    s.hessian[size_t(j * a.cols + i)] = v;
                }
        }
        if (!a.absSum.empty()) {
            s.meanAbs.resize(a.absSum.size());
            for (size_t j = 0; j < a.absSum.size(); ++j)
                s.meanAbs[j] = a.absSum[j] / n;
            s.maxAbs = std::move(a.absMax);
        }
        s.sampleRows = std::move(a.samples);
        s.sampleCount = a.sampleCount;
        out.emplace(kind, std::move(s));
    }
    m_acc.clear();
    return out;
}

LayerRunner::LayerRunner(Model &model, const CalibrationSet &set, int64_t batchTokens)
    : m_model(model), m_set(set) {
    m_windowTokens = set.windows.empty() ? 0 : int64_t(set.windows.front().size());
    m_windowsPerBatch = std::max<int64_t>(1, batchTokens / std::max<int64_t>(m_windowTokens, 1));
    m_windowsPerBatch =
        std::min<int64_t>(m_windowsPerBatch, std::max<size_t>(set.windows.size(), 1));
    m_rows = int64_t(set.windows.size()) * m_windowTokens;
    m_hidden = model.config().hiddenSize;
    const ModelConfig &c = model.config();
    m_cache = KvCache(1, int(m_windowsPerBatch), m_windowTokens, c.numKvHeads * c.headDim);
}

namespace {

std::vector<SequenceInput> batchInputs(const CalibrationSet &set, int64_t first, int64_t count) {
    std::vector<SequenceInput> inputs;
    for (int64_t i = 0; i < count; ++i)
        inputs.push_back({int(i), set.windows[size_t(first + i)], LogitsWanted::None, 0});
    return inputs;
}

} // namespace

Status LayerRunner::embed() {
    for (const auto &w : m_set.windows)
        if (int64_t(w.size()) != m_windowTokens)
            return makeError(ErrorCode::InvalidArgument, "calibration: windows differ in length");
    m_state.assign(size_t(m_rows * m_hidden), 0.0f);
    const int64_t windows = int64_t(m_set.windows.size());
    for (int64_t w0 = 0; w0 < windows; w0 += m_windowsPerBatch) {
        const auto inputs = batchInputs(m_set, w0, std::min(m_windowsPerBatch, windows - w0));
        LOWBIT_CHECK(m_model.embed(inputs, m_state.data() + w0 * m_windowTokens * m_hidden));
    }
    return {};
}

Status LayerRunner::runBatches(int64_t layer, const LayerWeights &weights, LinearHook *hook,
                               bool inPlace, const OutputFn &onOutput) {
    const int64_t windows = int64_t(m_set.windows.size());
    for (int64_t w0 = 0; w0 < windows; w0 += m_windowsPerBatch) {
        const int64_t count = std::min(m_windowsPerBatch, windows - w0);
        const auto inputs = batchInputs(m_set, w0, count);
        const int64_t firstRow = w0 * m_windowTokens, rows = count * m_windowTokens;
        float *x = m_state.data() + firstRow * m_hidden;
        if (!inPlace) {
            m_scratch.assign(x, x + rows * m_hidden);
            x = m_scratch.data();
        }
        // Lengths stay 0 (runLayer never advances them), so the cache is reused batch to batch.
        LOWBIT_CHECK(m_model.runLayer(layer, m_cache, 0, inputs, x, &weights, hook));
        if (onOutput)
            onOutput(firstRow, rows, x);
    }
    return {};
}

Status LayerRunner::run(int64_t layer, const LayerWeights &weights, LinearHook *hook,
                        const OutputFn &onOutput) {
    return runBatches(layer, weights, hook, false, onOutput);
}

Status LayerRunner::advance(int64_t layer, const LayerWeights &weights) {
    return runBatches(layer, weights, nullptr, true, {});
}

} // namespace lowbit
