// The GPU a quantization job runs its dense linear algebra on (QuantizeOptions::device): the
// calibration Hessians (cuBLAS SYRK), the Cholesky factor of H^-1 (cuSOLVER) and GPTQ's min-max
// grid sweep (engine/backend/cuda/cuda_gptq.h). The calibration forward (Model::runLayer) and
// every other method step stay on the CPU.
//
// One QuantDevice per job, opened by quantizeModel and lent to the calibration hook and to each
// LinearJob; a null QuantDevice* everywhere means the CPU. It also keeps the record of which stage
// ran where, so the report says it (QuantizeReport::device) instead of any silent fallback: code
// that could have used the device but did a stage on the CPU calls ranOnCpu(stage).
//
// Thread affinity: use it on the thread that opened it (the CUDA device is current there).
#pragma once

#include "backend/device.h"
#include "core/result.h"

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace lowbit {

class CudaBackend;
class CudaHessianSum;

class QuantDevice {
public:
    // Null for the CPU. For cuda:N, one CudaBackend (float32 GEMMs); errors up front, before any
    // work, when the build has no CUDA backend or there is no such device (Unsupported /
    // InvalidArgument with the reason of cudaDeviceCount, e.g. "quantize: cuda:0: cuda:
    // cudaGetDeviceCount: cudaErrorNoDevice (no CUDA-capable device is detected)").
    static Result<std::unique_ptr<QuantDevice>> open(const DeviceSpec &spec);
    ~QuantDevice();

    const std::string &name() const { return m_name; } // "cuda:0"
    CudaBackend &backend() { return *m_backend; }

    // The device operations, each recorded under its stage ("hessian", "cholesky").
    Result<std::unique_ptr<CudaHessianSum>> hessianSum(int64_t cols);
    Status choleskyInverseUpper(std::vector<float> &h, int64_t n);
    // Stages in the order first seen. A stage done on the CPU although the job asked for the
    // device may carry its reason: ranOnCpu("sweep (block 256 > 128)").
    void ranOnDevice(const std::string &stage) { add(m_deviceStages, stage); }
    void ranOnCpu(const std::string &stage) { add(m_cpuStages, stage); }

    // "gptq: hessian+cholesky+sweep on cuda:0; forward on cpu", or "awq: cpu (no device path)"
    // when nothing ran on the device.
    std::string summary(std::string_view method) const {
        return describe(method, m_name, m_deviceStages, m_cpuStages);
    }
    static std::string describe(std::string_view method, std::string_view device,
                                const std::vector<std::string> &deviceStages,
                                const std::vector<std::string> &cpuStages);

private:
    QuantDevice(std::unique_ptr<CudaBackend> backend, std::string name);
    static void add(std::vector<std::string> &stages, const std::string &stage);
    std::unique_ptr<CudaBackend> m_backend;
    std::string m_name;
    std::vector<std::string> m_deviceStages, m_cpuStages;
};

} // namespace lowbit
