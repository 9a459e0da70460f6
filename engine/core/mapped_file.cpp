#include "core/mapped_file.h"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace lowbit {

Result<std::shared_ptr<MappedFile>> MappedFile::open(const std::filesystem::path &path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return makeError(errno == ENOENT ? ErrorCode::NotFound : ErrorCode::Io,
                         path.string() + ": cannot open: " + std::strerror(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        ::close(fd);
        return makeError(ErrorCode::Io, path.string() + ": not a regular file");
    }
    std::shared_ptr<MappedFile> file(new MappedFile());
    file->m_path = path;
    file->m_size = size_t(st.st_size);
    if (file->m_size > 0) {
        void *p = ::mmap(nullptr, file->m_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            const int err = errno;
            ::close(fd);
            return makeError(ErrorCode::Io, path.string() + ": mmap failed: " + std::strerror(err));
        }
        file->m_data = static_cast<const std::byte *>(p);
    }
    ::close(fd);
    return file;
}

MappedFile::~MappedFile() {
    if (m_data)
        ::munmap(const_cast<std::byte *>(m_data), m_size);
}

Result<std::span<const std::byte>> MappedFile::slice(uint64_t offset, uint64_t length,
                                                     std::string_view what) const {
    if (offset > m_size || length > m_size - offset)
        return makeError(ErrorCode::Format,
                         m_path.string() + ": " + std::string(what) + " (bytes " +
                             std::to_string(offset) + "+" + std::to_string(length) +
                             ") lies past the end of the file (" + std::to_string(m_size) +
                             " bytes)");
    return std::span<const std::byte>(m_data + offset, size_t(length));
}

} // namespace lowbit
