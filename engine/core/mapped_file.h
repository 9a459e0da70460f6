// MappedFile: a read-only memory mapping of a whole file, with bounds-checked slicing.
// Shared by every checkpoint reader; tensors keep the mapping alive through Tensor::owner.
#pragma once

#include "core/result.h"

#include <cstddef>
#include <filesystem>
#include <memory>
#include <span>

namespace lowbit {

class MappedFile {
public:
    // Maps `path` read-only. An empty file maps to an empty span.
    static Result<std::shared_ptr<MappedFile>> open(const std::filesystem::path &path);
    ~MappedFile();
    MappedFile(const MappedFile &) = delete;
    MappedFile &operator=(const MappedFile &) = delete;

    const std::filesystem::path &path() const { return m_path; }
    size_t size() const { return m_size; }
    const std::byte *data() const { return m_data; }
    std::span<const std::byte> bytes() const { return {m_data, m_size}; }

    // [offset, offset+length) or a Format error naming the file and `what` when out of range.
    Result<std::span<const std::byte>> slice(uint64_t offset, uint64_t length,
                                             std::string_view what) const;

private:
    MappedFile() = default;
    std::filesystem::path m_path;
    const std::byte *m_data = nullptr;
    size_t m_size = 0;
};

} // namespace lowbit
