// CudaTrainModel on the device (train/cuda_train_model.h): the order of operations of
// train/trainable_model.cpp and decoder_layer.cpp, with cuBLAS GEMMs (cuda_train_linear.h) and the
// kernels of kernels.h / train_kernels.h. Everything runs on one stream, in program order; the
// host waits only to read results (custom-loss logits, losses, gradients).
#include "train/cuda_train_model.h"

#include "backend/cuda/cuda_train_impl.h"
#include "backend/cuda/kernels.h"
#include "backend/cuda/train_kernels.h"
#include "quant/icq.h"
#include "quant/quantized_tensor.h"
#include "train/cuda_train_detail.h"
#include "train/decoder_layer.h"
#include "train/lora_linear.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace lowbit::train::device {

namespace {

// A LinearBase with a shape only: LoraLinear<float> then builds the host adapter parameters
// (PEFT names, Kaiming-uniform A from the seed, zero B) exactly as TrainableModel does. Its
// weight() is never read: the base lives on the device.
class ShapeOnlyBase final : public LinearBase<float> {
public:
    ShapeOnlyBase(int64_t rows, int64_t cols) : m_rows(rows), m_cols(cols) {}
    int64_t rows() const override { return m_rows; }
    int64_t cols() const override { return m_cols; }
    const float *weight() const override { return nullptr; }

private:
    int64_t m_rows, m_cols;
};

const Tensor &projectionWeight(const LayerWeights &w, int projection) {
    const Tensor *const weights[] = {&w.wq, &w.wk, &w.wv, &w.wo, &w.wGate, &w.wUp, &w.wDown};
    return *weights[projection];
}

} // namespace

