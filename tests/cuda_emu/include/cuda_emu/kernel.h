// CUDA emulator (tests/cuda_emu): what a translated .cu file sees in place of nvcc's device
// language. translate_cu.cmake rewrites `kernel<<<grid, block, smem, stream>>>(args)` into
// `::lowbit_emu::launch(kernel, grid, block, smem, stream)(args)` and `extern __shared__ T a[];`
// into a pointer to the block's dynamic shared memory, and puts this header first.
//
// Execution model: each block of the grid runs on its own, one after another; each CUDA thread of
// a block is a fiber with its own stack, switched cooperatively only at __syncthreads and warp
// collectives (shuffles, __syncwarp). So barriers, warp exchanges and every index are exercised
// for real, while data races between threads are NOT detected (a fiber runs until it blocks).
// Dynamic shared memory is refilled with NaN bytes for every block, so reading a slot no thread
// of this block wrote shows up as NaN. A __syncthreads that some threads of the block never
// reach aborts with a message (a real GPU hangs or misbehaves).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <type_traits>

namespace lowbit_emu {

extern uint3 g_threadIdx, g_blockIdx;
extern dim3 g_blockDim, g_gridDim;

void syncThreads();
void syncWarp();
// Lane value exchange of the calling thread's warp: publishes `bits`, returns lane src's.
uint64_t warpExchange(uint64_t bits, int srcLane);
void *dynamicShared();
void launchGrid(const void *kernel, dim3 grid, dim3 block, size_t smem,
                const std::function<void()> &body);

template <typename Kernel> auto launch(Kernel kernel, dim3 grid, dim3 block, size_t smem = 0,
                                       cudaStream_t = nullptr) {
    return [=](auto &&...args) {
        launchGrid(reinterpret_cast<const void *>(kernel), grid, block, smem,
                   [&] { kernel(args...); });
    };
}

template <typename T> T shuffle(T v, int srcLane) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>);
    uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    bits = warpExchange(bits, srcLane);
    T r;
    std::memcpy(&r, &bits, sizeof(T));
    return r;
}

} // namespace lowbit_emu

#define threadIdx (::lowbit_emu::g_threadIdx)
#define blockIdx (::lowbit_emu::g_blockIdx)
#define blockDim (::lowbit_emu::g_blockDim)
#define gridDim (::lowbit_emu::g_gridDim)
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __restrict__ __restrict
#define __launch_bounds__(...)
// Blocks run one at a time, so one static copy per kernel is the block's shared memory.
#define __shared__ static
#define __constant__ static
#define __syncthreads() ::lowbit_emu::syncThreads()
#define __syncwarp(...) ::lowbit_emu::syncWarp()
#define warpSize 32

template <typename T> T __shfl_sync(unsigned, T v, int src, int width = 32) {
    const int lane = int(threadIdx.x % 32);
    return ::lowbit_emu::shuffle(v, (lane & ~(width - 1)) + (src & (width - 1)));
}
template <typename T> T __shfl_xor_sync(unsigned, T v, int mask, int width = 32) {
    const int lane = int(threadIdx.x % 32), src = lane ^ mask;
    return ::lowbit_emu::shuffle(v, (src & ~(width - 1)) > (lane | (width - 1)) ? lane : src);
}
// Every lane takes part in the exchange (a collective), then keeps its own value where the
// source lane falls outside its `width`-lane segment, as CUDA defines.
template <typename T> T __shfl_down_sync(unsigned, T v, unsigned delta, int width = 32) {
    const int lane = int(threadIdx.x % 32), segment = lane & ~(width - 1);
    const int src = lane - segment + int(delta);
    const T other = ::lowbit_emu::shuffle(v, src < width ? segment + src : lane);
    return src < width ? other : v;
}
template <typename T> T __shfl_up_sync(unsigned, T v, unsigned delta, int width = 32) {
    const int lane = int(threadIdx.x % 32), segment = lane & ~(width - 1);
    const int src = lane - segment - int(delta);
    const T other = ::lowbit_emu::shuffle(v, src >= 0 ? segment + src : lane);
    return src >= 0 ? other : v;
}
template <typename T> T __ldg(const T *p) { return *p; }

// Device-side min/max of mixed integer widths, as CUDA's overloads resolve them.
template <typename A, typename B> auto min(A a, B b) {
    using C = std::common_type_t<A, B>;
    return C(a) < C(b) ? C(a) : C(b);
}
template <typename A, typename B> auto max(A a, B b) {
    using C = std::common_type_t<A, B>;
    return C(a) < C(b) ? C(b) : C(a);
}

inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
// Explicitly rounded operations: never fused into an FMA (the register barrier stops GCC's
// -ffp-contract=fast from contracting across them, as nvcc guarantees for these intrinsics).
inline float __fmul_rn(float a, float b) { float r = a * b; asm("" : "+x"(r)); return r; }
inline float __fadd_rn(float a, float b) { float r = a + b; asm("" : "+x"(r)); return r; }
inline float __fsub_rn(float a, float b) { float r = a - b; asm("" : "+x"(r)); return r; }
inline float __fdiv_rn(float a, float b) { float r = a / b; asm("" : "+x"(r)); return r; }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline double __dmul_rn(double a, double b) { double r = a * b; asm("" : "+x"(r)); return r; }
inline double __dadd_rn(double a, double b) { double r = a + b; asm("" : "+x"(r)); return r; }
inline float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
inline int __float_as_int(float f) { int u; std::memcpy(&u, &f, 4); return u; }
inline float __int_as_float(int u) { float f; std::memcpy(&f, &u, 4); return f; }
inline double __longlong_as_double(long long u) { double f; std::memcpy(&f, &u, 8); return f; }
inline long long __double_as_longlong(double f) { long long u; std::memcpy(&u, &f, 8); return u; }

// Threads of a block never run at the same time here, so a plain update is atomic.
template <typename T> T atomicAdd(T *address, T value) {
    const T old = *address;
    *address = old + value;
    return old;
}
template <typename T> T atomicMax(T *address, T value) {
    const T old = *address;
    *address = old < value ? value : old;
    return old;
}
