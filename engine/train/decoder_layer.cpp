#include "train/decoder_layer.h"

#include "train/train_ops.h"

#include <cmath>

namespace lowbit::train {

const char *projectionName(int projection) {
    static const char *const kNames[] = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                         "gate_proj", "up_proj", "down_proj"};
    return kNames[projection];
}

const char *projectionModule(int projection) {
    return projection <= kO ? "self_attn" : "mlp";
}

namespace {

template <typename Real> void sized(std::vector<Real> &buffer, int64_t n) {
    buffer.resize(size_t(n));
}

template <typename Real> ops::AttentionDims attentionDims(const ModelConfig &c) {
    return {c.numHeads, c.numKvHeads, c.headDim, 1.0 / std::sqrt(double(c.headDim))};
}

template <typename Real>
void runLinear(const DecoderLayer<Real> &layer, int projection, const Real *x, int64_t n, Real *y,
               LayerActivations<Real> &a, ThreadPool *pool) {
    const LoraLinear<Real> &linear = *layer.linears[size_t(projection)];
    sized(a.hidden[size_t(projection)], n * linear.rank());
    linear.forward(x, n, y, a.hidden[size_t(projection)].data(), pool);
}

} // namespace

template <typename Real>
void decoderLayerForward(const ModelConfig &c, const DecoderLayer<Real> &layer,
                         const BatchRows<Real> &batch, const Real *xIn, Real *xOut,
                         LayerActivations<Real> &a, ThreadPool *pool) {
    const int64_t n = batch.rows(), hidden = c.hiddenSize, hd = c.headDim;
    const int64_t qDim = c.numHeads * hd, kvDim = c.numKvHeads * hd, ffn = c.intermediateSize;
    sized(a.normed1, n * hidden), sized(a.invRms1, n), sized(a.q, n * qDim);
    sized(a.k, n * kvDim), sized(a.v, n * kvDim), sized(a.attn, n * qDim);
    sized(a.lse, n * c.numHeads), sized(a.mid, n * hidden), sized(a.normed2, n * hidden);
    sized(a.invRms2, n), sized(a.gate, n * ffn), sized(a.up, n * ffn), sized(a.act, n * ffn);

    ops::rmsnormForward(xIn, n, hidden, layer.attnNorm.data(), c.rmsNormEps, a.normed1.data(),
                        a.invRms1.data(), pool);
    runLinear(layer, kQ, a.normed1.data(), n, a.q.data(), a, pool);
    runLinear(layer, kK, a.normed1.data(), n, a.k.data(), a, pool);
    runLinear(layer, kV, a.normed1.data(), n, a.v.data(), a, pool);
    ops::ropeForward(a.q.data(), n, qDim, c.numHeads, hd, batch.cosSin.data());
    ops::ropeForward(a.k.data(), n, kvDim, c.numKvHeads, hd, batch.cosSin.data());
    ops::attentionForward(a.q.data(), a.k.data(), a.v.data(), batch.starts, attentionDims<Real>(c),
                          a.attn.data(), a.lse.data(), pool);
    runLinear(layer, kO, a.attn.data(), n, a.mid.data(), a, pool);
    for (int64_t i = 0; i < n * hidden; ++i) // residual: mid = x + o_proj(attention)
        a.mid[size_t(i)] += xIn[i];

    ops::rmsnormForward(a.mid.data(), n, hidden, layer.ffnNorm.data(), c.rmsNormEps,
                        a.normed2.data(), a.invRms2.data(), pool);
    runLinear(layer, kGate, a.normed2.data(), n, a.gate.data(), a, pool);
    runLinear(layer, kUp, a.normed2.data(), n, a.up.data(), a, pool);
    ops::swigluForward(a.gate.data(), a.up.data(), n * ffn, a.act.data(), pool);
    runLinear(layer, kDown, a.act.data(), n, xOut, a, pool);
    for (int64_t i = 0; i < n * hidden; ++i)
        xOut[i] += a.mid[size_t(i)];
}

