// SliM-LLM (Huang, Qin, Liu, Li, Liu, Liu, Benini, Magno, Zhang, Qi 2024/2025, "SliM-LLM:
// Salience-Driven Mixed-Precision Quantization for Large Language Models", Algorithms 1-2), the
// GPTQ-based variant of the reference repository (slim-llm/slim_gptq.py; the paper's SliM-LLM —
// SliM-LLM+ is the OmniQuant-based one and is not implemented here):
//   1. SBA, salience-determined bit allocation (Sec. 3.2): the salience of a group of columns is
//      sum over its weights of w^2 / [U]_jj^2 (U = chol(H^-1) upper, the OBS criterion). Groups
//      are ranked by salience; the i least salient get N-1 bits, the i most salient N+1, the rest
//      N, so the average stays exactly N. i is searched by the KL divergence between
//      softmax(x W^T) and softmax(x W_i^T) over the sampled calibration inputs x, with W_i the
//      round-to-nearest quantization under allocation i (utils/bitsearch.py's
//      activation_aware_search), over the reference's range: i < n_groups / 2 (range(1,
//      max_round), max_round = n_groups // 2), so at least one pair of groups keeps N bits. The
//      reference searches i >= 1 only; i = 0 (uniform N) is a candidate here, since the search
//      can only gain from it and with two or three groups (64-wide rows in groups of 32) the
//      reference's range is empty. Option sba_squared_error ranks the candidates by
//      ||x W^T - x W_i^T||^2 instead (what the GPTQ sweep then minimizes).
//   2. SQC, salience-weighted quantizer calibration (Sec. 3.3): per (row, group) the asymmetric
//      min-max range [xmin, xmax] is scaled by p in {1} u (1, 1 + tau] u [1 - tau, 1) (tau 0.1,
//      50 steps each side) and the p minimizing
//          sum_nonsalient |q - w|^2.4 + lambda * sum_salient |q - w|^2.4
//      is kept, salient elements being those whose salience w^2 / [U]_jj^2 lies more than two
//      standard deviations above the group's mean (utils/salient_mask.py). lambda defaults to 1
//      as in the reference's run.py (--lambda_salience), which makes the search unweighted;
//      method option "lambda" weights it.
//   3. GPTQ's sweep (engine/quant/obs_sweep.h) with the lazy-update block equal to the group
//      (the reference's blocksize = groupsize), each group's quantizer fitted when the sweep
//      reaches it; option gptq=false quantizes every group to nearest instead (plain SQC + SBA).
// 1-bit groups (N = 2) are binarized, mu + alpha * sign(w - mu) (engine/quant/binarize.h), as the
// reference's 1-bit quantizer.
//
// Tensor layout (QuantizedTensor, method "slim-llm"): bits = N, groupBits = each group's width,
// asymmetric grid codes w = scale * (code - zero) (binary groups: codes 0/1, scale 2 alpha,
// zero 1/2 - mu / (2 alpha)). Zeros are charged N bits each (the widths average N); a binary
// group's zero is a float, so extra "binary_means" (F32 [rows, binary groups], its mu) charges
// the 16 - N bits more that an FP16 mean costs. Plain QuantizedTensor::dequantize applies.
#pragma once

#include "quant/calibration.h"
#include "quant/quantizer.h"

#include <nlohmann/json.hpp>

#include <span>
#include <stop_token>

namespace lowbit {

struct SlimLlmOptions {
    int bits = 2; // N, 2..7
    int64_t groupSize = 128;
    bool gptq = true;             // GPTQ sweep; false: round to nearest with SQC
    bool sba = true;              // false: every group N bits (SQC alone, the paper's ablation)
    bool sbaSquaredError = false; // SBA criterion: squared layer-output error instead of KL
    double lambda = 1;            // SQC weight of salient elements
    double tau = 0.1;             // SQC range factor search in [1 - tau, 1 + tau]
    int tauSteps = 50;
    double norm = 2.4; // SQC error exponent
    double damp = 0.01;
    int threads = 0;
    // The job's GPU: the Cholesky factor of H^-1 is computed there; this method's own sweep stays
    // on the CPU (recorded as such). Null: the CPU.
    QuantDevice *device = nullptr;
};

// Quantizes rows x cols weights (row-major) given their input statistics: the Hessian and the
// sampled input rows (stats.sampleRows, for the allocation search). `notes`, when set, receives
// {"group_bits": [widths], "pairs", "sba_error" (the chosen allocation's criterion),
// "sba_error_uniform" (uniform N's), "loss", "damp"}.
Result<QuantizedTensor> quantizeSlimLlm(std::string name, std::span<const float> weight,
                                        int64_t rows, int64_t cols, const LinearStats &stats,
                                        const SlimLlmOptions &options, std::stop_token stop = {},
                                        nlohmann::json *notes = nullptr);

// Method "slim-llm": --bits N (2..7), --group G (0: 128, the reference's); method options
// gptq (true), sba (true), sba_squared_error (false), lambda (1), tau (0.1), tau_steps (50),
// norm (2.4), damp (0.01).
Result<std::unique_ptr<Quantizer>> makeSlimLlmQuantizer(const QuantizeOptions &options);

} // namespace lowbit
