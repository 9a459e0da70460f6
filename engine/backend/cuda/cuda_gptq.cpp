#include "backend/cuda/cuda_gptq.h"

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels.h"
#include "quant/obs_sweep.h"

#include <algorithm>

namespace lowbit {

using cuda::DeviceBuffer;

namespace {

// cuBLAS/cuSOLVER handles of one call, on the default stream (GPTQ calls are coarse).
struct Handles {
    cublasHandle_t blas = nullptr;
    cusolverDnHandle_t solver = nullptr;
    ~Handles() {
        if (blas)
            cublasDestroy(blas);
        if (solver)
            cusolverDnDestroy(solver);
    }
};

// Makes the backend's device current on this thread: the buffers, handles and default-stream work
// below go to the current device, which another backend created later on this thread, or the
// thread itself (a worker other than the one that created the backend), may have changed.
Status useDevice(int index) {
    LOWBIT_CUDA_CHECK(cudaSetDevice(index), "cudaSetDevice");
    return {};
}

// Reverses rows and columns of an n x n matrix: J A J.
void reverseBoth(std::vector<float> &a, int64_t n) {
    std::reverse(a.begin(), a.end());
}

class DeviceHessianSum final : public CudaHessianSum {
public:
    DeviceHessianSum(int64_t cols, int device) : m_cols(cols), m_device(device) {}

    Status init() {
        LOWBIT_CHECK(useDevice(m_device));
        LOWBIT_CUDA_CHECK(cublasCreate(&m_handles.blas), "cublasCreate");
        // Plain float32 SYRK (no TF32), as the CPU's ssyrk.
        LOWBIT_CUDA_CHECK(cublasSetMathMode(m_handles.blas, CUBLAS_DEFAULT_MATH),
                          "cublasSetMathMode");
        const size_t square = size_t(m_cols) * size_t(m_cols);
        LOWBIT_TRY(m_partial, DeviceBuffer::allocate(square * 4, "Hessian block"));
        LOWBIT_TRY(m_total, DeviceBuffer::allocate(square * 8, "Hessian"));
        LOWBIT_CUDA_CHECK(cudaMemset(m_total.data(), 0, square * 8), "cudaMemset");
        // SYRK writes one triangle only; the other stays 0 and adds nothing to the sum.
        LOWBIT_CUDA_CHECK(cudaMemset(m_partial.data(), 0, square * 4), "cudaMemset");
        return {};
    }

    Status add(std::span<const float> x, int64_t rows) override {
        if (rows < 0 || int64_t(x.size()) != rows * m_cols)
            return makeError(ErrorCode::InvalidArgument,
                             "Hessian on the GPU: the batch must hold rows * " +
                                 std::to_string(m_cols) + " floats");
        LOWBIT_CHECK(useDevice(m_device));
        const int64_t block = std::min(rows, kHessianBlockRows);
        if (block > 0)
            LOWBIT_CHECK(cuda::ensure(m_input, size_t(block * m_cols) * 4, "Hessian input block"));
        const float one = 1.0f, zero = 0.0f;
        const size_t square = size_t(m_cols) * size_t(m_cols);
        for (int64_t r0 = 0; r0 < rows; r0 += block) {
            const int64_t n = std::min(block, rows - r0);
            // Synchronous copy on the default stream: ordered after the previous block's SYRK,
            // which read the same buffer.
            LOWBIT_CUDA_CHECK(cudaMemcpy(m_input.data(), x.data() + r0 * m_cols,
                                         size_t(n * m_cols) * 4, cudaMemcpyHostToDevice),
                              "upload of calibration inputs");
            // Row-major X (n x cols) is column-major X^T (cols x n): X^T X is SYRK with op N.
            LOWBIT_CUDA_CHECK(cublasSsyrk(m_handles.blas, CUBLAS_FILL_MODE_UPPER, CUBLAS_OP_N,
                                          int(m_cols), int(n), &one, m_input.as<float>(),
                                          int(m_cols), &zero, m_partial.as<float>(), int(m_cols)),
                              "cublasSsyrk");
            LOWBIT_CHECK(cuda::accumulateScaled(m_total.as<double>(), m_partial.as<float>(),
                                                int64_t(square), 1.0, nullptr));
        }
        return {};
    }

