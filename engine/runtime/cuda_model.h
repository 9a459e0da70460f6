// CudaModel: the LLaMA forward pass resident on one GPU: weights, KV cache (CudaKvCache) and
// activations in device memory, the same op sequence as engine/runtime/model.cpp on a
// CudaBackend, and the loss-side reductions (log-probabilities, top-K) done on the device so that
// full logit rows only cross to the host when forward() is asked for them. The CUDA
// implementation of LanguageModel.
//
// Why a second forward instead of Model on a CudaBackend: Model keeps its activations and KvCache
// in host vectors (and its calibration API hands host pointers to hooks), so the CPU path stays
// untouched and bit-identical; this class is the device-resident twin for evaluation and decode.
//
// Memory: before anything is uploaded, create() compares estimateDeviceMemory() of the weights
// and the activations of maxBatchTokens rows with the free memory, and allocateCache() does the
// same for its cache (plus the scratch allowance the backend may still take); either refuses what
// cannot fit (OutOfMemory naming both). forward() splits a batch of more than maxBatchTokens
// tokens into consecutive device passes (causal attention makes that exact).
// One thread at a time. Plain C++ over the CudaBackend interface, so it compiles in every build;
// without the CUDA backend create() returns Unsupported.
#pragma once

#include "backend/cuda/cuda_backend.h"
#include "backend/device.h"
#include "model/checkpoint.h"
#include "runtime/cuda_kv_cache.h"
#include "runtime/language_model.h"

#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace lowbit {

struct QuantizedTensor;

struct CudaModelOptions {
    CudaOptions backend;
    int64_t maxBatchTokens = 2048; // tokens of one device pass, all inputs together
    int threads = 0;               // host threads for work on returned logits (0: all)
    // Linear weights to run packed, keyed by checkpoint tensor name (non-owning; must outlive the
    // model). Others run dense.
    const std::map<std::string, QuantizedTensor> *quantized = nullptr;
};

class CudaModel final : public LanguageModel {
public:
    static Result<std::unique_ptr<CudaModel>> create(std::shared_ptr<const Checkpoint> checkpoint,
                                                     const CudaModelOptions &options = {});
    // The same on a given backend (options.backend then only names the device): the seam that
    // lets the CPU tests run this class's host logic on a host-memory emulation of CudaBackend.
    static Result<std::unique_ptr<CudaModel>> create(std::shared_ptr<const Checkpoint> checkpoint,
                                                     const CudaModelOptions &options,
                                                     std::shared_ptr<CudaBackend> backend);
    ~CudaModel() override;

    const Checkpoint &checkpoint() const override { return *m_checkpoint; }
    DeviceSpec device() const override;
    std::string deviceDescription() const override;
    int threads() const override { return m_threads; }
    CudaBackend &backend() { return *m_backend; }
    // What create() checked: weights and activations (the caches are checked on allocation).
    const MemoryEstimate &estimate() const { return m_estimate; }

    // A device cache (CudaKvCache), after checking that it fits the free memory.
    Result<std::unique_ptr<SequenceCache>> allocateCache(int slots,
                                                         int64_t capacityTokens) override;
    // Model::forward's contract; the cache must come from this model's allocateCache().
    Result<Logits> forward(SequenceCache &cache, std::span<const SequenceInput> inputs) override;
    // LanguageModel::score's contract, reduced on the device: per chunk of head rows the
    // targets' log-softmax (tokenLogProbs, once per target a row carries) and topK; only those
    // numbers are downloaded.
    Result<TokenScores> score(SequenceCache &cache, std::span<const SequenceInput> inputs,
                              const ScoreRequest &request) override;
    // Full logit rows forward() has downloaded to the host so far (score() downloads none).
    int64_t downloadedLogitRows() const { return m_downloadedRows; }
    // Runs `tokens` after what `slot` holds; entry t is log p(tokens[t+1] | ..., tokens[t]),
    // tokens.size()-1 entries, reduced on the device. At most maxBatchTokens tokens.
    Result<std::vector<double>> logProbs(SequenceCache &cache, int slot,
                                         std::span<const int32_t> tokens);
    // Runs `tokens` after what `slot` holds; the k best next tokens after the last one. At most
    // maxBatchTokens tokens.
    struct TopK {
        std::vector<int32_t> ids;
        std::vector<float> logits;
    };
    Result<TopK> next(SequenceCache &cache, int slot, std::span<const int32_t> tokens, int k);

private:
    CudaModel() = default;
    struct Buffers;
    Result<CudaKvCache *> ownCache(SequenceCache &cache) const;
    Status checkInputs(const CudaKvCache &cache, std::span<const SequenceInput> inputs) const;
    // One device pass of at most maxBatchTokens tokens (inputs already checked).
    Status run(CudaKvCache &cache, std::span<const SequenceInput> inputs,
               std::vector<int64_t> &firstRow);
    Status layer(int64_t index, CudaKvCache &cache, std::span<const SequenceInput> inputs,
                 const std::vector<int64_t> &firstRow, int64_t rows);
    void linear(const Tensor &weight, const float *x, int64_t rows, float *y);
    // Final norm + head of `rows` hidden rows starting at device row `from`, into the logits
    // buffer.
    void head(int64_t from, int64_t rows);
    // Runs the head over the pass's wanted rows, at most m_logitRows at a time, handing each
    // chunk (then in the logits buffer) to `use` with its row count.
    Status headChunks(std::span<const SequenceInput> inputs, const std::vector<int64_t> &firstRow,
                      const std::function<Status(int64_t rows)> &use);
    // The targets `sorted` names (indices into `targets`, by row), all on the chunk of wanted
    // rows from `base` whose logits are in the buffer, scored into `logProbs`.
    Status scoreChunk(std::span<const TokenTarget> targets, std::span<const size_t> sorted,
                      int64_t base, std::vector<double> &logProbs);
    // The wanted logit rows of one pass, appended to `logits`.
    Status collectLogits(std::span<const SequenceInput> inputs,
                         const std::vector<int64_t> &firstRow, Logits &logits);

    std::shared_ptr<const Checkpoint> m_checkpoint;
    CudaModelOptions m_options;
    std::shared_ptr<CudaBackend> m_backend; // shared with the caches, which may outlive the model
    std::unique_ptr<Buffers> m_buffers;
    std::vector<double> m_invFreq;
    MemoryEstimate m_estimate;
    double m_weightBits = 16;
    int64_t m_logitRows = 0; // rows the logits buffer holds
    int64_t m_downloadedRows = 0;
    int m_threads = 1;
};

} // namespace lowbit
