#include "backend/cuda/cuda_train_linear.h"

#include "backend/cuda/train_kernels.h"
#include "train/cuda_train_detail.h"

#include <climits>

namespace lowbit::cuda {

namespace {

Status checkDims(int64_t m, int64_t n, int64_t k) {
    if (m > INT_MAX || n > INT_MAX || k > INT_MAX)
        return makeError(ErrorCode::Unsupported, "cuda training GEMM: dimension over 2^31");
    return {};
}

cublasOperation_t op(bool transpose) {
    return transpose ? CUBLAS_OP_T : CUBLAS_OP_N;
}

} // namespace

// The operand swap of the header's mapping (train/cuda_train_detail.h columnMajorOf, tested on
// the CPU by test_train_device_plan).
Status RowMajorGemm::f32(bool transA, bool transB, int64_t m, int64_t n, int64_t k, float alpha,
                         const float *a, int64_t lda, const float *b, int64_t ldb, float beta,
                         float *c, int64_t ldc) const {
    if (m == 0 || n == 0)
        return {};
    LOWBIT_CHECK(checkDims(m, n, k));
    const lowbit::train::detail::ColumnMajorGemm g =
        lowbit::train::detail::columnMajorOf(transA, transB, m, n, k, a, lda, b, ldb);
    LOWBIT_CUDA_CHECK(cublasSgemm(blas, op(g.transFirst), op(g.transSecond), int(g.m), int(g.n),
                                  int(g.k), &alpha, static_cast<const float *>(g.first),
                                  int(g.ldFirst), static_cast<const float *>(g.second),
                                  int(g.ldSecond), &beta, c, int(ldc)),
                      "cublasSgemm (training)");
    return {};
}

Status RowMajorGemm::half(bool transA, bool transB, int64_t m, int64_t n, int64_t k, float alpha,
                          const void *a, int64_t lda, const void *b, int64_t ldb, DType type,
                          float beta, float *c, int64_t ldc) const {
    if (m == 0 || n == 0)
        return {};
    LOWBIT_CHECK(checkDims(m, n, k));
    const cudaDataType t = type == DType::BF16 ? CUDA_R_16BF : CUDA_R_16F;
    const lowbit::train::detail::ColumnMajorGemm g =
        lowbit::train::detail::columnMajorOf(transA, transB, m, n, k, a, lda, b, ldb);
    LOWBIT_CUDA_CHECK(cublasGemmEx(blas, op(g.transFirst), op(g.transSecond), int(g.m), int(g.n),
                                   int(g.k), &alpha, g.first, t, int(g.ldFirst), g.second, t,
                                   int(g.ldSecond), &beta, c, CUDA_R_32F, int(ldc),
                                   CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                      "cublasGemmEx (training)");
    return {};
}

Status DeviceLinear::baseWeight(LinearScratch &s, const void *&weight, DType &type) const {
    if (!isPacked) {
        weight = dense;
        type = denseType;
        return {};
    }
    // One workspace for every packed weight: dequantized right before its GEMM, so only one
    // dense copy exists at a time (stream order keeps the previous GEMM's reads before it).
    type = s.precision == GemmPrecision::Fp32 ? DType::F32 : DType::BF16;
    LOWBIT_CHECK(packedDequantize(packed, type, s.dequant, s.gemm.stream));
    weight = s.dequant;
    return {};
}

Status DeviceLinear::baseGemm(LinearScratch &s, bool transW, const float *x, int64_t m, int64_t k,
                              int64_t cols, float *c, bool accumulate) const {
    const void *w = nullptr;
    DType type = DType::F32;
    LOWBIT_CHECK(baseWeight(s, w, type));
    const float beta = accumulate ? 1.0f : 0.0f;
    if (type == DType::F32)
        return s.gemm.f32(false, transW, m, cols, k, 1.0f, x, k, static_cast<const float *>(w), in,
                          beta, c, cols);
    // Tensor cores take both inputs 16-bit: x is rounded to the weight's type, sums stay float32.
    LOWBIT_CHECK(floatsToHalf(x, m * k, type, s.half, s.gemm.stream));
    return s.gemm.half(false, transW, m, cols, k, 1.0f, s.half, k, w, in, type, beta, c, cols);
}

Status DeviceLinear::forward(LinearScratch &s, const float *x, int64_t n, float *y,
                             float *hidden) const {
    const cudaStream_t stream = s.gemm.stream;
    LOWBIT_CHECK(baseGemm(s, true, x, n, in, out, y, false)); // y = x·Wᵀ
    if (rank == 0)
        return {};
    // H = x·Aᵀ (+ βA·groupMean(x)); y += s·H·Bᵀ (+ s·βB·repeat(H))
    LOWBIT_CHECK(s.gemm.f32(false, true, n, rank, in, 1.0f, x, in, a, in, 0.0f, hidden, rank));
    if (elastic)
        LOWBIT_CHECK(train::elasticGroupMeanAdd(x, n, in, rank, betaA, hidden, stream));
    LOWBIT_CHECK(s.gemm.f32(false, true, n, out, rank, scale, hidden, rank, b, rank, 1.0f, y, out));
    if (elastic)
        LOWBIT_CHECK(train::elasticRepeatAdd(hidden, n, rank, out, scale, betaB, y, stream));
    return {};
}

Status DeviceLinear::backward(LinearScratch &s, const float *x, const float *hidden,
                              const float *dy, int64_t n, float *dx, bool accumulate) const {
    const cudaStream_t stream = s.gemm.stream;
    // dX = dY·Ŵ (+ the adapter's share below, without forming B·A)
    LOWBIT_CHECK(baseGemm(s, false, dy, n, out, in, dx, accumulate));
    if (rank == 0)
        return {};
    float *dH = s.dHidden;
    // dH = s·dY·B (+ s·βB·repeatᵀ(dY)); dB += s·dYᵀ·H; dβB += s·Σ dY ⊙ repeat(H)
    LOWBIT_CHECK(s.gemm.f32(false, false, n, rank, out, scale, dy, out, b, rank, 0.0f, dH, rank));
    LOWBIT_CHECK(
        s.gemm.f32(true, false, out, rank, n, scale, dy, out, hidden, rank, 1.0f, gradB, rank));
    if (elastic)
        LOWBIT_CHECK(train::elasticRepeatBackward(hidden, dy, n, rank, out, scale, betaB, dH,
                                                  gradBetaB, stream));
    // dA += dHᵀ·X; dX += dH·A (+ βA·groupMeanᵀ(dH)); dβA += Σ dH ⊙ groupMean(X)
    LOWBIT_CHECK(s.gemm.f32(true, false, rank, in, n, 1.0f, dH, rank, x, in, 1.0f, gradA, in));
    LOWBIT_CHECK(s.gemm.f32(false, false, n, in, rank, 1.0f, dH, rank, a, in, 1.0f, dx, in));
    if (elastic)
        LOWBIT_CHECK(
            train::elasticGroupMeanBackward(x, dH, n, in, rank, betaA, dx, gradBetaA, stream));
    return {};
}

} // namespace lowbit::cuda
