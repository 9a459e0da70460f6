// Causal grouped-query attention, flash-style (Dao et al. 2022, Alg. 1: keys streamed in tiles,
// online softmax, no score matrix in memory), float32 throughout.
//
// A block is kAttentionWarps warps over kAttentionPairsPerBlock (query row, head) pairs of one kv
// head, so the pairs of a block share every key/value tile loaded into shared memory (GQA: the
// heads of a group read the same kv head). In a tile of 32 keys, lane j scores key j for each of
// its warp's pairs, the warp does the softmax bookkeeping with shuffles, and lane l accumulates
// output dims l, l+32, ... (head dim <= 128). Decode (few pairs, long context) splits each task's
// keys over gridDim.y blocks (flash-decoding) and a second kernel merges the partial (max, sum,
// acc) triples. This is the simple CUDA-core form: a tensor-core (mma) version is the next step for
// prefill speed.
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_math.cuh"
#include "backend/cuda/kernels.h"

namespace lowbit::cuda {

namespace {

constexpr int kTile = 32;
constexpr int kMaxDimsPerLane = int(kAttentionMaxHeadDim / 32);
constexpr int kPairsPerWarp = kAttentionPairsPerBlock / kAttentionWarps;

struct PairIndex {
    int64_t row, head;
    bool valid;
};

__device__ PairIndex pairOf(const AttentionSequence &seq, const AttentionTask &task, int group,
                            int inBlock) {
    const int64_t pair = int64_t(task.pair0) + inBlock;
    const bool valid = pair < seq.queries * group;
    return {pair / group, int64_t(task.kvHead) * group + pair % group, valid};
}

// Shared memory: key tile [kTile][hdPad + 4] (the +4 makes lanes' 16-byte row reads hit distinct
// banks), value tile [kTile][hdPad], the block's queries [kAttentionPairsPerBlock][hdPad], scaled;
// hdPad = headDim rounded up to 4, zero-padded so that float4 dot products need no tail.
// Why kPairsPerWarp pairs per warp: each key value read from shared memory feeds that many FMAs.
__global__ void __launch_bounds__(kAttentionWarps * 32)
    attentionKernel(const AttentionSequence *sequences, const AttentionTask *tasks,
                    AttentionShape shape, float *partial) {
    extern __shared__ float4 smem4[];
    const int hd = int(shape.headDim), hdPad = (hd + 3) & ~3, kStride = hdPad + 4;
    float *sK = reinterpret_cast<float *>(smem4), *sV = sK + kTile * kStride,
          *sQ = sV + kTile * hdPad;
    const AttentionTask task = tasks[blockIdx.x];
    const AttentionSequence seq = sequences[task.sequence];
    const int group = int(shape.heads / shape.kvHeads);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;

    const int splits = int(gridDim.y), split = int(blockIdx.y);
    const int64_t chunk = ceilDivDevice(task.keyEnd, splits);
    const int64_t kBegin = min(int64_t(task.keyEnd), int64_t(split) * chunk);
    const int64_t kEnd = min(int64_t(task.keyEnd), kBegin + chunk);

    for (int i = threadIdx.x; i < kAttentionPairsPerBlock * hdPad; i += blockDim.x) {
        const int d = i % hdPad;
        const PairIndex p = pairOf(seq, task, group, i / hdPad);
        sQ[i] =
            p.valid && d < hd ? seq.q[p.row * shape.qStride + p.head * hd + d] * shape.scale : 0.0f;
    }
    PairIndex pairs[kPairsPerWarp];
    int64_t rowKeys[kPairsPerWarp]; // causal mask: keys [0, rowKeys) are visible
    float m[kPairsPerWarp], l[kPairsPerWarp], acc[kPairsPerWarp][kMaxDimsPerLane];
#pragma unroll
    for (int i = 0; i < kPairsPerWarp; ++i) {
        pairs[i] = pairOf(seq, task, group, warp * kPairsPerWarp + i);
        rowKeys[i] = pairs[i].valid ? seq.firstPosition + pairs[i].row + 1 : 0;
        m[i] = -INFINITY, l[i] = 0.0f;
#pragma unroll
        for (int dd = 0; dd < kMaxDimsPerLane; ++dd)
            acc[i][dd] = 0.0f;
    }
    const int64_t kvOffset = int64_t(task.kvHead) * hd;
    for (int64_t k0 = kBegin; k0 < kEnd; k0 += kTile) {
        __syncthreads(); // the previous tile is no longer read
        for (int i = threadIdx.x; i < kTile * hdPad; i += blockDim.x) {
            const int j = i / hdPad, d = i % hdPad;
            const int64_t key = k0 + j;
            const bool in = key < kEnd && d < hd;
            sK[j * kStride + d] = in ? seq.keys[key * shape.kvStride + kvOffset + d] : 0.0f;
            sV[j * hdPad + d] = in ? seq.values[key * shape.kvStride + kvOffset + d] : 0.0f;
        }
        __syncthreads();
        const int64_t key = k0 + lane; // lane j scores key j of the tile
        float score[kPairsPerWarp] = {};
        const float4 *k4 = reinterpret_cast<const float4 *>(sK + lane * kStride);
        for (int d4 = 0; d4 < hdPad / 4; ++d4) {
            const float4 kv = k4[d4];
#pragma unroll
            for (int i = 0; i < kPairsPerWarp; ++i) {
                const float4 qv =
                    reinterpret_cast<const float4 *>(sQ + (warp * kPairsPerWarp + i) * hdPad)[d4];
                score[i] += qv.x * kv.x + qv.y * kv.y + qv.z * kv.z + qv.w * kv.w;
            }
        }
        float prob[kPairsPerWarp];
#pragma unroll
        for (int i = 0; i < kPairsPerWarp; ++i) {
            const float s = key < kEnd && key < rowKeys[i] ? score[i] : -INFINITY;
            const float newMax = fmaxf(m[i], warpMax(s)); // the same in every lane
            prob[i] = s == -INFINITY ? 0.0f : __expf(s - newMax);
            // Rescales the old partial sums (0 at the first visible tile; 1 while nothing is
            // visible).
            const float correction = newMax == -INFINITY ? 1.0f : __expf(m[i] - newMax);
            l[i] = l[i] * correction + warpSum(prob[i]);
            m[i] = newMax;
#pragma unroll
            for (int dd = 0; dd < kMaxDimsPerLane; ++dd)
                acc[i][dd] *= correction;
        }
        for (int j = 0; j < kTile; ++j) {
            float pj[kPairsPerWarp];
#pragma unroll
            for (int i = 0; i < kPairsPerWarp; ++i)
                pj[i] = __shfl_sync(kFullMask, prob[i], j);
#pragma unroll
            for (int dd = 0; dd < kMaxDimsPerLane; ++dd) {
                const int d = lane + 32 * dd;
                if (d < hd) {
                    const float v = sV[j * hdPad + d];
#pragma unroll
                    for (int i = 0; i < kPairsPerWarp; ++i)
                        acc[i][dd] += pj[i] * v;
                }
            }
        }
    }
#pragma unroll
    for (int i = 0; i < kPairsPerWarp; ++i) {
        if (!pairs[i].valid)
            continue;
        if (splits == 1) {
            float *out = seq.out + pairs[i].row * shape.qStride + pairs[i].head * hd;
#pragma unroll
            for (int dd = 0; dd < kMaxDimsPerLane; ++dd)
                if (lane + 32 * dd < hd)
                    out[lane + 32 * dd] = acc[i][dd] / l[i];
            continue;
        }
        const int inBlock = warp * kPairsPerWarp + i;
        float *slot =
            partial +
            ((int64_t(blockIdx.x) * splits + split) * kAttentionPairsPerBlock + inBlock) * (hd + 2);
#pragma unroll
        for (int dd = 0; dd < kMaxDimsPerLane; ++dd)
            if (lane + 32 * dd < hd)
                slot[lane + 32 * dd] = acc[i][dd];
        if (lane == 0)
            slot[hd] = m[i], slot[hd + 1] = l[i];
    }
}

// One warp per (task, pair): merges the splits' partial softmax states.
__global__ void combineKernel(const AttentionSequence *sequences, const AttentionTask *tasks,
                              AttentionShape shape, int splits, const float *partial) {
    const int hd = int(shape.headDim), warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const AttentionTask task = tasks[blockIdx.x];
    const AttentionSequence seq = sequences[task.sequence];
    for (int inBlock = warp; inBlock < kAttentionPairsPerBlock; inBlock += kAttentionWarps) {
        const PairIndex p = pairOf(seq, task, int(shape.heads / shape.kvHeads), inBlock);
        if (!p.valid)
            continue;
        auto slot = [&](int s) {
            return partial +
                   ((int64_t(blockIdx.x) * splits + s) * kAttentionPairsPerBlock + inBlock) *
                       (hd + 2);
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
}

} // namespace

AttentionPlan planAttention(int64_t tasks, int64_t maxKeys, int multiprocessors) {
    AttentionPlan plan{tasks, 1};
    const int64_t wanted = 2 * int64_t(multiprocessors);
    if (tasks > 0 && tasks < wanted)
        plan.splits = std::max<int64_t>(1, std::min(ceilDiv(maxKeys, 128), ceilDiv(wanted, tasks)));
    return plan;
}

size_t attentionWorkspaceFloats(const AttentionPlan &plan, int64_t headDim) {
    return plan.splits > 1
               ? size_t(plan.tasks * plan.splits * kAttentionPairsPerBlock * (headDim + 2))
               : 0;
}

Status attention(const AttentionSequence *sequences, const AttentionTask *tasks,
                 const AttentionPlan &plan, const AttentionShape &shape, float *workspace,
                 cudaStream_t stream) {
    if (shape.headDim <= 0 || shape.headDim > kAttentionMaxHeadDim || shape.kvHeads <= 0 ||
        shape.heads % shape.kvHeads != 0)
        return makeError(ErrorCode::Unsupported,
                         "cuda attention: head dim " + std::to_string(shape.headDim) + " (1.." +
                             std::to_string(kAttentionMaxHeadDim) + " supported), heads " +
                             std::to_string(shape.heads) + " over kv heads " +
                             std::to_string(shape.kvHeads));
    if (plan.tasks == 0)
        return {};
    if (plan.tasks > INT32_MAX || plan.splits > 65535)
        return makeError(ErrorCode::InvalidArgument, "cuda attention: too many tasks");
    const int64_t hdPad = (shape.headDim + 3) / 4 * 4;
    const size_t smem =
        size_t(kTile * (hdPad + 4) + kTile * hdPad + kAttentionPairsPerBlock * hdPad) *
        sizeof(float);
    if (smem >
        48 * 1024) // above the default dynamic shared memory limit (sm_80+ allow more on request)
        LOWBIT_CHECK(
            check(cudaFuncSetAttribute(attentionKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       int(smem)),
                  "cudaFuncSetAttribute(attention shared memory)"));
    const dim3 grid(unsigned(plan.tasks), unsigned(plan.splits));
    attentionKernel<<<grid, kAttentionWarps * 32, smem, stream>>>(sequences, tasks, shape,
                                                                  workspace);
    LOWBIT_CHECK(lastLaunch("attention kernel"));
    if (plan.splits > 1) {
        combineKernel<<<unsigned(plan.tasks), kAttentionWarps * 32, 0, stream>>>(
            sequences, tasks, shape, int(plan.splits), workspace);
        LOWBIT_CHECK(lastLaunch("attention combine kernel"));
    }
    return {};
}

} // namespace lowbit::cuda
