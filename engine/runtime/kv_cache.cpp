#include "runtime/kv_cache.h"

#include <algorithm>
#include <cstring>

namespace lowbit {

KvCache::KvCache(int64_t layers, int slots, int64_t capacityTokens, int64_t kvDim)
    : m_layers(layers), m_slots(slots), m_capacity(capacityTokens), m_kvDim(kvDim),
      m_keys(size_t(layers) * size_t(slots) * size_t(capacityTokens) * size_t(kvDim)),
      m_values(m_keys.size()), m_lengths(size_t(slots), 0) {}

void KvCache::clearAll() { std::fill(m_lengths.begin(), m_lengths.end(), 0); }

void KvCache::truncate(int slot, int64_t length) {
    m_lengths[size_t(slot)] = std::min(m_lengths[size_t(slot)], std::max<int64_t>(0, length));
}

void KvCache::copyPrefix(int from, int to, int64_t length) {
    length = std::min(length, m_lengths[size_t(from)]);
    if (from != to) {
        const size_t bytes = size_t(length) * size_t(m_kvDim) * sizeof(float);
        for (int64_t layer = 0; layer < m_layers; ++layer) {
            std::memcpy(keys(layer, to), keys(layer, from), bytes);
            std::memcpy(values(layer, to), values(layer, from), bytes);
        }
    }
    m_lengths[size_t(to)] = length;
}

} // namespace lowbit
