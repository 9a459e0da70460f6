// CudaTrainModel's step: forward, head and backward in TrainableModel's order
// (train/trainable_model.cpp run/head, train/decoder_layer.cpp), all on the model's stream.
#include "backend/cuda/cuda_train_impl.h"

#include "backend/cuda/kernels.h"
#include "backend/cuda/train_kernels.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace lowbit::train::device {

namespace {

cuda::train::AttentionDims attentionDims(const ModelConfig &c) {
    return {c.numHeads, c.numKvHeads, c.headDim, float(1.0 / std::sqrt(double(c.headDim)))};
}

} // namespace

// Uploads every parameter whose host value differs from the mirror of the device copy (all of
// them the first time): the optimizer, a restored checkpoint or a test may have changed any.
Status CudaTrainModelImpl::syncParameters() {
    for (size_t i = 0; i < m_params.size(); ++i) {
        const Parameter<float> &p = *m_params[i];
        const size_t offset = size_t(m_offsets[i]);
        const size_t count =
            size_t(i + 1 < m_params.size() ? m_offsets[i + 1] : int64_t(m_mirror.size())) - offset;
        if (p.value.size() != count || p.grad.size() != count)
            return makeError(ErrorCode::InvalidArgument,
                             p.name + ": parameter resized after create()");
        float *mirror = m_mirror.data() + offset;
        if (m_uploaded && std::memcmp(mirror, p.value.data(), count * 4) == 0)
            continue;
        std::memcpy(mirror, p.value.data(), count * 4);
        // The mirror is the source: it stays unchanged until the next call, and pageable
        // copies are staged before cudaMemcpyAsync returns anyway.
        LOWBIT_CUDA_CHECK(
            cudaMemcpyAsync(m_values + offset, mirror, count * 4, cudaMemcpyHostToDevice, m_stream),
            ("upload of " + p.name).c_str());
    }
    m_uploaded = true;
    return {};
}

Status CudaTrainModelImpl::uploadBatch(const detail::FlatBatch &b) {
    const int64_t n = b.rows(), scored = int64_t(b.scoredRows.size());
    LOWBIT_CHECK(cuda::ensure(m_starts, b.starts.size() * 8, "sequence starts"));
    const std::pair<void *, std::pair<const void *, size_t>> copies[] = {
        {m_ids, {b.ids.data(), size_t(n) * 4}},
        {m_cosSin, {b.cosSin.data(), b.cosSin.size() * 4}},
        {m_starts.data(), {b.starts.data(), b.starts.size() * 8}},
        {m_rowIndex, {b.scoredRows.data(), size_t(scored) * 8}},
        {m_targets, {b.scoredTargets.data(), size_t(scored) * 4}}};
    for (const auto &[to, from] : copies)
        if (from.second)
            LOWBIT_CUDA_CHECK(
                cudaMemcpyAsync(to, from.first, from.second, cudaMemcpyHostToDevice, m_stream),
                "upload of the batch");
    return {};
}

