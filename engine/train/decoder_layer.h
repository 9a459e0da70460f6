// One LLaMA decoder layer of the trainable model: forward that keeps what backward needs, and the
// hand-written backward. TrainableModel recomputes the forward of a layer from its saved input
// right before that layer's backward (activation checkpointing), so these buffers live for one
// layer at a time.
#pragma once

#include "model/config.h"
#include "train/lora_linear.h"

#include <array>
#include <memory>
#include <span>
#include <vector>

namespace lowbit::train {

// Projections in Hugging Face module order (self_attn q, k, v, o; mlp gate, up, down).
enum Projection { kQ, kK, kV, kO, kGate, kUp, kDown, kProjectionCount };
const char *projectionName(int projection);   // "q_proj" ...
const char *projectionModule(int projection); // "self_attn" or "mlp"

template <typename Real> struct DecoderLayer {
    std::vector<Real> attnNorm, ffnNorm;
    std::array<std::unique_ptr<LoraLinear<Real>>, kProjectionCount> linears;
};

// The flattened batch: sequence s holds rows [starts[s], starts[s+1]); cosSin: per row the RoPE
// cosines then sines (headDim values), from ModelConfig::ropeInverseFrequencies in float64.
template <typename Real> struct BatchRows {
    std::vector<int64_t> starts;
    std::vector<Real> cosSin;
    int64_t rows() const { return starts.empty() ? 0 : starts.back(); }
};

// What the forward of one layer keeps for its backward.
template <typename Real> struct LayerActivations {
    std::vector<Real> normed1, invRms1, q, k, v, attn, lse, mid, normed2, invRms2, gate, up, act;
    std::array<std::vector<Real>, kProjectionCount> hidden; // LoRA H of each linear
    // The backward's scratch, kept across layers and calls so that it is allocated once.
    std::vector<Real> dAct, dGate, dUp, dNormed, dAttn, dq, dk, dv;
};

// xOut = layer(xIn), rows × hidden each (may not alias); fills `a`. Work splits over `pool`
// (nullptr: serial).
template <typename Real>
void decoderLayerForward(const ModelConfig &c, const DecoderLayer<Real> &layer,
                         const BatchRows<Real> &batch, const Real *xIn, Real *xOut,
                         LayerActivations<Real> &a, ThreadPool *pool = nullptr);
// dx: on entry dL/dxOut, on return dL/dxIn; adds the parameter gradients of the layer's linears.
// `a` must hold the forward of the same xIn (its scratch is overwritten).
template <typename Real>
void decoderLayerBackward(const ModelConfig &c, DecoderLayer<Real> &layer,
                          const BatchRows<Real> &batch, const Real *xIn, LayerActivations<Real> &a,
                          Real *dx, ThreadPool *pool = nullptr);

} // namespace lowbit::train
