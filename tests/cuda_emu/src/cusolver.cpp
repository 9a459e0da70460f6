// CUDA emulator (tests/cuda_emu): the cuSOLVER calls of cuda_gptq.cpp on LAPACK (see
// include/cusolverDn.h). Device memory is host memory here, so A, the workspaces and devInfo are
// used in place; an operand running past its allocation hits the runtime's guard page. The sizes
// the *_bufferSize calls return are this emulator's own, and the solve refuses anything smaller,
// so a caller that allocates less than it was told to fails here as it could on a GPU.
#include <cusolverDn.h>

#include <algorithm>
#include <cstdint>

extern "C" {
void spotrf_(const char *uplo, const int *n, float *a, const int *lda, int *info);
void strtri_(const char *uplo, const char *diag, const int *n, float *a, const int *lda,
             int *info);
}

struct cusolverDnContext {
    cudaStream_t stream = nullptr;
};

namespace {

int potrfWorkFloats(int n) {
    return 16 + 4 * n;
}
size_t trtriDeviceBytes(int64_t n) {
    return 64 + size_t(n) * 8;
}
constexpr size_t kTrtriHostBytes = 32;

bool badSquare(int64_t n, int64_t lda) {
    return n < 0 || lda < std::max<int64_t>(1, n) || n > INT32_MAX || lda > INT32_MAX;
}
char uploChar(cublasFillMode_t uplo) {
    return uplo == CUBLAS_FILL_MODE_LOWER ? 'L' : 'U';
}

} // namespace

cusolverStatus_t cusolverDnCreate(cusolverDnHandle_t *handle) {
    if (!handle)
        return CUSOLVER_STATUS_INVALID_VALUE;
    *handle = new cusolverDnContext;
    return CUSOLVER_STATUS_SUCCESS;
}

cusolverStatus_t cusolverDnDestroy(cusolverDnHandle_t handle) {
    if (!handle)
        return CUSOLVER_STATUS_NOT_INITIALIZED;
    delete handle;
    return CUSOLVER_STATUS_SUCCESS;
}

cusolverStatus_t cusolverDnSetStream(cusolverDnHandle_t handle, cudaStream_t stream) {
    if (!handle)
        return CUSOLVER_STATUS_NOT_INITIALIZED;
    handle->stream = stream;
    return CUSOLVER_STATUS_SUCCESS;
}

cusolverStatus_t cusolverDnSpotrf_bufferSize(cusolverDnHandle_t handle, cublasFillMode_t, int n,
                                             float *, int lda, int *lwork) {
    if (!handle)
        return CUSOLVER_STATUS_NOT_INITIALIZED;
    if (badSquare(n, lda) || !lwork)
        return CUSOLVER_STATUS_INVALID_VALUE;
    *lwork = potrfWorkFloats(n);
    return CUSOLVER_STATUS_SUCCESS;
}

cusolverStatus_t cusolverDnSpotrf(cusolverDnHandle_t handle, cublasFillMode_t uplo, int n,
                                  float *A, int lda, float *workspace, int lwork, int *devInfo) {
    if (!handle)
        return CUSOLVER_STATUS_NOT_INITIALIZED;
    if (badSquare(n, lda) || !devInfo || lwork < potrfWorkFloats(n) || !workspace ||
        (n > 0 && !A))
        return CUSOLVER_STATUS_INVALID_VALUE;
    *devInfo = 0;
    if (n == 0)
        return CUSOLVER_STATUS_SUCCESS;
    const char u = uploChar(uplo);
    spotrf_(&u, &n, A, &lda, devInfo);
    return CUSOLVER_STATUS_SUCCESS;
}

cusolverStatus_t cusolverDnXtrtri_bufferSize(cusolverDnHandle_t handle, cublasFillMode_t,
                                             cublasDiagType_t, int64_t n, cudaDataType dataTypeA,
                                             void *, int64_t lda, size_t *deviceBytes,
                                             size_t *hostBytes) {
    if (!handle)
        return CUSOLVER_STATUS_NOT_INITIALIZED;
    if (badSquare(n, lda) || !deviceBytes || !hostBytes)
        return CUSOLVER_STATUS_INVALID_VALUE;
    if (dataTypeA != CUDA_R_32F)
        return CUSOLVER_STATUS_NOT_SUPPORTED; // only the float32 inverse is emulated
    *deviceBytes = trtriDeviceBytes(n);
    *hostBytes = kTrtriHostBytes;
    return CUSOLVER_STATUS_SUCCESS;
}

cusolverStatus_t cusolverDnXtrtri(cusolverDnHandle_t handle, cublasFillMode_t uplo,
                                  cublasDiagType_t diag, int64_t n, cudaDataType dataTypeA,
                                  void *A, int64_t lda, void *deviceBuffer, size_t deviceBytes,
                                  void *hostBuffer, size_t hostBytes, int *devInfo) {
    if (!handle)
        return CUSOLVER_STATUS_NOT_INITIALIZED;
    if (badSquare(n, lda) || !devInfo || (n > 0 && !A))
        return CUSOLVER_STATUS_INVALID_VALUE;
    if (dataTypeA != CUDA_R_32F)
        return CUSOLVER_STATUS_NOT_SUPPORTED;
    if (deviceBytes < trtriDeviceBytes(n) || !deviceBuffer || hostBytes < kTrtriHostBytes ||
        !hostBuffer)
        return CUSOLVER_STATUS_INVALID_VALUE;
    *devInfo = 0;
    if (n == 0)
        return CUSOLVER_STATUS_SUCCESS;
    const char u = uploChar(uplo), d = diag == CUBLAS_DIAG_UNIT ? 'U' : 'N';
    const int ni = int(n), li = int(lda);
    strtri_(&u, &d, &ni, static_cast<float *>(A), &li, devInfo);
    return CUSOLVER_STATUS_SUCCESS;
}
