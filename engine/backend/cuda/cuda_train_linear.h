// The linear layer of CudaTrainModel on the device: a frozen base (dense, or packed and
// dequantized right before its GEMMs into a shared workspace) plus LoRA / IR-QLoRA, the device
// twin of train/lora_linear.{h,cpp} (same formulas, same order of operations). Internal to
// backend/cuda/cuda_train_model.cpp.
#pragma once

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/kernels.h"

#include <cstdint>

namespace lowbit::cuda {

// Row-major GEMM through cuBLAS, the contract of train::ops::gemm:
//   C (m×n) = alpha · op(A) · op(B) + beta · C, op(A) m×k, op(B) k×n, all row-major with leading
//   dimensions lda, ldb, ldc; op = transpose when the flag is set.
// Mapping: a row-major X (p×q, leading dimension ld) is, read column-major, Xᵀ (q×p) with the same
// ld. So the row-major C = op(A)·op(B) is the column-major Cᵀ = op(B)ᵀ·op(A)ᵀ, i.e.
//   cublas(opB', opA', n, m, k, alpha, B, ldb, A, lda, beta, C, ldc)
// where opB' = T exactly when transB (the stored Bᵀ must be transposed back), likewise opA'.
// Examples: y = x·Wᵀ (W {out, in}) → (T, N, out, rows, in, W, in, x, in, y, out), the call of
// CudaBackend::denseGemm; dX = dY·W → (N, N, in, rows, out, W, in, dY, out, dX, in).
struct RowMajorGemm {
    cublasHandle_t blas = nullptr;
    cudaStream_t stream = nullptr;

    Status f32(bool transA, bool transB, int64_t m, int64_t n, int64_t k, float alpha,
               const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c,
               int64_t ldc) const;
    // a and b 16-bit of `type` (BF16 or F16), c float32, float32 accumulation (tensor cores).
    Status half(bool transA, bool transB, int64_t m, int64_t n, int64_t k, float alpha,
                const void *a, int64_t lda, const void *b, int64_t ldb, DType type, float beta,
                float *c, int64_t ldc) const;
};

// Scratch the linears share (owned by the model, sized by create()).
struct LinearScratch {
    RowMajorGemm gemm;
    GemmPrecision precision = GemmPrecision::Fp32;
    void *half = nullptr;     // 16-bit copy of a GEMM input: rows × max(in, out) values
    void *dequant = nullptr;  // one dequantized packed weight (F32 under Fp32, else BF16)
    float *dHidden = nullptr; // rows × max rank
};

struct DeviceLinear {
    int64_t in = 0, out = 0, rank = 0;
    float scale = 0;
    bool elastic = false;
    // Base: dense (`dense` of `denseType`) or packed (`packed` valid).
    const void *dense = nullptr;
    DType denseType = DType::F32;
    bool isPacked = false;
    PackedView packed;
    // LoRA, device pointers into the model's value and grad buffers (nullptr without adapter).
    const float *a = nullptr, *b = nullptr, *betaA = nullptr, *betaB = nullptr;
    float *gradA = nullptr, *gradB = nullptr, *gradBetaA = nullptr, *gradBetaB = nullptr;

    // y (n × out) = x·Wᵀ + s·(H·Bᵀ + βB·repeat(H)), H (n × rank) = x·Aᵀ + βA·groupMean(x),
    // written into `hidden` for backward (lora_linear.h).
    Status forward(LinearScratch &s, const float *x, int64_t n, float *y, float *hidden) const;
    // dX (= or += when `accumulate`) dY·Ŵ + the adapter's share; adds dA, dB, dβA, dβB.
    Status backward(LinearScratch &s, const float *x, const float *hidden, const float *dy,
                    int64_t n, float *dx, bool accumulate) const;

private:
    // The base weight for a GEMM: dense as stored, or packed dequantized into s.dequant.
    Status baseWeight(LinearScratch &s, const void *&weight, DType &type) const;
    // c (m × cols) = [beta·c +] x (m × k) · op(W): the base GEMM, x rounded to 16 bits first when
    // W is 16-bit.
    Status baseGemm(LinearScratch &s, bool transW, const float *x, int64_t m, int64_t k,
                    int64_t cols, float *c, bool accumulate) const;
};

} // namespace lowbit::cuda
