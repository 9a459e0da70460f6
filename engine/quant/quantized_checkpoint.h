// The quantized checkpoint directory: a Hugging Face layout that every command loads as MODEL,
// plus the packed form and the quantization record.
//
//   config.json                  copied from a HF source, else derived from the ModelConfig
//   model.safetensors            every weight in its source dtype; quantized linears hold their
//                                dequantized ("fake quant") values, as the study evaluates
//   tokenizer.json, tokenizer_config.json, generation_config.json, chat_template.jinja
//                                copied when the source is a HF directory
//   lowbit_vocab.json            for GGUF / llama2.c sources: the source vocabulary (VocabExport
//                                as JSON, engine/tokenizer/vocab_json.h); the HF loader uses it
//                                when there is no tokenizer.json
//   quantized.safetensors        per quantized linear NAME (without ".weight"): NAME.qcodes (U8
//                                bit stream), NAME.scales, NAME.zeros (F32 [rows, groups]),
//                                optional NAME.perm (I32), NAME.group_bits (U8), NAME.codebook
//                                (F32), NAME.extra.KEY (typed); "__metadata__" holds
//                                "lowbit.quantized" = JSON {NAME: {rows, cols, bits, group_size,
//                                symmetric, method, scale_bits, zero_bits, codebook_bits,
//                                extra_bits: {KEY: bits}}}
//   quantization_config.json     QuantizeReport::toJson(): method, bits, group, symmetric,
//                                calibration, bits/weight, per-linear errors, warnings
#pragma once

#include "core/result.h"
#include "model/checkpoint.h"
#include "quant/quantize.h"
#include "quant/quantized_tensor.h"

#include <filesystem>
#include <vector>

namespace lowbit {

// Writes the directory described above. `model` holds the fake-quant weights (quantizeModel's
// result), `source` is where config and tokenizer files come from.
Status writeQuantizedCheckpoint(const std::filesystem::path &dir, const Checkpoint &source,
                                const Checkpoint &model,
                                const std::vector<QuantizedTensor> &tensors,
                                const QuantizeReport &report);

// The packed tensors of quantized.safetensors, each validated (sizes, widths, permutation).
Result<std::vector<QuantizedTensor>> readQuantizedTensors(const std::filesystem::path &file);

// Loads `dir` as a HF checkpoint and replaces every quantized linear by the dequantization of its
// packed form (by the method that made it), converted to the stored dtype: the checkpoint as
// rebuilt from codes alone, without re-quantizing.
Result<Checkpoint> loadQuantizedCheckpoint(const std::filesystem::path &dir,
                                           const LoadOptions &options = {});

} // namespace lowbit