// decoderLayerForward: xOut = layer(xIn); the activations land in m_act.
Status CudaTrainModelImpl::layerForward(size_t l, const float *xIn, float *xOut, int64_t n) {
    const ModelConfig &c = m_config;
    const DeviceLayer &layer = m_layers[l];
    Activations &a = m_act;
    const int64_t h = c.hiddenSize, hd = c.headDim, qDim = c.numHeads * hd,
                  kvDim = c.numKvHeads * hd, f = c.intermediateSize;
    const float eps = float(c.rmsNormEps);
    auto linear = [&](int p, const float *x, float *y) {
        return layer.linears[size_t(p)].forward(m_scratch, x, n, y, a.hidden[size_t(p)]);
    };
    LOWBIT_CHECK(cuda::train::rmsnormForward(xIn, n, h, layer.attnNorm, eps, a.normed1, a.invRms1,
                                             m_stream));
    LOWBIT_CHECK(linear(kQ, a.normed1, a.q));
    LOWBIT_CHECK(linear(kK, a.normed1, a.k));
    LOWBIT_CHECK(linear(kV, a.normed1, a.v));
    LOWBIT_CHECK(cuda::ropeRows(a.q, n, qDim, c.numHeads, hd, m_cosSin, m_stream));
    LOWBIT_CHECK(cuda::ropeRows(a.k, n, kvDim, c.numKvHeads, hd, m_cosSin, m_stream));
    LOWBIT_CHECK(cuda::train::attentionForward(a.q, a.k, a.v, m_starts.as<int64_t>(), m_sequences,
                                               n, attentionDims(c), a.attn, a.lse, m_stream));
    LOWBIT_CHECK(linear(kO, a.attn, a.mid));
    LOWBIT_CHECK(cuda::addValues(a.mid, xIn, n * h, m_stream)); // mid = x + o_proj(attention)
    LOWBIT_CHECK(cuda::train::rmsnormForward(a.mid, n, h, layer.ffnNorm, eps, a.normed2, a.invRms2,
                                             m_stream));
    LOWBIT_CHECK(linear(kGate, a.normed2, a.gate));
    LOWBIT_CHECK(linear(kUp, a.normed2, a.up));
    LOWBIT_CHECK(cuda::swigluValues(a.gate, a.up, n * f, a.act, m_stream));
    LOWBIT_CHECK(linear(kDown, a.act, xOut));
    return cuda::addValues(xOut, a.mid, n * h, m_stream);
}

// decoderLayerBackward: m_act.dx holds dL/dxOut on entry and dL/dxIn on return; m_act must
// hold the forward of the same xIn.
Status CudaTrainModelImpl::layerBackward(size_t l, const float *xIn, int64_t n) {
    const ModelConfig &c = m_config;
    const DeviceLayer &layer = m_layers[l];
    Activations &a = m_act;
    const int64_t h = c.hiddenSize, hd = c.headDim, qDim = c.numHeads * hd,
                  kvDim = c.numKvHeads * hd, f = c.intermediateSize;
    auto linear = [&](int p, const float *x, const float *dy, float *dx, bool add) {
        return layer.linears[size_t(p)].backward(m_scratch, x, a.hidden[size_t(p)], dy, n, dx, add);
    };
    // MLP block: xOut = mid + down(silu(gate(n2)) · up(n2)), n2 = rmsnorm(mid)
    LOWBIT_CHECK(linear(kDown, a.act, a.dx, a.dAct, false));
    LOWBIT_CHECK(
        cuda::train::swigluBackward(a.gate, a.up, a.dAct, n * f, a.dGate, a.dUp, m_stream));
    LOWBIT_CHECK(linear(kGate, a.normed2, a.dGate, a.dNormed, false));
    LOWBIT_CHECK(linear(kUp, a.normed2, a.dUp, a.dNormed, true));
    // dx becomes dL/dmid: the residual passes it through, the norm adds its share
    LOWBIT_CHECK(cuda::train::rmsnormBackward(a.mid, n, h, layer.ffnNorm, a.invRms2, a.dNormed,
                                              a.dx, m_stream));
    // Attention block: mid = xIn + o(attention(rope(q(n1)), rope(k(n1)), v(n1))), n1 = rmsnorm(xIn)
    LOWBIT_CHECK(linear(kO, a.attn, a.dx, a.dAttn, false));
    LOWBIT_CHECK(cuda::train::attentionBackward(
        a.q, a.k, a.v, a.attn, a.lse, a.dAttn, m_starts.as<int64_t>(), m_sequences, n,
        attentionDims(c), a.dq, a.dk, a.dv, a.attentionScratch, m_stream));
    LOWBIT_CHECK(cuda::train::ropeBackward(a.dq, n, qDim, c.numHeads, hd, m_cosSin, m_stream));
    LOWBIT_CHECK(cuda::train::ropeBackward(a.dk, n, kvDim, c.numKvHeads, hd, m_cosSin, m_stream));
    LOWBIT_CHECK(linear(kQ, a.normed1, a.dq, a.dNormed, false));
    LOWBIT_CHECK(linear(kK, a.normed1, a.dk, a.dNormed, true));
    LOWBIT_CHECK(linear(kV, a.normed1, a.dv, a.dNormed, true));
    return cuda::train::rmsnormBackward(xIn, n, h, layer.attnNorm, a.invRms1, a.dNormed, a.dx,
                                        m_stream);
}

