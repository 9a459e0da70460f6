// Dense GEMV for decode: y[rows x out] = x[rows x in] W^T with rows <= kGemvMaxRows. One warp per
// output feature streams its weight row once for all input rows, 16 bytes per lane per step
// (the weights are the traffic; x stays in L1/L2). Products are float32, so a bf16 checkpoint
// decodes with the CPU backend's arithmetic, not with bf16-rounded activations.
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_math.cuh"
#include "backend/cuda/kernels.h"

namespace lowbit::cuda {

namespace {

constexpr int kWarps = 8;

// T: weight dtype (F32, F16, BF16 instantiated below). Vector path (`vector`, chosen by the host):
// 16-byte loads of 4 (F32) or 8 (F16/BF16) weights and float4 loads of x, when `in` is a multiple
// of that count and both base pointers are 16-byte aligned (then every row is).
template <DType T>
__global__ void __launch_bounds__(kWarps * 32)
    gemvKernel(const float *x, int rows, const void *weight, int64_t out, int64_t in, float *y,
               bool vector) {
    constexpr int kPerVector = T == DType::F32 ? 4 : 8;
    const int lane = threadIdx.x & 31;
    const int64_t o = int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5);
    if (o >= out)
        return;
    float acc[kGemvMaxRows] = {};
    if (vector) {
        const uint4 *w4 = reinterpret_cast<const uint4 *>(
            static_cast<const char *>(weight) + o * in * int64_t(T == DType::F32 ? 4 : 2));
        for (int64_t v = lane; v < in / kPerVector; v += 32) {
            const uint4 packed = __ldg(w4 + v); // read-only path: weights are never written here
            float w[kPerVector];
            if constexpr (T == DType::F32) {
                w[0] = __uint_as_float(packed.x), w[1] = __uint_as_float(packed.y);
                w[2] = __uint_as_float(packed.z), w[3] = __uint_as_float(packed.w);
            } else {
                const uint32_t words[4] = {packed.x, packed.y, packed.z, packed.w};
                for (int i = 0; i < 4; ++i) {
                    const uint16_t lo = uint16_t(words[i] & 0xffff), hi = uint16_t(words[i] >> 16);
                    w[2 * i] = T == DType::BF16 ? bf16Bits(lo) : f16Bits(lo);
                    w[2 * i + 1] = T == DType::BF16 ? bf16Bits(hi) : f16Bits(hi);
                }
            }
            const int64_t c = v * kPerVector;
#pragma unroll
            for (int r = 0; r < kGemvMaxRows; ++r)
                if (r < rows) {
                    const float4 *xr = reinterpret_cast<const float4 *>(x + r * in + c);
#pragma unroll
                    for (int i = 0; i < kPerVector / 4; ++i) {
                        const float4 a = xr[i];
                        acc[r] += a.x * w[4 * i] + a.y * w[4 * i + 1] + a.z * w[4 * i + 2] +
                                  a.w * w[4 * i + 3];
                    }
                }
        }
    } else {
        for (int64_t c = lane; c < in; c += 32) {
            const float w = loadAs<T>(weight, o * in + c);
#pragma unroll
            for (int r = 0; r < kGemvMaxRows; ++r)
                if (r < rows)
                    acc[r] += x[r * in + c] * w;
        }
    }
#pragma unroll
    for (int r = 0; r < kGemvMaxRows; ++r)
        if (r < rows) {
            const float sum = warpSum(acc[r]);
            if (lane == 0)
                y[r * out + o] = sum;
        }
}

} // namespace

Status denseGemv(const float *x, int64_t rows, const void *weight, DType type, int64_t out,
                 int64_t in, float *y, cudaStream_t stream) {
    if (rows < 1 || rows > kGemvMaxRows || out <= 0 || in <= 0)
        return makeError(ErrorCode::InvalidArgument, "cuda gemv: rows must be 1.." +
                                                         std::to_string(kGemvMaxRows) +
                                                         ", sizes positive");
    const unsigned grid = unsigned(ceilDiv(out, kWarps));
    // A caller may pass x (or a weight) at any float offset, e.g. a row in the middle of a buffer:
    // a 16-byte load from an unaligned address is a "misaligned address" fault that kills the
    // context, so unaligned bases take the scalar path.
    const int64_t perVector = type == DType::F32 ? 4 : 8;
    const bool vector = in % perVector == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
                        reinterpret_cast<uintptr_t>(weight) % 16 == 0;
    if (type == DType::F32)
        gemvKernel<DType::F32><<<grid, kWarps * 32, 0, stream>>>(x, int(rows), weight, out, in,
                                                                 y, vector);
    else if (type == DType::BF16)
        gemvKernel<DType::BF16><<<grid, kWarps * 32, 0, stream>>>(x, int(rows), weight, out, in,
                                                                 y, vector);
    else
        gemvKernel<DType::F16><<<grid, kWarps * 32, 0, stream>>>(x, int(rows), weight, out, in,
                                                                 y, vector);
    return lastLaunch("gemv kernel");
}

} // namespace lowbit::cuda
