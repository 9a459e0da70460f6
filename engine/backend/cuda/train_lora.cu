// IR-QLoRA's Information Elastic Connection on the device (train/lora_linear.h has the formulas
// and the index maps): the group-mean path on LoRA A, the repeat path on LoRA B, and their
// backward with the scalar gradients dβA, dβB.
//
// The scalar gradients are reduced deterministically: a grid of a fixed number of blocks (a
// function of n only) writes one float64 partial per block into stream-ordered scratch
// (cudaMallocAsync: no workspace argument, safe on any stream), and a one-block kernel adds them in
// a fixed order to *dBeta. No floating-point atomics, so two runs give identical bits.
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_math.cuh"
#include "backend/cuda/train_kernels.h"

#include <algorithm>
#include <string>

namespace lowbit::cuda::train {

namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxPartials = 1024; // blocks of the reducing kernels (rows stride over them)

// Group g of `in` features over `rank` groups: [⌊g·in/r⌋, max(⌊(g+1)·in/r⌋, ⌊g·in/r⌋ + 1)).
__device__ __forceinline__ int64_t poolBegin(int64_t g, int64_t in, int64_t rank) {
    return g * in / rank;
}
__device__ __forceinline__ int64_t poolEnd(int64_t g, int64_t in, int64_t rank) {
    return max((g + 1) * in / rank, poolBegin(g, in, rank) + 1);
}
// Output j repeats hidden ⌊j·r/out⌋, so hidden g feeds outputs [⌈g·out/r⌉, ⌈(g+1)·out/r⌉).
__device__ __forceinline__ int64_t repeatBegin(int64_t g, int64_t rank, int64_t out) {
    return (g * out + rank - 1) / rank;
}

// hidden[row, g] += β · mean(x[row, group g]), one warp per (row, g).
__global__ void groupMeanAddKernel(const float *x, int64_t n, int64_t in, int64_t rank,
                                   const float *beta, float *hidden) {
    const int lane = threadIdx.x & 31;
    const int64_t warps = int64_t(gridDim.x) * (blockDim.x >> 5);
    for (int64_t t = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5; t < n * rank;
         t += warps) {
        const int64_t row = t / rank, g = t % rank;
        const int64_t begin = poolBegin(g, in, rank), end = poolEnd(g, in, rank);
        float sum = 0.0f;
        for (int64_t j = begin + lane; j < end; j += 32)
            sum += x[row * in + j];
        sum = warpSum(sum);
        if (lane == 0)
            hidden[t] += *beta * (sum / float(end - begin));
    }
}

// y[row, j] += scale · β · hidden[row, ⌊j·r/out⌋].
__global__ void repeatAddKernel(const float *hidden, int64_t n, int64_t rank, int64_t out,
                                float scale, const float *beta, float *y) {
    const float c = scale * *beta;
    for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < n * out;
         t += int64_t(gridDim.x) * blockDim.x) {
        const int64_t row = t / out, j = t % out;
        y[t] += c * hidden[row * rank + j * rank / out];
    }
}

// Rows strided over the grid, one float64 partial of dβA per block. Feature j of a row gets
// c_j = Σ_{groups g ∋ j} dH[g] / |g| (groups overlap only when in < r): dx_j += β·c_j, and
// Σ_j x_j·c_j = Σ_g dH[g]·mean_g(x) is the row's share of dβA. The groups holding j are
// contiguous and end at ⌈(j+1)·r/in⌉ − 1 (the last g with ⌊g·in/r⌋ <= j).
__global__ void groupMeanBackwardKernel(const float *x, const float *dHidden, int64_t n,
                                        int64_t in, int64_t rank, const float *beta, float *dx,
                                        double *partials) {
    __shared__ double shared[32];
    const float b = *beta;
    double blockTotal = 0.0;
    for (int64_t row = blockIdx.x; row < n; row += gridDim.x) {
        const float *dh = dHidden + row * rank;
        double part = 0.0;
        for (int64_t j = threadIdx.x; j < in; j += blockDim.x) {
            float c = 0.0f;
            for (int64_t g = min(rank - 1, ((j + 1) * rank + in - 1) / in - 1);
                 g >= 0 && poolEnd(g, in, rank) > j; --g)
                c += dh[g] / float(poolEnd(g, in, rank) - poolBegin(g, in, rank));
            dx[row * in + j] += b * c;
            part += double(x[row * in + j]) * double(c);
        }
        blockTotal += blockSum(part, shared); // the same value in every thread
    }
    if (threadIdx.x == 0)
        partials[blockIdx.x] = blockTotal;
}

