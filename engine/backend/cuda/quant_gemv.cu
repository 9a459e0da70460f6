// Kernels over packed group-quantized weights (engine/quant/quantized_tensor.h): a dequantizing
// GEMV for decode and a dequantize-to-bf16 pass that lets prefill use a tensor-core GEMM.
//
// Word path (uniform 2/4/8-bit codes, rows a whole number of 32-bit words, groups a multiple of
// 32/bits columns): a lane reads one 32-bit word = 16/8/4 codes of one group (or four words at
// once when rows and groups allow), so the scale and zero are loaded once per word. Generic path
// (3-bit, mixed widths, odd sizes): each code is cut out of two bytes of the LSB-first stream at
// its bit offset (hence the 4 bytes of padding).
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/device_math.cuh"
#include "backend/cuda/kernels.h"

namespace lowbit::cuda {

namespace {

constexpr int kWarps = 8;

__device__ __forceinline__ uint32_t codeAt(const uint8_t *codes, uint64_t bit, int width) {
    const uint64_t byte = bit >> 3;
    const uint32_t two = uint32_t(codes[byte]) | (uint32_t(codes[byte + 1]) << 8);
    return (two >> (bit & 7)) & ((1u << width) - 1u);
}

__device__ __forceinline__ float levelOf(const PackedView &w, uint32_t code) {
    return w.codebook ? w.codebook[code] : float(code);
}

__device__ __forceinline__ float weightAt(const PackedView &w, int64_t r, int64_t j) {
    const int64_t g = j / w.groupSize;
    const int width = w.groupWidth[g];
    const uint64_t bit = uint64_t(r) * uint64_t(w.rowBits) + w.groupBitOffset[g] +
                         uint64_t(j - g * w.groupSize) * width;
    const float scale = w.scales[r * w.groups + g], zero = w.zeros[r * w.groups + g];
    return scale * (levelOf(w, codeAt(w.codes, bit, width)) - zero);
}

// kWords 32-bit words per lane and step (4: one 16-byte load, more bytes in flight per warp; the
// caller checks that rows are whole 16-byte chunks and that a chunk never straddles two groups).
template <int kWords>
__device__ __forceinline__ void wordPath(const PackedView &w, int64_t o, const float *x, int rows,
                                         float (&acc)[kGemvMaxRows]) {
    const int lane = threadIdx.x & 31, perWord = 32 / w.bits;
    const uint32_t mask = (1u << w.bits) - 1u;
    const int64_t words = w.rowBits / 32;
    const uint32_t *row = reinterpret_cast<const uint32_t *>(w.codes) + o * words;
    for (int64_t v = lane; v < words / kWords; v += 32) {
        uint32_t word[kWords];
        if constexpr (kWords == 4) {
            const uint4 q = __ldg(reinterpret_cast<const uint4 *>(row) + v);
            word[0] = q.x, word[1] = q.y, word[2] = q.z, word[3] = q.w;
        } else {
            word[0] = __ldg(row + v);
        }
        const int64_t j0 = v * kWords * perWord, g = j0 / w.groupSize;
        const float scale = w.scales[o * w.groups + g], zero = w.zeros[o * w.groups + g];
#pragma unroll
        for (int k = 0; k < kWords; ++k)
            for (int c = 0; c < perWord; ++c) {
                const float wv = scale * (levelOf(w, (word[k] >> (c * w.bits)) & mask) - zero);
                const int64_t j = j0 + k * perWord + c;
#pragma unroll
                for (int r = 0; r < kGemvMaxRows; ++r)
                    if (r < rows)
                        acc[r] += wv * x[r * w.cols + j];
            }
    }
}

__global__ void __launch_bounds__(kWarps * 32)
    packedGemvKernel(const float *x, int rows, PackedView w, float *y) {
    const int lane = threadIdx.x & 31;
    const int64_t o = int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5);
    if (o >= w.rows)
        return;
    float acc[kGemvMaxRows] = {};
    if (w.uniform && w.bits <= 8 && 32 % w.bits == 0) {
        const int64_t words = w.rowBits / 32;
        if (words % 4 == 0 && w.groupSize % (4 * (32 / w.bits)) == 0)
            wordPath<4>(w, o, x, rows, acc);
        else
            wordPath<1>(w, o, x, rows, acc);
    } else {
        for (int64_t j = lane; j < w.cols; j += 32) {
            const float wv = weightAt(w, o, j);
#pragma unroll
            for (int r = 0; r < kGemvMaxRows; ++r)
                if (r < rows)
                    acc[r] += wv * x[r * w.cols + j];
        }
    }
#pragma unroll
    for (int r = 0; r < kGemvMaxRows; ++r)
        if (r < rows) {
            const float sum = warpSum(acc[r]);
            if (lane == 0)
                y[r * w.rows + o] = sum;
        }
}

__global__ void dequantizeKernel(PackedView w, bool bf16, void *out) {
    const int64_t total = w.rows * w.cols;
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
         i += int64_t(gridDim.x) * blockDim.x) {
        const float v = weightAt(w, i / w.cols, i % w.cols);
        if (bf16)
            static_cast<uint16_t *>(out)[i] = __bfloat16_as_ushort(__float2bfloat16_rn(v));
        else
            static_cast<float *>(out)[i] = v;
    }
}

