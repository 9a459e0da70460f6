// CudaBackend's host side: weight cache, buffers, cuBLAS GEMMs, and the launches of kernels.h.
#include "backend/cuda/cuda_backend.h"

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels.h"
#include "quant/quantized_tensor.h"

#include <algorithm>
#include <unordered_map>

namespace lowbit {

using cuda::DeviceBuffer;

int cudaDeviceCount(std::string *why) {
    int count = 0;
    const Status status = cuda::check(cudaGetDeviceCount(&count), "cudaGetDeviceCount");
    if (!status.ok() || count == 0) {
        cudaGetLastError();
        if (why)
            *why = status.ok() ? "no CUDA device present" : status.error().message;
        return 0;
    }
    return count;
}

namespace {

// Weights are cached by host address, dtype and size: a freed tensor's address can be reused by a
// different one, and the dtype and size tell most such cases apart (the header's contract covers
// the rest: cached tensors must outlive the backend).
struct WeightKey {
    const void *data;
    DType type;
    int64_t numel;
    bool operator==(const WeightKey &) const = default;
};
struct WeightKeyHash {
    size_t operator()(const WeightKey &k) const {
        return std::hash<const void *>()(k.data) ^ (size_t(k.numel) * 31 + size_t(k.type));
    }
};

struct DeviceWeight {
    DeviceBuffer data;
    DType type = DType::F32; // as stored on the device
};

struct DevicePacked {
    DeviceBuffer codes, scales, zeros, codebook, bitOffsets, widths, permutation;
    cuda::PackedView view;
};

class CudaBackendImpl final : public CudaBackend {
public:
    ~CudaBackendImpl() override {
        m_weights.clear();
        m_packed.clear();
        m_buffers.clear();
        if (m_blas)
            cublasDestroy(m_blas);
        if (m_stream)
            cudaStreamDestroy(m_stream);
    }

