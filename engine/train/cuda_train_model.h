// CudaTrainModel: the device-resident twin of TrainableModel<float> (issue 8, "training on the
// GPU"): the same LLaMA forward and hand-written backward, the same LoRA / IR-QLoRA adapters, the
// same order of operations (train/trainable_model.cpp, decoder_layer.cpp, lora_linear.cpp), run on
// one CUDA device with cuBLAS GEMMs and the kernels of backend/cuda/{kernels.h,train_kernels.h}.
//
// Parameters stay on the host: parameters() are host Parameter<float> with exactly the names,
// shapes and order of TrainableModel<float> (LoRA A, B, then βA, βB with IEC, layer by layer, in
// q k v o gate up down order), so the Trainer, AdamW, trainer checkpoints and the PEFT adapter
// writer work unchanged. accumulate() uploads the values that changed since the previous call
// (compared against a host mirror of what the device holds), runs forward and backward on the
// device and ADDS the gradients into the host grads.
//
// Memory (device): the frozen base weights (packed 4-bit codes where `packed` has the tensor,
// else dense as the checkpoint stores them: 16-bit under Tensor16, widened to float32 under Fp32),
// the LoRA values and grads, per-layer activation checkpoints ((layers + 1) × maxBatchTokens ×
// hidden floats: each layer's input is kept and the inside recomputed during backward), one
// layer's activations and backward scratch, one dequantized weight at a time, and one chunk of
// logits (headChunkRows × vocab: never rows × vocab for the whole batch). Everything is allocated
// by create(), after estimateCudaTrainMemory() was checked against the free memory (OutOfMemory
// naming needed vs free), so a step allocates nothing but the sequence-start table when a batch
// has more examples than any before, and the IEC kernels' stream-ordered partial sums.
//
// Precision: activations, LoRA and every reduction are float32. The base-weight and head GEMMs
// follow `precision`: Fp32 (exact float32 products: for checking against the CPU) or Tensor16
// (the base weight dequantized to bf16, the GEMM input rounded to bf16, float32 accumulation on
// tensor cores — what QLoRA itself runs: bitsandbytes' compute_dtype bfloat16 — and ~10× the
// float32 GEMM rate; the LoRA path stays float32, so the adapter gradients carry no extra rounding
// beyond the bf16 rounding of the frozen path's inputs).
//
// Not supported on the device (Unsupported, with the reason): trainable or custom linear bases
// (DB-LLM's dual binary: train it on the CPU), packed tensors with an act-order permutation or
// whose dequantization is not the grid value (methods other than rtn, gptq, nf4, icq).
//
// Threads: one host thread at a time; the model makes its device current (cudaSetDevice) on every
// call. Built without CUDA, or without a device, create() returns Unsupported saying why.
#pragma once

#include "backend/cuda/cuda_backend.h"
#include "core/result.h"
#include "model/checkpoint.h"
#include "train/trainable_model.h"
#include "train/trainer.h"

#include <map>
#include <memory>
#include <span>
#include <string>

namespace lowbit {
struct QuantizedTensor;
}

namespace lowbit::train {

struct CudaTrainOptions {
    int device = 0; // CUDA ordinal (DeviceSpec::index)
    GemmPrecision precision = GemmPrecision::Tensor16;
    // Packed frozen bases keyed by checkpoint tensor name
    // ("model.layers.0.self_attn.q_proj.weight"), e.g. the NF4 tensors of quantizeModel; linears
    // not in the map use the checkpoint's dense weight. Read during create() only.
    const std::map<std::string, QuantizedTensor> *packed = nullptr;
    int64_t maxBatchTokens = 8192; // rows of one accumulate()/evaluate() (16 × 512)
    int64_t headChunkRows = 256;   // scored rows whose logits exist at once
    // Must be empty: a base factory means trainable or custom bases, which the device lacks.
    LinearBaseFactory<float> makeBase;
};

// Device bytes create() allocates. cuBLAS and the CUDA context come on top: create() asks for
// total() + 256 MiB to be within 95% of the free memory.
struct CudaTrainMemory {
    uint64_t weightBytes = 0;     // embedding, head, norms, frozen linear bases (packed or dense)
    uint64_t adapterBytes = 0;    // LoRA values + grads
    uint64_t checkpointBytes = 0; // (layers + 1) × maxBatchTokens × hidden floats
    uint64_t layerBytes = 0;      // one layer's activations, backward scratch, dequantized weight
    uint64_t headBytes = 0;       // one chunk of logits and the head's scratch
    uint64_t total() const {
        return weightBytes + adapterBytes + checkpointBytes + layerBytes + headBytes;
    }
};

// What create() will allocate for this model, adapters and options (host-side arithmetic, every
// build). Errors as create(): bad options, unknown LoRA targets, packed tensors of the wrong shape.
Result<CudaTrainMemory> estimateCudaTrainMemory(const Checkpoint &checkpoint,
                                                const LoraOptions &lora,
                                                const CudaTrainOptions &options);

class CudaTrainModel : public TrainTarget {
public:
    // Uploads the model and allocates every buffer. The checkpoint and `options.packed` are read
    // here only. Errors: Unsupported (no CUDA in this build, no device, an unsupported base),
    // OutOfMemory ("<device>: training needs X (...) but only Y is free"), InvalidArgument.
    static Result<std::unique_ptr<CudaTrainModel>> create(const Checkpoint &checkpoint,
                                                          const LoraOptions &lora,
                                                          const CudaTrainOptions &options = {});

    virtual const ModelConfig &config() const = 0;
    virtual std::string deviceName() const = 0; // "cuda:0 (NVIDIA H100 80GB HBM3)"

    // TrainTarget. accumulate() uses the loss set by setLossFunction (default: cross-entropy).
    // Errors as TrainableModel::accumulate, plus a batch over maxBatchTokens rows.
    std::vector<Parameter<float> *> parameters() override = 0;
    void zeroGrad() override = 0;
    Result<LossStats> accumulate(std::span<const TrainExample> batch) override = 0;
    void afterStep() override = 0;

    // A custom loss (DB-LLM's distillation): each chunk of logits is downloaded, scored on the
    // host and its dLogits uploaded. nullptr: cross-entropy on the device. Not owned.
    virtual void setLossFunction(LossFunction<float> *loss) = 0;
    // Forward only: the summed loss of the batch (nullptr: cross-entropy).
    virtual Result<LossStats> evaluate(std::span<const TrainExample> batch,
                                       LossFunction<float> *loss = nullptr) = 0;

    virtual const CudaTrainMemory &memoryEstimate() const = 0;
    // The largest sum of this model's live device allocations so far (bytes).
    virtual uint64_t allocatedPeakBytes() const = 0;
};

} // namespace lowbit::train
