// Export of a lowbit quantized checkpoint directory (engine/quant/quantized_checkpoint.h) as a
// Hugging Face GPTQ checkpoint, the layout transformers / vLLM / AutoGPTQ load (see
// engine/io/gptq_checkpoint.h for the packing):
//   config.json            the source's, plus "quantization_config" {quant_method "gptq", bits,
//                          group_size (-1 per channel), desc_act, sym, checkpoint_format}
//   quantize_config.json   the same object (AutoGPTQ reads this file)
//   model.safetensors      every non-quantized tensor as stored, and per quantized linear NAME:
//                          NAME.qweight, NAME.qzeros, NAME.scales, NAME.g_idx
//   tokenizer / generation files copied; lowbit_quantization_report.json = the source's
//   quantization_config.json (provenance)
// Exportable: uniform-grid tensors (RTN, GPTQ, AWQ, ...): no codebook, no per-group widths, no
// extra method data, one bit width in {2, 3, 4, 8} and one group size for the model, integer
// zeros in [0, 2^bits - 1]. Act-order permutations become g_idx (stored column j is original
// column perm[j], in group j / group_size). A zero of 0 cannot be written in AutoGPTQ's
// zero - 1 convention: such models are written as checkpoint_format "gptq_v2" (zeros as is).
// Scales are written as `scaleType` (F16 by default, as every GPTQ kernel reads them); the
// report counts scales that the conversion changed.
#pragma once

#include "core/result.h"
#include "core/tensor.h"
#include "quant/quantized_tensor.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <string>
#include <vector>

namespace lowbit {

struct GptqExportOptions {
    DType scaleType = DType::F16;
};

struct GptqExportReport {
    int64_t packedLinears = 0;
    int bits = 0;
    int64_t groupSize = 0; // -1: per channel
    bool descAct = false;
    bool symmetric = false;
    std::string checkpointFormat; // "gptq" or "gptq_v2"
    int64_t scalesChanged = 0;    // scales not exactly representable in the scale dtype
    double maxScaleRelativeChange = 0;
    std::vector<std::string> notes;

    nlohmann::json toJson() const;
};

// One linear in GPTQ layout (words as in the file). `zeroOffset`: store zero - 1.
struct GptqPackedLinear {
    int64_t rows = 0, cols = 0, groups = 0;
    std::vector<int32_t> qweight; // [ceil(cols*bits/32), rows]
    std::vector<int32_t> qzeros;  // [groups, ceil(rows*bits/32)]
    std::vector<float> scales;    // [groups, rows]
    std::vector<int32_t> gIdx;    // [cols]
};

// Why `tensor` has no GPTQ form (empty when it has one).
std::string gptqIncompatibility(const QuantizedTensor &tensor);
Result<GptqPackedLinear> packGptqLinear(const QuantizedTensor &tensor, bool zeroOffset);

Result<GptqExportReport> exportGptqCheckpoint(const std::filesystem::path &quantizedDir,
                                              const std::filesystem::path &outDir,
                                              const GptqExportOptions &options = {});

} // namespace lowbit
