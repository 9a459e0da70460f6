// SHA-256 (FIPS 180-4) of bytes and files: content identity for checkpoints, datasets, artifacts,
// documents and prompts. The digest of a safetensors file equals the sha256 Hugging Face publishes
// for it (its LFS object id), so a stored hash can be checked against the hub.
#pragma once

#include "core/result.h"

#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace lowbit {

class Sha256 {
public:
    Sha256();
    void update(const void *data, size_t bytes);
    void update(std::string_view text) { update(text.data(), text.size()); }
    // Finishes the digest; the object must not be updated afterwards.
    std::array<uint8_t, 32> digest();
    std::string hexDigest(); // 64 lowercase hex digits

private:
    void compress(const uint8_t *block);
    std::array<uint32_t, 8> m_state;
    std::array<uint8_t, 64> m_buffer{};
    size_t m_buffered = 0;
    uint64_t m_totalBytes = 0;
};

std::string sha256Hex(std::string_view bytes);
// Reads the file in 1 MiB pieces; errors name the file.
Result<std::string> sha256File(const std::filesystem::path &path);

} // namespace lowbit
