// The quantization methods of engine/quant (quantizeCheckpoint, the method registry) behind the
// pipeline's QuantizationHooks: a MethodSpec becomes QuantizeOptions; the artifact is the
// quantized checkpoint directory (engine/quant/quantized_checkpoint.h), loaded back as a model.
#pragma once

#include "pipeline/pipeline_context.h"
#include "quant/quantizer.h"

namespace lowbit {

// Calibration: without a "calibration" object, the quantizer's defaults (128 windows) with windows
// of min(2048, the model's context) tokens, as `lowbit quantize` does; a calibration dataset must
// be a file path. Without one, <dataDir>/wikitext2/wiki.train.raw.prefix when it exists (the
// evaluators' data folder), else the quantizer's own default.
Result<QuantizeOptions> quantizeOptions(const MethodSpec &method, int threads, int64_t maxPositions,
                                        const std::filesystem::path &dataDir = {});

QuantizationHooks engineQuantizationHooks(const std::filesystem::path &dataDir = {});

} // namespace lowbit
