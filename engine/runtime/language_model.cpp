#include "runtime/language_model.h"

#include "backend/cuda/cuda_backend.h"
#include "quant/activation_quant.h"
#include "runtime/cuda_model.h"
#include "runtime/model.h"

#include <algorithm>

namespace lowbit {

Result<std::unique_ptr<LanguageModel>>
openLanguageModel(std::shared_ptr<const Checkpoint> checkpoint, const DeviceSpec &device,
                  const LanguageModelOptions &options) {
    if (!checkpoint)
        return makeError(ErrorCode::InvalidArgument, "openLanguageModel: no checkpoint");
    if (!device.isCuda()) {
        LOWBIT_TRY(auto model, Model::create(std::move(checkpoint), {options.threads}));
        LOWBIT_CHECK(installActivationQuant(*model)); // a W8A8 (SmoothQuant) checkpoint's
        return std::unique_ptr<LanguageModel>(std::move(model));
    }
    // The reason first: "no device" says more than an error of the checkpoint's config.
    std::string why;
    const int count = cudaDeviceCount(&why);
    if (count == 0)
        return makeError(ErrorCode::Unsupported, device.toString() + ": " + why);
    if (device.index >= count)
        return makeError(ErrorCode::InvalidArgument,
                         device.toString() + ": no such device (" + std::to_string(count) +
                             (count == 1 ? " device" : " devices") + " present)");
    LOWBIT_TRY(int activationBits, recordedActivationBits(checkpoint->path));
    if (activationBits != kNoActivationQuant)
        return makeError(ErrorCode::Unsupported,
                         device.toString() + ": " + checkpoint->path.string() + " records " +
                             std::to_string(activationBits) +
                             "-bit activation quantization (W8A8), which only the cpu forward "
                             "simulates; evaluate it with --device cpu");
    CudaModelOptions cuda;
    cuda.backend = {device.index,
                    options.fp32Gemms ? GemmPrecision::Fp32 : GemmPrecision::Tensor16};
    cuda.maxBatchTokens = options.maxBatchTokens;
    cuda.threads = options.threads;
    LOWBIT_TRY(auto model, CudaModel::create(std::move(checkpoint), cuda));
    return std::unique_ptr<LanguageModel>(std::move(model));
}

std::vector<std::vector<SequenceInput>> splitIntoPasses(std::span<const SequenceInput> inputs,
                                                        int64_t maxTokens) {
    maxTokens = std::max<int64_t>(1, maxTokens);
    std::vector<std::vector<SequenceInput>> passes(1);
    int64_t used = 0;
    for (const SequenceInput &in : inputs) {
        const int64_t len = int64_t(in.tokens.size());
        const int64_t wantFrom = in.logits == LogitsWanted::None ? len
                                 : in.logits == LogitsWanted::Last
                                     ? len - 1
                                     : std::clamp<int64_t>(in.logitsFrom, 0, len);
        for (int64_t begin = 0; begin < len;) {
            if (used == maxTokens) {
                passes.emplace_back();
                used = 0;
            }
            const int64_t end = std::min(len, begin + (maxTokens - used));
            SequenceInput piece{in.slot, in.tokens.subspan(size_t(begin), size_t(end - begin)),
                                LogitsWanted::None, 0};
            if (wantFrom < end) {
                piece.logits = LogitsWanted::All;
                piece.logitsFrom = std::max<int64_t>(0, wantFrom - begin);
            }
            passes.back().push_back(piece);
            used += end - begin;
            begin = end;
        }
    }
    return passes;
}

namespace {

// Device names need a context on each device (cudaGetDeviceProperties behind makeCudaBackend).
std::string deviceName(int index) {
    auto backend = makeCudaBackend({index, GemmPrecision::Fp32});
    return backend.ok() ? (*backend)->deviceInfo().name : "unreadable: " + backend.error().message;
}

} // namespace

std::string computeBackendsSummary() {
    if (!cudaBuilt())
        return "cpu (built without CUDA)";
    std::string why;
    const int count = cudaDeviceCount(&why);
    if (count == 0)
        return "cpu; cuda built, no device: " + why;
    std::string out =
        "cpu, cuda (" + std::to_string(count) + (count == 1 ? " device: " : " devices: ");
    for (int i = 0; i < count; ++i)
        out += (i ? ", " : "") + std::string(count > 1 ? "cuda:" + std::to_string(i) + " " : "") +
               deviceName(i);
    return out + ")";
}

std::vector<DeviceSpec> availableDevices() {
    std::vector<DeviceSpec> out{DeviceSpec{}};
    const int count = cudaDeviceCount();
    for (int i = 0; i < count; ++i)
        out.push_back({DeviceSpec::Kind::Cuda, i});
    return out;
}

} // namespace lowbit
