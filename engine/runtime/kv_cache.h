// KvCache: per-layer keys and values of several independent sequences ("slots"), float32,
// laid out [layer][slot][position][kvHeads*headDim] so one slot's keys are contiguous rows.
// The CPU model's SequenceCache; also used by value (calibration runs one layer at a time).
#pragma once

#include "runtime/language_model.h"

#include <cstddef>
#include <cstdint>
#include <vector>

namespace lowbit {

class KvCache final : public SequenceCache {
public:
    KvCache() = default;
    KvCache(int64_t layers, int slots, int64_t capacityTokens, int64_t kvDim);

    int slotCount() const override { return m_slots; }
    int64_t capacity() const override { return m_capacity; }
    int64_t layers() const { return m_layers; }
    int64_t kvDim() const { return m_kvDim; }
    int64_t length(int slot) const override { return m_lengths[size_t(slot)]; }
    size_t bytes() const { return (m_keys.size() + m_values.size()) * sizeof(float); }

    void clear(int slot) override { m_lengths[size_t(slot)] = 0; }
    void clearAll() override;
    void truncate(int slot, int64_t length) override;
    void copyPrefix(int from, int to, int64_t length) override;

    float *keys(int64_t layer, int slot) { return m_keys.data() + offset(layer, slot); }
    float *values(int64_t layer, int slot) { return m_values.data() + offset(layer, slot); }
    void setLength(int slot, int64_t length) { m_lengths[size_t(slot)] = length; }

private:
    size_t offset(int64_t layer, int slot) const {
        return (size_t(layer) * size_t(m_slots) + size_t(slot)) * size_t(m_capacity) * size_t(m_kvDim);
    }
    int64_t m_layers = 0;
    int m_slots = 0;
    int64_t m_capacity = 0;
    int64_t m_kvDim = 0;
    std::vector<float> m_keys, m_values;
    std::vector<int64_t> m_lengths;
};

} // namespace lowbit
