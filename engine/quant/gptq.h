// GPTQ (Frantar, Ashkboos, Hoefler, Alistarh 2022, "GPTQ: Accurate Post-Training Quantization for
// Generative Pre-trained Transformers", Algorithm 1), as gptq.py's fasterquant does it: dead
// columns zeroed, damping 0.01 * mean(diag H), optional act-order (columns by decreasing H_jj),
// column sweep in blocks of 128 with lazy batch updates (engine/quant/obs_sweep.h), min-max grid
// (engine/quant/minmax_grid.h) of a group found from the weights as updated so far when the
// sweep reaches the group's first column. Per-channel runs use the sweep's LDL form (the same
// rounding with one Cholesky of H instead of chol(H^-1): half the factorization flops).
#pragma once

#include "quant/calibration.h"
#include "quant/obs_sweep.h"
#include "quant/quantizer.h"

#include <nlohmann/json.hpp>

#include <span>
#include <stop_token>

namespace lowbit {

struct GptqOptions {
    int bits = 4;
    int64_t groupSize = 0; // 0: per-channel
    bool symmetric = false;
    double damp = 0.01; // percdamp
    int64_t blockSize = 128;
    bool actOrder = false;
    int threads = 0;
    // The job's GPU: H^-1's factor and the sweep run there (cudaGptqSweep; blocks above 128
    // columns keep the CPU sweep, recorded as such). Null: the CPU.
    QuantDevice *device = nullptr;
};

// Quantizes rows x cols weights (row-major) given their input Hessian (cols x cols). `notes`, when
// set, receives {"loss", "damp"}.
Result<QuantizedTensor> quantizeGptq(std::string name, std::span<const float> weight, int64_t rows,
                                     int64_t cols, const std::vector<double> &hessian,
                                     const GptqOptions &options, std::stop_token stop = {},
                                     nlohmann::json *notes = nullptr);

// The same with H already prepared (damped, permuted, factored; either form of obs_sweep.h):
// q/k/v and gate/up share one.
Result<QuantizedTensor> quantizeGptq(std::string name, std::span<const float> weight, int64_t rows,
                                     int64_t cols, const PreparedHessian &prepared,
                                     const GptqOptions &options, std::stop_token stop = {},
                                     nlohmann::json *notes = nullptr);

// Method "gptq"; method options: damp (0.01), block (128), act_order (false).
Result<std::unique_ptr<Quantizer>> makeGptqQuantizer(const QuantizeOptions &options);

} // namespace lowbit
