// CUDA emulator (tests/cuda_emu): the cuSOLVER calls cuda_gptq.cpp makes (Cholesky and the
// triangular inverse), computed by LAPACK on host memory in src/cusolver.cpp. Arguments are
// validated as cuSOLVER does (negative sizes, lda < n, unsupported data types:
// CUSOLVER_STATUS_INVALID_VALUE / NOT_SUPPORTED), and a workspace smaller than the matching
// *_bufferSize call asked for is CUSOLVER_STATUS_INVALID_VALUE.
#pragma once

#include <cublas_v2.h>

enum cusolverStatus_t {
    CUSOLVER_STATUS_SUCCESS = 0,
    CUSOLVER_STATUS_NOT_INITIALIZED = 1,
    CUSOLVER_STATUS_ALLOC_FAILED = 2,
    CUSOLVER_STATUS_INVALID_VALUE = 3,
    CUSOLVER_STATUS_ARCH_MISMATCH = 4,
    CUSOLVER_STATUS_MAPPING_ERROR = 5,
    CUSOLVER_STATUS_EXECUTION_FAILED = 6,
    CUSOLVER_STATUS_INTERNAL_ERROR = 7,
    CUSOLVER_STATUS_MATRIX_TYPE_NOT_SUPPORTED = 8,
    CUSOLVER_STATUS_NOT_SUPPORTED = 9,
};
struct cusolverDnContext;
using cusolverDnHandle_t = cusolverDnContext *;

enum cublasDiagType_t { CUBLAS_DIAG_NON_UNIT = 0, CUBLAS_DIAG_UNIT = 1 };

cusolverStatus_t cusolverDnCreate(cusolverDnHandle_t *handle);
cusolverStatus_t cusolverDnDestroy(cusolverDnHandle_t handle);
cusolverStatus_t cusolverDnSetStream(cusolverDnHandle_t handle, cudaStream_t stream);
cusolverStatus_t cusolverDnSpotrf_bufferSize(cusolverDnHandle_t handle, cublasFillMode_t uplo,
                                             int n, float *A, int lda, int *lwork);
// devInfo (device memory): 0, or i > 0 when the leading minor of order i is not positive definite.
cusolverStatus_t cusolverDnSpotrf(cusolverDnHandle_t handle, cublasFillMode_t uplo, int n,
                                  float *A, int lda, float *workspace, int lwork, int *devInfo);
cusolverStatus_t cusolverDnXtrtri_bufferSize(cusolverDnHandle_t handle, cublasFillMode_t uplo,
                                             cublasDiagType_t diag, int64_t n,
                                             cudaDataType dataTypeA, void *A, int64_t lda,
                                             size_t *deviceBytes, size_t *hostBytes);
cusolverStatus_t cusolverDnXtrtri(cusolverDnHandle_t handle, cublasFillMode_t uplo,
                                  cublasDiagType_t diag, int64_t n, cudaDataType dataTypeA,
                                  void *A, int64_t lda, void *deviceBuffer, size_t deviceBytes,
                                  void *hostBuffer, size_t hostBytes, int *devInfo);
