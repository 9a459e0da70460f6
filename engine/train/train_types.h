// Vocabulary of the training engine (issue 8), shared by the model-side backward pass
// (trainable_model.h), the data layer, the optimizer and the trainer. Everything is templated on
// the scalar type: double for gradient checks, float for training.
//
// Data flow of one optimizer step:
//   TrainExample batch ──TrainableModel::accumulate──▶ grads of sum(loss) in every Parameter
//   ──trainer: scale by 1/scored tokens, clip global norm──▶ AdamW ──▶ TrainableModel::afterStep
#pragma once

#include "core/result.h"

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace lowbit::train {

// A target that is not scored (the prompt part of an instruction example, padding): the
// Hugging Face / PyTorch ignore index, so that label files interoperate.
inline constexpr int32_t kIgnoreTarget = -100;

// One training sequence. targets[i] is the token position i must predict (already shifted: for
// plain language modelling targets[i] == tokens[i + 1]), or kIgnoreTarget.
struct TrainExample {
    std::vector<int32_t> tokens;
    std::vector<int32_t> targets; // same size as tokens
};

// A trainable tensor. `name` follows the PEFT state-dict layout where one exists
// ("base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight") so adapters save as-is.
template <typename Real>
struct Parameter {
    std::string name;
    std::vector<int64_t> shape;
    std::vector<Real> value;
    std::vector<Real> grad; // same size as value; backward adds to it, zeroGrad clears it
};

// Loss summed over the scored positions of a batch; the trainer divides by `scored`.
struct LossStats {
    double lossSum = 0;
    int64_t scored = 0;
};

// Scores the logits of one scored position. The default (nullptr where a LossFunction is
// optional) is cross-entropy with the target; DB-LLM's distillation supplies its own.
template <typename Real>
class LossFunction {
public:
    virtual ~LossFunction() = default;
    // logits: vocab values of position `position` of batch example `example`; writes
    // d(loss)/d(logits) into dLogits (same size) and returns the loss of this position.
    virtual double score(int64_t example, int64_t position, int32_t target,
                         std::span<const Real> logits, std::span<Real> dLogits) = 0;
};

// The base weight W {rows = out features, cols = in features} of one linear layer. Frozen for
// QLoRA / IR-QLoRA (the dequantized NF4 weight); trainable for DB-LLM (dual-binary scales).
template <typename Real>
class LinearBase {
public:
    virtual ~LinearBase() = default;
    virtual int64_t rows() const = 0;
    virtual int64_t cols() const = 0;
    // The dense weight the forward uses, rows*cols row-major, valid until refresh().
    virtual const Real *weight() const = 0;
    // Trainable parameters of the base itself; empty for a frozen base.
    virtual std::vector<Parameter<Real> *> parameters() { return {}; }
    // Receives dL/dW (rows*cols) during backward; only called when parameters() is non-empty.
    virtual void backward(const Real * /*dWeight*/) {}
    // Rebuilds weight() from the parameters after an optimizer step.
    virtual void refresh() {}
};

// LoRA adapters on the linear layers: y = x Wᵀ + scale · (x Aᵀ) Bᵀ, scale = alpha / rank
// (Hu et al. 2021; QLoRA, Dettmers et al. 2023, defaults r 64, alpha 16, all seven projections).
struct LoraOptions {
    int rank = 64;
    double alpha = 16;
    std::vector<std::string> targets = {"q_proj", "k_proj", "v_proj", "o_proj",
                                        "gate_proj", "up_proj", "down_proj"};
    // IR-QLoRA Information Elastic Connection (Qin et al. 2024): parameter-free group-mean path
    // around A and repeat path around B, each scaled by a learnable scalar initialized at 0.
    bool elasticConnection = false;
    uint64_t seed = 0; // A: Kaiming-uniform from this seed; B: zeros
};

} // namespace lowbit::train
