// CpuBackend: the reference implementation of the Backend ops, multi-threaded on a ThreadPool.
// GEMMs go through OpenBLAS (single-threaded per call; the pool splits the output columns),
// with F16/BF16 weights converted to float one tile of rows at a time in per-thread scratch,
// so a bf16 checkpoint never exists in float32 as a whole.
#pragma once

#include "backend/backend.h"
#include "core/thread_pool.h"

#include <vector>

namespace lowbit {

class CpuBackend final : public Backend {
public:
    explicit CpuBackend(int threads);

    std::string_view name() const override { return "cpu"; }
    int threads() const override { return m_pool.size(); }

    void embed(const Tensor &table, std::span<const int32_t> ids, float *out) override;
    void rmsnorm(const float *x, int64_t rows, int64_t dim, const Tensor &weight, float eps,
                 float *y) override;
    void matmul(const float *x, int64_t rows, const Tensor &weight, float *y) override;
    void rope(float *x, int64_t rows, int64_t rowStride, int64_t heads, int64_t headDim,
              const float *cosSin) override;
    void attention(std::span<const AttentionSequence> sequences, const AttentionShape &shape) override;
    void swiglu(const float *gate, const float *up, int64_t count, float *out) override;
    void add(float *x, const float *y, int64_t count) override;

private:
    // Per-thread scratch, grown on demand and reused across calls.
    float *scratch(int thread, size_t floats);

    ThreadPool m_pool;
    std::vector<std::vector<float>> m_scratch;
};

} // namespace lowbit
