// CUDA emulator (tests/cuda_emu): cuSOLVER's types only, so that cuda_check.h compiles. The
// cuSOLVER calls themselves (cuda_gptq.cpp) are not emulated here; see README.md.
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
