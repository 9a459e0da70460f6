// QuIP: quantization with incoherence processing (Chee, Cai, Kuleshov, De Sa 2023, "QuIP: 2-Bit
// Quantization of Large Language Models With Guarantees"), as the reference (Cornell-RelaxML/QuIP,
// `--quant ldlq --pre_gptqH --pre_proj --qfn b`, plus the paper's diagonal rescale) does it:
//
//   1. diagonal rescale (Alg. 1 line 2-3; method.py preproc_rescale): H /= max|H|,
//      d_j = (H_jj / ||W_:j||^2)^(1/4), W <- W diag(d), H <- diag(d)^-1 H diag(d)^-1;
//   2. incoherence (Alg. 1 line 4-5; preproc_proj): H <- H n / tr(H) + 0.01 I, then
//      W <- U W V^T and H <- V H V^T with U, V seeded random orthogonal butterflies
//      (engine/quant/random_butterfly.h);
//   3. LDLQ rounding (Sec. 3, Eq. 6), run as GPTQ's column sweep on the transformed H, which QuIP
//      Thm. 6 proves equivalent (engine/quant/obs_sweep.h), after GPTQ's dead-column rule and
//      damping 0.01 mean(diag H) (pre_gptqH). The reference sweeps the last column first; after
//      the random permutations and rotations the order carries no information, so the sweep runs
//      first-to-last as GPTQ's;
//   4. the grid (quant.py): qfn "b" (default) is the incoherence-based symmetric grid of 2^b
//      levels evenly spaced over [-S, S], S = 2.4 * RMS(W) of the transformed tensor, with W
//      clamped to [-S, S] before LDLQ (Alg. 1 lines 6-7), or, with a group size (our extension:
//      the reference has no groups), S of each (row, group) when the sweep reaches the group;
//      qfn "a" is the min-max asymmetric grid of GPTQ;
//   5. inverse transforms (Alg. 2; postproc): W^ = U^T Q V diag(d)^-1.
//
// The QuantizedTensor holds the codes of Q (transformed basis, no permutation) and as extra data
// "quip_seeds" (I32 [2]: the U and V seeds, 32 bits each) and, with rescaling, "quip_rescale"
// (F32 [cols], counted as FP16). Quantizer::dequantize (and dequantizeQuip) applies step 5.
#pragma once

#include "quant/quantizer.h"

#include <nlohmann/json.hpp>

#include <span>
#include <stop_token>

namespace lowbit {

struct QuipOptions {
    int bits = 2;
    int64_t groupSize = 0;   // 0: one S per tensor (qfn b) / per row (qfn a)
    char qfn = 'b';          // 'b' (incoherent, symmetric) or 'a' (min-max)
    bool rescale = true;     // step 1
    bool incoherence = true; // step 2 (off: plain LDLQ, for ablations)
    bool rotateRows = true;  // U of step 2 (off: V only, an ablation; "quip_seeds"[0] = -1)
    double damp = 0.01;
    int64_t blockSize = 128;
    uint64_t seed = 0; // base seed; each linear derives its own U and V seeds
    int threads = 0;
    // The job's GPU: the Cholesky factor of H^-1 is computed there; this method's own sweep stays
    // on the CPU (recorded as such). Null: the CPU.
    QuantDevice *device = nullptr;
};

// The 31-bit seeds of U and V for one linear, from the base seed and the tensor's place.
std::pair<int32_t, int32_t> quipSeeds(uint64_t seed, int64_t layer, int kind);

// Quantizes rows x cols weights (row-major) given their input Hessian (cols x cols, H = 2X^TX/N).
// `seeds` are the U and V seeds. `notes`, when set, receives {"loss", "damp", "p1", "p2"}.
Result<QuantizedTensor> quantizeQuip(std::string name, std::span<const float> weight, int64_t rows,
                                     int64_t cols, const std::vector<double> &hessian,
                                     std::pair<int32_t, int32_t> seeds, const QuipOptions &options,
                                     std::stop_token stop = {}, nlohmann::json *notes = nullptr);

// W^ = U^T Q V diag(d)^-1 from a tensor made by quantizeQuip; errors name the tensor when the
// extra data is missing or mis-sized.
Result<std::vector<float>> dequantizeQuip(const QuantizedTensor &tensor, int threads = 1);

// Method "quip"; --bits 1..8 (the paper: 2-4); method options: qfn ("b" or "a"), rescale (true),
// incoherence (true), rotate_rows (true), damp (0.01), block (128), seed (0). The defaults are the
// reference's --incoh_processing (pre_gptqH, pre_rescale, pre_proj, qfn b).
Result<std::unique_ptr<Quantizer>> makeQuipQuantizer(const QuantizeOptions &options);

} // namespace lowbit