    Result<std::vector<double>> sum() override {
        LOWBIT_CHECK(useDevice(m_device));
        std::vector<double> h(size_t(m_cols) * size_t(m_cols));
        LOWBIT_CUDA_CHECK(
            cudaMemcpy(h.data(), m_total.data(), h.size() * 8, cudaMemcpyDeviceToHost),
            "download of Hessian");
        // Column-major upper (i <= j at i + j*cols) is row-major lower: mirror it to the upper.
        for (int64_t i = 0; i < m_cols; ++i)
            for (int64_t j = 0; j < i; ++j)
                h[size_t(j * m_cols + i)] = h[size_t(i * m_cols + j)];
        return h;
    }

private:
    int64_t m_cols;
    int m_device;
    Handles m_handles;
    DeviceBuffer m_input, m_partial, m_total;
};

} // namespace

Result<std::unique_ptr<CudaHessianSum>> CudaHessianSum::create(CudaBackend &backend, int64_t cols) {
    if (cols <= 0 || cols > INT32_MAX)
        return makeError(ErrorCode::InvalidArgument,
                         "Hessian on the GPU: width " + std::to_string(cols) + " out of range");
    LOWBIT_CHECK(backend.synchronize());
    auto sum = std::make_unique<DeviceHessianSum>(cols, backend.deviceInfo().index);
    LOWBIT_CHECK(sum->init());
    return std::unique_ptr<CudaHessianSum>(std::move(sum));
}

Result<std::vector<double>> cudaHessian(CudaBackend &backend, std::span<const float> x,
                                        int64_t rows, int64_t cols) {
    if (rows <= 0 || cols <= 0 || int64_t(x.size()) != rows * cols)
        return makeError(ErrorCode::InvalidArgument, "cudaHessian: x must hold rows * cols floats");
    LOWBIT_TRY(auto sum, CudaHessianSum::create(backend, cols));
    LOWBIT_CHECK(sum->add(x, rows));
    LOWBIT_TRY(std::vector<double> h, sum->sum());
    for (double &v : h)
        v *= 2.0 / double(rows);
    return h;
}

Status cudaCholeskyInverseUpper(CudaBackend &backend, std::vector<float> &hm, int64_t n) {
    if (n <= 0 || int64_t(hm.size()) != n * n || n > INT32_MAX)
        return makeError(ErrorCode::InvalidArgument, "cudaCholeskyInverseUpper: h must be n x n");
    LOWBIT_CHECK(backend.synchronize());
    LOWBIT_CHECK(useDevice(backend.deviceInfo().index));
    Handles h;
    LOWBIT_CUDA_CHECK(cusolverDnCreate(&h.solver), "cusolverDnCreate");
    reverseBoth(hm, n); // J H J (symmetric, so row/column-major agree)
    LOWBIT_TRY(DeviceBuffer a, DeviceBuffer::allocate(hm.size() * 4, "Cholesky matrix"));
    LOWBIT_TRY(DeviceBuffer info, DeviceBuffer::allocate(sizeof(int), "cusolver info"));
    LOWBIT_CUDA_CHECK(cudaMemcpy(a.data(), hm.data(), hm.size() * 4, cudaMemcpyHostToDevice),
                      "upload of H");
    int work = 0;
    LOWBIT_CUDA_CHECK(cusolverDnSpotrf_bufferSize(h.solver, CUBLAS_FILL_MODE_LOWER, int(n),
                                                  a.as<float>(), int(n), &work),
                      "cusolverDnSpotrf_bufferSize");
    LOWBIT_TRY(DeviceBuffer workspace,
               DeviceBuffer::allocate(size_t(std::max(work, 1)) * 4, "Cholesky workspace"));
    LOWBIT_CUDA_CHECK(cusolverDnSpotrf(h.solver, CUBLAS_FILL_MODE_LOWER, int(n), a.as<float>(),
                                       int(n), workspace.as<float>(), work, info.as<int>()),
                      "cusolverDnSpotrf");
    int minor = 0;
    LOWBIT_CUDA_CHECK(cudaMemcpy(&minor, info.data(), sizeof(int), cudaMemcpyDeviceToHost),
                      "download of info");
    if (minor != 0)
        return makeError(ErrorCode::Internal,
                         "cudaCholeskyInverseUpper: not positive definite (leading minor " +
                             std::to_string(minor) + ")");
    // L^{-1} in place (column-major lower = row-major upper of the same buffer).
    size_t deviceWork = 0, hostWork = 0;
    LOWBIT_CUDA_CHECK(cusolverDnXtrtri_bufferSize(h.solver, CUBLAS_FILL_MODE_LOWER,
                                                  CUBLAS_DIAG_NON_UNIT, n, CUDA_R_32F, a.data(), n,
                                                  &deviceWork, &hostWork),
                      "cusolverDnXtrtri_bufferSize");
    LOWBIT_TRY(DeviceBuffer trtriWork, DeviceBuffer::allocate(std::max<size_t>(deviceWork, 4),
                                                              "triangular inverse workspace"));
    std::vector<char> hostBuffer(std::max<size_t>(hostWork, 1));
    LOWBIT_CUDA_CHECK(cusolverDnXtrtri(h.solver, CUBLAS_FILL_MODE_LOWER, CUBLAS_DIAG_NON_UNIT, n,
                                       CUDA_R_32F, a.data(), n, trtriWork.data(), deviceWork,
                                       hostBuffer.data(), hostWork, info.as<int>()),
                      "cusolverDnXtrtri");
    LOWBIT_CUDA_CHECK(cudaMemcpy(&minor, info.data(), sizeof(int), cudaMemcpyDeviceToHost),
                      "download of info");
    if (minor != 0) // a zero pivot of L: cannot follow a successful potrf, but say so if it does
        return makeError(ErrorCode::Internal,
                         "cudaCholeskyInverseUpper: triangular inverse failed (info " +
                             std::to_string(minor) + ")");
    LOWBIT_CUDA_CHECK(cudaMemcpy(hm.data(), a.data(), hm.size() * 4, cudaMemcpyDeviceToHost),
                      "download of U");
    // Column-major lower L^{-1} is row-major upper (L^{-1})^T; U = J L^{-1} J is row-major upper
    // after reversing both axes of the row-major L^{-1}, i.e. transpose then reverse.
    std::vector<float> u(hm.size(), 0.0f);
    for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j <= i;
             ++j) // L^{-1}[i][j] (lower) is stored at column-major (i, j) = hm[j*n + i]
            u[size_t((n - 1 - i) * n + (n - 1 - j))] = hm[size_t(j * n + i)];
    hm = std::move(u);
    return {};
}

