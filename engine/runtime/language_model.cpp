#include "runtime/language_model.h"

#include "backend/cuda/cuda_backend.h"
#include "core/thread_pool.h"
#include "quant/activation_quant.h"
#include "runtime/cuda_model.h"
#include "runtime/log_prob.h"
#include "runtime/model.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <numeric>

namespace lowbit {

Result<std::unique_ptr<LanguageModel>>
openLanguageModel(std::shared_ptr<const Checkpoint> checkpoint, const DeviceSpec &device,
                  const LanguageModelOptions &options) {
    if (!checkpoint)
        return makeError(ErrorCode::InvalidArgument, "openLanguageModel: no checkpoint");
    if (!device.isCuda()) {
        LOWBIT_TRY(auto model, Model::create(std::move(checkpoint), {options.threads}));
        LOWBIT_CHECK(installActivationQuant(*model)); // a W8A8 (SmoothQuant) checkpoint's
        return std::unique_ptr<LanguageModel>(std::move(model));
    }
    // The reason first: "no device" says more than an error of the checkpoint's config.
    std::string why;
    const int count = cudaDeviceCount(&why);
    if (count == 0)
        return makeError(ErrorCode::Unsupported, device.toString() + ": " + why);
    if (device.index >= count)
        return makeError(ErrorCode::InvalidArgument,
                         device.toString() + ": no such device (" + std::to_string(count) +
                             (count == 1 ? " device" : " devices") + " present)");
    LOWBIT_TRY(int activationBits, recordedActivationBits(checkpoint->path));
    if (activationBits != kNoActivationQuant)
        return makeError(ErrorCode::Unsupported,
                         device.toString() + ": " + checkpoint->path.string() + " records " +
                             std::to_string(activationBits) +
                             "-bit activation quantization (W8A8), which only the cpu forward "
                             "simulates; evaluate it with --device cpu");
    CudaModelOptions cuda;
    cuda.backend = {device.index,
                    options.fp32Gemms ? GemmPrecision::Fp32 : GemmPrecision::Tensor16};
    cuda.maxBatchTokens = options.maxBatchTokens;
    cuda.threads = options.threads;
    LOWBIT_TRY(auto model, CudaModel::create(std::move(checkpoint), cuda));
    return std::unique_ptr<LanguageModel>(std::move(model));
}

std::vector<std::vector<SequenceInput>> splitIntoPasses(std::span<const SequenceInput> inputs,
                                                        int64_t maxTokens) {
    maxTokens = std::max<int64_t>(1, maxTokens);
    std::vector<std::vector<SequenceInput>> passes(1);
    int64_t used = 0;
    for (const SequenceInput &in : inputs) {
        const int64_t len = int64_t(in.tokens.size());
        const int64_t wantFrom = in.logits == LogitsWanted::None ? len
                                 : in.logits == LogitsWanted::Last
                                     ? len - 1
                                     : std::clamp<int64_t>(in.logitsFrom, 0, len);
        for (int64_t begin = 0; begin < len;) {
            if (used == maxTokens) {
                passes.emplace_back();
                used = 0;
            }
            const int64_t end = std::min(len, begin + (maxTokens - used));
            SequenceInput piece{in.slot, in.tokens.subspan(size_t(begin), size_t(end - begin)),
                                LogitsWanted::None, 0};
            if (wantFrom < end) {
                piece.logits = LogitsWanted::All;
                piece.logitsFrom = std::max<int64_t>(0, wantFrom - begin);
            }
            passes.back().push_back(piece);
            used += end - begin;
            begin = end;
        }
    }
    return passes;
}

int64_t wantedRows(std::span<const SequenceInput> inputs) {
    int64_t rows = 0;
    for (const SequenceInput &in : inputs) {
        const int64_t len = int64_t(in.tokens.size());
        if (len == 0 || in.logits == LogitsWanted::None)
            continue;
        rows += in.logits == LogitsWanted::Last ? 1 : len - std::clamp<int64_t>(in.logitsFrom, 0, len);
    }
    return rows;
}

Status checkScoreRequest(std::span<const SequenceInput> inputs, const ScoreRequest &request,
                         int64_t vocab) {
    if (request.topK < 0 || request.topK > kScoreTopKMax || request.topK > vocab)
        return makeError(ErrorCode::InvalidArgument,
                         "score: topK " + std::to_string(request.topK) + " outside 0.." +
                             std::to_string(std::min<int64_t>(kScoreTopKMax, vocab)));
    const int64_t rows = wantedRows(inputs);
    for (const TokenTarget &t : request.targets) {
        if (t.row < 0 || t.row >= rows)
            return makeError(ErrorCode::InvalidArgument,
                             "score: target row " + std::to_string(t.row) + " outside the " +
                                 std::to_string(rows) + " wanted rows");
        if (t.token < 0 || t.token >= vocab)
            return makeError(ErrorCode::InvalidArgument,
                             "score: target token " + std::to_string(t.token) +
                                 " out of range (vocab " + std::to_string(vocab) + ")");
    }
    return {};
}

namespace {

// TokenScores' order: a before b when larger, equal values by lower id; NaN after everything.
bool before(const float *row, int32_t a, int32_t b) {
    const bool nanA = std::isnan(row[a]), nanB = std::isnan(row[b]);
    if (nanA || nanB)
        return !nanA && nanB;
    return row[a] > row[b] || (row[a] == row[b] && a < b);
}

} // namespace

void topKOfRow(const float *row, int64_t vocab, int k, int32_t *ids, float *values) {
    if (k == 1) { // the common case (greedy): one scan, no index vector
        int32_t best = 0;
        for (int32_t i = 1; i < int32_t(vocab); ++i)
            if (before(row, i, best))
                best = i;
        ids[0] = std::isnan(row[best]) ? -1 : best;
        values[0] = ids[0] < 0 ? -std::numeric_limits<float>::infinity() : row[best];
        return;
    }
    std::vector<int32_t> order(static_cast<size_t>(vocab));
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + k, order.end(),
                      [row](int32_t a, int32_t b) { return before(row, a, b); });
    for (int j = 0; j < k; ++j) {
        const int32_t id = order[size_t(j)];
        ids[j] = std::isnan(row[id]) ? -1 : id;
        values[j] = ids[j] < 0 ? -std::numeric_limits<float>::infinity() : row[id];
    }
}

