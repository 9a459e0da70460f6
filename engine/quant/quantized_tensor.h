// QuantizedTensor: one linear weight {rows, cols} in a post-training quantized form, shared by
// every method (RTN, GPTQ, NF4, AWQ, SmoothQuant, QuIP, PB-LLM, BiLLM, SliM-LLM).
//
// Layout
//   - Columns are split into groups of `groupSize` consecutive *stored* columns (the last group may
//     be shorter); groupSize == cols is per-channel (one group per row).
//   - Stored column j holds original column permutation[j] (GPTQ act-order); no permutation means
//     stored order == original order.
//   - Every weight has an integer code of `bits` bits (1..8), or of groupBits[g] bits in column
//     group g when a method mixes precisions per group (SliM-LLM). Codes are packed into one
//     LSB-first bit stream, row-major over stored columns, with no padding between rows.
//   - A code c stands for the level L(c) = codebook[c] when a codebook is set (NF4's 16 normal
//     quantiles, a binarizer's {-1, +1}), else L(c) = c. The weight is
//         w = scale[r, g] * (L(c) - zero[r, g])
//     (GPTQ's quantize(): scale * (q - zero)); scales and zeros are float, one per (row, group).
//   - `extra` carries named method data (salient masks, second binary planes, rotation seeds,
//     folded smoothing factors). dequantize() ignores it: methods whose weights are not the plain
//     grid value (a residual plane added, an inverse rotation applied) override
//     Quantizer::dequantize (engine/quant/quantizer.h).
//
// Bits per weight count everything a deployed kernel would have to store: codes, plus scaleBits per
// scale (16: FP16, as GPTQ/AWQ pack them), zeroBits per zero (the code width for asymmetric
// quantization, 0 when the zero is a constant), plus every extra tensor at its declared width,
// plus codebookBits per codebook entry (0 for a method-wide constant table such as NF4's), divided
// by rows * cols.
//
// A QuantizedTensor owns its data, is a plain value, and is not thread-safe for writes.
#pragma once

#include "core/result.h"
#include "core/tensor.h"

#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

namespace lowbit {

// A small typed array of method data. `storedBitsPerElement` is what one element costs in the
// bits/weight accounting (a 0/1 mask a kernel would pack: 1; an FP16 factor: 16; a seed: 0 when
// it is per-model rather than per-weight and the method says so).
struct QuantExtra {
    enum class Type : uint8_t { U8, I32, F32 };
    Type type = Type::F32;
    std::vector<int64_t> shape;
    std::vector<std::byte> data; // little-endian elements, numel() * elementBytes()
    double storedBitsPerElement = 32;

    int64_t numel() const;
    size_t elementBytes() const { return type == Type::U8 ? 1 : 4; }

    static QuantExtra fromU8(std::vector<int64_t> shape, std::span<const uint8_t> values,
                             double storedBits = 8);
    static QuantExtra fromI32(std::vector<int64_t> shape, std::span<const int32_t> values,
                              double storedBits = 32);
    static QuantExtra fromF32(std::vector<int64_t> shape, std::span<const float> values,
                              double storedBits = 32);
    // Typed views; empty when the type does not match.
    std::span<const uint8_t> u8() const;
    std::span<const int32_t> i32() const;
    std::span<const float> f32() const;
};

const char *quantExtraTypeName(QuantExtra::Type type); // "U8", "I32", "F32" (safetensors names)

struct QuantizedTensor {
    std::string name;   // checkpoint tensor name, "model.layers.0.self_attn.q_proj.weight"
    std::string method; // registry name of the method that made it ("rtn", "gptq", "nf4", ...)
    int64_t rows = 0;
    int64_t cols = 0;
    int bits = 4;                     // code width, 1..8 (the nominal one when groupBits is set)
    int64_t groupSize = 0;            // stored columns per group; cols: per-channel
    bool symmetric = false;           // recorded for the config; the zeros carry the arithmetic
    std::vector<uint8_t> groupBits;   // empty, or one width (1..8) per column group
    std::vector<float> codebook;      // empty, or the level of each code (size >= 2^maxBits)
    std::vector<uint8_t> packed;      // the code bit stream
    std::vector<float> scales;        // rows * groups(), row-major
    std::vector<float> zeros;         // rows * groups(), in level units
    std::vector<int32_t> permutation; // empty, or cols entries: stored col j = original perm[j]
    std::map<std::string, QuantExtra> extra;
    int scaleBits = 16;   // storage cost of one scale
    int zeroBits = 0;     // storage cost of one zero (asymmetric: usually `bits`)
    int codebookBits = 0; // storage cost of one codebook entry (per-tensor tables)

    // An empty tensor of this shape and layout: codes all 0, scales 1, zeros 0. groupSize <= 0
    // or >= cols means per-channel. Errors on bits outside 1..8 or a non-positive shape.
    static Result<QuantizedTensor> create(std::string name, std::string method, int64_t rows,
                                          int64_t cols, int bits, int64_t groupSize,
                                          bool symmetric);

    int64_t groups() const { return groupSize > 0 ? (cols + groupSize - 1) / groupSize : 0; }
    int64_t groupOf(int64_t storedCol) const { return storedCol / groupSize; }
    int groupWidth(int64_t group) const {
        return groupBits.empty() ? bits : groupBits[size_t(group)];
    }
    int maxBits() const; // the widest code width in use
    int64_t rowBits() const;
    // The first bit of each group within a row's code stream (groups() values).
    std::vector<uint32_t> groupBitOffsets() const;
    float &scale(int64_t row, int64_t group) { return scales[size_t(row * groups() + group)]; }
    float &zero(int64_t row, int64_t group) { return zeros[size_t(row * groups() + group)]; }
    float scale(int64_t row, int64_t group) const { return scales[size_t(row * groups() + group)]; }
    float zero(int64_t row, int64_t group) const { return zeros[size_t(row * groups() + group)]; }

    // Per-group widths (mixed precision); resizes the bit stream (codes reset to 0).
    Status setGroupBits(std::vector<uint8_t> widths);
    // Packs rows*cols codes given in stored column order; each must fit its group's width.
    Status setCodes(std::span<const uint8_t> codes);
    // Packs one row's cols codes (stored order).
    Status setRowCodes(int64_t row, std::span<const uint8_t> codes);
    // All codes, rows*cols, stored column order.
    std::vector<uint8_t> codes() const;
    void rowCodes(int64_t row, uint8_t *out) const;

    // The level a code stands for (codebook entry or the code itself).
    float level(uint8_t code) const { return codebook.empty() ? float(code) : codebook[code]; }
    // Fake quantization: the rows*cols weights in the original column order, float32.
    std::vector<float> dequantize() const;
    // The same in stored column order (before the permutation is undone).
    std::vector<float> dequantizeStored() const;

    uint64_t storageBits() const;
    double bitsPerWeight() const { return double(storageBits()) / double(rows * cols); }

    // Consistency of every size, width, code range and the permutation; errors name `name`.
    // Run on anything read from a file before use.
    Status validate() const;
};

// rows*cols floats (original order) as a Tensor of `type` named `name`: how fake-quantized weights
// enter a checkpoint in the compute dtype.
Tensor floatsToTensor(std::string name, int64_t rows, int64_t cols, std::span<const float> values,
                      DType type);

} // namespace lowbit