__global__ void permuteKernel(const float *x, int64_t rows, int64_t cols, const int32_t *perm,
                              float *out) {
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < rows * cols;
         i += int64_t(gridDim.x) * blockDim.x) {
        const int64_t r = i / cols, j = i % cols;
        out[i] = x[r * cols + perm[j]];
    }
}

Status checkView(const PackedView &w, const char *op) {
    if (!w.codes || !w.scales || !w.zeros || !w.groupBitOffset || !w.groupWidth || w.rows <= 0 ||
        w.cols <= 0 || w.groupSize <= 0 || w.groups != ceilDiv(w.cols, w.groupSize))
        return makeError(ErrorCode::InvalidArgument,
                         std::string("cuda ") + op + ": incomplete packed weight");
    if (w.uniform && 32 % w.bits == 0 && (w.rowBits % 32 != 0 || w.groupSize % (32 / w.bits) != 0))
        return makeError(ErrorCode::InvalidArgument,
                         std::string("cuda ") + op +
                             ": uniform layout flag set on a layout the word path cannot read");
    return {};
}

} // namespace

Status permuteColumns(const float *x, int64_t rows, int64_t cols, const int32_t *perm, float *out,
                      cudaStream_t stream) {
    if (rows <= 0 || cols <= 0)
        return makeError(ErrorCode::InvalidArgument, "cuda permuteColumns: invalid shape");
    permuteKernel<<<gridFor(rows * cols, 256), 256, 0, stream>>>(x, rows, cols, perm, out);
    return lastLaunch("column permutation kernel");
}

Status packedGemv(const float *xStored, int64_t rows, const PackedView &w, float *y,
                  cudaStream_t stream) {
    LOWBIT_CHECK(checkView(w, "packed gemv"));
    if (rows < 1 || rows > kGemvMaxRows)
        return makeError(ErrorCode::InvalidArgument,
                         "cuda packed gemv: rows must be 1.." + std::to_string(kGemvMaxRows));
    packedGemvKernel<<<unsigned(ceilDiv(w.rows, kWarps)), kWarps * 32, 0, stream>>>(
        xStored, int(rows), w, y);
    return lastLaunch("packed gemv kernel");
}

Status packedDequantize(const PackedView &w, DType to, void *out, cudaStream_t stream) {
    LOWBIT_CHECK(checkView(w, "packed dequantize"));
    if (to == DType::F16)
        return makeError(ErrorCode::Unsupported, "cuda packed dequantize: F32 or BF16 output only");
    dequantizeKernel<<<gridFor(w.rows * w.cols, 256), 256, 0, stream>>>(w, to == DType::BF16, out);
    return lastLaunch("packed dequantize kernel");
}

} // namespace lowbit::cuda
