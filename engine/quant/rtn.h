// RTN: round-to-nearest on the min-max grid (engine/quant/minmax_grid.h), per output channel or per
// group of input columns, symmetric or asymmetric, 1..8 bits; no calibration. The baseline of
// GPTQ (Frantar et al. 2022, "RTN" rows) and of the LLaMA3 low-bit study (arXiv 2404.14047).
#pragma once

#include "quant/quantizer.h"

namespace lowbit {

// Quantizes rows x cols weights (row-major) with the min-max grid of each (row, group).
Result<QuantizedTensor> quantizeRtn(std::string name, const float *weight, int64_t rows,
                                    int64_t cols, int bits, int64_t groupSize, bool symmetric,
                                    std::string method = "rtn");

// Method "rtn": no method options.
Result<std::unique_ptr<Quantizer>> makeRtnQuantizer(const QuantizeOptions &options);

} // namespace lowbit
