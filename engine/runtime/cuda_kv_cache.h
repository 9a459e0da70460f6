// CudaKvCache: the device-resident SequenceCache of CudaModel. Keys and values float32 in device
// memory, one buffer per layer each, laid out [slot][position][kvHeads*headDim] like KvCache's
// layers. Copies between slots (copyPrefix) run on the backend's stream, ordered with the
// forward passes; an error of one is kept and returned by the next forward (takeError()).
//
// Ownership: the cache holds its model's backend (shared), so it may outlive the model; its
// buffers go back to the backend when it is destroyed. Plain C++ over CudaBackend: compiles in
// every build. One thread at a time, the backend's thread.
#pragma once

#include "backend/cuda/cuda_backend.h"
#include "runtime/language_model.h"

#include <memory>
#include <vector>

namespace lowbit {

class CudaKvCache final : public SequenceCache {
public:
    // Allocates layers x 2 buffers of slots*capacityTokens*kvDim floats. Errors: sizes < 0, the
    // backend's allocation errors (out of memory names what and how much).
    static Result<std::unique_ptr<CudaKvCache>> create(std::shared_ptr<CudaBackend> backend,
                                                       int64_t layers, int slots,
                                                       int64_t capacityTokens, int64_t kvDim);
    ~CudaKvCache() override;
    CudaKvCache(const CudaKvCache &) = delete;
    CudaKvCache &operator=(const CudaKvCache &) = delete;

    int slotCount() const override { return m_slots; }
    int64_t capacity() const override { return m_capacity; }
    int64_t length(int slot) const override;
    void clear(int slot) override;
    void clearAll() override;
    void truncate(int slot, int64_t length) override;
    void copyPrefix(int from, int to, int64_t length) override;

    const CudaBackend *backend() const { return m_backend.get(); }
    int64_t layers() const { return int64_t(m_keys.size()); }
    int64_t kvDim() const { return m_kvDim; }
    // Device pointers to position 0 of `slot` in `layer` (slot and layer in range).
    float *keys(int64_t layer, int slot) { return m_keys[size_t(layer)] + slotOffset(slot); }
    float *values(int64_t layer, int slot) { return m_values[size_t(layer)] + slotOffset(slot); }
    void setLength(int slot, int64_t length) { m_lengths[size_t(slot)] = length; }
    // The first failure of clear/truncate/copyPrefix since the last call (bad slot, copy
    // error), and forgets it.
    Status takeError();

private:
    CudaKvCache() = default;
    size_t slotOffset(int slot) const {
        return size_t(slot) * size_t(m_capacity) * size_t(m_kvDim);
    }
    bool validSlot(int slot, const char *what);

    std::shared_ptr<CudaBackend> m_backend;
    int m_slots = 0;
    int64_t m_capacity = 0;
    int64_t m_kvDim = 0;
    std::vector<float *> m_keys, m_values; // per layer, device
    std::vector<int64_t> m_lengths;
    Status m_error;
};

} // namespace lowbit