// Rows strided over the grid: warp w sums T_g = Σ dy[row, repeat range of g] for g = w, w+8, ...;
// dHidden[row, g] += scale·β·T_g and the block's partial of dβB/scale gets hidden[row, g]·T_g.
__global__ void repeatBackwardKernel(const float *hidden, const float *dy, int64_t n,
                                     int64_t rank, int64_t out, float scale, const float *beta,
                                     float *dHidden, double *partials) {
    __shared__ double shared[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    const float c = scale * *beta;
    double blockTotal = 0.0;
    for (int64_t row = blockIdx.x; row < n; row += gridDim.x) {
        double part = 0.0; // lane 0 of each warp
        for (int64_t g = warp; g < rank; g += warps) {
            const int64_t begin = repeatBegin(g, rank, out), end = repeatBegin(g + 1, rank, out);
            double t = 0.0;
            for (int64_t j = begin + lane; j < end; j += 32)
                t += double(dy[row * out + j]);
            t = warpSum(t);
            if (lane == 0) {
                dHidden[row * rank + g] += c * float(t);
                part += double(hidden[row * rank + g]) * t;
            }
        }
        blockTotal += blockSum(part, shared);
    }
    if (threadIdx.x == 0)
        partials[blockIdx.x] = blockTotal;
}

// *dBeta += float(scale · Σ partials), summed in a fixed order by one block.
__global__ void addPartialsKernel(const double *partials, int count, double scale, float *dBeta) {
    __shared__ double shared[32];
    double sum = 0.0;
    for (int i = threadIdx.x; i < count; i += blockDim.x)
        sum += partials[i];
    sum = blockSum(sum, shared);
    if (threadIdx.x == 0)
        *dBeta += float(scale * sum);
}

Error badShape(const char *op) {
    return makeError(ErrorCode::InvalidArgument,
                     std::string("cuda train ") + op + ": invalid shape");
}

// Runs `rowsKernel` on `blocks` blocks writing their partials into scratch, then adds the partials
// times `scale` to *dBeta; the scratch is freed in stream order.
template <typename Launch>
Status reduceToBeta(int64_t blocks, double scale, float *dBeta, cudaStream_t stream,
                    const char *name, Launch &&rowsKernel) {
    double *partials = nullptr;
    LOWBIT_CHECK(check(cudaMallocAsync(reinterpret_cast<void **>(&partials),
                                       size_t(blocks) * sizeof(double), stream),
                       "cudaMallocAsync(IEC partial sums)"));
    rowsKernel(partials);
    const Status rows = lastLaunch(name);
    if (rows.ok())
        addPartialsKernel<<<1, kThreads, 0, stream>>>(partials, int(blocks), scale, dBeta);
    const Status added = rows.ok() ? lastLaunch("train IEC partial sums kernel") : rows;
    const Status freed = check(cudaFreeAsync(partials, stream), "cudaFreeAsync(IEC partial sums)");
    return added.ok() ? freed : added;
}

} // namespace

Status elasticGroupMeanAdd(const float *x, int64_t n, int64_t in, int64_t rank, const float *beta,
                           float *hidden, cudaStream_t stream) {
    if (n < 0 || in <= 0 || rank <= 0)
        return badShape("elasticGroupMeanAdd");
    if (n == 0)
        return {};
    groupMeanAddKernel<<<gridFor(n * rank * 32, kThreads), kThreads, 0, stream>>>(x, n, in, rank,
                                                                                 beta, hidden);
    return lastLaunch("train IEC group-mean kernel");
}

Status elasticRepeatAdd(const float *hidden, int64_t n, int64_t rank, int64_t out, float scale,
                        const float *beta, float *y, cudaStream_t stream) {
    if (n < 0 || out <= 0 || rank <= 0)
        return badShape("elasticRepeatAdd");
    if (n == 0)
        return {};
    repeatAddKernel<<<gridFor(n * out, kThreads), kThreads, 0, stream>>>(hidden, n, rank, out,
                                                                         scale, beta, y);
    return lastLaunch("train IEC repeat kernel");
}

Status elasticGroupMeanBackward(const float *x, const float *dHidden, int64_t n, int64_t in,
                                int64_t rank, const float *beta, float *dx, float *dBeta,
                                cudaStream_t stream) {
    if (n < 0 || in <= 0 || rank <= 0)
        return badShape("elasticGroupMeanBackward");
    if (n == 0)
        return {};
    const int64_t blocks = std::min(n, kMaxPartials);
    return reduceToBeta(blocks, 1.0, dBeta, stream, "train IEC group-mean backward kernel",
                        [&](double *partials) {
                            groupMeanBackwardKernel<<<unsigned(blocks), kThreads, 0, stream>>>(
                                x, dHidden, n, in, rank, beta, dx, partials);
                        });
}

Status elasticRepeatBackward(const float *hidden, const float *dy, int64_t n, int64_t rank,
                             int64_t out, float scale, const float *beta, float *dHidden,
                             float *dBeta, cudaStream_t stream) {
    if (n < 0 || out <= 0 || rank <= 0)
        return badShape("elasticRepeatBackward");
    if (n == 0)
        return {};
    const int64_t blocks = std::min(n, kMaxPartials);
    return reduceToBeta(blocks, double(scale), dBeta, stream, "train IEC repeat backward kernel",
                        [&](double *partials) {
                            repeatBackwardKernel<<<unsigned(blocks), kThreads, 0, stream>>>(
                                hidden, dy, n, rank, out, scale, beta, dHidden, partials);
                        });
}

} // namespace lowbit::cuda::train
