#include "quant/linalg.h"

#include <cblas.h>

#include <algorithm>
#include <cstddef>
#include <thread>

// LAPACK's Fortran entry points (OpenBLAS exports them). The trailing size_t arguments are the
// hidden lengths gfortran passes for character arguments; C implementations ignore them.
extern "C" {
void spotrf_(const char *uplo, const int *n, float *a, const int *lda, int *info, size_t);
void strtri_(const char *uplo, const char *diag, const int *n, float *a, const int *lda, int *info,
             size_t, size_t);
}

namespace lowbit {

BlasThreads::BlasThreads(int threads) {
    if (threads <= 0)
        threads = int(std::max(1u, std::thread::hardware_concurrency()));
    openblas_set_num_threads(threads);
}

BlasThreads::~BlasThreads() {
    openblas_set_num_threads(1);
}

namespace {

// Reverses rows and columns: a[i][j] <- a[n-1-i][n-1-j] (a 180-degree rotation of the matrix).
void reverseBoth(std::vector<float> &a, int64_t n) {
    std::reverse(a.begin(), a.begin() + n * n);
}

// J H J = L L^T by spotrf; on return the row-major lower triangle of h holds L, the strictly upper
// part is stale.
Status reversedCholesky(std::vector<float> &h, int64_t n) {
    if (int64_t(h.size()) < n * n || n <= 0 || n > int64_t(INT32_MAX))
        return makeError(ErrorCode::InvalidArgument, "Cholesky: bad matrix size");
    reverseBoth(h, n);
    // Row-major storage read as column-major is the transpose; for the symmetric input that is
    // the same matrix, and LAPACK's upper factor U (J H J = U^T U) is our row-major lower L = U^T.
    const int dim = int(n);
    int info = 0;
    spotrf_("U", &dim, h.data(), &dim, &info, 1);
    if (info > 0)
        return makeError(ErrorCode::Internal,
                         "Cholesky: matrix is not positive definite (leading minor " +
                             std::to_string(info) + ")");
    if (info < 0)
        return makeError(ErrorCode::Internal, "Cholesky: spotrf argument " + std::to_string(-info));
    return {};
}

void zeroStrictUpper(std::vector<float> &h, int64_t n) {
    for (int64_t i = 0; i < n; ++i)
        std::fill(h.begin() + i * n + i + 1, h.begin() + (i + 1) * n, 0.0f);
}

} // namespace

Status reverseCholeskyUpper(std::vector<float> &h, int64_t n) {
    LOWBIT_CHECK(reversedCholesky(h, n));
    zeroStrictUpper(h, n);
    reverseBoth(h, n); // J L J is upper, and (J L J)(J L J)^T = J (J H J) J = H
    return {};
}

Status choleskyInverseUpper(std::vector<float> &h, int64_t n) {
    LOWBIT_CHECK(reversedCholesky(h, n));
    const int dim = int(n);
    int info = 0;
    strtri_("U", "N", &dim, h.data(), &dim, &info, 1, 1);
    if (info != 0)
        return makeError(ErrorCode::Internal,
                         "Cholesky: singular factor (strtri info " + std::to_string(info) + ")");
    // Row-major view now holds L^{-1} in the lower triangle (stale input above it); reversing
    // turns it into the upper U = J L^{-1} J.
    zeroStrictUpper(h, n);
    reverseBoth(h, n);
    return {};
}

} // namespace lowbit
