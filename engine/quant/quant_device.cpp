#include "quant/quant_device.h"

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_gptq.h"

#include <algorithm>

namespace lowbit {

QuantDevice::QuantDevice(std::unique_ptr<CudaBackend> backend, std::string name)
    : m_backend(std::move(backend)), m_name(std::move(name)) {}

QuantDevice::~QuantDevice() = default;

Result<std::unique_ptr<QuantDevice>> QuantDevice::open(const DeviceSpec &spec) {
    if (!spec.isCuda())
        return std::unique_ptr<QuantDevice>();
    // Fp32: the quantizer never runs the backend's GEMMs, and exact float32 is what it would want.
    auto backend = makeCudaBackend({spec.index, GemmPrecision::Fp32});
    if (!backend)
        return makeError(backend.error().code, "quantize: " + backend.error().message);
    return std::unique_ptr<QuantDevice>(new QuantDevice(std::move(*backend), spec.toString()));
}

Result<std::unique_ptr<CudaHessianSum>> QuantDevice::hessianSum(int64_t cols) {
    ranOnDevice("hessian");
    return CudaHessianSum::create(*m_backend, cols);
}

Status QuantDevice::choleskyInverseUpper(std::vector<float> &h, int64_t n) {
    ranOnDevice("cholesky");
    return cudaCholeskyInverseUpper(*m_backend, h, n);
}

void QuantDevice::add(std::vector<std::string> &stages, const std::string &stage) {
    if (std::find(stages.begin(), stages.end(), stage) == stages.end())
        stages.push_back(stage);
}

std::string QuantDevice::describe(std::string_view method, std::string_view device,
                                  const std::vector<std::string> &deviceStages,
                                  const std::vector<std::string> &cpuStages) {
    auto join = [](const std::vector<std::string> &stages) {
        std::string out;
        for (const std::string &s : stages)
            out += (out.empty() ? "" : "+") + s;
        return out;
    };
    std::string out = std::string(method) + ": ";
    if (deviceStages.empty())
        return out + "cpu (no device path)";
    out += join(deviceStages) + " on " + std::string(device);
    if (!cpuStages.empty())
        out += "; " + join(cpuStages) + " on cpu";
    return out;
}

} // namespace lowbit
