// The small ops of the forward pass (embedding gather, RMSNorm, RoPE, SwiGLU, residual add) and
// dtype conversions. Kept in one translation unit on purpose: each is a few lines, and every .cu
// costs a separate nvcc run per target architecture in CI.
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_math.cuh"
#include "backend/cuda/kernels.h"

namespace lowbit::cuda {

namespace {

template <DType T>
__global__ void embedKernel(const void *table, int64_t dim, const int32_t *ids, float *out) {
    const int64_t r = blockIdx.x, base = int64_t(ids[r]) * dim;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x)
        out[r * dim + i] = loadAs<T>(table, base + i);
}

// One block per row: the sum of squares is a block reduction, then one scaling pass.
__global__ void rmsnormKernel(const float *x, int64_t dim, const float *weight, float eps,
                              float *y) {
    __shared__ float shared[32];
    const float *xr = x + int64_t(blockIdx.x) * dim;
    float *yr = y + int64_t(blockIdx.x) * dim;
    float sum = 0;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x)
        sum += xr[i] * xr[i];
    sum = blockSum(sum, shared);
    const float inv = rsqrtf(sum / float(dim) + eps);
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x)
        yr[i] = xr[i] * inv * weight[i];
}

__global__ void ropeKernel(float *x, int64_t rows, int64_t rowStride, int64_t heads,
                           int64_t headDim, const float *cosSin) {
    const int64_t half = headDim / 2, total = rows * heads * half;
    for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total;
         t += int64_t(gridDim.x) * blockDim.x) {
        const int64_t j = t % half, h = (t / half) % heads, r = t / (half * heads);
        float *v = x + r * rowStride + h * headDim;
        const float c = cosSin[r * headDim + j], s = cosSin[r * headDim + half + j];
        const float a = v[j], b = v[j + half];
        v[j] = a * c - b * s;
        v[j + half] = b * c + a * s;
    }
}

__global__ void swigluKernel(const float *gate, const float *up, int64_t count, float *out) {
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count;
         i += int64_t(gridDim.x) * blockDim.x) {
        const float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

__global__ void addKernel(float *x, const float *y, int64_t count) {
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count;
         i += int64_t(gridDim.x) * blockDim.x)
        x[i] += y[i];
}

__global__ void toHalfKernel(const float *x, int64_t count, bool bf16, uint16_t *out) {
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count;
         i += int64_t(gridDim.x) * blockDim.x)
        out[i] = bf16 ? __bfloat16_as_ushort(__float2bfloat16_rn(x[i]))
                      : __half_as_ushort(__float2half_rn(x[i]));
}

template <DType T> __global__ void toFloatKernel(const void *x, int64_t count, float *out) {
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count;
         i += int64_t(gridDim.x) * blockDim.x)
        out[i] = loadAs<T>(x, i);
}

__global__ void accumulateKernel(double *acc, const float *x, int64_t count, double scale) {
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count;
         i += int64_t(gridDim.x) * blockDim.x)
        acc[i] += scale * double(x[i]);
}

constexpr int kThreads = 256;

Status badShape(const char *op) {
    return makeError(ErrorCode::InvalidArgument, std::string("cuda ") + op + ": invalid shape");
}

} // namespace

Status embedRows(const void *table, DType type, int64_t dim, const int32_t *ids, int64_t rows,
                 float *out, cudaStream_t stream) {
    if (rows < 0 || dim <= 0 || rows > INT32_MAX)
        return badShape("embed");
    if (rows == 0)
        return {};
    const unsigned grid = unsigned(rows);
    if (type == DType::F32)
        embedKernel<DType::F32><<<grid, kThreads, 0, stream>>>(table, dim, ids, out);
    else if (type == DType::BF16)
        embedKernel<DType::BF16><<<grid, kThreads, 0, stream>>>(table, dim, ids, out);
    else
        embedKernel<DType::F16><<<grid, kThreads, 0, stream>>>(table, dim, ids, out);
    return lastLaunch("embed kernel");
}

Status rmsnormRows(const float *x, int64_t rows, int64_t dim, const float *weight, float eps,
                   float *y, cudaStream_t stream) {
    if (rows < 0 || dim <= 0 || rows > INT32_MAX)
        return badShape("rmsnorm");
    if (rows == 0)
        return {};
    rmsnormKernel<<<unsigned(rows), kThreads, 0, stream>>>(x, dim, weight, eps, y);
    return lastLaunch("rmsnorm kernel");
}

Status ropeRows(float *x, int64_t rows, int64_t rowStride, int64_t heads, int64_t headDim,
                const float *cosSin, cudaStream_t stream) {
    if (rows < 0 || heads <= 0 || headDim <= 0 || headDim % 2 || rowStride < heads * headDim)
        return badShape("rope");
    const int64_t total = rows * heads * headDim / 2;
    if (total == 0)
        return {};
    ropeKernel<<<gridFor(total, kThreads), kThreads, 0, stream>>>(x, rows, rowStride, heads,
                                                                  headDim, cosSin);
    return lastLaunch("rope kernel");
}

Status swigluValues(const float *gate, const float *up, int64_t count, float *out,
                    cudaStream_t stream) {
    if (count <= 0)
        return count == 0 ? Status{} : badShape("swiglu");
    swigluKernel<<<gridFor(count, kThreads), kThreads, 0, stream>>>(gate, up, count, out);
    return lastLaunch("swiglu kernel");
}

Status addValues(float *x, const float *y, int64_t count, cudaStream_t stream) {
    if (count <= 0)
        return count == 0 ? Status{} : badShape("add");
    addKernel<<<gridFor(count, kThreads), kThreads, 0, stream>>>(x, y, count);
    return lastLaunch("add kernel");
}

Status floatsToHalf(const float *x, int64_t count, DType to, void *out, cudaStream_t stream) {
    if (count <= 0 || to == DType::F32)
        return count == 0 ? Status{} : badShape("floatsToHalf");
    toHalfKernel<<<gridFor(count, kThreads), kThreads, 0, stream>>>(x, count, to == DType::BF16,
                                                                    static_cast<uint16_t *>(out));
    return lastLaunch("float to 16-bit kernel");
}

Status halfToFloats(const void *x, DType from, int64_t count, float *out, cudaStream_t stream) {
    if (count <= 0)
        return count == 0 ? Status{} : badShape("halfToFloats");
    const unsigned grid = gridFor(count, kThreads);
    if (from == DType::F32)
        toFloatKernel<DType::F32><<<grid, kThreads, 0, stream>>>(x, count, out);
    else if (from == DType::BF16)
        toFloatKernel<DType::BF16><<<grid, kThreads, 0, stream>>>(x, count, out);
    else
        toFloatKernel<DType::F16><<<grid, kThreads, 0, stream>>>(x, count, out);
    return lastLaunch("16-bit to float kernel");
}

Status accumulateScaled(double *acc, const float *x, int64_t count, double scale,
                        cudaStream_t stream) {
    if (count <= 0)
        return count == 0 ? Status{} : badShape("accumulateScaled");
    accumulateKernel<<<gridFor(count, kThreads), kThreads, 0, stream>>>(acc, x, count, scale);
    return lastLaunch("accumulate kernel");
}

} // namespace lowbit::cuda
