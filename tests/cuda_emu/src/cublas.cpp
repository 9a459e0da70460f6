// CUDA emulator (tests/cuda_emu): cuBLAS on OpenBLAS (see include/cublas_v2.h).
#include <cublas_v2.h>

#include <cuda_fp16.h>

#include <cblas.h>

#include <cstdint>
#include <cstring>
#include <vector>

struct cublasContext {
    cudaStream_t stream = nullptr;
    cublasMath_t math = CUBLAS_DEFAULT_MATH;
};

namespace {

float widen(const void *p, cudaDataType type, size_t i) {
    const uint16_t bits = type == CUDA_R_32F ? 0 : static_cast<const uint16_t *>(p)[i];
    if (type == CUDA_R_32F)
        return static_cast<const float *>(p)[i];
    if (type == CUDA_R_16BF) {
        const uint32_t u = uint32_t(bits) << 16;
        float f;
        std::memcpy(&f, &u, 4);
        return f;
    }
    return __half2float(__ushort_as_half(bits));
}

// Column-major A (rows x cols as stored) needs ld >= max(1, rows).
bool badShape(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, int lda, int ldb,
              int ldc) {
    auto big = [](int a) { return a > 1 ? a : 1; };
    if (m < 0 || n < 0 || k < 0)
        return true;
    if ((ta != CUBLAS_OP_N && ta != CUBLAS_OP_T) || (tb != CUBLAS_OP_N && tb != CUBLAS_OP_T))
        return true;
    return lda < big(ta == CUBLAS_OP_N ? m : k) || ldb < big(tb == CUBLAS_OP_N ? k : n) ||
           ldc < big(m);
}

bool supported(cudaDataType t) {
    return t == CUDA_R_32F || t == CUDA_R_16F || t == CUDA_R_16BF;
}

std::vector<float> widened(const void *p, cudaDataType type, cublasOperation_t op, int rows,
                           int cols, int ld) {
    // Stored column-major: (op == N ? rows x cols : cols x rows) with leading dimension ld.
    const size_t storedCols = size_t(op == CUBLAS_OP_N ? cols : rows);
    std::vector<float> out(size_t(ld) * storedCols);
    const size_t storedRows = size_t(op == CUBLAS_OP_N ? rows : cols);
    for (size_t c = 0; c < storedCols; ++c)
        for (size_t r = 0; r < storedRows; ++r)
            out[c * size_t(ld) + r] = widen(p, type, c * size_t(ld) + r);
    return out;
}

CBLAS_TRANSPOSE trans(cublasOperation_t op) {
    return op == CUBLAS_OP_N ? CblasNoTrans : CblasTrans;
}

} // namespace

cublasStatus_t cublasCreate(cublasHandle_t *handle) {
    if (!handle)
        return CUBLAS_STATUS_INVALID_VALUE;
    *handle = new cublasContext;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy(cublasHandle_t handle) {
    if (!handle)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    delete handle;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream) {
    if (!handle)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    handle->stream = stream;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGetStream(cublasHandle_t handle, cudaStream_t *stream) {
    if (!handle)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    *stream = handle->stream;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
    if (!handle)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    handle->math = mode;
    return CUBLAS_STATUS_SUCCESS;
}

const char *cublasGetStatusName(cublasStatus_t status) {
    switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: return "CUBLAS_STATUS_INTERNAL_ERROR";
    }
}

const char *cublasGetStatusString(cublasStatus_t status) {
    switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "success";
    case CUBLAS_STATUS_INVALID_VALUE: return "an invalid numeric value was used as an argument";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "the functionality requested is not supported";
    default: return "emulated cuBLAS error";
    }
}

cublasStatus_t cublasSgemm(cublasHandle_t handle, cublasOperation_t transa,
                           cublasOperation_t transb, int m, int n, int k, const float *alpha,
                           const float *A, int lda, const float *B, int ldb, const float *beta,
                           float *C, int ldc) {
    if (!handle)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if (badShape(transa, transb, m, n, k, lda, ldb, ldc) || !alpha || !beta)
        return CUBLAS_STATUS_INVALID_VALUE;
    if (m == 0 || n == 0)
        return CUBLAS_STATUS_SUCCESS;
    cblas_sgemm(CblasColMajor, trans(transa), trans(transb), m, n, k, *alpha, A, lda, B, ldb,
                *beta, C, ldc);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t handle, cublasOperation_t transa,
                                         cublasOperation_t transb, int m, int n, int k,
                                         const float *alpha, const float *A, int lda,
                                         long long strideA, const float *B, int ldb,
                                         long long strideB, const float *beta, float *C, int ldc,
                                         long long strideC, int batchCount) {
    if (batchCount < 0)
        return CUBLAS_STATUS_INVALID_VALUE;
    for (int b = 0; b < batchCount; ++b) {
        const cublasStatus_t s = cublasSgemm(handle, transa, transb, m, n, k, alpha, A + b * strideA,
                                             lda, B + b * strideB, ldb, beta, C + b * strideC, ldc);
        if (s != CUBLAS_STATUS_SUCCESS)
            return s;
    }
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa,
                            cublasOperation_t transb, int m, int n, int k, const void *alpha,
                            const void *A, cudaDataType Atype, int lda, const void *B,
                            cudaDataType Btype, int ldb, const void *beta, void *C,
                            cudaDataType Ctype, int ldc, cublasComputeType_t computeType,
                            cublasGemmAlgo_t) {
    if (!handle)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if (badShape(transa, transb, m, n, k, lda, ldb, ldc) || !alpha || !beta)
        return CUBLAS_STATUS_INVALID_VALUE;
    // Only the float-accumulating combinations lowbit uses; others fail as unsupported would.
    if (computeType != CUBLAS_COMPUTE_32F || !supported(Atype) || Btype != Atype ||
        Ctype != CUDA_R_32F)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    if (m == 0 || n == 0)
        return CUBLAS_STATUS_SUCCESS;
    const float a = *static_cast<const float *>(alpha), b = *static_cast<const float *>(beta);
    const std::vector<float> wa = widened(A, Atype, transa, m, k, lda);
    const std::vector<float> wb = widened(B, Btype, transb, k, n, ldb);
    cblas_sgemm(CblasColMajor, trans(transa), trans(transb), m, n, k, a, wa.data(), lda,
                wb.data(), ldb, b, static_cast<float *>(C), ldc);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGemmStridedBatchedEx(
    cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n, int k,
    const void *alpha, const void *A, cudaDataType Atype, int lda, long long strideA,
    const void *B, cudaDataType Btype, int ldb, long long strideB, const void *beta, void *C,
    cudaDataType Ctype, int ldc, long long strideC, int batchCount,
    cublasComputeType_t computeType, cublasGemmAlgo_t algo) {
    if (batchCount < 0)
        return CUBLAS_STATUS_INVALID_VALUE;
    auto bytes = [](cudaDataType t) { return t == CUDA_R_32F ? 4 : 2; };
    for (int i = 0; i < batchCount; ++i) {
        const cublasStatus_t s = cublasGemmEx(
            handle, transa, transb, m, n, k, alpha,
            static_cast<const char *>(A) + i * strideA * bytes(Atype), Atype, lda,
            static_cast<const char *>(B) + i * strideB * bytes(Btype), Btype, ldb, beta,
            static_cast<char *>(C) + i * strideC * bytes(Ctype), Ctype, ldc, computeType, algo);
        if (s != CUBLAS_STATUS_SUCCESS)
            return s;
    }
    return CUBLAS_STATUS_SUCCESS;
}
