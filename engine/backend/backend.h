// Backend: the seam between the model code and the hardware, in the manner of ggml's backends.
// The forward pass (engine/runtime/model.cpp) is written only in terms of these ops; the CPU
// backend implements them now, a CUDA backend later (one .cu per op), and tests compare every
// op of every backend against the CPU reference on awkward shapes.
//
// Activations are float32, row-major, in the backend's memory (host memory for the CPU backend).
// Weights are Tensors in their stored dtype (F32/F16/BF16), converted inside the op.
// Ops are synchronous and must not be called concurrently on one backend.
#pragma once

#include "core/tensor.h"

#include <cstdint>
#include <memory>
#include <span>
#include <string_view>

namespace lowbit {

// Causal grouped-query attention of one sequence: query row i (position firstPosition + i) attends
// to keys 0 .. firstPosition + i of that sequence. Query head h reads kv head h / (heads/kvHeads).
struct AttentionSequence {
    const float *q;       // queries rows, row stride qStride floats, head h at column h*headDim
    const float *keys;    // key rows from position 0, stride kvStride floats
    const float *values;  // value rows from position 0, stride kvStride floats
    float *out;           // output rows, stride qStride (same layout as q)
    int64_t queries;
    int64_t firstPosition;
};

struct AttentionShape {
    int64_t heads, kvHeads, headDim;
    int64_t qStride, kvStride;
    float scale; // usually 1/sqrt(headDim)
};

class Backend {
public:
    virtual ~Backend() = default;
    virtual std::string_view name() const = 0;
    virtual int threads() const = 0;

    // out[r] = table[ids[r]] for each id (ids already range-checked).
    virtual void embed(const Tensor &table, std::span<const int32_t> ids, float *out) = 0;
    // y[r] = x[r] / sqrt(mean(x[r]^2) + eps) * weight, rows of `dim`; y may alias x.
    virtual void rmsnorm(const float *x, int64_t rows, int64_t dim, const Tensor &weight,
                         float eps, float *y) = 0;
    // y[rows x out] = x[rows x in] * W^T with W {out, in}; y must not alias x.
    virtual void matmul(const float *x, int64_t rows, const Tensor &weight, float *y) = 0;
    // Rotate-half RoPE in place on rows of `heads` heads of headDim (row stride rowStride): pair
    // (j, j+headDim/2) of row r turns by the angle whose cosine/sine are cosSin[r*headDim + j] and
    // cosSin[r*headDim + headDim/2 + j] (the caller computes them once per forward, in float64).
    virtual void rope(float *x, int64_t rows, int64_t rowStride, int64_t heads, int64_t headDim,
                      const float *cosSin) = 0;
    virtual void attention(std::span<const AttentionSequence> sequences, const AttentionShape &shape) = 0;
    // out = silu(gate) * up, elementwise over count values; out may alias gate.
    virtual void swiglu(const float *gate, const float *up, int64_t count, float *out) = 0;
    // x += y over count values.
    virtual void add(float *x, const float *y, int64_t count) = 0;
};

std::unique_ptr<Backend> makeCpuBackend(int threads);

} // namespace lowbit
