#include "backend/device.h"

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_gptq.h"

#include "core/build_info.h"

#include <charconv>
#include <cstdio>

namespace lowbit {

std::string DeviceSpec::toString() const {
    return kind == Kind::Cpu ? "cpu" : "cuda:" + std::to_string(index);
}

Result<DeviceSpec> parseDevice(std::string_view text) {
    if (text == "cpu")
        return DeviceSpec{};
    if (text == "cuda")
        return DeviceSpec{DeviceSpec::Kind::Cuda, 0};
    if (text.rfind("cuda:", 0) == 0) {
        const std::string_view digits = text.substr(5);
        int index = -1;
        const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), index);
        if (ec == std::errc() && end == digits.data() + digits.size() && !digits.empty() &&
            digits.size() <= 3 && index >= 0)
            return DeviceSpec{DeviceSpec::Kind::Cuda, index};
    }
    return makeError(ErrorCode::InvalidArgument,
                     "device \"" + std::string(text) +
                         "\": expected \"cpu\", \"cuda\" or \"cuda:N\"");
}

bool cudaBuilt() {
    return LOWBIT_HAVE_CUDA != 0;
}

MemoryEstimate estimateDeviceMemory(const ModelConfig &c, double weightBitsPerValue, int slots,
                                    int64_t capacityTokens, int64_t batchTokens,
                                    int64_t logitRows) {
    const double layerWeights = double(c.hiddenSize) * double(c.numHeads * c.headDim) * 2 +
                                double(c.hiddenSize) * double(c.numKvHeads * c.headDim) * 2 +
                                double(c.hiddenSize) * double(c.intermediateSize) * 3;
    const double embedding = double(c.vocabSize) * double(c.hiddenSize);
    const double head = c.tieWordEmbeddings ? 0.0 : embedding;
    MemoryEstimate e;
    // Embedding, head and norms stay 16-bit when the linear layers are quantized.
    const double tableBits = weightBitsPerValue < 16 ? 16 : weightBitsPerValue;
    e.weightBytes = uint64_t(layerWeights * double(c.numLayers) * weightBitsPerValue / 8 +
                             (embedding + head) * tableBits / 8 +
                             double(c.hiddenSize) * double(2 * c.numLayers + 1) * 4);
    e.kvCacheBytes = uint64_t(2.0 * double(c.numLayers) * double(slots) * double(capacityTokens) *
                              double(c.numKvHeads * c.headDim) * 4);
    // Activations (x, normed, q, k, v, attn, gate, up + a 16-bit copy of the GEMM input), logits,
    // plus 256 MiB for cuBLAS, the attention partials and a dequantized weight.
    const double rowFloats = double(c.hiddenSize) * 2 + double(c.numHeads * c.headDim) * 2 +
                             double(c.numKvHeads * c.headDim) * 2 + double(c.intermediateSize) * 3;
    e.workspaceBytes = uint64_t(double(batchTokens) * rowFloats * 4 +
                                double(logitRows) * double(c.vocabSize) * 4) +
                       (uint64_t(256) << 20);
    return e;
}

std::string formatBytes(uint64_t bytes) {
    char text[64];
    if (bytes >= (uint64_t(1) << 30))
        std::snprintf(text, sizeof text, "%.1f GiB", double(bytes) / double(uint64_t(1) << 30));
    else
        std::snprintf(text, sizeof text, "%.1f MiB", double(bytes) / double(1 << 20));
    return text;
}

Status checkFits(const MemoryEstimate &e, uint64_t freeBytes, std::string_view device) {
    const uint64_t usable = freeBytes - freeBytes / 20;
    if (e.total() <= usable)
        return {};
    return makeError(ErrorCode::OutOfMemory, std::string(device) + ": the job needs " +
                                                 formatBytes(e.total()) + " (weights " +
                                                 formatBytes(e.weightBytes) + ", KV cache " +
                                                 formatBytes(e.kvCacheBytes) + ", workspace " +
                                                 formatBytes(e.workspaceBytes) + ") but only " +
                                                 formatBytes(freeBytes) + " is free");
}

#if !LOWBIT_HAVE_CUDA
int cudaDeviceCount(std::string *why) {
    if (why)
        *why = "this build has no CUDA backend (no CUDA toolkit at configure time, or "
               "LOWBIT_ENABLE_CUDA=OFF)";
    return 0;
}

Result<std::unique_ptr<CudaBackend>> makeCudaBackend(const CudaOptions &options) {
    std::string why;
    cudaDeviceCount(&why);
    return makeError(ErrorCode::Unsupported, "cuda:" + std::to_string(options.device) + ": " + why);
}

Result<std::unique_ptr<CudaHessianSum>> CudaHessianSum::create(CudaBackend &, int64_t) {
    return makeError(ErrorCode::Unsupported, "CudaHessianSum: this build has no CUDA backend");
}

Result<std::vector<double>> cudaHessian(CudaBackend &, std::span<const float>, int64_t, int64_t) {
    return makeError(ErrorCode::Unsupported, "cudaHessian: this build has no CUDA backend");
}

Status cudaCholeskyInverseUpper(CudaBackend &, std::vector<float> &, int64_t) {
    return makeError(ErrorCode::Unsupported,
                     "cudaCholeskyInverseUpper: this build has no CUDA backend");
}

Result<QuantizedTensor> cudaGptqSweep(CudaBackend &, std::string, std::span<const float>, int64_t,
                                      int64_t, const PreparedHessian &, const GptqOptions &,
                                      double *, std::stop_token) {
    return makeError(ErrorCode::Unsupported, "cudaGptqSweep: this build has no CUDA backend");
}
#endif

} // namespace lowbit
