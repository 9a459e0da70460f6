// TrainableModel: the LLaMA forward pass with a hand-written backward (no autograd library; in
// the manner of llm.c), over frozen or trainable base weights plus LoRA adapters.
//
// Memory: per-layer activation checkpointing — each decoder layer's input is kept, everything
// inside a layer is recomputed during backward. Attention keeps the row log-sum-exp and
// recomputes probabilities. Logits are formed only at scored positions.
//
// Usage (trainer):
//   LOWBIT_TRY(auto model, TrainableModel<float>::create(checkpoint, lora, makeBase));
//   model->zeroGrad();
//   for (micro-batch) LOWBIT_TRY(LossStats s, model->accumulate(batch));
//   ... scale grads, clip, AdamW over model->parameters() ...; model->afterStep();
#pragma once

#include "core/result.h"
#include "model/checkpoint.h"
#include "train/train_types.h"

#include <functional>
#include <memory>
#include <span>
#include <string_view>

namespace lowbit::train {

// Builds the base of linear `proj` ("q_proj" .. "down_proj") of decoder layer `layer` from the
// checkpoint's weight. nullptr factory: a frozen dense copy of the checkpoint weight.
template <typename Real>
using LinearBaseFactory = std::function<Result<std::unique_ptr<LinearBase<Real>>>(
    int64_t layer, std::string_view proj, const Tensor &weight)>;

// What accumulate()/evaluate() refuse (shared by every trainable model, CPU or device):
// tokens/targets size mismatch, a sequence longer than the context, a token or target out of
// range. Errors name the example and the value.
Status checkTrainBatch(const ModelConfig &config, std::span<const TrainExample> batch);
// Every LoRA target is one of the seven projection names (InvalidArgument naming it otherwise).
Status checkLoraTargets(const LoraOptions &lora);

template <typename Real>
class TrainableModel {
public:
    // threads: the CPU threads of forward and backward (0: every hardware thread). BLAS is set
    // single-threaded process-wide (openblas_set_num_threads(1)), as the inference backend does.
    static Result<std::unique_ptr<TrainableModel>> create(const Checkpoint &checkpoint,
                                                          const LoraOptions &lora,
                                                          LinearBaseFactory<Real> makeBase = {},
                                                          int threads = 0);
    ~TrainableModel();

    const ModelConfig &config() const;
    // Every trainable tensor: LoRA A/B (and IEC betas), then those of trainable bases.
    std::vector<Parameter<Real> *> parameters();
    void zeroGrad();

    // Forward and backward over `batch`; adds d(sum of losses)/dθ to every parameter's grad.
    // Errors: token or target out of range, tokens/targets size mismatch, sequence longer than
    // the model's context.
    Result<LossStats> accumulate(std::span<const TrainExample> batch,
                                 LossFunction<Real> *loss = nullptr);
    // Forward only: the summed loss of the batch (evaluation, gradient checks).
    Result<LossStats> evaluate(std::span<const TrainExample> batch,
                               LossFunction<Real> *loss = nullptr);
    // Call after the optimizer changed parameter values (refreshes trainable bases).
    void afterStep();

    // LoRA merged into the base (W + scale·BA, IEC paths folded in) for layer `layer`, proj
    // `proj`, as rows*cols values: what export writes for evaluation of the merged model.
    Result<std::vector<Real>> mergedWeight(int64_t layer, std::string_view proj) const;

private:
    TrainableModel();
    struct Impl;
    std::unique_ptr<Impl> m_impl;
};

extern template class TrainableModel<float>;
extern template class TrainableModel<double>;

} // namespace lowbit::train
