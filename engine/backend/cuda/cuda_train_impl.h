// CudaTrainModel's device implementation class, shared by its two sources:
// cuda_train_model.cpp (upload, allocation, create) and cuda_train_step.cpp (forward, backward,
// head, gradients). Internal to backend/cuda/.
#pragma once

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_train_linear.h"
#include "train/cuda_train_detail.h"
#include "train/decoder_layer.h"
#include "train/lora_linear.h"

#include <array>
#include <memory>
#include <string>
#include <vector>

namespace lowbit::train::device {

using cuda::DeviceBuffer;
using cuda::DeviceLinear;

// One layer's forward activations and backward scratch (decoder_layer.h's LayerActivations),
// maxBatchTokens rows each, shared by every layer.
struct Activations {
    float *normed1, *invRms1, *q, *k, *v, *attn, *lse, *mid, *normed2, *invRms2, *gate, *up, *act;
    std::array<float *, kProjectionCount> hidden;
    float *dAct, *dGate, *dUp, *dNormed, *dAttn, *dq, *dk, *dv, *dx, *attentionScratch;
};

// The head's buffers for headChunkRows scored rows.
struct HeadBuffers {
    float *selected, *normed, *invRms, *dNormed, *dSelected, *logits;
    void *half; // 16-bit copy of the head GEMM's input (Tensor16)
};

struct DeviceLayer {
    const float *attnNorm = nullptr, *ffnNorm = nullptr;
    std::array<DeviceLinear, kProjectionCount> linears;
};

class CudaTrainModelImpl final : public CudaTrainModel {
public:
    ~CudaTrainModelImpl() override {
        if (m_stream)
            cudaStreamSynchronize(m_stream); // nothing queued may outlive its buffers
        m_buffers.clear();
        m_starts.reset();
        if (m_blas)
            cublasDestroy(m_blas);
        if (m_stream)
            cudaStreamDestroy(m_stream);
    }

    Status init(const Checkpoint &checkpoint, const LoraOptions &lora,
                const CudaTrainOptions &options);

    const ModelConfig &config() const override { return m_config; }
    std::string deviceName() const override { return m_deviceName; }
    std::vector<Parameter<float> *> parameters() override { return m_params; }
    void zeroGrad() override {
        for (Parameter<float> *p : m_params)
            std::fill(p->grad.begin(), p->grad.end(), 0.0f);
    }
    Result<LossStats> accumulate(std::span<const TrainExample> batch) override {
        return run(batch, m_loss, true);
    }
    // Nothing to do: the next call compares every value with what the device holds.
    void afterStep() override {}
    void setLossFunction(LossFunction<float> *loss) override { m_loss = loss; }
    Result<LossStats> evaluate(std::span<const TrainExample> batch,
                               LossFunction<float> *loss) override {
        return run(batch, loss, false);
    }
    const CudaTrainMemory &memoryEstimate() const override { return m_plan.memory; }
    uint64_t allocatedPeakBytes() const override { return m_peak; }

private:
    Status openDevice(const CudaTrainOptions &options);
    Result<void *> allocate(size_t bytes, const std::string &what);
    Result<float *> floats(int64_t count, const std::string &what) {
        LOWBIT_TRY(void *p, allocate(size_t(std::max<int64_t>(count, 0)) * 4, what));
        return static_cast<float *>(p);
    }
    Result<const void *> upload(const void *host, size_t bytes, const std::string &what);
    Result<const void *> uploadMatrix(const Tensor &t, DType onDevice);
    Status uploadPacked(const QuantizedTensor &q, cuda::PackedView &view);
    Status buildLayer(const Checkpoint &checkpoint, const LoraOptions &lora, int64_t index);
    Status buildAdapters();
    Status allocateWork();

    Status syncParameters();
    Status uploadBatch(const detail::FlatBatch &batch);
    Status layerForward(size_t l, const float *xIn, float *xOut, int64_t n);
    Status layerBackward(size_t l, const float *xIn, int64_t n);
    Status headGemm(bool backward, int64_t m, const float *in, float *out);
    Status head(const detail::FlatBatch &batch, const float *last, LossFunction<float> *loss,
                bool backward, double &total);
    Status addGradients();
    Result<LossStats> run(std::span<const TrainExample> batch, LossFunction<float> *loss,
                          bool backward);

    ModelConfig m_config;
    CudaTrainOptions m_options;
    std::string m_deviceName;
    int m_device = 0;
    cudaStream_t m_stream = nullptr;
    cublasHandle_t m_blas = nullptr;
    detail::TrainPlan m_plan;
    std::vector<DeviceBuffer> m_buffers;
    uint64_t m_allocated = 0, m_peak = 0;
    std::vector<double> m_invFreq;
    LossFunction<float> *m_loss = nullptr;

    const void *m_embedding = nullptr, *m_output = nullptr;
    DType m_embeddingType = DType::F32, m_outputType = DType::F32;
    const float *m_finalNorm = nullptr;
    std::vector<DeviceLayer> m_layers;

    // Adapters: host parameters (LoraLinear<float> owns them), their offsets in the device value
    // and grad buffers, and the host mirror of the device values.
    std::vector<std::unique_ptr<LoraLinear<float>>> m_hostLinears;
    std::vector<Parameter<float> *> m_params;
    std::vector<int64_t> m_offsets;
    std::vector<float> m_mirror, m_gradStage;
    float *m_values = nullptr, *m_grads = nullptr;
    bool m_uploaded = false;

    std::vector<float *> m_inputs; // layer inputs (activation checkpoints), layers + 1
    Activations m_act{};
    HeadBuffers m_head{};
    cuda::LinearScratch m_scratch;
    int32_t *m_ids = nullptr, *m_targets = nullptr;
    int64_t *m_rowIndex = nullptr;
    float *m_cosSin = nullptr;
    double *m_rowLoss = nullptr;
    DeviceBuffer m_starts; // grows with the number of examples
    int64_t m_sequences = 0;
    std::vector<float> m_hostLogits, m_hostDLogits;
    std::vector<double> m_hostLoss;
};

} // namespace lowbit::train::device
