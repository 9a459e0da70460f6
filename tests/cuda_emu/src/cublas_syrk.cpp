// CUDA emulator (tests/cuda_emu): cublasSsyrk on OpenBLAS (the Hessian of cuda_gptq.cpp).
// Arguments are validated as cuBLAS does; only the `uplo` triangle of C is written, as there.
#include <cublas_v2.h>

#include <cblas.h>

cublasStatus_t cublasSsyrk(cublasHandle_t handle, cublasFillMode_t uplo, cublasOperation_t trans,
                           int n, int k, const float *alpha, const float *A, int lda,
                           const float *beta, float *C, int ldc) {
    if (!handle)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    auto big = [](int a) { return a > 1 ? a : 1; };
    if (n < 0 || k < 0 || (trans != CUBLAS_OP_N && trans != CUBLAS_OP_T) ||
        (uplo != CUBLAS_FILL_MODE_LOWER && uplo != CUBLAS_FILL_MODE_UPPER) ||
        lda < big(trans == CUBLAS_OP_N ? n : k) || ldc < big(n) || !alpha || !beta)
        return CUBLAS_STATUS_INVALID_VALUE;
    if (n == 0)
        return CUBLAS_STATUS_SUCCESS;
    cblas_ssyrk(CblasColMajor, uplo == CUBLAS_FILL_MODE_UPPER ? CblasUpper : CblasLower,
                trans == CUBLAS_OP_N ? CblasNoTrans : CblasTrans, n, k, *alpha, A, lda, *beta, C,
                ldc);
    return CUBLAS_STATUS_SUCCESS;
}
