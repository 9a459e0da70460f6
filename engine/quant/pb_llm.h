// PB-LLM (Shang, Yuan, Wu, Dong 2023, "PB-LLM: Partially Binarized Large Language Models"), the
// post-training variant of Sec. 4 ("PB-GPTQ"), as the reference gptq_pb/gptq.py does it:
//   1. a fraction of salient weights is picked per column group over all rows (the reference's
//      default: one group, the whole matrix) by the OBS criterion w^2 / [U]_jj^2 (Sec. 4.1,
//      U = chol(H^-1) upper, as GPTQ's error term; the reference's --salient_metric hessian) or by
//      |w| (option);
//   2. salient weights are kept on a per-row asymmetric min-max grid of highBits (8) bits fitted
//      on the whole original row (the reference's HighQuantizer);
//   3. the other weights are binarized per (row, group): mu + alpha * sign(w - mu), mu and alpha
//      over the row's non-salient weights of the original matrix (engine/quant/binarize.h; the
//      reference averages over the whole row with salient entries as zeros — we average over the
//      weights actually binarized, PB-LLM Eq. 1's alpha = ||w||_1 / n);
//   4. GPTQ's column sweep compensates every rounding (GPTQ Alg. 1, engine/quant/obs_sweep.h),
//      with the mask and both quantizers fixed before it, as the reference.
//
// The fraction of salient weights is derived from a bit budget (the study's 2-bit and 1.7-bit
// settings) that counts what the weights themselves cost, the mask included:
//     payload = rows*cols * 1                        binary codes (every position)
//             + salient * (highBits + indexBits)     8-bit value + column index (CSR)
//             + rows * countBits                     salient weights per row (CSR row counts)
// with indexBits = ceil(log2 cols), countBits = ceil(log2(cols + 1)); salient is the largest count
// with payload <= targetBits * rows * cols. Per-row/group scales and zeros (FP16) are left out of
// the budget, as every method's nominal width leaves them out, and are counted in bitsPerWeight.
//
// Tensor layout (QuantizedTensor, method "pb-llm"): 1-bit codes with levels kSignLevels for every
// weight, scale alpha and zero -mu/alpha per (row, group) (zeroBits 16: mu is a float), extra:
//   salient_count  I32 [rows]        countBits each
//   salient_index  I32 [salient]     column of each salient weight, row by row, increasing
//   salient_codes  U8  [salient]     highBits each
//   salient_scale  F32 [rows]        16 bits (FP16)
//   salient_zero   F32 [rows]        highBits (an integer zero of the high grid)
// dequantizePbLlm overwrites the salient positions of the binary plane with their grid values.
#pragma once

#include "quant/quantizer.h"

#include <nlohmann/json.hpp>

#include <span>
#include <stop_token>

namespace lowbit {

struct PbLlmOptions {
    double targetBits = 2;       // payload bits per weight, see above (>= 1)
    double salientFraction = -1; // in [0, 1]: use it instead of deriving it from targetBits
    bool hessianSalience = true; // OBS criterion; false: magnitude
    int highBits = 8;            // 2..8
    int64_t groupSize = 0;       // 0: per row; else the binarizer's and the selection's groups
    double damp = 0.01;
    int64_t blockSize = 128;
    int threads = 0;
    // The job's GPU: the Cholesky factor of H^-1 is computed there; this method's own sweep stays
    // on the CPU (recorded as such). Null: the CPU.
    QuantDevice *device = nullptr;
};

// The payload bits of a rows x cols PB-LLM tensor with `salient` salient weights (formula above).
double pbLlmPayloadBits(int64_t rows, int64_t cols, int64_t salient, int highBits);
// The largest salient count whose payload fits targetBits per weight (0 when none fits).
int64_t pbLlmSalientCount(int64_t rows, int64_t cols, double targetBits, int highBits);

// Quantizes rows x cols weights (row-major) given their input Hessian (cols x cols). `notes`, when
// set, receives {"salient", "salient_fraction", "payload_bits", "loss", "damp"}.
Result<QuantizedTensor> quantizePbLlm(std::string name, std::span<const float> weight, int64_t rows,
                                      int64_t cols, const std::vector<double> &hessian,
                                      const PbLlmOptions &options, std::stop_token stop = {},
                                      nlohmann::json *notes = nullptr);

// The weights a "pb-llm" tensor stands for; errors name the tensor and the inconsistent extra.
Result<std::vector<float>> dequantizePbLlm(const QuantizedTensor &tensor);

// Method "pb-llm": --bits is the default target; method options target_bits (number, e.g. 1.7),
// salient_fraction, magnitude_salience (false), high_bits (8), damp (0.01), block (128).
Result<std::unique_ptr<Quantizer>> makePbLlmQuantizer(const QuantizeOptions &options);

} // namespace lowbit