Result<QuantizedTensor> cudaGptqSweep(CudaBackend &backend, std::string name,
                                      std::span<const float> weight, int64_t rows, int64_t cols,
                                      const PreparedHessian &prepared, const GptqOptions &options,
                                      double *loss, std::stop_token stop) {
    static_assert(kCudaGptqMaxBlock == cuda::kGptqBlock);
    if (int64_t(weight.size()) != rows * cols || prepared.cols != cols || rows > INT32_MAX ||
        cols > INT32_MAX)
        return makeError(ErrorCode::InvalidArgument,
                         name + ": weight or Hessian size does not match its shape");
    if (prepared.hinvUpper.size() != size_t(cols * cols))
        return makeError(ErrorCode::InvalidArgument,
                         name + ": the GPU sweep needs the hinvUpper form (ldl = false)");
    if (options.blockSize < 1 || options.blockSize > kCudaGptqMaxBlock)
        return makeError(ErrorCode::InvalidArgument, name + ": the GPU sweep takes blocks of 1.." +
                                                         std::to_string(kCudaGptqMaxBlock) +
                                                         " columns, not " +
                                                         std::to_string(options.blockSize));
    const int64_t block = options.blockSize;
    LOWBIT_TRY(QuantizedTensor t, QuantizedTensor::create(name, "gptq", rows, cols, options.bits,
                                                          options.groupSize, options.symmetric));
    std::vector<float> w(weight.begin(), weight.end());
    zeroDeadColumns(w, rows, cols, prepared);
    if (!prepared.permutation.empty())
        w = permuteColumns(w, rows, cols, prepared.permutation);
    LOWBIT_CHECK(backend.synchronize());
    LOWBIT_CHECK(useDevice(backend.deviceInfo().index));
    Handles h;
    LOWBIT_CUDA_CHECK(cublasCreate(&h.blas), "cublasCreate");
    LOWBIT_CUDA_CHECK(cublasSetMathMode(h.blas, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
    const int64_t groups = t.groups();
    const std::string what = "GPTQ of " + name;
    LOWBIT_TRY(DeviceBuffer dw, DeviceBuffer::allocate(w.size() * 4, what + " (weights)"));
    LOWBIT_TRY(DeviceBuffer du,
               DeviceBuffer::allocate(prepared.hinvUpper.size() * 4, what + " (chol(H^-1))"));
    LOWBIT_TRY(DeviceBuffer scales,
               DeviceBuffer::allocate(size_t(rows * groups) * 4, what + " (scales)"));
    LOWBIT_TRY(DeviceBuffer zeros,
               DeviceBuffer::allocate(size_t(rows * groups) * 4, what + " (zeros)"));
    LOWBIT_TRY(DeviceBuffer codes, DeviceBuffer::allocate(size_t(rows * cols), what + " (codes)"));
    LOWBIT_TRY(DeviceBuffer err,
               DeviceBuffer::allocate(size_t(rows * block) * 4, what + " (errors)"));
    LOWBIT_TRY(DeviceBuffer losses, DeviceBuffer::allocate(size_t(rows) * 8, what + " (loss)"));
    LOWBIT_CUDA_CHECK(cudaMemcpy(dw.data(), w.data(), w.size() * 4, cudaMemcpyHostToDevice),
                      "upload of weights");
    LOWBIT_CUDA_CHECK(cudaMemcpy(du.data(), prepared.hinvUpper.data(),
                                 prepared.hinvUpper.size() * 4, cudaMemcpyHostToDevice),
                      "upload of chol(H^-1)");
    LOWBIT_CUDA_CHECK(cudaMemset(losses.data(), 0, size_t(rows) * 8), "cudaMemset");
    const float minusOne = -1.0f, one = 1.0f;
    for (int64_t b0 = 0; b0 < cols; b0 += block) {
        if (stop.stop_requested())
            return makeError(ErrorCode::Cancelled, "quantization cancelled");
        const int64_t count = std::min(block, cols - b0), b1 = b0 + count;
        LOWBIT_CHECK(cuda::gptqBlockGrids(dw.as<float>(), rows, cols, t.groupSize, b0, count,
                                          options.bits, options.symmetric, scales.as<float>(),
                                          zeros.as<float>(), nullptr));
        LOWBIT_CHECK(cuda::gptqBlockSweep(dw.as<float>(), rows, cols, b0, count, du.as<float>(),
                                          t.groupSize, options.bits, scales.as<float>(),
                                          zeros.as<float>(), codes.as<uint8_t>(), err.as<float>(),
                                          losses.as<double>(), nullptr));
        if (b1 == cols)
            break;
        // Alg. 1 line 13: W[:, b1:] -= E U[b0:b1, b1:]; column-major, that is W^T[b1:, :] -=
        // U_blk^T E^T, and the row-major operands are already those transposes.
        LOWBIT_CUDA_CHECK(cublasSgemm(h.blas, CUBLAS_OP_N, CUBLAS_OP_N, int(cols - b1), int(rows),
                                      int(count), &minusOne, du.as<float>() + b0 * cols + b1,
                                      int(cols), err.as<float>(), int(count), &one,
                                      dw.as<float>() + b1, int(cols)),
                          "cublasSgemm (GPTQ lazy update)");
    }
    std::vector<uint8_t> hostCodes(size_t(rows * cols));
    std::vector<double> rowLoss(static_cast<size_t>(rows));
    LOWBIT_CUDA_CHECK(
        cudaMemcpy(t.scales.data(), scales.data(), t.scales.size() * 4, cudaMemcpyDeviceToHost),
        "download");
    LOWBIT_CUDA_CHECK(
        cudaMemcpy(t.zeros.data(), zeros.data(), t.zeros.size() * 4, cudaMemcpyDeviceToHost),
        "download");
    LOWBIT_CUDA_CHECK(
        cudaMemcpy(hostCodes.data(), codes.data(), hostCodes.size(), cudaMemcpyDeviceToHost),
        "download");
    LOWBIT_CUDA_CHECK(
        cudaMemcpy(rowLoss.data(), losses.data(), rowLoss.size() * 8, cudaMemcpyDeviceToHost),
        "download");
    LOWBIT_CHECK(t.setCodes(hostCodes));
    t.permutation = prepared.permutation;
    if (loss) {
        *loss = 0;
        for (double l : rowLoss)
            *loss += l;
    }
    return t;
}

} // namespace lowbit
