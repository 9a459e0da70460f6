// Training attention on the device: causal grouped-query attention over a flattened batch that
// keeps the row log-sum-exp, and its backward with P recomputed from it (FlashAttention, Dao et al.
// 2022; FlashAttention-2, Dao 2023), in the CUDA-core form of attention.cu: one lane per key or per
// query of a 32-wide shared tile. Unlike FlashAttention-2's backward, which adds dQ with atomics
// from a key-major loop, dQ has its own query-major pass, so no value is ever summed by two blocks.
//
// Forward and dQ: a block is kWarps warps over kPairs (query row, head) pairs of one kv head
// (blockIdx.y), pair p of kv head g being row p / group, head g·group + p % group, so the heads of
// a GQA group share every key/value tile. dK/dV: a block owns kPairs key rows of one kv head and
// streams the (query row, head) pairs that see them, in tiles of 32: each dK/dV value is written by
// exactly one lane, summed in a fixed order, so two runs give identical bits without atomics.
//
// The batch's sequence boundaries (`starts`) live on the device, so blocks are laid over the global
// rows and may straddle a boundary: every (query, key) pair is masked by seqStart(q) <= k <= q, and
// a block's key (or query) range is the union over its rows (at most one tile of extra work per
// boundary).
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_math.cuh"
#include "backend/cuda/train_kernels.h"

#include <string>

