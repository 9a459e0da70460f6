// The small training ops on the device (RMSNorm forward keeping 1/rms and its backward, RoPE
// backward, SwiGLU backward, fused cross-entropy rows, row gather / scatter-add): the twins of
// engine/train/train_ops.h, float32. One translation unit on purpose: each is a few lines, and
// every .cu costs a separate nvcc run per target architecture in CI.
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_math.cuh"
#include "backend/cuda/train_kernels.h"

#include <string>

namespace lowbit::cuda::train {

namespace {

constexpr int kThreads = 256;

// One block per row (grid-stride over rows): the sum of squares is a block reduction (the same
// float formula as the inference rmsnormKernel, so training and inference see the same y).
__global__ void rmsnormForwardKernel(const float *x, int64_t rows, int64_t dim,
                                     const float *weight, float eps, float *y, float *invRms) {
    __shared__ float shared[32];
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const float *xr = x + r * dim;
        float *yr = y + r * dim;
        float sum = 0;
        for (int64_t i = threadIdx.x; i < dim; i += blockDim.x)
            sum += xr[i] * xr[i];
        sum = blockSum(sum, shared); // its barriers also order this row's reads before y writes
        const float inv = rsqrtf(sum / float(dim) + eps);
        for (int64_t i = threadIdx.x; i < dim; i += blockDim.x)
            yr[i] = xr[i] * inv * weight[i]; // y may alias x: each element read then written once
        if (threadIdx.x == 0)
            invRms[r] = inv;
    }
}

// dx_i += r·w_i·dy_i − (r³/dim)·x_i·Σ_j dy_j·w_j·x_j, one block per row.
__global__ void rmsnormBackwardKernel(const float *x, int64_t rows, int64_t dim,
                                      const float *weight, const float *invRms, const float *dy,
                                      float *dx) {
    __shared__ float shared[32];
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const float *xr = x + r * dim, *dyr = dy + r * dim;
        float dot = 0;
        for (int64_t i = threadIdx.x; i < dim; i += blockDim.x)
            dot += dyr[i] * weight[i] * xr[i];
        dot = blockSum(dot, shared);
        const float inv = invRms[r], coef = inv * inv * inv * dot / float(dim);
        float *dxr = dx + r * dim;
        for (int64_t i = threadIdx.x; i < dim; i += blockDim.x)
            dxr[i] += inv * weight[i] * dyr[i] - coef * xr[i];
    }
}

// Rᵀ of ropeRows: pair (j, j + half) turned by minus the row's angle.
__global__ void ropeBackwardKernel(float *x, int64_t rows, int64_t rowStride, int64_t heads,
                                   int64_t headDim, const float *cosSin) {
    const int64_t half = headDim / 2, total = rows * heads * half;
    for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total;
         t += int64_t(gridDim.x) * blockDim.x) {
        const int64_t j = t % half, h = (t / half) % heads, r = t / (half * heads);
        float *v = x + r * rowStride + h * headDim;
        const float c = cosSin[r * headDim + j], s = -cosSin[r * headDim + half + j];
        const float a = v[j], b = v[j + half];
        v[j] = a * c - b * s;
        v[j + half] = b * c + a * s;
    }
}

__global__ void swigluBackwardKernel(const float *gate, const float *up, const float *dOut,
                                     int64_t count, float *dGate, float *dUp) {
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count;
         i += int64_t(gridDim.x) * blockDim.x) {
        const float g = gate[i], sigma = 1.0f / (1.0f + expf(-g)), d = dOut[i];
        // d silu/dg = σ(g) + g·σ(g)(1 − σ(g))
        dGate[i] = d * up[i] * sigma * (1.0f + g * (1.0f - sigma));
        dUp[i] = d * g * sigma;
    }
}

// One block per row: max, Σ exp(z − max) in float64, then softmax − onehot written in place of
// (or beside) the logits. A target outside [0, vocab) gives a NaN loss instead of a stray read.
__global__ void crossEntropyKernel(float *logits, int64_t vocab, const int32_t *targets,
                                   float *dLogits, double *loss) {
    __shared__ float sharedMax[32];
    __shared__ double sharedSum[32];
    const int64_t row = blockIdx.x;
    const float *z = logits + row * vocab;
    float *dz = dLogits + row * vocab;
    const int32_t target = targets[row];
    const bool inRange = target >= 0 && target < vocab;
    // Read before the barriers of blockMax: every write to dz (which may alias z) comes after.
    const float zTarget = inRange ? z[target] : 0.0f;
    float m = -INFINITY;
    for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x)
        m = fmaxf(m, z[i]);
    m = blockMax(m, sharedMax);
    double sum = 0;
    for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x)
        sum += double(expf(z[i] - m));
    sum = blockSum(sum, sharedSum);
    const double lse = double(m) + log(sum);
    const float lseF = float(lse);
    for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x)
        dz[i] = expf(z[i] - lseF) - (i == target ? 1.0f : 0.0f);
    if (threadIdx.x == 0)
        loss[row] = inRange ? lse - double(zTarget) : __longlong_as_double(0x7ff8000000000000ll);
}