    Status init(const CudaOptions &options) {
        std::string why;
        const int count = cudaDeviceCount(&why);
        if (count == 0)
            return makeError(ErrorCode::Unsupported,
                             "cuda:" + std::to_string(options.device) + ": " + why);
        if (options.device < 0 || options.device >= count)
            return makeError(ErrorCode::InvalidArgument, "cuda:" + std::to_string(options.device) +
                                                             ": no such device (" +
                                                             std::to_string(count) + " present)");
        LOWBIT_CUDA_CHECK(cudaSetDevice(options.device), "cudaSetDevice");
        cudaDeviceProp prop{};
        LOWBIT_CUDA_CHECK(cudaGetDeviceProperties(&prop, options.device),
                          "cudaGetDeviceProperties");
        m_info = {options.device,
                  prop.name,
                  prop.major,
                  prop.minor,
                  prop.multiProcessorCount,
                  uint64_t(prop.totalGlobalMem)};
        m_precision = options.precision;
        LOWBIT_CUDA_CHECK(cudaStreamCreateWithFlags(&m_stream, cudaStreamNonBlocking),
                          "cudaStreamCreate");
        LOWBIT_CUDA_CHECK(cublasCreate(&m_blas), "cublasCreate");
        LOWBIT_CUDA_CHECK(cublasSetStream(m_blas, m_stream), "cublasSetStream");
        // Default math: float32 GEMMs stay float32 (TF32 needs CUBLAS_TF32_TENSOR_OP_MATH), and
        // 16-bit GEMMs keep tensor cores (pedantic math may give them up).
        LOWBIT_CUDA_CHECK(cublasSetMathMode(m_blas, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
        return {};
    }

    std::string_view name() const override { return "cuda"; }
    int threads() const override { return 1; }
    const CudaDeviceInfo &deviceInfo() const override { return m_info; }
    GemmPrecision precision() const override { return m_precision; }

    Result<uint64_t> freeBytes() const override {
        size_t freeBytes = 0, total = 0;
        LOWBIT_CUDA_CHECK(cudaMemGetInfo(&freeBytes, &total), "cudaMemGetInfo");
        return uint64_t(freeBytes);
    }

    Status synchronize() override {
        Status sync = cuda::check(cudaStreamSynchronize(m_stream), "cudaStreamSynchronize");
        Status first = m_error.ok() ? sync : m_error;
        m_error = {};
        return first;
    }

    Result<float *> allocate(size_t floats, const std::string &what) override {
        LOWBIT_TRY(DeviceBuffer buffer,
                   DeviceBuffer::allocate(std::max<size_t>(floats, 1) * 4, what));
        float *p = buffer.as<float>();
        m_buffers.emplace(p, std::move(buffer));
        return p;
    }
    void release(float *buffer) override { m_buffers.erase(buffer); }

    Status upload(float *device, const float *host, size_t floats) override {
        LOWBIT_CUDA_CHECK(
            cudaMemcpyAsync(device, host, floats * 4, cudaMemcpyHostToDevice, m_stream), "upload");
        return {};
    }
    Status download(float *host, const float *device, size_t floats) override {
        LOWBIT_CUDA_CHECK(
            cudaMemcpyAsync(host, device, floats * 4, cudaMemcpyDeviceToHost, m_stream),
            "download");
        return synchronize();
    }
    Status copy(float *to, const float *from, size_t floats) override {
        LOWBIT_CUDA_CHECK(cudaMemcpyAsync(to, from, floats * 4, cudaMemcpyDeviceToDevice, m_stream),
                          "copy");
        return {};
    }

    Status prepareWeight(const Tensor &weight) override {
        auto w = deviceWeight(weight);
        return w.ok() ? Status{} : Status(w.error());
    }
    uint64_t weightBytes() const override { return m_weightBytes; }

    void embed(const Tensor &table, std::span<const int32_t> ids, float *out) override;
    void rmsnorm(const float *x, int64_t rows, int64_t dim, const Tensor &weight, float eps,
                 float *y) override;
    void matmul(const float *x, int64_t rows, const Tensor &weight, float *y) override {
        keep(gemm(x, rows, weight, y));
    }
    void rope(float *x, int64_t rows, int64_t rowStride, int64_t heads, int64_t headDim,
              const float *cosSin) override {
        if (m_error.ok())
            keep(cuda::ropeRows(x, rows, rowStride, heads, headDim, cosSin, m_stream));
    }
    void attention(std::span<const AttentionSequence> sequences,
                   const AttentionShape &shape) override {
        keep(attend(sequences, shape));
    }
    void swiglu(const float *gate, const float *up, int64_t count, float *out) override {
        if (m_error.ok())
            keep(cuda::swigluValues(gate, up, count, out, m_stream));
    }
    void add(float *x, const float *y, int64_t count) override {
        if (m_error.ok())
            keep(cuda::addValues(x, y, count, m_stream));
    }

    Status tokenLogProbs(const float *logits, int64_t rows, int64_t vocab,
                         std::span<const int32_t> targets, std::span<double> out) override;
    Status topK(const float *logits, int64_t rows, int64_t vocab, int k, std::span<int32_t> ids,
                std::span<float> values) override;
    Status quantizedMatmul(const float *x, int64_t rows, const QuantizedTensor &weight,
                           float *y) override;

private:
    void keep(Status status) {
        if (!status.ok() && m_error.ok())
            m_error = std::move(status);
    }
    Result<const DeviceWeight *> deviceWeight(const Tensor &weight);
    Result<const DevicePacked *> devicePacked(const QuantizedTensor &weight);
    Status gemm(const float *x, int64_t rows, const Tensor &weight, float *y);
    Status denseGemm(const float *x, int64_t rows, const void *w, DType type, int64_t out,
                     int64_t in, float *y);
    Status attend(std::span<const AttentionSequence> sequences, const AttentionShape &shape);
    template <typename T>
    Status uploadVector(DeviceBuffer &buffer, const std::vector<T> &host, size_t padBytes,
                        const std::string &what);

    CudaDeviceInfo m_info;
    GemmPrecision m_precision = GemmPrecision::Tensor16;
    cudaStream_t m_stream = nullptr;
    cublasHandle_t m_blas = nullptr;
    Status m_error;
    std::unordered_map<WeightKey, DeviceWeight, WeightKeyHash> m_weights;
    std::unordered_map<const void *, DevicePacked> m_packed;
    std::unordered_map<float *, DeviceBuffer> m_buffers;
    uint64_t m_weightBytes = 0;
    // Scratch reused across calls.
    DeviceBuffer m_ids, m_half, m_dequant, m_permuted, m_sequences, m_tasks, m_partials, m_doubles;
};

template <typename T>
Status CudaBackendImpl::uploadVector(DeviceBuffer &buffer, const std::vector<T> &host,
                                     size_t padBytes, const std::string &what) {
    const size_t bytes = host.size() * sizeof(T);
    LOWBIT_TRY(buffer, DeviceBuffer::allocate(bytes + padBytes, what));
    if (padBytes)
        LOWBIT_CUDA_CHECK(cudaMemsetAsync(buffer.data(), 0, bytes + padBytes, m_stream), "memset");
    if (bytes)
        LOWBIT_CUDA_CHECK(
            cudaMemcpyAsync(buffer.data(), host.data(), bytes, cudaMemcpyHostToDevice, m_stream),
            ("upload of " + what).c_str());
    m_weightBytes += bytes + padBytes;
    return {};
}

Result<const DeviceWeight *> CudaBackendImpl::deviceWeight(const Tensor &weight) {
    const WeightKey key{weight.data, weight.dtype, weight.numel()};
    if (auto it = m_weights.find(key); it != m_weights.end())
        return &it->second;
    if (weight.empty() || weight.numel() <= 0)
        return makeError(ErrorCode::InvalidArgument, "cuda: weight " + weight.name + " is empty");
    // Norm vectors and Fp32-precision matrices are widened to float32 once, on the device.
    const bool widen = weight.dtype != DType::F32 &&
                       (weight.shape.size() < 2 || m_precision == GemmPrecision::Fp32);
    DeviceWeight w;
    w.type = widen ? DType::F32 : weight.dtype;
    LOWBIT_TRY(w.data, DeviceBuffer::allocate(size_t(weight.numel()) * dtypeBytes(w.type),
                                              "weight " + weight.name));
    if (widen) {
        LOWBIT_TRY(DeviceBuffer raw,
                   DeviceBuffer::allocate(weight.bytes(), "upload of " + weight.name));
        LOWBIT_CUDA_CHECK(cudaMemcpyAsync(raw.data(), weight.data, weight.bytes(),
                                          cudaMemcpyHostToDevice, m_stream),
                          ("upload of " + weight.name).c_str());
        LOWBIT_CHECK(cuda::halfToFloats(raw.data(), weight.dtype, weight.numel(),
                                        w.data.as<float>(), m_stream));
        LOWBIT_CUDA_CHECK(cudaStreamSynchronize(m_stream),
                          "weight conversion"); // before `raw` is freed
    } else {
        LOWBIT_CUDA_CHECK(cudaMemcpyAsync(w.data.data(), weight.data, weight.bytes(),
                                          cudaMemcpyHostToDevice, m_stream),
                          ("upload of " + weight.name).c_str());
    }
    m_weightBytes += w.data.bytes();
    return &m_weights.emplace(key, std::move(w)).first->second;
}

void CudaBackendImpl::embed(const Tensor &table, std::span<const int32_t> ids, float *out) {
    if (!m_error.ok() || ids.empty())
        return;
    auto w = deviceWeight(table);
    if (!w.ok())
        return keep(w.error());
    keep(cuda::ensure(m_ids, ids.size_bytes(), "token ids"));
    if (m_error.ok())
        keep(cuda::check(cudaMemcpyAsync(m_ids.data(), ids.data(), ids.size_bytes(),
                                         cudaMemcpyHostToDevice, m_stream),
                         "upload of token ids"));
    if (m_error.ok())
        keep(cuda::embedRows((*w)->data.data(), (*w)->type, table.cols(), m_ids.as<int32_t>(),
                             int64_t(ids.size()), out, m_stream));
}

void CudaBackendImpl::rmsnorm(const float *x, int64_t rows, int64_t dim, const Tensor &weight,
                              float eps, float *y) {
    if (!m_error.ok())
        return;
    auto w = deviceWeight(weight);
    if (!w.ok())
        return keep(w.error());
    keep(cuda::rmsnormRows(x, rows, dim, (*w)->data.as<float>(), eps, y, m_stream));
}

Status CudaBackendImpl::gemm(const float *x, int64_t rows, const Tensor &weight, float *y) {
    if (!m_error.ok() || rows == 0)
        return {};
    LOWBIT_TRY(const DeviceWeight *w, deviceWeight(weight));
    return denseGemm(x, rows, w->data.data(), w->type, weight.rows(), weight.cols(), y);
}

// Row-major y[rows x out] = x[rows x in] W^T is, column-major, Y (out x rows) = W^T(in x out)^T X.
Status CudaBackendImpl::denseGemm(const float *x, int64_t rows, const void *w, DType type,
                                  int64_t out, int64_t in, float *y) {
    if (rows <= cuda::kGemvMaxRows)
        return cuda::denseGemv(x, rows, w, type, out, in, y, m_stream);
    if (out > INT32_MAX || in > INT32_MAX || rows > INT32_MAX)
        return makeError(ErrorCode::Unsupported, "cuda matmul: dimension over 2^31");
    const float one = 1.0f, zero = 0.0f;
    if (type == DType::F32) {
        LOWBIT_CUDA_CHECK(cublasSgemm(m_blas, CUBLAS_OP_T, CUBLAS_OP_N, int(out), int(rows),
                                      int(in), &one, static_cast<const float *>(w), int(in), x,
                                      int(in), &zero, y, int(out)),
                          "cublasSgemm");
        return {};
    }
    // Tensor cores want both inputs 16-bit: x is rounded to the weight's type, sums stay float32.
    LOWBIT_CHECK(cuda::ensure(m_half, size_t(rows * in) * 2, "16-bit copy of a GEMM input"));
    LOWBIT_CHECK(cuda::floatsToHalf(x, rows * in, type, m_half.data(), m_stream));
    const cudaDataType t = type == DType::BF16 ? CUDA_R_16BF : CUDA_R_16F;
    LOWBIT_CUDA_CHECK(cublasGemmEx(m_blas, CUBLAS_OP_T, CUBLAS_OP_N, int(out), int(rows), int(in),
                                   &one, w, t, int(in), m_half.data(), t, int(in), &zero, y,
                                   CUDA_R_32F, int(out), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                      "cublasGemmEx");
    return {};
}

Status CudaBackendImpl::attend(std::span<const AttentionSequence> sequences,
                               const AttentionShape &shape) {
    if (!m_error.ok() || sequences.empty())
        return {};
    if (shape.kvHeads <= 0 || shape.heads % shape.kvHeads != 0)
        return makeError(ErrorCode::InvalidArgument,
                         "cuda attention: heads not a multiple of kv heads");
    const int64_t group = shape.heads / shape.kvHeads;
    std::vector<cuda::AttentionTask> tasks;
    int64_t maxKeys = 0;
    for (size_t s = 0; s < sequences.size(); ++s) {
        const int64_t pairs = sequences[s].queries * group;
        maxKeys = std::max(maxKeys, sequences[s].firstPosition + sequences[s].queries);
        for (int64_t h = 0; h < shape.kvHeads; ++h)
            for (int64_t p0 = 0; p0 < pairs; p0 += cuda::kAttentionPairsPerBlock) {
                const int64_t lastRow =
                    (std::min(pairs, p0 + cuda::kAttentionPairsPerBlock) - 1) / group;
                tasks.push_back({int32_t(s), int32_t(h), int32_t(p0),
                                 int32_t(sequences[s].firstPosition + lastRow + 1)});
            }
    }
    if (tasks.empty())
        return {};
    const cuda::AttentionPlan plan =
        cuda::planAttention(int64_t(tasks.size()), maxKeys, m_info.multiprocessors);
    LOWBIT_CHECK(cuda::ensure(m_sequences, sequences.size_bytes(), "attention descriptors"));
    LOWBIT_CHECK(cuda::ensure(m_tasks, tasks.size() * sizeof(tasks[0]), "attention tasks"));
    LOWBIT_CHECK(cuda::ensure(m_partials, cuda::attentionWorkspaceFloats(plan, shape.headDim) * 4,
                              "attention partials"));
    // Pageable sources: the copies are staged before cudaMemcpyAsync returns, so the vectors may
    // go.
    LOWBIT_CUDA_CHECK(cudaMemcpyAsync(m_sequences.data(), sequences.data(), sequences.size_bytes(),
                                      cudaMemcpyHostToDevice, m_stream),
                      "upload of attention descriptors");
    LOWBIT_CUDA_CHECK(cudaMemcpyAsync(m_tasks.data(), tasks.data(), tasks.size() * sizeof(tasks[0]),
                                      cudaMemcpyHostToDevice, m_stream),
                      "upload of attention tasks");
    return cuda::attention(m_sequences.as<AttentionSequence>(), m_tasks.as<cuda::AttentionTask>(),
                           plan, shape, m_partials.as<float>(), m_stream);
}

Status CudaBackendImpl::tokenLogProbs(const float *logits, int64_t rows, int64_t vocab,
                                      std::span<const int32_t> targets, std::span<double> out) {
    LOWBIT_CHECK(synchronize());
    if (int64_t(targets.size()) != rows || int64_t(out.size()) != rows)
        return makeError(ErrorCode::InvalidArgument,
                         "cuda tokenLogProbs: targets and out must have one entry per row");
    for (int32_t t : targets)
        if (t < 0 || t >= vocab)
            return makeError(ErrorCode::InvalidArgument,
                             "cuda tokenLogProbs: target " + std::to_string(t) +
                                 " out of range (vocab " + std::to_string(vocab) + ")");
    if (rows == 0)
        return {};
    LOWBIT_CHECK(cuda::ensure(m_ids, targets.size_bytes(), "targets"));
    LOWBIT_CHECK(cuda::ensure(m_doubles, out.size_bytes(), "log-probabilities"));
    LOWBIT_CUDA_CHECK(cudaMemcpyAsync(m_ids.data(), targets.data(), targets.size_bytes(),
                                      cudaMemcpyHostToDevice, m_stream),
                      "upload of targets");
    LOWBIT_CHECK(cuda::tokenLogProbs(logits, rows, vocab, m_ids.as<int32_t>(),
                                     m_doubles.as<double>(), m_stream));
    LOWBIT_CUDA_CHECK(cudaMemcpyAsync(out.data(), m_doubles.data(), out.size_bytes(),
                                      cudaMemcpyDeviceToHost, m_stream),
                      "download of log-probabilities");
    return synchronize();
}

Status CudaBackendImpl::topK(const float *logits, int64_t rows, int64_t vocab, int k,
                             std::span<int32_t> ids, std::span<float> values) {
    LOWBIT_CHECK(synchronize());
    if (int64_t(ids.size()) != rows * k || int64_t(values.size()) != rows * k)
        return makeError(ErrorCode::InvalidArgument,
                         "cuda topK: ids and values must hold rows * k entries");
    if (rows == 0)
        return {};
    LOWBIT_CHECK(cuda::ensure(m_ids, ids.size_bytes(), "top-k ids"));
    LOWBIT_CHECK(cuda::ensure(m_doubles, values.size_bytes(), "top-k values"));
    LOWBIT_CHECK(
        cuda::topK(logits, rows, vocab, k, m_ids.as<int32_t>(), m_doubles.as<float>(), m_stream));
    LOWBIT_CUDA_CHECK(cudaMemcpyAsync(ids.data(), m_ids.data(), ids.size_bytes(),
                                      cudaMemcpyDeviceToHost, m_stream),
                      "download of top-k ids");
    LOWBIT_CUDA_CHECK(cudaMemcpyAsync(values.data(), m_doubles.data(), values.size_bytes(),
                                      cudaMemcpyDeviceToHost, m_stream),
                      "download of top-k values");
    return synchronize();
}

Result<const DevicePacked *> CudaBackendImpl::devicePacked(const QuantizedTensor &q) {
    if (auto it = m_packed.find(q.packed.data()); it != m_packed.end())
        return &it->second;
    LOWBIT_CHECK(q.validate());
    const int64_t groups = q.groups();
    const std::vector<uint32_t> offsets = q.groupBitOffsets();
    std::vector<uint8_t> widths(static_cast<size_t>(groups));
    for (int64_t g = 0; g < groups; ++g)
        widths[size_t(g)] = uint8_t(q.groupWidth(g));
    DevicePacked d;
    const std::string what = "quantized weight " + q.name;
    LOWBIT_CHECK(uploadVector(d.codes, q.packed, 4, what));
    LOWBIT_CHECK(uploadVector(d.scales, q.scales, 0, what));
    LOWBIT_CHECK(uploadVector(d.zeros, q.zeros, 0, what));
    LOWBIT_CHECK(uploadVector(d.codebook, q.codebook, 0, what));
    LOWBIT_CHECK(uploadVector(d.bitOffsets, offsets, 0, what));
    LOWBIT_CHECK(uploadVector(d.widths, widths, 0, what));
    LOWBIT_CHECK(uploadVector(d.permutation, q.permutation, 0, what));
    cuda::PackedView &v = d.view;
    v = {d.codes.as<uint8_t>(),
         d.scales.as<float>(),
         d.zeros.as<float>(),
         q.codebook.empty() ? nullptr : d.codebook.as<float>(),
         d.bitOffsets.as<uint32_t>(),
         d.widths.as<uint8_t>(),
         q.rows,
         q.cols,
         q.groupSize,
         groups,
         q.rowBits(),
         q.bits,
         false};
    v.uniform = q.groupBits.empty() && 32 % q.bits == 0 && q.rowBits() % 32 == 0 &&
                q.groupSize % (32 / q.bits) == 0;
    LOWBIT_CUDA_CHECK(cudaStreamSynchronize(m_stream), "upload of a quantized weight");
    return &m_packed.emplace(q.packed.data(), std::move(d)).first->second;
}

// No synchronization: decode calls this seven times a layer; faults surface at synchronize().
Status CudaBackendImpl::quantizedMatmul(const float *x, int64_t rows, const QuantizedTensor &weight,
                                        float *y) {
    if (!m_error.ok())
        return m_error;
    if (rows <= 0)
        return rows == 0 ? Status{}
                         : makeError(ErrorCode::InvalidArgument, "cuda quantizedMatmul: rows < 0");
    LOWBIT_TRY(const DevicePacked *d, devicePacked(weight));
    const int64_t in = weight.cols;
    if (!weight.permutation.empty()) {
        LOWBIT_CHECK(cuda::ensure(m_permuted, size_t(rows * in) * 4, "permuted GEMM input"));
        LOWBIT_CHECK(cuda::permuteColumns(x, rows, in, d->permutation.as<int32_t>(),
                                          m_permuted.as<float>(), m_stream));
        x = m_permuted.as<float>();
    }
    if (rows <= cuda::kGemvMaxRows) {
        LOWBIT_CHECK(cuda::packedGemv(x, rows, d->view, y, m_stream));
    } else {
        // Prefill: dequantize once into scratch, then the dense GEMM (amortized over the rows).
        const DType type = m_precision == GemmPrecision::Fp32 ? DType::F32 : DType::BF16;
        LOWBIT_CHECK(cuda::ensure(m_dequant, size_t(weight.rows * in) * dtypeBytes(type),
                                  "dequantized weight"));
        LOWBIT_CHECK(cuda::packedDequantize(d->view, type, m_dequant.data(), m_stream));
        LOWBIT_CHECK(denseGemm(x, rows, m_dequant.data(), type, weight.rows, in, y));
    }
    return {};
}

} // namespace

Result<std::unique_ptr<CudaBackend>> makeCudaBackend(const CudaOptions &options) {
    auto backend = std::make_unique<CudaBackendImpl>();
    LOWBIT_CHECK(backend->init(options));
    return std::unique_ptr<CudaBackend>(std::move(backend));
}

} // namespace lowbit
