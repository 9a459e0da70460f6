#include "runtime/cuda_kv_cache.h"

#include <algorithm>

namespace lowbit {

Result<std::unique_ptr<CudaKvCache>> CudaKvCache::create(std::shared_ptr<CudaBackend> backend,
                                                         int64_t layers, int slots,
                                                         int64_t capacityTokens, int64_t kvDim) {
    if (!backend || layers < 0 || slots < 0 || capacityTokens < 0 || kvDim < 0)
        return makeError(ErrorCode::InvalidArgument,
                         "cuda cache: " + std::to_string(slots) + " slots of " +
                             std::to_string(capacityTokens) + " tokens");
    std::unique_ptr<CudaKvCache> cache(new CudaKvCache());
    cache->m_backend = std::move(backend);
    cache->m_slots = slots;
    cache->m_capacity = capacityTokens;
    cache->m_kvDim = kvDim;
    cache->m_lengths.assign(size_t(slots), 0);
    const size_t floats = size_t(slots) * size_t(capacityTokens) * size_t(kvDim);
    // Pushed one at a time so that the destructor releases exactly what was allocated when a
    // later allocation fails.
    for (int64_t l = 0; l < layers; ++l) {
        const std::string layer = " of layer " + std::to_string(l);
        LOWBIT_TRY(float *keys, cache->m_backend->allocate(floats, "KV cache keys" + layer));
        cache->m_keys.push_back(keys);
        LOWBIT_TRY(float *values, cache->m_backend->allocate(floats, "KV cache values" + layer));
        cache->m_values.push_back(values);
    }
    return cache;
}

CudaKvCache::~CudaKvCache() {
    for (float *p : m_keys)
        m_backend->release(p);
    for (float *p : m_values)
        m_backend->release(p);
}

bool CudaKvCache::validSlot(int slot, const char *what) {
    if (slot >= 0 && slot < m_slots)
        return true;
    if (m_error.ok())
        m_error = makeError(ErrorCode::InvalidArgument,
                            std::string("cuda cache ") + what + ": slot " + std::to_string(slot) +
                                " out of range (cache has " + std::to_string(m_slots) + ")");
    return false;
}

int64_t CudaKvCache::length(int slot) const {
    return slot >= 0 && slot < m_slots ? m_lengths[size_t(slot)] : 0;
}

void CudaKvCache::clear(int slot) {
    if (validSlot(slot, "clear"))
        m_lengths[size_t(slot)] = 0;
}

void CudaKvCache::clearAll() {
    std::fill(m_lengths.begin(), m_lengths.end(), 0);
}

void CudaKvCache::truncate(int slot, int64_t length) {
    if (validSlot(slot, "truncate"))
        m_lengths[size_t(slot)] = std::min(m_lengths[size_t(slot)], std::max<int64_t>(0, length));
}

void CudaKvCache::copyPrefix(int from, int to, int64_t length) {
    if (!validSlot(from, "copyPrefix") || !validSlot(to, "copyPrefix"))
        return;
    length = std::clamp<int64_t>(length, 0, m_lengths[size_t(from)]);
    if (from != to) {
        const size_t floats = size_t(length) * size_t(m_kvDim);
        for (size_t l = 0; l < m_keys.size() && floats > 0; ++l) {
            Status k = m_backend->copy(keys(int64_t(l), to), keys(int64_t(l), from), floats);
            Status v =
                k.ok() ? m_backend->copy(values(int64_t(l), to), values(int64_t(l), from), floats)
                       : k;
            if (!v.ok()) {
                if (m_error.ok())
                    m_error = std::move(v);
                m_lengths[size_t(to)] = 0; // what `to` holds is no longer known
                return;
            }
        }
    }
    m_lengths[size_t(to)] = length;
}

Status CudaKvCache::takeError() {
    Status error = std::move(m_error);
    m_error = {};
    return error;
}

} // namespace lowbit