Status CudaTrainModelImpl::openDevice(const CudaTrainOptions &options) {
    std::string why;
    const int count = cudaDeviceCount(&why);
    const std::string device = "cuda:" + std::to_string(options.device);
    if (count == 0)
        return makeError(ErrorCode::Unsupported, "device training on " + device + ": " + why);
    if (options.device < 0 || options.device >= count)
        return makeError(ErrorCode::InvalidArgument, "device training: " + device +
                                                         ": no such device (" +
                                                         std::to_string(count) + " present)");
    LOWBIT_CUDA_CHECK(cudaSetDevice(options.device), "cudaSetDevice");
    cudaDeviceProp prop{};
    LOWBIT_CUDA_CHECK(cudaGetDeviceProperties(&prop, options.device), "cudaGetDeviceProperties");
    m_deviceName = device + " (" + prop.name + ")";
    m_device = options.device;
    LOWBIT_CUDA_CHECK(cudaStreamCreateWithFlags(&m_stream, cudaStreamNonBlocking),
                      "cudaStreamCreate");
    LOWBIT_CUDA_CHECK(cublasCreate(&m_blas), "cublasCreate");
    LOWBIT_CUDA_CHECK(cublasSetStream(m_blas, m_stream), "cublasSetStream");
    // Float32 GEMMs stay float32 (no TF32): the Fp32 precision is the one checked against the CPU.
    LOWBIT_CUDA_CHECK(cublasSetMathMode(m_blas, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
    m_scratch.gemm = {m_blas, m_stream};
    m_scratch.precision = options.precision;
    return {};
}

Result<void *> CudaTrainModelImpl::allocate(size_t bytes, const std::string &what) {
    LOWBIT_TRY(DeviceBuffer buffer, DeviceBuffer::allocate(bytes, what));
    void *p = buffer.data();
    m_allocated += buffer.bytes();
    m_peak = std::max(m_peak, m_allocated);
    m_buffers.push_back(std::move(buffer));
    return p;
}

// Pageable host memory: cudaMemcpyAsync returns once the source is staged, so `host` may go.
Result<const void *> CudaTrainModelImpl::upload(const void *host, size_t bytes,
                                                const std::string &what) {
    LOWBIT_TRY(void *p, allocate(bytes, what));
    if (bytes)
        LOWBIT_CUDA_CHECK(cudaMemcpyAsync(p, host, bytes, cudaMemcpyHostToDevice, m_stream),
                          ("upload of " + what).c_str());
    return static_cast<const void *>(p);
}

// A dense matrix as stored, or widened to float32 on the host (Fp32 precision).
Result<const void *> CudaTrainModelImpl::uploadMatrix(const Tensor &t, DType onDevice) {
    if (onDevice == t.dtype)
        return upload(t.data, t.bytes(), t.name);
    const std::vector<float> wide = tensorToFloats(t);
    return upload(wide.data(), wide.size() * 4, t.name);
}

// QuantizedTensor's layout as CudaBackend uploads it (cuda_backend.cpp devicePacked). ICQ's τ̂ is
// folded into the zeros: scale·L + τ̂ = scale·(L − (−τ̂/scale)), so packedDequantize applies.
Status CudaTrainModelImpl::uploadPacked(const QuantizedTensor &q, cuda::PackedView &v) {
    LOWBIT_CHECK(q.validate());
    const int64_t groups = q.groups();
    const std::vector<uint32_t> offsets = q.groupBitOffsets();
    std::vector<uint8_t> widths(static_cast<size_t>(groups));
    for (int64_t g = 0; g < groups; ++g)
        widths[size_t(g)] = uint8_t(q.groupWidth(g));
    std::vector<float> scales = q.scales, zeros = q.zeros;
    if (q.method == "icq") {
        LOWBIT_TRY(std::vector<float> tau, icqTau(q));
        for (size_t i = 0; i < scales.size(); ++i) {
            if (scales[i] != 0.0f) {
                zeros[i] -= tau[i] / scales[i];
            } else { // an all-zero block: every code is NF4's level 0, so ŵ = 1·(0 + τ̂)
                scales[i] = 1.0f;
                zeros[i] = -tau[i];
            }
        }
    }
    std::vector<uint8_t> codes(q.packed.size() + 4, 0); // 4 zero bytes: word-at-a-time reads
    std::copy(q.packed.begin(), q.packed.end(), codes.begin());
    const std::string what = "packed weight " + q.name;
    LOWBIT_TRY(const void *dCodes, upload(codes.data(), codes.size(), what));
    LOWBIT_TRY(const void *dScales, upload(scales.data(), scales.size() * 4, what));
    LOWBIT_TRY(const void *dZeros, upload(zeros.data(), zeros.size() * 4, what));
    LOWBIT_TRY(const void *dCodebook, upload(q.codebook.data(), q.codebook.size() * 4, what));
    LOWBIT_TRY(const void *dOffsets, upload(offsets.data(), offsets.size() * 4, what));
    LOWBIT_TRY(const void *dWidths, upload(widths.data(), widths.size(), what));
    v = {static_cast<const uint8_t *>(dCodes),
         static_cast<const float *>(dScales),
         static_cast<const float *>(dZeros),
         q.codebook.empty() ? nullptr : static_cast<const float *>(dCodebook),
         static_cast<const uint32_t *>(dOffsets),
         static_cast<const uint8_t *>(dWidths),
         q.rows,
         q.cols,
         q.groupSize,
         groups,
         q.rowBits(),
         q.bits,
         false};
    v.uniform = q.groupBits.empty() && 32 % q.bits == 0 && q.rowBits() % 32 == 0 &&
                q.groupSize % (32 / q.bits) == 0;
    // The host vectors above die here; pageable copies are staged, but wait for good measure so
    // that a fault is reported against this tensor.
    LOWBIT_CUDA_CHECK(cudaStreamSynchronize(m_stream), ("upload of " + what).c_str());
    return {};
}

Status CudaTrainModelImpl::buildLayer(const Checkpoint &checkpoint, const LoraOptions &lora,
                                      int64_t index) {
    const LayerWeights &w = checkpoint.weights.layers[size_t(index)];
    DeviceLayer &layer = m_layers[size_t(index)];
    for (int p = 0; p < kProjectionCount; ++p) {
        const detail::LinearPlan &plan = m_plan.linears[size_t(index * kProjectionCount + p)];
        DeviceLinear &d = layer.linears[size_t(p)];
        d.in = plan.cols, d.out = plan.rows, d.rank = plan.rank;
        if (plan.packed) {
            d.isPacked = true;
            LOWBIT_CHECK(uploadPacked(*plan.packed, d.packed));
        } else {
            d.denseType = plan.denseType;
            LOWBIT_TRY(d.dense, uploadMatrix(projectionWeight(w, p), plan.denseType));
        }
        if (plan.rank == 0)
            continue;
        const std::string prefix = "base_model.model.model.layers." + std::to_string(index) + "." +
                                   projectionModule(p) + "." + projectionName(p);
        // TrainableModel's seed per linear (trainable_model.cpp buildLayer): the same adapters.
        const uint64_t seed =
            lora.seed ^ (uint64_t(index * kProjectionCount + p + 1) * 0xd1b54a32d192ed03ull);
        LOWBIT_TRY(auto linear, LoraLinear<float>::create(
                                    std::make_unique<ShapeOnlyBase>(plan.rows, plan.cols), prefix,
                                    plan.rank, lora.alpha, lora.elasticConnection, seed));
        d.scale = float(lora.alpha / double(plan.rank)); // LoraLinear's m_scale, rounded alike
        d.elastic = lora.elasticConnection;
        m_hostLinears.push_back(std::move(linear));
    }
    return {};
}

// One value buffer and one grad buffer for every adapter tensor, in parameters() order; each
// DeviceLinear points into them.
Status CudaTrainModelImpl::buildAdapters() {
    for (auto &linear : m_hostLinears)
        for (Parameter<float> *p : linear->adapterParameters())
            m_params.push_back(p);
    int64_t total = 0;
    for (Parameter<float> *p : m_params) {
        m_offsets.push_back(total);
        total += int64_t(p->value.size());
    }
    LOWBIT_TRY(m_values, floats(total, "LoRA values"));
    LOWBIT_TRY(m_grads, floats(total, "LoRA gradients"));
    m_mirror.assign(size_t(total), 0.0f);
    m_gradStage.assign(size_t(total), 0.0f);
    size_t next = 0; // parameters of linear i: A, B (then βA, βB)
    for (DeviceLayer &layer : m_layers)
        for (DeviceLinear &d : layer.linears) {
            if (d.rank == 0)
                continue;
            auto at = [&](size_t i) { return size_t(m_offsets[next + i]); };
            d.a = m_values + at(0), d.gradA = m_grads + at(0);
            d.b = m_values + at(1), d.gradB = m_grads + at(1);
            if (d.elastic) {
                d.betaA = m_values + at(2), d.gradBetaA = m_grads + at(2);
                d.betaB = m_values + at(3), d.gradBetaB = m_grads + at(3);
            }
            next += d.elastic ? 4 : 2;
        }
    return {};
}

Status CudaTrainModelImpl::allocateWork() {
    const ModelConfig &c = m_config;
    const int64_t n = m_options.maxBatchTokens, h = c.hiddenSize, hd = c.headDim;
    const int64_t q = c.numHeads * hd, kv = c.numKvHeads * hd, f = c.intermediateSize;
    m_inputs.resize(size_t(c.numLayers + 1));
    for (float *&input : m_inputs) {
        LOWBIT_TRY(input, floats(n * h, "activation checkpoint"));
    }
    Activations &a = m_act;
    // clang-format off
    const std::pair<float **, int64_t> sized[] = {
        {&a.normed1, h}, {&a.invRms1, 1}, {&a.q, q}, {&a.k, kv}, {&a.v, kv}, {&a.attn, q},
        {&a.lse, c.numHeads}, {&a.mid, h}, {&a.normed2, h}, {&a.invRms2, 1}, {&a.gate, f},
        {&a.up, f}, {&a.act, f}, {&a.dAct, f}, {&a.dGate, f}, {&a.dUp, f}, {&a.dNormed, h},
        {&a.dAttn, q}, {&a.dq, q}, {&a.dk, kv}, {&a.dv, kv}, {&a.dx, h}};
    // clang-format on
    for (const auto &[buffer, width] : sized) {
        LOWBIT_TRY(*buffer, floats(n * width, "layer activations"));
    }
    for (int p = 0; p < kProjectionCount; ++p) {
        int64_t rank = 0;
        for (const DeviceLayer &layer : m_layers)
            rank = std::max(rank, layer.linears[size_t(p)].rank);
        LOWBIT_TRY(a.hidden[size_t(p)], floats(n * rank, "LoRA hidden"));
    }
    const cuda::train::AttentionDims dims{c.numHeads, c.numKvHeads, hd, 0.0f};
    LOWBIT_TRY(a.attentionScratch, floats(cuda::train::attentionBackwardWorkspaceFloats(n, dims),
                                          "attention backward scratch"));
    LOWBIT_TRY(m_scratch.dHidden, floats(n * m_plan.maxRank, "LoRA dH"));
    const bool fp32 = m_options.precision == GemmPrecision::Fp32;
    int64_t widest = 0;
    for (const detail::LinearPlan &lp : m_plan.linears)
        widest = std::max({widest, lp.rows, lp.cols});
    if (!fp32) {
        LOWBIT_TRY(m_scratch.half, allocate(size_t(n * widest) * 2, "16-bit GEMM input"));
    }
    LOWBIT_TRY(m_scratch.dequant,
               allocate(size_t(m_plan.maxLinearValues) * (fp32 ? 4 : 2), "dequantized weight"));
    LOWBIT_TRY(void *ids, allocate(size_t(n) * 4, "token ids"));
    LOWBIT_TRY(void *targets, allocate(size_t(n) * 4, "targets"));
    LOWBIT_TRY(void *rows, allocate(size_t(n) * 8, "scored rows"));
    LOWBIT_TRY(void *losses, allocate(size_t(n) * 8, "row losses"));
    m_ids = static_cast<int32_t *>(ids), m_targets = static_cast<int32_t *>(targets);
    m_rowIndex = static_cast<int64_t *>(rows), m_rowLoss = static_cast<double *>(losses);
    LOWBIT_TRY(m_cosSin, floats(n * hd, "RoPE table"));
    const int64_t chunk = m_plan.chunkRows, vocab = c.vocabSize;
    HeadBuffers &hb = m_head;
    for (float **buffer : {&hb.selected, &hb.normed, &hb.dNormed, &hb.dSelected}) {
        LOWBIT_TRY(*buffer, floats(chunk * h, "head rows"));
    }
    LOWBIT_TRY(hb.invRms, floats(chunk, "head 1/rms"));
    LOWBIT_TRY(hb.logits, floats(chunk * vocab, "logit chunk"));
    if (!fp32) {
        LOWBIT_TRY(hb.half, allocate(size_t(chunk * std::max(vocab, h)) * 2, "16-bit head input"));
    }
    return {};
}

Status CudaTrainModelImpl::init(const Checkpoint &checkpoint, const LoraOptions &lora,
                                const CudaTrainOptions &options) {
    LOWBIT_CHECK(openDevice(options));
    m_options = options;
    m_options.packed = nullptr; // read during create() only
    m_config = checkpoint.config;
    const ModelConfig &c = m_config;
    const cuda::train::AttentionDims dims{c.numHeads, c.numKvHeads, c.headDim, 0.0f};
    LOWBIT_TRY(m_plan, detail::planCudaTraining(checkpoint, lora, options,
                                                cuda::train::attentionBackwardWorkspaceFloats(
                                                    options.maxBatchTokens, dims)));
    // Every byte is allocated below; 256 MiB for cuBLAS's workspace and allocator rounding, and
    // 5% of the free memory kept (checkFits's margin).
    size_t freeBytes = 0, totalBytes = 0;
    LOWBIT_CUDA_CHECK(cudaMemGetInfo(&freeBytes, &totalBytes), "cudaMemGetInfo");
    const CudaTrainMemory &m = m_plan.memory;
    const uint64_t need = m.total() + (uint64_t(256) << 20);
    if (need > freeBytes - freeBytes / 20)
        return makeError(
            ErrorCode::OutOfMemory,
            m_deviceName + ": training needs " + formatBytes(need) + " (weights " +
                formatBytes(m.weightBytes) + ", adapters " + formatBytes(m.adapterBytes) +
                ", activation checkpoints " + formatBytes(m.checkpointBytes) + ", one layer " +
                formatBytes(m.layerBytes) + ", logit chunk " + formatBytes(m.headBytes) +
                ", cuBLAS 256.0 MiB) but only " + formatBytes(freeBytes) + " is free");
    m_invFreq = c.ropeInverseFrequencies();
    const ModelWeights &w = checkpoint.weights;
    m_embeddingType = m_plan.tableType;
    LOWBIT_TRY(m_embedding, uploadMatrix(w.tokenEmbedding, m_embeddingType));
    if (w.output.data == w.tokenEmbedding.data && w.output.dtype == w.tokenEmbedding.dtype) {
        m_output = m_embedding, m_outputType = m_embeddingType;
    } else {
        m_outputType = options.precision == GemmPrecision::Fp32 ? DType::F32 : w.output.dtype;
        LOWBIT_TRY(m_output, uploadMatrix(w.output, m_outputType));
    }
    // Norm weights: float32, one buffer (final norm, then attn/ffn of each layer).
    std::vector<float> norms = tensorToFloats(w.finalNorm);
    for (const LayerWeights &lw : w.layers)
        for (const Tensor *t : {&lw.attnNorm, &lw.ffnNorm}) {
            const std::vector<float> v = tensorToFloats(*t);
            norms.insert(norms.end(), v.begin(), v.end());
        }
    LOWBIT_TRY(const void *dNorms, upload(norms.data(), norms.size() * 4, "norm weights"));
    m_finalNorm = static_cast<const float *>(dNorms);
    m_layers.resize(size_t(c.numLayers));
    for (int64_t l = 0; l < c.numLayers; ++l) {
        m_layers[size_t(l)].attnNorm = m_finalNorm + (2 * l + 1) * c.hiddenSize;
        m_layers[size_t(l)].ffnNorm = m_finalNorm + (2 * l + 2) * c.hiddenSize;
        LOWBIT_CHECK(buildLayer(checkpoint, lora, l));
    }
    for (detail::LinearPlan &lp : m_plan.linears)
        lp.packed = nullptr; // the caller's tensors are not ours to keep
    LOWBIT_CHECK(buildAdapters());
    LOWBIT_CHECK(allocateWork());
    LOWBIT_CUDA_CHECK(cudaStreamSynchronize(m_stream), "model upload");
    return {};
}

} // namespace lowbit::train::device

namespace lowbit::train {

Result<std::unique_ptr<CudaTrainModel>> CudaTrainModel::create(const Checkpoint &checkpoint,
                                                               const LoraOptions &lora,
                                                               const CudaTrainOptions &options) {
    auto model = std::make_unique<device::CudaTrainModelImpl>();
    LOWBIT_CHECK(model->init(checkpoint, lora, options));
    return std::unique_ptr<CudaTrainModel>(std::move(model));
}

} // namespace lowbit::train