template <typename Real>
void decoderLayerBackward(const ModelConfig &c, DecoderLayer<Real> &layer,
                          const BatchRows<Real> &batch, const Real *xIn, LayerActivations<Real> &a,
                          Real *dx, ThreadPool *pool) {
    const int64_t n = batch.rows(), hidden = c.hiddenSize, hd = c.headDim;
    const int64_t qDim = c.numHeads * hd, kvDim = c.numKvHeads * hd, ffn = c.intermediateSize;
    auto linear = [&](int p) -> LoraLinear<Real> & { return *layer.linears[size_t(p)]; };
    auto saved = [&](int p) { return a.hidden[size_t(p)].data(); };

    // MLP block: xOut = mid + down(silu(gate(n2)) · up(n2)), n2 = rmsnorm(mid)
    // Every scratch buffer is overwritten before it is read (no zeroing needed).
    sized(a.dAct, n * ffn), sized(a.dGate, n * ffn), sized(a.dUp, n * ffn);
    sized(a.dNormed, n * hidden), sized(a.dAttn, n * qDim), sized(a.dq, n * qDim);
    sized(a.dk, n * kvDim), sized(a.dv, n * kvDim);
    Real *dAct = a.dAct.data(), *dGate = a.dGate.data(), *dUp = a.dUp.data();
    Real *dNormed = a.dNormed.data(), *dAttn = a.dAttn.data(), *dq = a.dq.data();
    Real *dk = a.dk.data(), *dv = a.dv.data();
    linear(kDown).backward(a.act.data(), saved(kDown), dx, n, dAct, false, pool);
    ops::swigluBackward(a.gate.data(), a.up.data(), dAct, n * ffn, dGate, dUp, pool);
    linear(kGate).backward(a.normed2.data(), saved(kGate), dGate, n, dNormed, false, pool);
    linear(kUp).backward(a.normed2.data(), saved(kUp), dUp, n, dNormed, true, pool);
    // dx now becomes dL/dmid: the residual passes dx through, the norm adds its share
    ops::rmsnormBackward(a.mid.data(), n, hidden, layer.ffnNorm.data(), a.invRms2.data(), dNormed,
                         dx, pool);

    // Attention block: mid = xIn + o(attention(rope(q(n1)), rope(k(n1)), v(n1))), n1 = rmsnorm(xIn)
    linear(kO).backward(a.attn.data(), saved(kO), dx, n, dAttn, false, pool);
    ops::attentionBackward(a.q.data(), a.k.data(), a.v.data(), a.attn.data(), a.lse.data(), dAttn,
                           batch.starts, attentionDims<Real>(c), dq, dk, dv, pool);
    ops::ropeBackward(dq, n, qDim, c.numHeads, hd, batch.cosSin.data());
    ops::ropeBackward(dk, n, kvDim, c.numKvHeads, hd, batch.cosSin.data());
    linear(kQ).backward(a.normed1.data(), saved(kQ), dq, n, dNormed, false, pool);
    linear(kK).backward(a.normed1.data(), saved(kK), dk, n, dNormed, true, pool);
    linear(kV).backward(a.normed1.data(), saved(kV), dv, n, dNormed, true, pool);
    ops::rmsnormBackward(xIn, n, hidden, layer.attnNorm.data(), a.invRms1.data(), dNormed, dx,
                         pool);
}

#define LOWBIT_DECODER_LAYER_INSTANTIATE(Real)                                                     \
    template void decoderLayerForward<Real>(const ModelConfig &, const DecoderLayer<Real> &,       \
                                            const BatchRows<Real> &, const Real *, Real *,         \
                                            LayerActivations<Real> &, ThreadPool *);               \
    template void decoderLayerBackward<Real>(const ModelConfig &, DecoderLayer<Real> &,            \
                                             const BatchRows<Real> &, const Real *,                \
                                             LayerActivations<Real> &, Real *, ThreadPool *);

LOWBIT_DECODER_LAYER_INSTANTIATE(float)
LOWBIT_DECODER_LAYER_INSTANTIATE(double)

} // namespace lowbit::train
