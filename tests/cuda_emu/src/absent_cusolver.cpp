// CUDA emulator (tests/cuda_emu): cuSOLVER is not emulated, so cuda_gptq.cpp is left out of the
// emulated engine; its entry points (declared in backend/device.h) say so instead.
#include "backend/device.h"

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_gptq.h"

namespace lowbit {

namespace {
Error absent(const char *what) {
    return makeError(ErrorCode::Unsupported,
                     std::string(what) + ": cuSOLVER is not emulated (tests/cuda_emu)");
}
} // namespace

Result<std::unique_ptr<CudaHessianSum>> CudaHessianSum::create(CudaBackend &, int64_t) {
    return absent("CudaHessianSum");
}

Result<std::vector<double>> cudaHessian(CudaBackend &, std::span<const float>, int64_t, int64_t) {
    return absent("cudaHessian");
}

Status cudaCholeskyInverseUpper(CudaBackend &, std::vector<float> &, int64_t) {
    return absent("cudaCholeskyInverseUpper");
}

Result<QuantizedTensor> cudaGptqSweep(CudaBackend &, std::string, std::span<const float>, int64_t,
                                      int64_t, const PreparedHessian &, const GptqOptions &,
                                      double *, std::stop_token) {
    return absent("cudaGptqSweep");
}

} // namespace lowbit