// Forward: logits (m × vocab) = normed (m × hidden) · Outᵀ. Backward: dNormed (m × hidden) =
// dLogits (m × vocab) · Out. The head is frozen: no dOut.
Status CudaTrainModelImpl::headGemm(bool backward, int64_t m, const float *in, float *out) {
    const int64_t h = m_config.hiddenSize, v = m_config.vocabSize;
    const int64_t k = backward ? v : h, cols = backward ? h : v;
    const cuda::RowMajorGemm &g = m_scratch.gemm;
    if (m_outputType == DType::F32)
        return g.f32(false, !backward, m, cols, k, 1.0f, in, k,
                     static_cast<const float *>(m_output), h, 0.0f, out, cols);
    LOWBIT_CHECK(cuda::floatsToHalf(in, m * k, m_outputType, m_head.half, m_stream));
    return g.half(false, !backward, m, cols, k, 1.0f, m_head.half, k, m_output, h, m_outputType,
                  0.0f, out, cols);
}

// TrainableModel::head: final norm + head + loss at the scored rows of `last`, a chunk at a time;
// with backward, adds dL/dx at the scored rows into m_act.dx (zeroed by the caller).
// Cross-entropy leaves each row's loss in m_rowLoss; a custom loss adds into `total` on the host.
Status CudaTrainModelImpl::head(const detail::FlatBatch &b, const float *last,
                                LossFunction<float> *loss, bool backward, double &total) {
    const int64_t h = m_config.hiddenSize, vocab = m_config.vocabSize;
    const int64_t scored = int64_t(b.scoredRows.size());
    HeadBuffers &hb = m_head;
    for (int64_t c0 = 0; c0 < scored; c0 += m_plan.chunkRows) {
        const int64_t m = std::min(m_plan.chunkRows, scored - c0);
        LOWBIT_CHECK(cuda::train::gatherRows(last, h, m_rowIndex + c0, m, hb.selected, m_stream));
        LOWBIT_CHECK(cuda::train::rmsnormForward(hb.selected, m, h, m_finalNorm,
                                                 float(m_config.rmsNormEps), hb.normed, hb.invRms,
                                                 m_stream));
        LOWBIT_CHECK(headGemm(false, m, hb.normed, hb.logits));
        if (loss) {
            const size_t values = size_t(m * vocab);
            m_hostLogits.resize(values);
            m_hostDLogits.assign(values, 0.0f); // a loss may write only some entries
            LOWBIT_CUDA_CHECK(cudaMemcpyAsync(m_hostLogits.data(), hb.logits, values * 4,
                                              cudaMemcpyDeviceToHost, m_stream),
                              "download of logits");
            LOWBIT_CUDA_CHECK(cudaStreamSynchronize(m_stream), "download of logits");
            for (int64_t r = 0; r < m; ++r) {
                const size_t i = size_t(c0 + r);
                total += loss->score(b.scoredExample[i], b.scoredPosition[i], b.scoredTargets[i],
                                     {m_hostLogits.data() + r * vocab, size_t(vocab)},
                                     {m_hostDLogits.data() + r * vocab, size_t(vocab)});
            }
            LOWBIT_CUDA_CHECK(cudaMemcpyAsync(hb.logits, m_hostDLogits.data(), values * 4,
                                              cudaMemcpyHostToDevice, m_stream),
                              "upload of dLogits");
        } else { // dLogits replace the logits in place
            LOWBIT_CHECK(cuda::train::crossEntropyRows(hb.logits, m, vocab, m_targets + c0,
                                                       hb.logits, m_rowLoss + c0, m_stream));
        }
        if (!backward)
            continue;
        LOWBIT_CHECK(headGemm(true, m, hb.logits, hb.dNormed));
        LOWBIT_CUDA_CHECK(cudaMemsetAsync(hb.dSelected, 0, size_t(m * h) * 4, m_stream), "memset");
        LOWBIT_CHECK(cuda::train::rmsnormBackward(hb.selected, m, h, m_finalNorm, hb.invRms,
                                                  hb.dNormed, hb.dSelected, m_stream));
        LOWBIT_CHECK(
            cuda::train::scatterAddRows(m_act.dx, h, m_rowIndex + c0, m, hb.dSelected, m_stream));
    }
    return {};
}