namespace lowbit::cuda::train {

namespace {

constexpr int kWarps = 8, kThreads = kWarps * 32;
constexpr int kPairs = 32;                   // pairs (forward, dQ) or keys (dK/dV) per block
constexpr int kPerWarp = kPairs / kWarps;    // each shared value read feeds kPerWarp FMAs
constexpr int kTile = 32;                    // keys (forward, dQ) or query pairs (dK/dV): one a lane
constexpr int kMaxHeadDim = 128;             // LLaMA-3's head dim
constexpr int kDimsPerLane = kMaxHeadDim / 32; // lane l accumulates dims l, l+32, ...
static_assert(kPairs == kTile, "the load helpers fill kTile rows for a block's kPairs");

// Everything a kernel needs about the shapes (by value: kernel parameters).
struct Layout {
    const int64_t *starts;
    int64_t sequences, rows, qStride, kvStride;
    int heads, group, hd, hdPad; // hdPad: hd rounded up to 4 (float4 dot products, zero-padded)
    float scale;
};

// The sequence holding `row`: the last s with starts[s] <= row (empty sequences skipped).
struct Span {
    int64_t begin, end;
};
__device__ Span sequenceOf(const Layout &L, int64_t row) {
    int64_t lo = 0, hi = L.sequences - 1;
    while (lo < hi) {
        const int64_t mid = (lo + hi + 1) / 2;
        if (L.starts[mid] <= row)
            lo = mid;
        else
            hi = mid - 1;
    }
    return {L.starts[lo], L.starts[lo + 1]};
}

// (query row, head) of pair p of kv head g.
struct Pair {
    int64_t row;
    int head;
    bool valid;
};
__device__ Pair pairOf(const Layout &L, int g, int64_t p, int64_t pairEnd) {
    return {p / L.group, g * L.group + int(p % L.group), p < pairEnd};
}

// Loads `count` hd-vectors of pairs [p0, p0+count) of `src` (rows × heads·hd) into dst
// [count][stride] (times `mul`), zero past pairEnd and past hd.
__device__ void loadPairs(const Layout &L, int g, int64_t p0, int64_t pairEnd, const float *src,
                          float mul, float *dst, int stride) {
    for (int i = threadIdx.x; i < kTile * L.hdPad; i += blockDim.x) {
        const int slot = i / L.hdPad, d = i % L.hdPad;
        const Pair pr = pairOf(L, g, p0 + slot, pairEnd);
        dst[slot * stride + d] =
            pr.valid && d < L.hd ? src[pr.row * L.qStride + int64_t(pr.head) * L.hd + d] * mul
                                 : 0.0f;
    }
}

// Loads key/value rows [k0, min(k0+kTile, kEnd)) of kv head g into dst [kTile][stride], zero past.
__device__ void loadKeys(const Layout &L, int g, int64_t k0, int64_t kEnd, const float *src,
                         float *dst, int stride) {
    for (int i = threadIdx.x; i < kTile * L.hdPad; i += blockDim.x) {
        const int j = i / L.hdPad, d = i % L.hdPad;
        const int64_t key = k0 + j;
        dst[j * stride + d] =
            key < kEnd && d < L.hd ? src[key * L.kvStride + int64_t(g) * L.hd + d] : 0.0f;
    }
}

// a · b over hdPad floats (both 16-byte aligned).
__device__ __forceinline__ float dot4(const float *a, const float *b, int hdPad) {
    const float4 *a4 = reinterpret_cast<const float4 *>(a), *b4 = reinterpret_cast<const float4 *>(b);
    float s = 0.0f;
    for (int d4 = 0; d4 < hdPad / 4; ++d4) {
        const float4 x = a4[d4], y = b4[d4];
        s += x.x * y.x + x.y * y.y + x.z * y.z + x.w * y.w;
    }
    return s;
}

// The pairs of the block [pair0, pair0 + kPairs) and the keys they see, [keyBegin, keyEnd).
struct PairBlock {
    int64_t pair0, pairEnd, keyBegin, keyEnd;
};
__device__ PairBlock pairBlock(const Layout &L) {
    const int64_t pairEnd = L.rows * L.group, pair0 = int64_t(blockIdx.x) * kPairs;
    const int64_t lastRow = (min(pair0 + kPairs, pairEnd) - 1) / L.group;
    return {pair0, pairEnd, sequenceOf(L, pair0 / L.group).begin, lastRow + 1};
}

// Shared memory: sK [kTile][hdPad+4] (lane j reads row j as float4: the +4 puts the 8 lanes of
// a 16-byte phase on distinct banks), sV [kTile][hdPad], sQ [kPairs][hdPad] scaled (read by the
// whole warp at one address: a broadcast).
__global__ void __launch_bounds__(kThreads)
    forwardKernel(const float *q, const float *k, const float *v, Layout L, float *out,
                  float *lse) {
    extern __shared__ float4 smem4[];
    const int hdPad = L.hdPad, kStride = hdPad + 4, g = int(blockIdx.y);
    float *sK = reinterpret_cast<float *>(smem4), *sV = sK + kTile * kStride,
          *sQ = sV + kTile * hdPad;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const PairBlock B = pairBlock(L);
    loadPairs(L, g, B.pair0, B.pairEnd, q, L.scale, sQ, hdPad);

    Pair pairs[kPerWarp];
    int64_t firstKey[kPerWarp]; // keys [firstKey, row] are visible
    float m[kPerWarp], l[kPerWarp], acc[kPerWarp][kDimsPerLane];
#pragma unroll
    for (int i = 0; i < kPerWarp; ++i) {
        pairs[i] = pairOf(L, g, B.pair0 + warp * kPerWarp + i, B.pairEnd);
        firstKey[i] = pairs[i].valid ? sequenceOf(L, pairs[i].row).begin : 0;
        m[i] = -INFINITY, l[i] = 0.0f;
#pragma unroll
        for (int dd = 0; dd < kDimsPerLane; ++dd)
            acc[i][dd] = 0.0f;
    }
    for (int64_t k0 = B.keyBegin; k0 < B.keyEnd; k0 += kTile) {
        __syncthreads(); // the previous tile is no longer read (first pass: sQ is written)
        loadKeys(L, g, k0, B.keyEnd, k, sK, kStride);
        loadKeys(L, g, k0, B.keyEnd, v, sV, hdPad);
        __syncthreads();
        const int64_t key = k0 + lane; // lane j scores key j of the tile
        float prob[kPerWarp];
#pragma unroll
        for (int i = 0; i < kPerWarp; ++i) {
            const bool visible = pairs[i].valid && key >= firstKey[i] && key <= pairs[i].row;
            const float s =
                visible ? dot4(sQ + (warp * kPerWarp + i) * hdPad, sK + lane * kStride, hdPad)
                        : -INFINITY;
            const float newMax = fmaxf(m[i], warpMax(s)); // the same in every lane
            prob[i] = visible ? expf(s - newMax) : 0.0f;
            // Rescales the old partial sums (0 at the first visible tile; 1 while none is).
            const float correction = newMax == -INFINITY ? 1.0f : expf(m[i] - newMax);
            l[i] = l[i] * correction + warpSum(prob[i]);
            m[i] = newMax;
#pragma unroll
            for (int dd = 0; dd < kDimsPerLane; ++dd)
                acc[i][dd] *= correction;
        }
        for (int j = 0; j < kTile; ++j) {
            float pj[kPerWarp];
#pragma unroll
            for (int i = 0; i < kPerWarp; ++i)
                pj[i] = __shfl_sync(kFullMask, prob[i], j);
#pragma unroll
            for (int dd = 0; dd < kDimsPerLane; ++dd) {
                const int d = lane + 32 * dd;
                if (d < L.hd) {
                    const float val = sV[j * hdPad + d];
#pragma unroll
                    for (int i = 0; i < kPerWarp; ++i)
                        acc[i][dd] += pj[i] * val;
                }
            }
        }
    }
#pragma unroll
    for (int i = 0; i < kPerWarp; ++i) {
        if (!pairs[i].valid)
            continue;
        const int64_t at = pairs[i].row * L.heads + pairs[i].head;
        float *o = out + at * L.hd; // rows × heads·hd: pair (row, head) starts at at·hd
#pragma unroll
        for (int dd = 0; dd < kDimsPerLane; ++dd)
            if (lane + 32 * dd < L.hd)
                o[lane + 32 * dd] = acc[i][dd] / l[i];
        if (lane == 0)
            lse[at] = m[i] + logf(l[i]);
    }
}

// D[row·heads + head] = Σ_c dO·O (the softmax Jacobian's row term), one warp per pair.
__global__ void rowDotKernel(const float *dOut, const float *out, int64_t pairs, int hd,
                             float *rowDot) {
    const int lane = threadIdx.x & 31;
    const int64_t warps = int64_t(gridDim.x) * (blockDim.x >> 5);
    for (int64_t p = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5; p < pairs; p += warps) {
        float s = 0.0f;
        for (int d = lane; d < hd; d += 32)
            s += dOut[p * hd + d] * out[p * hd + d];
        s = warpSum(s);
        if (lane == 0)
            rowDot[p] = s;
    }
}

// dQ_i = scale · Σ_j P_ij (dO_i·V_j − D_i) K_j over the keys j of row i, P_ij = exp(s_ij − lse_i).
// Shared: sK, sV [kTile][hdPad+4] (lane j reads its row; sK is also read across lanes by dim),
// sQ (scaled) and sDO [kPairs][hdPad] (broadcast reads).
__global__ void __launch_bounds__(kThreads)
    dqKernel(const float *q, const float *k, const float *v, const float *dOut, const float *lse,
             const float *rowDot, Layout L, float *dq) {
    extern __shared__ float4 smem4[];
    const int hdPad = L.hdPad, kStride = hdPad + 4, g = int(blockIdx.y);
    float *sK = reinterpret_cast<float *>(smem4), *sV = sK + kTile * kStride,
          *sQ = sV + kTile * kStride, *sDO = sQ + kPairs * hdPad;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const PairBlock B = pairBlock(L);
    loadPairs(L, g, B.pair0, B.pairEnd, q, L.scale, sQ, hdPad);
    loadPairs(L, g, B.pair0, B.pairEnd, dOut, 1.0f, sDO, hdPad);

    Pair pairs[kPerWarp];
    int64_t firstKey[kPerWarp];
    float rowLse[kPerWarp], rowD[kPerWarp], acc[kPerWarp][kDimsPerLane];
#pragma unroll
    for (int i = 0; i < kPerWarp; ++i) {
        pairs[i] = pairOf(L, g, B.pair0 + warp * kPerWarp + i, B.pairEnd);
        const int64_t at = pairs[i].row * L.heads + pairs[i].head;
        firstKey[i] = pairs[i].valid ? sequenceOf(L, pairs[i].row).begin : 0;
        rowLse[i] = pairs[i].valid ? lse[at] : 0.0f;
        rowD[i] = pairs[i].valid ? rowDot[at] : 0.0f;
#pragma unroll
        for (int dd = 0; dd < kDimsPerLane; ++dd)
            acc[i][dd] = 0.0f;
    }
    for (int64_t k0 = B.keyBegin; k0 < B.keyEnd; k0 += kTile) {
        __syncthreads(); // the previous tile is no longer read (first pass: sQ, sDO are written)
        loadKeys(L, g, k0, B.keyEnd, k, sK, kStride);
        loadKeys(L, g, k0, B.keyEnd, v, sV, kStride);
        __syncthreads();
        const int64_t key = k0 + lane;
        float ds[kPerWarp];
#pragma unroll
        for (int i = 0; i < kPerWarp; ++i) {
            const bool visible = pairs[i].valid && key >= firstKey[i] && key <= pairs[i].row;
            ds[i] = 0.0f;
            if (visible) {
                const float *qi = sQ + (warp * kPerWarp + i) * hdPad;
                const float *doi = sDO + (warp * kPerWarp + i) * hdPad;
                const float p = expf(dot4(qi, sK + lane * kStride, hdPad) - rowLse[i]);
                ds[i] = p * (dot4(doi, sV + lane * kStride, hdPad) - rowD[i]);
            }
        }
        for (int j = 0; j < kTile; ++j) {
            float dsj[kPerWarp];
#pragma unroll
            for (int i = 0; i < kPerWarp; ++i)
                dsj[i] = __shfl_sync(kFullMask, ds[i], j);
#pragma unroll
            for (int dd = 0; dd < kDimsPerLane; ++dd) {
                const int d = lane + 32 * dd;
                if (d < L.hd) {
                    const float kv = sK[j * kStride + d];
#pragma unroll
                    for (int i = 0; i < kPerWarp; ++i)
                        acc[i][dd] += dsj[i] * kv;
                }
            }
        }
    }
#pragma unroll
    for (int i = 0; i < kPerWarp; ++i) {
        if (!pairs[i].valid)
            continue;
        float *o = dq + (pairs[i].row * L.heads + pairs[i].head) * L.hd;
#pragma unroll
        for (int dd = 0; dd < kDimsPerLane; ++dd)
            if (lane + 32 * dd < L.hd)
                o[lane + 32 * dd] = acc[i][dd] * L.scale;
    }
}

// dV_j = Σ_i P_ij dO_i, dK_j = Σ_i dS_ij (scale·Q_i) over the pairs i (rows of j's sequence at or
// after j, every head of the group) — in a fixed order, so the sums are reproducible.
// Shared: sK, sV [kPairs][hdPad] (the block's keys: broadcast reads), sQ (scaled) and sDO
// [kTile][hdPad+4] (lane i reads row i; also read across lanes by dim).
__global__ void __launch_bounds__(kThreads)
    dkvKernel(const float *q, const float *k, const float *v, const float *dOut, const float *lse,
              const float *rowDot, Layout L, float *dk, float *dv) {
    extern __shared__ float4 smem4[];
    const int hdPad = L.hdPad, qStride = hdPad + 4, g = int(blockIdx.y);
    float *sK = reinterpret_cast<float *>(smem4), *sV = sK + kPairs * hdPad,
          *sQ = sV + kPairs * hdPad, *sDO = sQ + kTile * qStride;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int64_t key0 = int64_t(blockIdx.x) * kPairs, keyEnd = min(key0 + kPairs, L.rows);
    loadKeys(L, g, key0, keyEnd, k, sK, hdPad); // kPairs == kTile rows
    loadKeys(L, g, key0, keyEnd, v, sV, hdPad);
    // Queries that see a key of the block: rows [key0, end of the last key's sequence).
    const int64_t pairBegin = key0 * L.group, pairEnd = sequenceOf(L, keyEnd - 1).end * L.group;

    int64_t keys[kPerWarp], seqEnd[kPerWarp]; // key j is seen by rows [j, seqEnd)
    float accK[kPerWarp][kDimsPerLane], accV[kPerWarp][kDimsPerLane];
#pragma unroll
    for (int i = 0; i < kPerWarp; ++i) {
        keys[i] = key0 + warp * kPerWarp + i;
        seqEnd[i] = keys[i] < keyEnd ? sequenceOf(L, keys[i]).end : keys[i]; // none: invalid key
#pragma unroll
        for (int dd = 0; dd < kDimsPerLane; ++dd)
            accK[i][dd] = accV[i][dd] = 0.0f;
    }
    for (int64_t p0 = pairBegin; p0 < pairEnd; p0 += kTile) {
        __syncthreads(); // the previous tile is no longer read (first pass: sK, sV are written)
        loadPairs(L, g, p0, pairEnd, q, L.scale, sQ, qStride);
        loadPairs(L, g, p0, pairEnd, dOut, 1.0f, sDO, qStride);
        __syncthreads();
        const Pair mine = pairOf(L, g, p0 + lane, pairEnd); // lane i handles pair i of the tile
        const int64_t at = mine.row * L.heads + mine.head;
        const float rowLse = mine.valid ? lse[at] : 0.0f, rowD = mine.valid ? rowDot[at] : 0.0f;
        float p[kPerWarp], ds[kPerWarp];
#pragma unroll
        for (int i = 0; i < kPerWarp; ++i) {
            const bool visible = mine.valid && mine.row >= keys[i] && mine.row < seqEnd[i];
            p[i] = ds[i] = 0.0f;
            if (visible) {
                const int slot = warp * kPerWarp + i;
                p[i] = expf(dot4(sQ + lane * qStride, sK + slot * hdPad, hdPad) - rowLse);
                ds[i] = p[i] * (dot4(sDO + lane * qStride, sV + slot * hdPad, hdPad) - rowD);
            }
        }
        for (int j = 0; j < kTile; ++j) {
            float pj[kPerWarp], dsj[kPerWarp];
#pragma unroll
            for (int i = 0; i < kPerWarp; ++i) {
                pj[i] = __shfl_sync(kFullMask, p[i], j);
                dsj[i] = __shfl_sync(kFullMask, ds[i], j);
            }
#pragma unroll
            for (int dd = 0; dd < kDimsPerLane; ++dd) {
                const int d = lane + 32 * dd;
                if (d < L.hd) {
                    const float qv = sQ[j * qStride + d], dov = sDO[j * qStride + d];
#pragma unroll
                    for (int i = 0; i < kPerWarp; ++i) {
                        accK[i][dd] += dsj[i] * qv;
                        accV[i][dd] += pj[i] * dov;
                    }
                }
            }
        }
    }
#pragma unroll
    for (int i = 0; i < kPerWarp; ++i) {
        if (keys[i] >= keyEnd)
            continue;
        const int64_t offset = keys[i] * L.kvStride + int64_t(g) * L.hd;
#pragma unroll
        for (int dd = 0; dd < kDimsPerLane; ++dd)
            if (lane + 32 * dd < L.hd) {
                dk[offset + lane + 32 * dd] = accK[i][dd];
                dv[offset + lane + 32 * dd] = accV[i][dd];
            }
    }
}

Error badDims(const std::string &why) {
    return makeError(ErrorCode::InvalidArgument, "cuda train attention: " + why);
}

// Validates the shapes and fills the kernels' Layout.
Result<Layout> layoutOf(const int64_t *starts, int64_t sequences, int64_t rows,
                        const AttentionDims &d) {
    if (d.headDim <= 0 || d.headDim > kMaxHeadDim)
        return badDims("head dim " + std::to_string(d.headDim) + " (1.." +
                       std::to_string(kMaxHeadDim) + " supported)");
    if (d.kvHeads <= 0 || d.heads <= 0 || d.heads % d.kvHeads || d.kvHeads > 65535)
        return badDims(std::to_string(d.heads) + " heads over " + std::to_string(d.kvHeads) +
                       " kv heads");
    if (rows < 0 || (rows > 0 && (sequences <= 0 || !starts)))
        return badDims("rows " + std::to_string(rows) + " in " + std::to_string(sequences) +
                       " sequences");
    const int64_t group = d.heads / d.kvHeads;
    if (ceilDiv(rows * group, kPairs) > INT32_MAX)
        return badDims("too many rows (" + std::to_string(rows) + ")");
    Layout L{};
    L.starts = starts, L.sequences = sequences, L.rows = rows;
    L.qStride = d.heads * d.headDim, L.kvStride = d.kvHeads * d.headDim;
    L.heads = int(d.heads), L.group = int(group), L.hd = int(d.headDim);
    L.hdPad = int((d.headDim + 3) / 4 * 4), L.scale = d.scale;
    return L;
}

// Launches `kernel` over the (pair or key) blocks × kv heads with `smemFloats` of dynamic shared
// memory: above 48 KiB each kernel must opt in (sm_80..sm_90 allow at least 99 KiB; ours <= 65 KiB).
template <typename Kernel, typename... Args>
Status launch(Kernel kernel, const char *name, int64_t blocks, int64_t kvHeads, int64_t smemFloats,
              cudaStream_t stream, Args... args) {
    const size_t smem = size_t(smemFloats) * sizeof(float);
    if (smem > 48 * 1024)
        LOWBIT_CHECK(check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                int(smem)),
                           name));
    kernel<<<dim3(unsigned(blocks), unsigned(kvHeads)), kThreads, smem, stream>>>(args...);
    return lastLaunch(name);
}

} // namespace

