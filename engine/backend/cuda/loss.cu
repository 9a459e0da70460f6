// Loss-side ops on the device, so a [tokens x vocab] logit matrix never crosses to the host: the
// log-probability of each row's target (log-softmax + gather, float64 sums) and top-K extraction.
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_math.cuh"
#include "backend/cuda/kernels.h"

namespace lowbit::cuda {

namespace {

constexpr int kThreads = 256;

// One block per row: max, then the sum of exp(x - max) in float64, then the target's log-prob.
__global__ void logProbKernel(const float *logits, int64_t vocab, const int32_t *targets,
                              double *out) {
    __shared__ float sharedMax[32];
    __shared__ double sharedSum[32];
    const float *row = logits + int64_t(blockIdx.x) * vocab;
    float m = -INFINITY;
    for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x)
        m = fmaxf(m, row[i]);
    m = blockMax(m, sharedMax);
    double sum = 0;
    for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x)
        sum += exp(double(row[i]) - double(m));
    sum = blockSum(sum, sharedSum);
    if (threadIdx.x == 0)
        out[blockIdx.x] = double(row[targets[blockIdx.x]]) - double(m) - log(sum);
}

// "a before b" in top-K order: larger value first, equal values by lower id.
__device__ __forceinline__ bool before(float va, int32_t ia, float vb, int32_t ib) {
    return va > vb || (va == vb && ia < ib);
}

// k rounds of a block arg-max over the entries that come after the previous pick (k <= 64, so k
// scans of the row beat a sort; a row of 128256 logits is 0.5 MB).
__global__ void topKKernel(const float *logits, int64_t vocab, int k, int32_t *ids, float *values) {
    __shared__ float bestValue[kThreads / 32];
    __shared__ int32_t bestId[kThreads / 32];
    const float *row = logits + int64_t(blockIdx.x) * vocab;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    float lastValue = INFINITY;
    int32_t lastId = -1;
    for (int round = 0; round < k; ++round) {
        float v = -INFINITY;
        int32_t id = INT32_MAX;
        for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) {
            const float x = row[i];
            if (x != x || !before(lastValue, lastId, x, int32_t(i)))
                continue; // NaN, or already picked
            if (before(x, int32_t(i), v, id))
                v = x, id = int32_t(i);
        }
        for (int o = 16; o > 0; o >>= 1) {
            const float ov = __shfl_xor_sync(kFullMask, v, o);
            const int32_t oi = __shfl_xor_sync(kFullMask, id, o);
            if (before(ov, oi, v, id))
                v = ov, id = oi;
        }
        __syncthreads();
        if (lane == 0)
            bestValue[warp] = v, bestId[warp] = id;
        __syncthreads();
        v = bestValue[0], id = bestId[0];
        for (int w = 1; w < kThreads / 32; ++w)
            if (before(bestValue[w], bestId[w], v, id))
                v = bestValue[w], id = bestId[w];
        if (threadIdx.x == 0) {
            ids[int64_t(blockIdx.x) * k + round] = id == INT32_MAX ? -1 : id;
            values[int64_t(blockIdx.x) * k + round] = v;
        }
        lastValue = v, lastId = id;
    }
}

} // namespace

Status tokenLogProbs(const float *logits, int64_t rows, int64_t vocab, const int32_t *targets,
                     double *out, cudaStream_t stream) {
    if (rows < 0 || rows > INT32_MAX || vocab <= 0)
        return makeError(ErrorCode::InvalidArgument, "cuda tokenLogProbs: invalid shape");
    if (rows == 0)
        return {};
    logProbKernel<<<unsigned(rows), kThreads, 0, stream>>>(logits, vocab, targets, out);
    return lastLaunch("log-prob kernel");
}

Status topK(const float *logits, int64_t rows, int64_t vocab, int k, int32_t *ids, float *values,
            cudaStream_t stream) {
    if (rows < 0 || rows > INT32_MAX || vocab <= 0 || vocab > INT32_MAX || k < 1 || k > kTopKMax ||
        k > vocab)
        return makeError(ErrorCode::InvalidArgument, "cuda topK: k must be 1.." +
                                                         std::to_string(kTopKMax) +
                                                         " and at most the vocabulary");
    if (rows == 0)
        return {};
    topKKernel<<<unsigned(rows), kThreads, 0, stream>>>(logits, vocab, k, ids, values);
    return lastLaunch("top-k kernel");
}

} // namespace lowbit::cuda