// Rows of `dim` floats, one block per row (grid-stride over rows).
__global__ void gatherRowsKernel(const float *x, int64_t dim, const int64_t *rowIndex,
                                 int64_t count, float *out) {
    for (int64_t i = blockIdx.x; i < count; i += gridDim.x) {
        const float *src = x + rowIndex[i] * dim;
        for (int64_t c = threadIdx.x; c < dim; c += blockDim.x)
            out[i * dim + c] = src[c];
    }
}

__global__ void scatterAddRowsKernel(float *x, int64_t dim, const int64_t *rowIndex,
                                     int64_t count, const float *y) {
    for (int64_t i = blockIdx.x; i < count; i += gridDim.x) {
        float *dst = x + rowIndex[i] * dim;
        for (int64_t c = threadIdx.x; c < dim; c += blockDim.x)
            dst[c] += y[i * dim + c]; // distinct rows: no two blocks touch the same value
    }
}

Error badShape(const char *op) {
    return makeError(ErrorCode::InvalidArgument,
                     std::string("cuda train ") + op + ": invalid shape");
}

// One block per row, at most 65535 blocks (the kernels stride over the rest).
unsigned rowGrid(int64_t rows) {
    return unsigned(rows < 65535 ? rows : 65535);
}

} // namespace

Status rmsnormForward(const float *x, int64_t rows, int64_t dim, const float *weight, float eps,
                      float *y, float *invRms, cudaStream_t stream) {
    if (rows < 0 || dim <= 0)
        return badShape("rmsnormForward");
    if (rows == 0)
        return {};
    rmsnormForwardKernel<<<rowGrid(rows), kThreads, 0, stream>>>(x, rows, dim, weight, eps, y,
                                                                 invRms);
    return lastLaunch("train rmsnorm forward kernel");
}

Status rmsnormBackward(const float *x, int64_t rows, int64_t dim, const float *weight,
                       const float *invRms, const float *dy, float *dx, cudaStream_t stream) {
    if (rows < 0 || dim <= 0)
        return badShape("rmsnormBackward");
    if (rows == 0)
        return {};
    rmsnormBackwardKernel<<<rowGrid(rows), kThreads, 0, stream>>>(x, rows, dim, weight, invRms,
                                                                  dy, dx);
    return lastLaunch("train rmsnorm backward kernel");
}

Status ropeBackward(float *dx, int64_t rows, int64_t rowStride, int64_t heads, int64_t headDim,
                    const float *cosSin, cudaStream_t stream) {
    if (rows < 0 || heads <= 0 || headDim <= 0 || headDim % 2 || rowStride < heads * headDim)
        return badShape("ropeBackward");
    const int64_t total = rows * heads * headDim / 2;
    if (total == 0)
        return {};
    ropeBackwardKernel<<<gridFor(total, kThreads), kThreads, 0, stream>>>(dx, rows, rowStride,
                                                                          heads, headDim, cosSin);
    return lastLaunch("train rope backward kernel");
}

Status swigluBackward(const float *gate, const float *up, const float *dOut, int64_t count,
                      float *dGate, float *dUp, cudaStream_t stream) {
    if (count < 0)
        return badShape("swigluBackward");
    if (count == 0)
        return {};
    swigluBackwardKernel<<<gridFor(count, kThreads), kThreads, 0, stream>>>(gate, up, dOut, count,
                                                                            dGate, dUp);
    return lastLaunch("train swiglu backward kernel");
}

Status crossEntropyRows(float *logits, int64_t rows, int64_t vocab, const int32_t *targets,
                        float *dLogits, double *loss, cudaStream_t stream) {
    if (rows < 0 || rows > INT32_MAX || vocab <= 0)
        return badShape("crossEntropyRows");
    if (rows == 0)
        return {};
    crossEntropyKernel<<<unsigned(rows), kThreads, 0, stream>>>(logits, vocab, targets, dLogits,
                                                                loss);
    return lastLaunch("train cross-entropy kernel");
}

Status gatherRows(const float *x, int64_t dim, const int64_t *rowIndex, int64_t count, float *out,
                  cudaStream_t stream) {
    if (count < 0 || dim <= 0)
        return badShape("gatherRows");
    if (count == 0)
        return {};
    gatherRowsKernel<<<rowGrid(count), kThreads, 0, stream>>>(x, dim, rowIndex, count, out);
    return lastLaunch("train gather rows kernel");
}

Status scatterAddRows(float *x, int64_t dim, const int64_t *rowIndex, int64_t count,
                      const float *y, cudaStream_t stream) {
    if (count < 0 || dim <= 0)
        return badShape("scatterAddRows");
    if (count == 0)
        return {};
    scatterAddRowsKernel<<<rowGrid(count), kThreads, 0, stream>>>(x, dim, rowIndex, count, y);
    return lastLaunch("train scatter-add rows kernel");
}

} // namespace lowbit::cuda::train
