// HostCudaBackend: CudaBackend's contract emulated in host memory, so that CudaModel's and
// CudaKvCache's host logic (buffer offsets, slots, passes, head chunks, memory checks) runs in
// the CPU tests. "Device" buffers are host arrays filled with NaN when allocated (a real device
// hands back garbage: reading a position never written shows), copies are memcpy, the model ops
// are the CPU backend's, and the loss reductions are plain host loops. Free memory is a number
// the test sets; allocations beyond it fail as cudaMalloc would. Header-only, tests only.
#pragma once

#include "backend/cuda/cuda_backend.h"
#include "runtime/log_prob.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <numeric>
#include <vector>

namespace lowbit::test {

class HostCudaBackend final : public CudaBackend {
public:
    explicit HostCudaBackend(uint64_t freeBytes = uint64_t(1) << 34,
                             GemmPrecision precision = GemmPrecision::Fp32)
        : m_cpu(makeCpuBackend(1)), m_free(freeBytes), m_precision(precision) {
        m_info.name = "host emulation";
    }

    size_t liveBuffers() const { return m_buffers.size(); }
    void setFreeBytes(uint64_t bytes) { m_free = bytes; }

    std::string_view name() const override { return "host-cuda"; }
    int threads() const override { return 1; }
    const CudaDeviceInfo &deviceInfo() const override { return m_info; }
    GemmPrecision precision() const override { return m_precision; }
    Result<uint64_t> freeBytes() const override { return m_free; }
    Status synchronize() override { return {}; }

    Result<float *> allocate(size_t floats, const std::string &what) override {
        const uint64_t bytes = uint64_t(std::max<size_t>(floats, 1)) * 4;
        if (bytes > m_free)
            return makeError(ErrorCode::OutOfMemory, "host-cuda: " + what + ": out of memory");
        auto buffer = std::make_unique<float[]>(std::max<size_t>(floats, 1));
        std::fill_n(buffer.get(), std::max<size_t>(floats, 1), NAN);
        float *p = buffer.get();
        m_free -= bytes;
        m_buffers.emplace(p, std::make_pair(std::move(buffer), bytes));
        return p;
    }
    void release(float *buffer) override {
        if (auto it = m_buffers.find(buffer); it != m_buffers.end()) {
            m_free += it->second.second;
            m_buffers.erase(it);
        }
    }
    Status upload(float *device, const float *host, size_t floats) override {
        std::memcpy(device, host, floats * 4);
        return {};
    }
    Status download(float *host, const float *device, size_t floats) override {
        std::memcpy(host, device, floats * 4);
        return {};
    }
    Status copy(float *to, const float *from, size_t floats) override {
        std::memmove(to, from, floats * 4);
        return {};
    }
    Status prepareWeight(const Tensor &) override { return {}; }
    uint64_t weightBytes() const override { return 0; }

    void embed(const Tensor &table, std::span<const int32_t> ids, float *out) override {
        m_cpu->embed(table, ids, out);
    }
    void rmsnorm(const float *x, int64_t rows, int64_t dim, const Tensor &weight, float eps,
                 float *y) override {
        m_cpu->rmsnorm(x, rows, dim, weight, eps, y);
    }
    void matmul(const float *x, int64_t rows, const Tensor &weight, float *y) override {
        m_cpu->matmul(x, rows, weight, y);
    }
    void rope(float *x, int64_t rows, int64_t rowStride, int64_t heads, int64_t headDim,
              const float *cosSin) override {
        m_cpu->rope(x, rows, rowStride, heads, headDim, cosSin);
    }
    void attention(std::span<const AttentionSequence> sequences,
                   const AttentionShape &shape) override {
        m_cpu->attention(sequences, shape);
    }
    void swiglu(const float *gate, const float *up, int64_t count, float *out) override {
        m_cpu->swiglu(gate, up, count, out);
    }
    void add(float *x, const float *y, int64_t count) override { m_cpu->add(x, y, count); }

    Status tokenLogProbs(const float *logits, int64_t rows, int64_t vocab,
                         std::span<const int32_t> targets, std::span<double> out) override {
        for (int64_t r = 0; r < rows; ++r)
            out[size_t(r)] = logProbability(logits + r * vocab, vocab, targets[size_t(r)]);
        return {};
    }
    Status topK(const float *logits, int64_t rows, int64_t vocab, int k, std::span<int32_t> ids,
                std::span<float> values) override {
        std::vector<int32_t> order(static_cast<size_t>(vocab));
        for (int64_t r = 0; r < rows; ++r) {
            const float *row = logits + r * vocab;
            std::iota(order.begin(), order.end(), 0);
            std::stable_sort(order.begin(), order.end(),
                             [&](int32_t a, int32_t b) { return row[a] > row[b]; });
            for (int j = 0; j < k; ++j) {
                ids[size_t(r * k + j)] = order[size_t(j)];
                values[size_t(r * k + j)] = row[order[size_t(j)]];
            }
        }
        return {};
    }
    Status quantizedMatmul(const float *, int64_t, const QuantizedTensor &, float *) override {
        return makeError(ErrorCode::Unsupported, "host-cuda: no packed weights");
    }

private:
    std::unique_ptr<Backend> m_cpu;
    uint64_t m_free;
    GemmPrecision m_precision;
    CudaDeviceInfo m_info;
    std::map<float *, std::pair<std::unique_ptr<float[]>, uint64_t>> m_buffers;
};

} // namespace lowbit::test
