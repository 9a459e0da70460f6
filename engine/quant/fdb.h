// Storage of DB-LLM Flexible Dual Binarization (Chen et al. 2024, arXiv 2402.11960, Sec. 3.2):
// per (row, group) ŵ = α1·b1 + α2·b2 with binaries b ∈ {0, 1}, and its post-training
// initialization, the 2-bit asymmetric min-max RTN grid written as two binary planes (see
// engine/train/dual_binary.h for why that grid is FDB exactly, and for the training).
//
// QuantizedTensor layout: method "fdb", bits 2, code c = b1 + 2·b2 (so a kernel reads the two
// planes as the two bits), scales/zeros unused (1 / 0, 0 bits), extra "fdb_alpha" (F32
// {rows, groups, 2}: α1, α2 of each group, stored as fp16: 16 bits each). Bits per weight:
// 2 + 32 / groupSize.
#pragma once

#include "quant/quantizer.h"

#include <span>

namespace lowbit {

// RTN 2-bit asymmetric min-max (minmax_grid.h) of every (row, group), as FDB planes and scales;
// dequantizeFdb gives exactly the RTN 2-bit weights. groupSize <= 0 or >= cols: per row.
Result<QuantizedTensor> quantizeFdb(std::string name, const float *weight, int64_t rows,
                                    int64_t cols, int64_t groupSize);

// Packs planes b1, b2 (rows*cols values in {0, 1}) and alpha (rows*groups*2: α1, α2 per group).
Result<QuantizedTensor> packFdb(std::string name, int64_t rows, int64_t cols, int64_t groupSize,
                                std::span<const uint8_t> b1, std::span<const uint8_t> b2,
                                std::span<const float> alpha);

// rows*cols weights α1·b1 + α2·b2. Errors (naming the tensor): missing or mis-sized alpha.
Result<std::vector<float>> dequantizeFdb(const QuantizedTensor &tensor);

// Method "fdb": --bits 2; --group (default 64); no method options. As a PTQ method it is RTN
// 2-bit in dual-binary form; `lowbit finetune --method dbllm` trains it.
Result<std::unique_ptr<Quantizer>> makeFdbQuantizer(const QuantizeOptions &options);

} // namespace lowbit
