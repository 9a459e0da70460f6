// Device helpers shared by the backend's kernels: 16-bit loads, warp and block reductions.
#pragma once

#include "core/dtype.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace lowbit::cuda {

constexpr unsigned kFullMask = 0xffffffffu;

// bf16 -> f32 is a shift: the bf16 bits are the high half of the float.
__device__ __forceinline__ float bf16Bits(uint16_t bits) {
    return __uint_as_float(uint32_t(bits) << 16);
}
__device__ __forceinline__ float f16Bits(uint16_t bits) {
    return __half2float(__ushort_as_half(bits));
}

template <DType T> __device__ __forceinline__ float loadAs(const void *p, int64_t i) {
    if constexpr (T == DType::F32)
        return static_cast<const float *>(p)[i];
    else if constexpr (T == DType::BF16)
        return bf16Bits(static_cast<const uint16_t *>(p)[i]);
    else
        return f16Bits(static_cast<const uint16_t *>(p)[i]);
}

__device__ __forceinline__ float warpSum(float v) {
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(kFullMask, v, o);
    return v;
}
__device__ __forceinline__ double warpSum(double v) {
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(kFullMask, v, o);
    return v;
}
__device__ __forceinline__ float warpMax(float v) {
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(kFullMask, v, o));
    return v;
}

// Sum over a block of blockDim.x (a multiple of 32, <= 1024) threads; every thread gets it.
template <typename T> __device__ T blockSum(T v, T *shared32) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warpSum(v);
    __syncthreads(); // shared32 may still be read by a previous call
    if (lane == 0)
        shared32[warp] = v;
    __syncthreads();
    v = lane < warps ? shared32[lane] : T(0);
    return warpSum(v);
}

__device__ inline float blockMax(float v, float *shared32) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warpMax(v);
    __syncthreads();
    if (lane == 0)
        shared32[warp] = v;
    __syncthreads();
    v = lane < warps ? shared32[lane] : -INFINITY;
    return warpMax(v);
}

inline int64_t ceilDiv(int64_t a, int64_t b) {
    return (a + b - 1) / b;
}
__device__ __forceinline__ int64_t ceilDivDevice(int64_t a, int64_t b) {
    return (a + b - 1) / b;
}

// Grid-stride launches: enough blocks to fill any sm_80..sm_90 part, capped.
inline unsigned gridFor(int64_t count, int threads) {
    const int64_t blocks = ceilDiv(count, threads);
    return unsigned(blocks < 65535 ? (blocks > 0 ? blocks : 1) : 65535);
}

} // namespace lowbit::cuda
