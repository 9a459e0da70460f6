// IR-QLoRA Information Calibration Quantization (ICQ) on NF4 (Qin et al. 2024, "Accurate
// LoRA-Finetuning Quantization of LLMs via Information Retention", arXiv 2402.05445, Sec. 3.2;
// reference implementation htqin/IR-QLoRA utils.py, search() / nf4_quant()).
//
// Each NF4 block of 64 weights gets a calibration constant τ. The block is stored as
// NF4(w - τ) (engine/quant/nf4.h: absmax codes, double-quantized absmax) and dequantized as
// ŵ = absmax · L(code) + τ̂, where τ̂ is τ after its own quantization. τ maximizes the entropy of
// the block's 16-bin code histogram (the "information" of the quantized block):
//   τ0 = median of the block (the lower median, as torch.median), a0 = max |w - τ0|;
//   candidates τ = τ0 + f·a0, f on an even grid of 2n+1 points over [-λσ, +λσ] with
//   σ = 1 / Φ⁻¹(0.9677083) (the NF4 quantile that maps to level 1.0), λ = 0.1, n = 100
//   (irlora.py defaults tau_lambda, tau_n); the first candidate of maximal entropy wins.
// τ itself is quantized like QLoRA's double quantization of the absmax: in runs of 256 blocks
// (blocksize2) in flattened (row, group) order, τ / max|τ| is coded with the 8-bit signed dynamic
// map (dynamicMap8), and max|τ| kept in fp32. Storage: +8 bits per block, +32 per 256 blocks.
//
// QuantizedTensor layout: method "icq", the NF4 layout of quantizeNf4 over the shifted weights,
// plus extra "tau_codes" (U8, rows*groups, 8 bits), "tau_scales" (F32, one per run, 32 bits) and
// "tau_block" (I32 {1}: the run length, a format constant, 0 bits).
#pragma once

#include "quant/nf4.h"

#include <span>

namespace lowbit {

struct IcqOptions {
    Nf4Options nf4;         // block 64, double-quantized absmax (QLoRA defaults)
    double tauRange = 0.1;  // λ: the search covers τ0 ± λσ·a0
    int tauSteps = 100;     // n: 2n + 1 candidates
    int64_t tauBlock = 256; // blocks per τ quantization run (reference blocksize2)
    int threads = 0;        // rows of the τ search in parallel; 0: every hardware thread
};

// σ of the τ grid: 1 / Φ⁻¹(0.9677083) (utils.py `sigma`).
inline constexpr double kIcqSigma = 0.5410871966190547;

// NF4 of (w - τ[block]) with τ given per (row, group) block (rows * groups values, row-major),
// τ quantized and stored as described above. All-zero τ gives exactly quantizeNf4's codes and
// scales, and the same dequantized weights. Errors: size mismatch, non-finite τ or weights.
Result<QuantizedTensor> quantizeNf4Shifted(std::string name, const float *weight, int64_t rows,
                                           int64_t cols, std::span<const float> tau,
                                           const IcqOptions &options);

// The ICQ search, then quantizeNf4Shifted with the best τ of every block.
Result<QuantizedTensor> quantizeIcq(std::string name, const float *weight, int64_t rows,
                                    int64_t cols, const IcqOptions &options = {});

// rows*cols weights: NF4 dequantization (double-quantized absmax) plus the dequantized τ of each
// block. Errors (naming the tensor): missing or inconsistent τ data.
Result<std::vector<float>> dequantizeIcq(const QuantizedTensor &tensor);

// The dequantized τ̂ of every block (rows * groups); zeros when the tensor has no τ data.
Result<std::vector<float>> icqTau(const QuantizedTensor &tensor);

// Shannon entropy in bits of the histogram of `codes` (values 0..15), the ICQ objective.
double codeEntropyBits(std::span<const uint8_t> codes);
// Mean over the (row, group) blocks of a 4-bit tensor of codeEntropyBits (at most 4 bits):
// the figure to compare ICQ against plain NF4 on the same weights.
double meanBlockCodeEntropyBits(const QuantizedTensor &tensor);

// Method "icq": --bits 4; --group sets the NF4 block (default 64); method options: double_quant
// (true), dq_block (256), tau_range (0.1), tau_steps (100), tau_block (256).
Result<std::unique_ptr<Quantizer>> makeIcqQuantizer(const QuantizeOptions &options);

} // namespace lowbit