// Downloads the device gradients of this batch and adds them into the host grads.
Status CudaTrainModelImpl::addGradients() {
    LOWBIT_CUDA_CHECK(cudaMemcpyAsync(m_gradStage.data(), m_grads, m_gradStage.size() * 4,
                                      cudaMemcpyDeviceToHost, m_stream),
                      "download of gradients");
    LOWBIT_CUDA_CHECK(cudaStreamSynchronize(m_stream), "training step");
    for (size_t i = 0; i < m_params.size(); ++i) {
        Parameter<float> &p = *m_params[i];
        const float *g = m_gradStage.data() + m_offsets[i];
        for (size_t j = 0; j < p.grad.size(); ++j)
            p.grad[j] += g[j];
    }
    return {};
}

Result<LossStats> CudaTrainModelImpl::run(std::span<const TrainExample> batch,
                                          LossFunction<float> *loss, bool backward) {
    const ModelConfig &c = m_config;
    LOWBIT_CHECK(checkTrainBatch(c, batch));
    const detail::FlatBatch b = detail::flattenTrainBatch(c, m_invFreq, batch);
    const int64_t n = b.rows(), h = c.hiddenSize;
    if (n > m_options.maxBatchTokens)
        return makeError(ErrorCode::InvalidArgument,
                         "device training: the batch has " + std::to_string(n) +
                             " tokens, more than the " + std::to_string(m_options.maxBatchTokens) +
                             " (maxBatchTokens) the model was created for");
    LossStats stats;
    stats.scored = int64_t(b.scoredRows.size());
    if (stats.scored == 0)
        return stats;
    LOWBIT_CUDA_CHECK(cudaSetDevice(m_device), "cudaSetDevice");
    LOWBIT_CHECK(syncParameters());
    m_sequences = int64_t(batch.size());
    LOWBIT_CHECK(uploadBatch(b));
    LOWBIT_CHECK(cuda::embedRows(m_embedding, m_embeddingType, h, m_ids, n, m_inputs[0], m_stream));
    // Activation checkpointing: m_inputs[l] is the input of layer l, m_inputs[L] the final
    // hidden. Forward-only ping-pongs between the first two.
    const size_t layers = m_layers.size();
    auto input = [&](size_t l) { return m_inputs[backward ? l : l % 2]; };
    for (size_t l = 0; l < layers; ++l)
        LOWBIT_CHECK(layerForward(l, input(l), input(l + 1), n));
    if (backward) {
        LOWBIT_CUDA_CHECK(cudaMemsetAsync(m_act.dx, 0, size_t(n * h) * 4, m_stream), "memset");
        LOWBIT_CUDA_CHECK(cudaMemsetAsync(m_grads, 0, m_gradStage.size() * 4, m_stream), "memset");
    }
    double total = 0;
    LOWBIT_CHECK(head(b, input(layers), loss, backward, total));
    for (size_t l = layers; backward && l-- > 0;) {
        // The last layer's activations are still those of the forward; the others are
        // recomputed into m_inputs[l + 1], whose own backward is done.
        if (l + 1 < layers)
            LOWBIT_CHECK(layerForward(l, m_inputs[l], m_inputs[l + 1], n));
        LOWBIT_CHECK(layerBackward(l, m_inputs[l], n));
    }
    if (!loss) {
        m_hostLoss.resize(size_t(stats.scored));
        LOWBIT_CUDA_CHECK(cudaMemcpyAsync(m_hostLoss.data(), m_rowLoss, m_hostLoss.size() * 8,
                                          cudaMemcpyDeviceToHost, m_stream),
                          "download of losses");
    }
    if (backward)
        LOWBIT_CHECK(addGradients());
    LOWBIT_CUDA_CHECK(cudaStreamSynchronize(m_stream), backward ? "training step" : "evaluation");
    if (!loss) // summed in scored order, in float64, as TrainableModel sums them
        for (double rowLoss : m_hostLoss)
            total += rowLoss;
    stats.lossSum = total;
    return stats;
}

} // namespace lowbit::train::device
