// Causal grouped-query attention, flash-style (Dao et al. 2022, Alg. 1: keys streamed in tiles,
// online softmax, no score matrix in memory), float32 throughout.
//
// A block is kAttentionWarps warps; warp w owns one (query row, head) pair of one kv head, so the
// pairs of a block share every key/value tile loaded into shared memory (GQA: the heads of a
// group read the same kv head). In a tile of 32 keys, lane j scores key j, the warp does the
// softmax bookkeeping with shuffles, and lane l accumulates output dims l, l+32, ... (head dim
// <= 128). Decode (few pairs, long context) splits each task's keys over gridDim.y blocks
// (flash-decoding) and a second kernel merges the partial (max, sum, acc) triples.
// This is the simple CUDA-core form: a tensor-core (mma) version is the next step for prefill speed.
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_math.cuh"
#include "backend/cuda/kernels.h"

namespace lowbit::cuda {

namespace {

constexpr int kTile = 32;
constexpr int kMaxDimsPerLane = int(kAttentionMaxHeadDim / 32);

struct PairIndex {
    int64_t row, head;
    bool valid;
};

__device__ PairIndex pairOf(const AttentionSequence &seq, const AttentionTask &task, int group, int warp) {
    const int64_t pair = int64_t(task.pair0) + warp;
    const bool valid = pair < seq.queries * group;
    return {pair / group, int64_t(task.kvHead) * group + pair % group, valid};
}

// Why the padding: lane j reads key row j at column d; a row stride of hd+1 floats puts the 32
// lanes in 32 different banks.
__global__ void __launch_bounds__(kAttentionWarps * 32)
    attentionKernel(const AttentionSequence *sequences, const AttentionTask *tasks, AttentionShape shape,
                    float *partial) {
    extern __shared__ float smem[];
    const int hd = int(shape.headDim), stride = hd + 1;
    float *sK = smem, *sV = sK + kTile * stride, *sQ = sV + kTile * stride;
    const AttentionTask task = tasks[blockIdx.x];
    const AttentionSequence seq = sequences[task.sequence];
    const int group = int(shape.heads / shape.kvHeads);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const PairIndex p = pairOf(seq, task, group, warp);
    const int64_t rowKeys = p.valid ? seq.firstPosition + p.row + 1 : 0; // causal mask

    const int splits = int(gridDim.y), split = int(blockIdx.y);
    const int64_t chunk = ceilDivDevice(task.keyEnd, splits);
    const int64_t kBegin = min(int64_t(task.keyEnd), int64_t(split) * chunk);
    const int64_t kEnd = min(int64_t(task.keyEnd), kBegin + chunk);

    for (int d = lane; d < hd; d += 32)
        sQ[warp * hd + d] = p.valid ? seq.q[p.row * shape.qStride + p.head * hd + d] * shape.scale : 0.0f;
    float m = -INFINITY, l = 0.0f, acc[kMaxDimsPerLane] = {};
    const int64_t kvOffset = int64_t(task.kvHead) * hd;
    for (int64_t k0 = kBegin; k0 < kEnd; k0 += kTile) {
        __syncthreads(); // the previous tile is no longer read
        for (int i = threadIdx.x; i < kTile * hd; i += blockDim.x) {
            const int j = i / hd, d = i % hd;
            const int64_t key = k0 + j;
            const bool in = key < kEnd;
            sK[j * stride + d] = in ? seq.keys[key * shape.kvStride + kvOffset + d] : 0.0f;
            sV[j * stride + d] = in ? seq.values[key * shape.kvStride + kvOffset + d] : 0.0f;
        }
        __syncthreads();
        const int64_t key = k0 + lane;
        float s = -INFINITY;
        if (key < kEnd && key < rowKeys) {
            s = 0.0f;
            for (int d = 0; d < hd; ++d)
                s += sQ[warp * hd + d] * sK[lane * stride + d];
        }
        const float newMax = fmaxf(m, warpMax(s));
        if (newMax == -INFINITY)
            continue; // every key of this tile is masked for this pair
        const float prob = s == -INFINITY ? 0.0f : __expf(s - newMax);
        const float correction = __expf(m - newMax); // rescales the old partial sums; 0 at start
        l = l * correction + warpSum(prob);
        m = newMax;
#pragma unroll
        for (int i = 0; i < kMaxDimsPerLane; ++i)
            acc[i] *= correction;
        for (int j = 0; j < kTile; ++j) {
            const float pj = __shfl_sync(kFullMask, prob, j);
#pragma unroll
            for (int i = 0; i < kMaxDimsPerLane; ++i) {
                const int d = lane + 32 * i;
                if (d < hd)
                    acc[i] += pj * sV[j * stride + d];
            }
        }
    }
    if (!p.valid)
        return;
    if (splits == 1) {
        float *out = seq.out + p.row * shape.qStride + p.head * hd;
        for (int i = 0; i < kMaxDimsPerLane; ++i)
            if (lane + 32 * i < hd)
                out[lane + 32 * i] = acc[i] / l;
        return;
    }
    float *slot = partial + ((int64_t(blockIdx.x) * splits + split) * kAttentionWarps + warp) * (hd + 2);
    for (int i = 0; i < kMaxDimsPerLane; ++i)
        if (lane + 32 * i < hd)
            slot[lane + 32 * i] = acc[i];
    if (lane == 0)
        slot[hd] = m, slot[hd + 1] = l;
}

// One warp per (task, pair): merges the splits' partial softmax states.
__global__ void combineKernel(const AttentionSequence *sequences, const AttentionTask *tasks,
                              AttentionShape shape, int splits, const float *partial) {
    const int hd = int(shape.headDim), warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const AttentionTask task = tasks[blockIdx.x];
    const AttentionSequence seq = sequences[task.sequence];
    const PairIndex p = pairOf(seq, task, int(shape.heads / shape.kvHeads), warp);
    if (!p.valid)
        return;
    auto slot = [&](int s) {
        return partial + ((int64_t(blockIdx.x) * splits + s) * kAttentionWarps + warp) * (hd + 2);
    };
    float m = -INFINITY;
    for (int s = 0; s < splits; ++s)
        m = fmaxf(m, slot(s)[hd]);
    float l = 0;
    for (int s = 0; s < splits; ++s)
        l += slot(s)[hd] == -INFINITY ? 0.0f : slot(s)[hd + 1] * __expf(slot(s)[hd] - m);
    float *out = seq.out + p.row * shape.qStride + p.head * hd;
    for (int d = lane; d < hd; d += 32) {
        float sum = 0;
        for (int s = 0; s < splits; ++s)
            if (slot(s)[hd] != -INFINITY)
                sum += slot(s)[d] * __expf(slot(s)[hd] - m);
        out[d] = sum / l;
    }
}

} // namespace

AttentionPlan planAttention(int64_t tasks, int64_t maxKeys, int multiprocessors) {
    AttentionPlan plan{tasks, 1};
    const int64_t wanted = 2 * int64_t(multiprocessors);
    if (tasks > 0 && tasks < wanted)
        plan.splits = std::max<int64_t>(1, std::min(ceilDiv(maxKeys, 256), ceilDiv(wanted, tasks)));
    return plan;
}

size_t attentionWorkspaceFloats(const AttentionPlan &plan, int64_t headDim) {
    return plan.splits > 1 ? size_t(plan.tasks * plan.splits * kAttentionWarps * (headDim + 2)) : 0;
}

Status attention(const AttentionSequence *sequences, const AttentionTask *tasks, const AttentionPlan &plan,
                 const AttentionShape &shape, float *workspace, cudaStream_t stream) {
    if (shape.headDim <= 0 || shape.headDim > kAttentionMaxHeadDim || shape.kvHeads <= 0 ||
        shape.heads % shape.kvHeads != 0)
        return makeError(ErrorCode::Unsupported, "cuda attention: head dim " + std::to_string(shape.headDim) +
                                                     " (1.." + std::to_string(kAttentionMaxHeadDim) +
                                                     " supported), heads " + std::to_string(shape.heads) +
                                                     " over kv heads " + std::to_string(shape.kvHeads));
    if (plan.tasks == 0)
        return {};
    if (plan.tasks > INT32_MAX || plan.splits > 65535)
        return makeError(ErrorCode::InvalidArgument, "cuda attention: too many tasks");
    const size_t smem = size_t(2 * kTile * (shape.headDim + 1) + kAttentionWarps * shape.headDim) * sizeof(float);
    const dim3 grid(unsigned(plan.tasks), unsigned(plan.splits));
    attentionKernel<<<grid, kAttentionWarps * 32, smem, stream>>>(sequences, tasks, shape, workspace);
    LOWBIT_CHECK(lastLaunch("attention kernel"));
    if (plan.splits > 1) {
        combineKernel<<<unsigned(plan.tasks), kAttentionWarps * 32, 0, stream>>>(sequences, tasks, shape,
                                                                                int(plan.splits), workspace);
        LOWBIT_CHECK(lastLaunch("attention combine kernel"));
    }
    return {};
}

} // namespace lowbit::cuda
