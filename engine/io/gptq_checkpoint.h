// Hugging Face GPTQ and AWQ checkpoints: the int32-packed linear layouts that AutoGPTQ /
// GPTQModel / transformers / vLLM (GPTQ) and AutoAWQ (AWQ "gemm") write, read here by dequantizing
// every packed linear to the compute dtype, so the engine evaluates them like any HF model.
//
// GPTQ (AutoGPTQ's QuantLinear.pack, transformers' GPTQ integration), for a linear {out, in}:
//   NAME.qweight  I32 [ceil(in*bits/32), out]: column o is one LSB-first bit stream over its words;
//                 input k's code sits at bits [bits*k, bits*k + bits). For 2/4/8 bits this is
//                 32/bits codes per word; for 3 bits 32 codes span 3 words, codes 10 and 21
//                 crossing word boundaries.
//   NAME.qzeros   I32 [groups, ceil(out*bits/32)]: row g is one bit stream, output o at bits*o.
//                 checkpoint_format "gptq" (AutoGPTQ, the default) stores zero - 1 (the kernels add
//                 1 back after masking, so a stored 2^bits-1 means 2^bits); "gptq_v2" (GPTQModel)
//                 stores the zero itself.
//   NAME.scales   F16/BF16/F32 [groups, out].
//   NAME.g_idx    I32 [in]: the group of input k (act-order: not k / group_size). Optional:
//                 absent means k / group_size.
//   w[o, k] = scales[g, o] * (code[k, o] - zero[g, o]) with g = g_idx[k], computed in float32.
// AWQ GEMM (AutoAWQ's WQLinear_GEMM), 4 bits only:
//   NAME.qweight  I32 [in, out/8]: word c of row k holds outputs 8c..8c+7, nibble i holding output
//                 8c + kAwqOrder[i] with kAwqOrder = {0, 2, 4, 6, 1, 3, 5, 7};
//   NAME.qzeros   I32 [groups, out/8], the same order; zeros are stored as is;
//   NAME.scales   [groups, out]; group of input k is k / group_size.
// Configuration: config.json "quantization_config" {quant_method "gptq"|"awq", bits, group_size
// (-1: per channel), desc_act, sym, checkpoint_format, version}, or AutoGPTQ's
// quantize_config.json, or AutoAWQ's quant_config.json {w_bit, q_group_size, zero_point, version}.
// In-features whose bit count is not a multiple of 32 are accepted with a zero-padded last word
// (what lowbit's exporter writes for such shapes; AutoGPTQ's kernels require in % 32 == 0).
#pragma once

#include "core/result.h"
#include "core/tensor.h"

#include <nlohmann/json.hpp>

#include <array>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace lowbit {

enum class PackedQuantMethod { Gptq, Awq };

struct PackedQuantConfig {
    PackedQuantMethod method = PackedQuantMethod::Gptq;
    int bits = 4;
    int64_t groupSize = 128; // 0: per channel (group_size -1)
    bool descAct = false;
    bool symmetric = true;
    bool zeroOffset = true; // GPTQ checkpoint_format "gptq": qzeros hold zero - 1
    std::string source;     // the file the configuration came from
};

inline constexpr std::array<int, 8> kAwqOrder = {0, 2, 4, 6, 1, 3, 5, 7};

// The packed-quantization configuration of the HF directory `dir` whose config.json parsed as
// `config`; nullopt when the checkpoint is not GPTQ/AWQ-packed. Unsupported variants (AWQ gemv,
// marlin, bits outside 2/3/4/8) are errors naming the file.
Result<std::optional<PackedQuantConfig>> detectPackedQuantization(const std::filesystem::path &dir,
                                                                  const nlohmann::json &config);

// One packed linear's tensors as read from the file (scales already converted to float).
struct PackedLinear {
    std::string name; // NAME, without the ".qweight" suffix
    int64_t rows = 0; // out features
    int64_t cols = 0; // in features
    int64_t groups = 0;
    std::vector<int32_t> qweight, qzeros, gIdx; // gIdx empty: k / groupSize
    std::vector<float> scales;                  // groups * rows, row-major [groups, out]
};

// The rows*cols float32 weights {out, in} of a GPTQ / AWQ linear; errors name the tensor and the
// inconsistent size or code.
Result<std::vector<float>> dequantizeGptqLinear(const PackedQuantConfig &config,
                                                const PackedLinear &linear);
Result<std::vector<float>> dequantizeAwqLinear(const PackedQuantConfig &config,
                                               const PackedLinear &linear);

// Bit streams of int32 words, LSB first (shared with the exporter).
uint32_t readPackedCode(std::span<const int32_t> words, int64_t stride, int64_t index, int bits);
void writePackedCode(std::span<int32_t> words, int64_t stride, int64_t index, int bits,
                     uint32_t code);

struct PackedWeights {
    std::map<std::string, Tensor> tensors; // NAME.weight for every packed linear, plus the rest
    std::vector<std::string> files;
    std::string source;
    int64_t packedLinears = 0;
};

// Every tensor of the directory's model.safetensors (or shards of model.safetensors.index.json);
// each packed linear becomes NAME.weight, dequantized and converted to `computeType`.
Result<PackedWeights> loadPackedQuantizedWeights(const std::filesystem::path &dir,
                                                 const PackedQuantConfig &config,
                                                 DType computeType);

} // namespace lowbit