Result<TokenScores> LanguageModel::score(SequenceCache &cache,
                                         std::span<const SequenceInput> inputs,
                                         const ScoreRequest &request) {
    const int64_t vocab = config().vocabSize;
    LOWBIT_CHECK(checkScoreRequest(inputs, request, vocab));
    LOWBIT_TRY(Logits logits, forward(cache, inputs));
    TokenScores out;
    out.rows = logits.rows;
    out.topK = request.topK;
    out.logProbs.resize(request.targets.size());
    out.topIds.resize(size_t(logits.rows * request.topK));
    out.topLogits.resize(out.topIds.size());
    // Rows are independent, so the thread count does not change a bit of the result.
    const int64_t work = int64_t(request.targets.size()) + (request.topK > 0 ? logits.rows : 0);
    std::unique_ptr<ThreadPool> pool; // not for a decode step's few rows: starting threads costs more
    if (work >= 16)
        pool = std::make_unique<ThreadPool>(threads());
    auto each = [&](int64_t count, const std::function<void(int64_t, int)> &task) {
        if (pool)
            pool->parallelFor(count, task);
        else
            for (int64_t i = 0; i < count; ++i)
                task(i, 0);
    };
    each(int64_t(request.targets.size()), [&](int64_t i, int) {
        const TokenTarget &t = request.targets[size_t(i)];
        out.logProbs[size_t(i)] = logProbability(logits.row(t.row), vocab, t.token);
    });
    if (request.topK > 0)
        each(logits.rows, [&](int64_t r, int) {
            topKOfRow(logits.row(r), vocab, request.topK, out.topIds.data() + r * request.topK,
                      out.topLogits.data() + r * request.topK);
        });
    return out;
}

namespace {

// Device names need a context on each device (cudaGetDeviceProperties behind makeCudaBackend).
std::string deviceName(int index) {
    auto backend = makeCudaBackend({index, GemmPrecision::Fp32});
    return backend.ok() ? (*backend)->deviceInfo().name : "unreadable: " + backend.error().message;
}

} // namespace

std::string computeBackendsSummary() {
    if (!cudaBuilt())
        return "cpu (built without CUDA)";
    std::string why;
    const int count = cudaDeviceCount(&why);
    if (count == 0)
        return "cpu; cuda built, no device: " + why;
    std::string out =
        "cpu, cuda (" + std::to_string(count) + (count == 1 ? " device: " : " devices: ");
    for (int i = 0; i < count; ++i)
        out += (i ? ", " : "") + std::string(count > 1 ? "cuda:" + std::to_string(i) + " " : "") +
               deviceName(i);
    return out + ")";
}

std::vector<DeviceSpec> availableDevices() {
    std::vector<DeviceSpec> out{DeviceSpec{}};
    const int count = cudaDeviceCount();
    for (int i = 0; i < count; ++i)
        out.push_back({DeviceSpec::Kind::Cuda, i});
    return out;
}

} // namespace lowbit
