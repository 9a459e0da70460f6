// CudaModel: the LLaMA forward pass resident on one GPU: weights, KV cache and activations in
// device memory, the same op sequence as engine/runtime/model.cpp on a CudaBackend, and the
// loss-side reductions (log-probabilities, top-K) done on the device so that full logit rows
// only cross to the host when forward() is asked for them.
//
// Why a second forward instead of Model on a CudaBackend: Model keeps its activations and KvCache
// in host vectors (and its calibration API hands host pointers to hooks), so the CPU path stays
// untouched and bit-identical; this class is the device-resident twin for evaluation and decode.
//
// Before anything is uploaded, create() compares estimateDeviceMemory() with the free memory and
// refuses a job that cannot fit (OutOfMemory naming both). One thread at a time.
// Plain C++ over the CudaBackend interface, so it compiles in every build; without the CUDA
// backend create() returns Unsupported.
#pragma once

#include "backend/cuda/cuda_backend.h"
#include "backend/device.h"
#include "model/checkpoint.h"
#include "runtime/model.h"

#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace lowbit {

struct QuantizedTensor;

struct CudaModelOptions {
    CudaOptions backend;
    int slotCount = 1; // not "slots": a Qt keyword macro where this header meets Qt code
    int64_t capacityTokens = 2048; // KV cache positions per slot
    int64_t maxBatchTokens = 2048; // tokens of one forward() call, all inputs together
    // Linear weights to run packed, keyed by checkpoint tensor name (non-owning; must outlive the
    // model). Others run dense.
    const std::map<std::string, QuantizedTensor> *quantized = nullptr;
};

class CudaModel {
public:
    static Result<std::unique_ptr<CudaModel>> create(std::shared_ptr<const Checkpoint> checkpoint,
                                                     const CudaModelOptions &options = {});
    ~CudaModel();

    const ModelConfig &config() const { return m_checkpoint->config; }
    CudaBackend &backend() { return *m_backend; }
    const MemoryEstimate &estimate() const { return m_estimate; }
    int slotCount() const { return m_options.slotCount; }
    int64_t length(int slot) const { return m_lengths[size_t(slot)]; }
    void clear(int slot) { m_lengths[size_t(slot)] = 0; }

    // Model::forward's contract, with this model's own cache (slots x capacityTokens).
    Result<Logits> forward(std::span<const SequenceInput> inputs);
    // Runs `tokens` after what `slot` holds; entry t is log p(tokens[t+1] | ..., tokens[t]),
    // tokens.size()-1 entries, reduced on the device.
    Result<std::vector<double>> logProbs(int slot, std::span<const int32_t> tokens);
    // Runs `tokens` after what `slot` holds; the k best next tokens after the last one.
    struct TopK {
        std::vector<int32_t> ids;
        std::vector<float> logits;
    };
    Result<TopK> next(int slot, std::span<const int32_t> tokens, int k);

private:
    CudaModel() = default;
    struct Buffers;
    Status run(std::span<const SequenceInput> inputs, std::vector<int64_t> &firstRow);
    Status layer(int64_t index, std::span<const SequenceInput> inputs,
                 const std::vector<int64_t> &firstRow, int64_t rows);
    void linear(const Tensor &weight, const float *x, int64_t rows, float *y);
    // Final norm + head of `rows` hidden rows starting at device row `from`, into the logits
    // buffer.
    void head(int64_t from, int64_t rows);

    std::shared_ptr<const Checkpoint> m_checkpoint;
    CudaModelOptions m_options;
    std::unique_ptr<CudaBackend> m_backend;
    std::unique_ptr<Buffers> m_buffers;
    std::vector<double> m_invFreq;
    std::vector<int64_t> m_lengths;
    MemoryEstimate m_estimate;
    int64_t m_logitRows = 0; // rows the logits buffer holds
};

} // namespace lowbit