Status attentionForward(const float *q, const float *k, const float *v, const int64_t *starts,
                        int64_t sequences, int64_t rows, const AttentionDims &dims, float *out,
                        float *lse, cudaStream_t stream) {
    LOWBIT_TRY(const Layout L, layoutOf(starts, sequences, rows, dims));
    if (rows == 0)
        return {};
    const int64_t smem = int64_t(kTile) * (L.hdPad + 4) + (kTile + kPairs) * int64_t(L.hdPad);
    return launch(forwardKernel, "train attention forward kernel",
                  ceilDiv(rows * L.group, kPairs), dims.kvHeads, smem, stream, q, k, v, L, out,
                  lse);
}

int64_t attentionBackwardWorkspaceFloats(int64_t rows, const AttentionDims &dims) {
    return rows * dims.heads; // rowsum(dO ⊙ O) per (row, head)
}

Status attentionBackward(const float *q, const float *k, const float *v, const float *out,
                         const float *lse, const float *dOut, const int64_t *starts,
                         int64_t sequences, int64_t rows, const AttentionDims &dims, float *dq,
                         float *dk, float *dv, float *workspace, cudaStream_t stream) {
    LOWBIT_TRY(const Layout L, layoutOf(starts, sequences, rows, dims));
    if (rows == 0)
        return {};
    const int64_t pairs = rows * dims.heads;
    rowDotKernel<<<gridFor(pairs * 32, kThreads), kThreads, 0, stream>>>(dOut, out, pairs, L.hd,
                                                                        workspace);
    LOWBIT_CHECK(lastLaunch("train attention rowsum kernel"));
    const int64_t padded = int64_t(kTile) * (L.hdPad + 4), plain = int64_t(kPairs) * L.hdPad;
    LOWBIT_CHECK(launch(dqKernel, "train attention dQ kernel", ceilDiv(rows * L.group, kPairs),
                        dims.kvHeads, 2 * padded + 2 * plain, stream, q, k, v, dOut, lse,
                        static_cast<const float *>(workspace), L, dq));
    return launch(dkvKernel, "train attention dK/dV kernel", ceilDiv(rows, kPairs), dims.kvHeads,
                  2 * padded + 2 * plain, stream, q, k, v, dOut, lse,
                  static_cast<const float *>(workspace), L, dk, dv);
}

} // namespace lowbit::cuda::train
