// BiLLM (Huang, Liu, Qin, Li, Zhang, Liu, Magno, Qi 2024, "BiLLM: Pushing the Limit of
// Post-Training Quantization for LLMs", Algorithm 1), as the reference bigptq.py / utils/ do it,
// per block of beta = 128 columns:
//   1. structural salience: columns ranked by sum_rows s_ij with s = w^2 / [U]_jj^2 (Eq. 5, the
//      OBS criterion; U = chol(H^-1) upper; the reference's --salient_metric hessian) or |w|;
//      the number of salient columns k in 1..49 (the reference's up_lim 50) minimizing
//      ||W_b - (R2(salient) + R2(rest))||^2, R2 the order-2 residual binarization (Eq. 6-8);
//   2. salient columns: residual binarization B1 + B2 per row (engine/quant/binarize.h);
//   3. the other weights split by a magnitude threshold p searched over the 81 quantiles
//      0.10, 0.11, ..., 0.90 of |W_b| with the salient columns zeroed (Eq. 9-10, "bell-shaped
//      splitting"): concentrated |w| < p and sparse |w| >= p, each binarized per row;
//   4. block-wise OBC (Algorithm 1, last lines): E = (W_b - B_b) / diag(U_bb), then
//      W[:, after b] -= E U[b, after b]; no updates inside the block, as paper and reference.
// Where the reference, with --salient_metric hessian, also measures the search errors on s and
// splits on |s|, this follows the paper: the errors are those of W and the split is on |w|.
//
// Bits. The paper counts ~1.08-1.1 bits (one sign per weight plus the second plane of the
// salient columns). What must be stored is more, and bitsPerWeight counts all of it:
// Tensor layout (QuantizedTensor, method "billm", groupSize = beta): 1-bit codes (the first sign
// of every weight, levels kSignLevels), scale/zero per (row, block) = the concentrated binarizer
// (zeroBits 16), extra:
//   salient_columns U8  [cols]                     1 bit: structural salient-column map
//   residual_signs  U8  [rows, salient columns]    1 bit: the second plane B2
//   sparse_mask     U8  [rows, cols - salient]     1 bit: concentrated (0) or sparse (1)
//   params          F32 [rows, blocks, 6]          16 bits: alpha1, mu1, alpha2, mu2 (salient),
//                                                  alpha, mu (sparse)
// The per-weight group map (sparse_mask) alone costs a bit for every non-salient weight: the
// format the paper describes needs it to tell the two non-salient groups apart.
#pragma once

#include "quant/quantizer.h"

#include <nlohmann/json.hpp>

#include <span>
#include <stop_token>

namespace lowbit {

struct BillmOptions {
    bool hessianSalience = true;    // Eq. 5; false: magnitude
    int64_t blockSize = 128;        // beta
    int64_t maxSalientColumns = 50; // the search tries 1 .. this - 1 columns per block
    double damp = 0.01;
    int threads = 0;
    // The job's GPU: the Cholesky factor of H^-1 is computed there; this method's own sweep stays
    // on the CPU (recorded as such). Null: the CPU.
    QuantDevice *device = nullptr;
};

// Quantizes rows x cols weights (row-major) given their input Hessian (cols x cols). `notes`, when
// set, receives {"salient_columns", "nominal_bits", "loss", "damp"}; nominal_bits is the paper's
// count, 1 + salient columns / cols.
Result<QuantizedTensor> quantizeBillm(std::string name, std::span<const float> weight, int64_t rows,
                                      int64_t cols, const std::vector<double> &hessian,
                                      const BillmOptions &options, std::stop_token stop = {},
                                      nlohmann::json *notes = nullptr);

// The weights a "billm" tensor stands for; errors name the tensor and the inconsistent extra.
Result<std::vector<float>> dequantizeBillm(const QuantizedTensor &tensor);

// Method "billm": --bits must be 1; --group, when given, is the block size (its groups are its
// blocks); method options magnitude_salience (false), block (128), max_salient_columns (50),
// damp (0.01).
Result<std::unique_ptr<Quantizer>> makeBillmQuantizer(const QuantizeOptions &options);

} // namespace lowbit
