// The fine-tuning methods of engine/train/finetune.h (qlora, irqlora, dbllm) as job-spec methods:
// a wrapper around the pipeline's QuantizationHooks that runs runFinetune for those names and
// hands every other method to the wrapped hooks. The artifact directory is runFinetune's OUT; the
// model a run evaluates is OUT/merged.
//
//   "method": {"name": "qlora", "bits": 4, "group_size": 64,
//              "options": {"data": "/data/alpaca.json", "steps": 10000, "batch": 16,
//                          "micro_batch": 0, "lr": 2e-4, "schedule": "constant", "warmup": 0,
//                          "rank": 64, "alpha": 16, "max_grad_norm": 0.3, "weight_decay": 0,
//                          "seed": 0, "save_every": 250, "format": "auto", "seq_len": 256,
//                          "source_len": 384, "target_len": 128, "train_on_source": false}}
//   dbllm adds "dual_group" (64), "train_latent" (true), "weighting" ("ambiguity"),
//   "strength" (1), "temperature" (1), "ce_weight" (0), "distill_sequences" (64),
//   "distill_tokens" (256), "distill_greedy" (0); without "data" it distills on text the FP model
//   writes.
// bits must be 4 (qlora, irqlora) or 2 (dbllm); group_size 0 means the default block of 64.
// An interrupted run resumes its training from OUT/checkpoint (same data order). The job's
// "device" is where the adapters train (cuda:N for qlora / irqlora; dbllm refuses a GPU).
//
// Front ends wire it as: context.quantization = withFinetuneMethods(engineQuantizationHooks(dir));
#pragma once

#include "pipeline/pipeline_context.h"
#include "train/finetune.h"

namespace lowbit {

bool isFinetuneMethod(const std::string &name);

// The FinetuneOptions of a spec's method; errors name the field ("spec.method.options.steps").
Result<train::FinetuneOptions> finetuneOptions(const MethodSpec &method, int threads);

QuantizationHooks withFinetuneMethods(QuantizationHooks hooks);

} // namespace lowbit
