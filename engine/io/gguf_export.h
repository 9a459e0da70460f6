// GGUF export of a lowbit quantized checkpoint directory (engine/quant/quantized_checkpoint.h),
// for llama.cpp. Each quantized linear is written in the nearest llama.cpp block type that its
// codes fit, encoded from the codes themselves (no re-quantization):
//   - a uniform grid (no codebook / per-group widths / extras / act-order permutation) whose
//     groups are whole 32-blocks of a row (group size a multiple of 32, or per channel with
//     cols % 32 == 0) and whose zeros are integers: the block's d is the group's scale as F16 and
//     its integer is code - zero, so the smallest of Q4_0 (code - zero in [-8, 7]), Q5_0
//     ([-16, 15]) and Q8_0 ([-128, 127]) that holds every code is exact up to the F16 scale;
//     with `compact`, asymmetric grids of at most 4 bits use Q4_1 (d = scale, m = -scale * zero,
//     both F16: an extra rounding of m, reported);
//   - anything else keeps its dequantized weights in the checkpoint's float dtype (exact,
//     reported as not quantized, with the reason).
// Other tensors (embedding, head, norms) are written as the checkpoint stores them (F32, F16 or
// BF16), so they are exact too. The report lists, per linear, the type, whether the stored
// values equal the grid with F16 scales bit for bit, and the max / RMS error against the
// quantized weights with their float32 scales.
#pragma once

#include "core/result.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace lowbit {

struct QuantizedTensor;

struct GgufExportOptions {
    bool compact = false; // Q4_1 for asymmetric grids of <= 4 bits instead of the exact Q5_0
};

struct GgufTensorExport {
    std::string name;       // Hugging Face name
    std::string type;       // "Q4_0", ..., or the float dtype when kept
    bool blocks = false;    // encoded from codes into llama.cpp blocks
    bool exactF16 = false;  // equals scale_f16 * (code - zero) for every weight
    double maxAbsError = 0; // vs scale_f32 * (code - zero)
    double rmsError = 0;
    std::string note; // why a tensor was kept as float
};

struct GgufExportReport {
    std::vector<GgufTensorExport> tensors;
    std::map<std::string, int64_t> tensorsByType;
    double maxAbsError = 0;

    nlohmann::json toJson() const;
};

// Encodes one tensor's rows (rowOrder[i]: the tensor row written as the i-th stored row) as
// `type` blocks; Unsupported when its codes do not fit. Exposed for tests.
struct GgufEncodedRows {
    std::string type;
    std::vector<std::byte> data;
};
Result<GgufEncodedRows> encodeGgufBlocks(const QuantizedTensor &tensor,
                                         const std::vector<int64_t> &rowOrder,
                                         const GgufExportOptions &options);

Result<GgufExportReport> exportGgufCheckpoint(const std::filesystem::path &quantizedDir,
                                              const std::filesystem::path &outFile,
                                              const GgufExportOptions &options = {});

} // namespace lowbit
