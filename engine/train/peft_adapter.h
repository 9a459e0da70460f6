// LoRA adapters in the Hugging Face PEFT layout, and the merged model for evaluation.
//
//   DIR/adapter_model.safetensors   the adapter tensors under their PEFT state-dict names
//                                   ("base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight"
//                                   {r, in}, "...lora_B.weight" {out, r}; IR-QLoRA's IEC scalars
//                                   as "...lora_default_A_scale" / "..._B_scale" {1}, the names of
//                                   its reference code), F32
//   DIR/adapter_config.json         PEFT LoraConfig: peft_type "LORA", task_type "CAUSAL_LM", r,
//                                   lora_alpha, lora_dropout 0, target_modules, bias "none",
//                                   fan_in_fan_out false, base_model_name_or_path, plus
//                                   "lowbit": {method, elastic_connection}
// peft.PeftModel.from_pretrained reads this pair (IEC scalars are unknown keys to it: plain PEFT
// loads the A/B of an IR-QLoRA adapter but not its elastic paths — use the merged model there).
//
// The merged model: a Hugging Face directory (written by writeQuantizedCheckpoint with no packed
// tensors, so loadCheckpoint reads it as any HF model) whose targeted linears hold
// W + s·BA (TrainableModel::mergedWeight), converted to the source tensor's dtype.
#pragma once

#include "core/result.h"
#include "model/checkpoint.h"
#include "train/train_types.h"
#include "train/trainable_model.h"

#include <filesystem>
#include <map>
#include <span>
#include <string>

namespace lowbit::train {

inline constexpr const char *kAdapterWeightsFile = "adapter_model.safetensors";
inline constexpr const char *kAdapterConfigFile = "adapter_config.json";

struct AdapterInfo {
    LoraOptions lora;
    std::string method = "qlora"; // "qlora", "irqlora", "dbllm"
    std::string baseModel;        // base_model_name_or_path
};

// Writes both files (each to a temporary name, then renamed). Parameters that are not adapter
// tensors (a trainable base's own, DB-LLM) are written too, under their names.
Status savePeftAdapter(const std::filesystem::path &dir, std::span<Parameter<float> *const> params,
                       const AdapterInfo &info);

struct PeftAdapter {
    AdapterInfo info;
    std::map<std::string, std::vector<float>> tensors; // by name, values row-major
    std::map<std::string, std::vector<int64_t>> shapes;
};
// Errors: a missing file, a config that is not a PEFT LoRA config, non-F32/F16/BF16 tensors.
Result<PeftAdapter> loadPeftAdapter(const std::filesystem::path &dir);

// Copies the adapter's tensors into the parameters of the same name. Errors: a parameter with no
// tensor, or a shape mismatch (rank or model differ).
Status applyPeftAdapter(const PeftAdapter &adapter, std::span<Parameter<float> *const> params);

// `base` with every linear in lora.targets replaced by model.mergedWeight (in the dtype the base
// stores it), written as a HF directory into `dir`; `source` supplies config/tokenizer files.
Status writeMergedCheckpoint(const std::filesystem::path &dir, const Checkpoint &source,
                             const Checkpoint &base, const TrainableModel<float> &model,
                             const AdapterInfo &info);

} // namespace lowbit::train
