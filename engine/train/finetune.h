// Fine-tuning methods end to end: quantized base -> TrainableModel with LoRA -> Trainer ->
// PEFT adapter + merged model. The entry point of `lowbit finetune`, job specs and the GUI.
//
//   qlora    base = the NF4 (double-quantized absmax, 64-blocks) dequantization of every linear
//            (engine/quant/nf4.h via quantizeModel method "nf4"), frozen; LoRA on all seven
//            projections (Dettmers et al. 2023).
//   irqlora  base = ICQ-calibrated NF4 (engine/quant/icq.h, method "icq"), frozen; LoRA with the
//            Information Elastic Connection (Qin et al. 2024).
//   dbllm    dual-binarized trainable base (train/dual_binary.h: α1·b1 + α2·b2 per 64-group from
//            RTN 2-bit, α and the latent weight trained through the STE) distilled from the FP
//            model with deviation-aware weighting (train/distillation.h; Chen et al. 2024). No
//            LoRA. Data: the --data file if given, else text the FP model writes itself
//            (generateDistillationData; DB-LLM follows LLM-QAT's data-free setting).
// Defaults are the reference scripts' (qlora.py / scripts/finetune_*.sh): r 64, alpha 16,
// dropout 0, lr 2e-4 constant, max grad norm 0.3, batch 16, 10000 steps, source/target 384/128.
//
// OUT directory:
//   adapter_model.safetensors, adapter_config.json   the adapter (train/peft_adapter.h; not dbllm)
//   merged/                                          HF checkpoint with the adapter folded in
//                                                    (dbllm: the dual-binary weights α1·b1 + α2·b2)
//   checkpoint/trainer_state.safetensors             trainer state (train/trainer.h); with
//                                                    resume, a rerun continues from it
//   finetune.json                                    options, data facts, per-step history
// Device: cpu (TrainableModel<float>), or for qlora / irqlora cuda:N (CudaTrainModel: the packed
// NF4 / ICQ tensors of the base stay packed on the GPU; the merged model is still formed on the
// CPU). dbllm trains on the CPU only (its trainable dual-binary base has no device version).
// Progress: phase "quantize" (the base), then "train" (Trainer). Cancellation as the Trainer:
// the state is saved and ErrorCode::Cancelled returned; nothing else is written.
#pragma once

#include "backend/device.h"
#include "core/progress.h"
#include "core/result.h"
#include "model/checkpoint.h"
#include "train/distillation.h"
#include "train/dual_binary.h"
#include "train/train_data.h"
#include "train/trainer.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <memory>
#include <stop_token>

namespace lowbit::train {

enum class FinetuneMethod { QLora, IrQLora, DbLlm };
Result<FinetuneMethod> parseFinetuneMethod(std::string_view name); // "qlora", "irqlora", "dbllm"
const char *finetuneMethodName(FinetuneMethod method);

struct FinetuneOptions {
    FinetuneMethod method = FinetuneMethod::QLora;
    std::filesystem::path dataPath;
    std::filesystem::path outDir;
    DataOptions data;
    LoraOptions lora;       // r 64, alpha 16, all seven projections
    TrainerOptions trainer; // 10000 steps, batch 16, 2e-4 constant, clip 0.3
    int64_t blockSize = 64; // NF4 / ICQ block
    bool writeMerged = true;
    int threads = 0; // quantization of the base; 0: every hardware thread
    DeviceSpec device; // where the adapters train (see above)
    nlohmann::json methodOptions = nlohmann::json::object(); // passed to the base quantizer
    // DB-LLM only.
    DualBinaryOptions dualBinary;   // group 64, latent weights trained
    DistillationOptions distill;    // ambiguity weighting, T 1, pure KD
    DistillDataOptions distillData; // FP-generated text when dataPath is empty
};

struct FinetuneReport {
    FinetuneMethod method = FinetuneMethod::QLora;
    DataFormat dataFormat = DataFormat::Auto;
    int64_t examples = 0;
    int64_t skippedExamples = 0;
    int64_t scoredTokens = 0;
    int64_t trainableParameters = 0;
    TrainReport train;
    std::filesystem::path adapterDir, mergedDir;
    nlohmann::json toJson() const;
};

// The method's quantized base of `source` (fake-quant weights in the source dtypes): what the
// adapters train against and what "the quantized model without fine-tuning" evaluates (dbllm:
// RTN 2-bit asymmetric at the dual-binary group size, which FDB's initialization equals).
Result<std::shared_ptr<const Checkpoint>> finetuneBase(const Checkpoint &source,
                                                       const FinetuneOptions &options,
                                                       ProgressSink &progress,
                                                       std::stop_token stop = {});

Result<FinetuneReport> runFinetune(std::shared_ptr<const Checkpoint> source,
                                   const FinetuneOptions &options, ProgressSink &progress,
                                   std::stop_token stop = {}, TrainObserver *observer = nullptr);

} // namespace lowbit::train
