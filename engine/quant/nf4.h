// NF4: 4-bit NormalFloat with double quantization (Dettmers, Pagnoni, Holtzman, Zettlemoyer 2023,
// "QLoRA", Sec. 3 "4-bit NormalFloat Quantization" and "Double Quantization"), as bitsandbytes'
// quantize_4bit(quant_type="nf4", compress_statistics=True) does it:
//   - blocks of 64 weights, absmax scale c = max |w| of the block, code = the NF4 level nearest to
//     w / c (the 16 levels: 2^4 quantiles of N(0,1), asymmetric so that 0 is exact, scaled to
//     [-1, 1]);
//   - the fp32 absmax values, minus their mean, are quantized again blockwise (256 per block) to
//     8 bits with bitsandbytes' dynamic map (create_dynamic_map(signed=True)) and an fp32 absmax.
// Blocks are (row, group of 64 columns); bitsandbytes blocks the flattened tensor, which is the
// same whenever cols is a multiple of 64.
#pragma once

#include "quant/quantizer.h"

#include <array>

namespace lowbit {

// bitsandbytes' NF4 table (functional.py, get_4bit_type("nf4")), ascending; level 7 is 0.
extern const std::array<float, 16> kNf4Levels;
// bitsandbytes' create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8), ascending.
std::array<float, 256> dynamicMap8();

struct Nf4Options {
    int64_t blockSize = 64;
    bool doubleQuant = true;
    int64_t doubleQuantBlock = 256;
};

Result<QuantizedTensor> quantizeNf4(std::string name, const float *weight, int64_t rows,
                                    int64_t cols, const Nf4Options &options);
// Rebuilds the block scales from the double-quantized extra data (absmax_codes, absmax_scales,
// absmax_offset); without them the stored scales are used.
Result<std::vector<float>> dequantizeNf4(const QuantizedTensor &tensor);

// Method "nf4": --bits must be 4; --group sets the block (default 64); method options:
// double_quant (true), dq_block (256).
Result<std::unique_ptr<Quantizer>> makeNf4Quantizer(const QuantizeOptions &options);

} // namespace lowbit
