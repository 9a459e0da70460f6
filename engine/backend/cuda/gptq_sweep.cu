// GPTQ's column sweep (Frantar et al. 2022, Alg. 1) on the device, with the min-max grid of
// engine/quant/minmax_grid.h: per block of B columns, the grids of the groups the block opens
// (fitted on the weights as updated so far, as gptq.cpp's GridSweep::beginBlock does), then the
// in-block sweep, one thread per weight row; the lazy update of the later columns is one cuBLAS
// GEMM on the host side (cuda_gptq.cpp).
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_math.cuh"
#include "backend/cuda/kernels.h"

namespace lowbit::cuda {

namespace {

constexpr int kSweepThreads = 64;

// minMaxGrid() line by line (same float operations, round-half-to-even), one thread per
// (row, group opened by this block).
__global__ void gridKernel(const float *w, int64_t rows, int64_t cols, int64_t groupSize,
                           int64_t groups, int64_t firstGroup, int64_t groupCount, int bits,
                           bool symmetric, float *scales, float *zeros) {
    const int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
    if (t >= rows * groupCount)
        return;
    const int64_t r = t / groupCount, g = firstGroup + t % groupCount, c = g * groupSize;
    const int64_t width = min(groupSize, cols - c);
    const int maxq = (1 << bits) - 1;
    float xmin = 0, xmax = 0;
    for (int64_t i = 0; i < width; ++i) {
        const float x = w[r * cols + c + i];
        xmin = fminf(xmin, x);
        xmax = fmaxf(xmax, x);
    }
    if (symmetric) {
        xmax = fmaxf(-xmin, xmax);
        if (xmin < 0)
            xmin = -xmax;
    }
    if (xmin == 0 && xmax == 0)
        xmin = -1, xmax = 1;
    const float scale = __fdiv_rn(xmax - xmin, float(maxq));
    scales[r * groups + g] = scale;
    zeros[r * groups + g] = symmetric ? float(maxq + 1) / 2 : nearbyintf(__fdiv_rn(-xmin, scale));
}

// One thread per row; the row's block of `count` (<= kGptqBlock) weights lives in shared memory
// as [column][thread], so the O(B^2) in-block updates are bank-conflict free. U's entries are the
// same for every thread (broadcast reads).
__global__ void __launch_bounds__(kSweepThreads)
    sweepKernel(float *w, int64_t rows, int64_t cols, int64_t b0, int count, const float *u,
                int64_t groupSize, int64_t groups, const float *scales, const float *zeros,
                int maxq, uint8_t *codes, float *err, double *loss) {
    __shared__ float block[kGptqBlock][kSweepThreads];
    const int tid = threadIdx.x;
    const int64_t r = blockIdx.x * int64_t(kSweepThreads) + tid;
    if (r >= rows)
        return; // no barrier below: each thread only touches its own column of `block`
    float *wr = w + r * cols + b0;
    for (int k = 0; k < count; ++k)
        block[k][tid] = wr[k];
    double rowLoss = 0;
    for (int j = 0; j < count; ++j) {
        const int64_t col = b0 + j, g = col / groupSize;
        const float scale = scales[r * groups + g], zero = zeros[r * groups + g];
        const float x = block[j][tid];
        const float code = fminf(fmaxf(nearbyintf(__fdiv_rn(x, scale)) + zero, 0.0f), float(maxq));
        // Not contracted into x - q below (an FMA would round differently from minmax_grid.h).
        const float q = __fmul_rn(scale, code - zero);
        const float d = u[col * cols + col];
        const float e = __fdiv_rn(x - q, d);  // Alg. 1 line 9
        rowLoss += double(e) * double(e) / 2; // obs_sweep.cpp's loss, from the same float e
        for (int k = j + 1; k < count; ++k)   // line 10, within the block
            block[k][tid] -= e * u[col * cols + b0 + k];
        block[j][tid] = q;
        codes[r * cols + col] = uint8_t(code);
        err[r * count + j] = e;
    }
    for (int k = 0; k < count; ++k)
        wr[k] = block[k][tid];
    loss[r] += rowLoss;
}

} // namespace

Status gptqBlockGrids(const float *w, int64_t rows, int64_t cols, int64_t groupSize, int64_t b0,
                      int64_t count, int bits, bool symmetric, float *scales, float *zeros,
                      cudaStream_t stream) {
    const int64_t groups = ceilDiv(cols, groupSize);
    const int64_t firstGroup = ceilDiv(b0, groupSize), endGroup = ceilDiv(b0 + count, groupSize);
    if (endGroup <= firstGroup)
        return {};
    const int64_t total = rows * (endGroup - firstGroup);
    gridKernel<<<unsigned(ceilDiv(total, 128)), 128, 0, stream>>>(w, rows, cols, groupSize, groups,
                                                                  firstGroup, endGroup - firstGroup,
                                                                  bits, symmetric, scales, zeros);
    return lastLaunch("GPTQ grid kernel");
}

Status gptqBlockSweep(float *w, int64_t rows, int64_t cols, int64_t b0, int64_t count,
                      const float *hinvUpper, int64_t groupSize, int bits, const float *scales,
                      const float *zeros, uint8_t *codes, float *err, double *loss,
                      cudaStream_t stream) {
    if (count < 1 || count > kGptqBlock || bits < 1 || bits > 8)
        return makeError(ErrorCode::InvalidArgument, "cuda GPTQ sweep: block of 1.." +
                                                         std::to_string(kGptqBlock) +
                                                         " columns and 1..8 bits");
    sweepKernel<<<unsigned(ceilDiv(rows, kSweepThreads)), kSweepThreads, 0, stream>>>(
        w, rows, cols, b0, int(count), hinvUpper, groupSize, ceilDiv(cols, groupSize), scales,
        zeros, (1 << bits) - 1, codes, err, loss);
    return lastLaunch("GPTQ sweep kernel");
}

} // namespace lowbit::cuda
