#include "backend/cpu_backend.h"

#include "backend/cpu_simd.h"

#include <algorithm>
#include <cblas.h>
#include <cmath>

namespace lowbit {

std::unique_ptr<Backend> makeCpuBackend(int threads) { return std::make_unique<CpuBackend>(threads); }

CpuBackend::CpuBackend(int threads) : m_pool(threads) {
    // The pool owns the parallelism: each sgemm call works on one tile in one thread.
    openblas_set_num_threads(1);
    m_scratch.resize(size_t(m_pool.size()));
}

float *CpuBackend::scratch(int thread, size_t floats) {
    auto &buffer = m_scratch[size_t(thread)];
    if (buffer.size() < floats)
        buffer.resize(floats);
    return buffer.data();
}

void CpuBackend::embed(const Tensor &table, std::span<const int32_t> ids, float *out) {
    const int64_t dim = table.cols();
    m_pool.parallelFor(int64_t(ids.size()), [&](int64_t r, int) {
        convertToFloat(table.dtype, table.row(ids[size_t(r)]), out + r * dim, size_t(dim));
    });
}

void CpuBackend::rmsnorm(const float *x, int64_t rows, int64_t dim, const Tensor &weight,
                         float eps, float *y) {
    float *w = scratch(0, size_t(dim));
    convertToFloat(weight.dtype, weight.data, w, size_t(dim));
    const int64_t rowsPerTask = std::max<int64_t>(1, 16384 / std::max<int64_t>(dim, 1));
    const int64_t tasks = (rows + rowsPerTask - 1) / rowsPerTask;
    m_pool.parallelFor(tasks, [&](int64_t t, int) {
        for (int64_t r = t * rowsPerTask; r < std::min(rows, (t + 1) * rowsPerTask); ++r) {
            const float *xr = x + r * dim;
            double sumSquares = 0;
            for (int64_t i = 0; i < dim; ++i)
                sumSquares += double(xr[i]) * double(xr[i]);
            const float inv = float(1.0 / std::sqrt(sumSquares / double(dim) + double(eps)));
            float *yr = y + r * dim;
            for (int64_t i = 0; i < dim; ++i)
                yr[i] = xr[i] * inv * w[i];
        }
    });
}

void CpuBackend::matmul(const float *x, int64_t rows, const Tensor &weight, float *y) {
    const int64_t out = weight.rows(), in = weight.cols();
    // Output features are cut into tiles (a few per thread); long inputs also into row blocks so
    // that one task's x block stays in cache. A F16/BF16 tile is converted once per task: its cost
    // is 1/(2*rowBlock) of the tile's multiply-adds.
    const int64_t threads = m_pool.size();
    int64_t tile = (out + threads * 4 - 1) / (threads * 4);
    tile = std::clamp<int64_t>((tile + 15) / 16 * 16, 16, 256);
    const int64_t tiles = (out + tile - 1) / tile;
    const int64_t rowBlock = rows > 768 ? 512 : rows;
    const int64_t rowBlocks = (rows + rowBlock - 1) / rowBlock;
    m_pool.parallelFor(tiles * rowBlocks, [&](int64_t task, int thread) {
        const int64_t o0 = (task % tiles) * tile, m = std::min(tile, out - o0);
        const int64_t r0 = (task / tiles) * rowBlock, n = std::min(rowBlock, rows - r0);
        const float *w;
        if (weight.dtype == DType::F32) {
            w = reinterpret_cast<const float *>(weight.row(o0));
        } else {
            float *converted = scratch(thread, size_t(m * in));
            convertToFloat(weight.dtype, weight.row(o0), converted, size_t(m * in));
            w = converted;
        }
        if (n == 1)
            cblas_sgemv(CblasRowMajor, CblasNoTrans, int(m), int(in), 1.0f, w, int(in),
                        x + r0 * in, 1, 0.0f, y + r0 * out + o0, 1);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(n), int(m), int(in), 1.0f,
                        x + r0 * in, int(in), w, int(in), 0.0f, y + r0 * out + o0, int(out));
    });
}

void CpuBackend::rope(float *x, int64_t rows, int64_t rowStride, int64_t heads, int64_t headDim,
                      const float *cosSin) {
    const int64_t half = headDim / 2;
    m_pool.parallelFor(rows, [&](int64_t r, int) {
        const float *cosines = cosSin + r * headDim;
        const float *sines = cosines + half;
        for (int64_t h = 0; h < heads; ++h) {
            float *v = x + r * rowStride + h * headDim;
            for (int64_t j = 0; j < half; ++j) {
                const float a = v[j], b = v[j + half];
                v[j] = a * cosines[j] - b * sines[j];
                v[j + half] = b * cosines[j] + a * sines[j];
            }
        }
    });
}

void CpuBackend::swiglu(const float *gate, const float *up, int64_t count, float *out) {
    constexpr int64_t kChunk = 16384;
    m_pool.parallelFor((count + kChunk - 1) / kChunk, [&](int64_t t, int) {
        const int64_t begin = t * kChunk;
        cpu::siluMultiply(gate + begin, up + begin, out + begin, std::min(kChunk, count - begin));
    });
}

void CpuBackend::add(float *x, const float *y, int64_t count) {
    constexpr int64_t kChunk = 65536;
    m_pool.parallelFor((count + kChunk - 1) / kChunk, [&](int64_t t, int) {
        const int64_t begin = t * kChunk;
        cpu::axpy(x + begin, 1.0f, y + begin, std::min(kChunk, count - begin));
    });
}

} // namespace lowbit
