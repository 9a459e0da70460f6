// RunStore: content hashes (cached by path + size + mtime), checkpoints, datasets, artifacts.
#include "run_store.h"

#include "core/sha256.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <memory>

namespace lowbit {

using nlohmann::json;

namespace {

constexpr const char *kNow = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

struct FileStamp {
    int64_t sizeBytes = 0;
    int64_t mtimeNs = 0;
};

Result<FileStamp> stampOf(const std::filesystem::path &file) {
    struct stat info {};
    if (::stat(file.c_str(), &info) != 0)
        return makeError(ErrorCode::NotFound, file.string() + ": no such file");
    return FileStamp{int64_t(info.st_size),
                     int64_t(info.st_mtim.tv_sec) * 1000000000 + info.st_mtim.tv_nsec};
}

// Lines of a file, counting an unterminated last line.
Result<int64_t> countRows(const std::filesystem::path &file) {
    std::unique_ptr<FILE, int (*)(FILE *)> in(std::fopen(file.c_str(), "rb"), &std::fclose);
    if (!in)
        return makeError(ErrorCode::NotFound, file.string() + ": cannot open");
    std::vector<char> buffer(size_t(1) << 20);
    int64_t rows = 0;
    char last = '\n';
    for (;;) {
        const size_t got = std::fread(buffer.data(), 1, buffer.size(), in.get());
        rows += std::count(buffer.begin(), buffer.begin() + long(got), '\n');
        if (got > 0)
            last = buffer[got - 1];
        if (got < buffer.size())
            break;
    }
    if (std::ferror(in.get()))
        return makeError(ErrorCode::Io, file.string() + ": read failed");
    return rows + (last != '\n' ? 1 : 0);
}

ArtifactRecord readArtifact(const Statement &row) {
    ArtifactRecord a;
    a.id = row.integer(0);
    if (!row.isNull(1))
        a.runId = row.integer(1);
    a.checkpointHash = row.text(2);
    a.methodKey = row.text(3);
    a.kind = row.text(4);
    a.path = row.text(5);
    a.sizeBytes = row.integer(6);
    a.contentHash = row.text(7);
    a.createdAt = row.text(8);
    return a;
}

constexpr const char *kArtifactColumns =
    "id, run_id, checkpoint_hash, method_key, kind, path, size_bytes, content_hash, created_at";

} // namespace

Result<std::string> RunStore::fileHash(const std::filesystem::path &file) {
    const std::string key = std::filesystem::absolute(file).lexically_normal().string();
    LOWBIT_TRY(FileStamp stamp, stampOf(file));
    LOWBIT_TRY(
        Statement query,
        m_db.prepare(
            "SELECT sha256 FROM file_hashes WHERE path = ? AND size_bytes = ? AND mtime_ns = ?"));
    query.bind(1, key).bind(2, stamp.sizeBytes).bind(3, stamp.mtimeNs);
    LOWBIT_TRY(bool cached, query.step());
    if (cached)
        return query.text(0);
    LOWBIT_TRY(std::string hash, sha256File(file));
    // A file rewritten while it was hashed gets no cache entry (its stamp changed).
    LOWBIT_TRY(FileStamp after, stampOf(file));
    if (!m_db.readOnly() && after.sizeBytes == stamp.sizeBytes && after.mtimeNs == stamp.mtimeNs) {
        LOWBIT_TRY(
            Statement insert,
            m_db.prepare(
                std::string("INSERT OR REPLACE INTO file_hashes (path, size_bytes, mtime_ns, "
                            "sha256, hashed_at) VALUES (?, ?, ?, ?, ") +
                kNow + ")"));
        insert.bind(1, key).bind(2, stamp.sizeBytes).bind(3, stamp.mtimeNs).bind(4, hash);
        LOWBIT_CHECK(insert.run());
    }
    return hash;
}

Result<std::string> RunStore::contentHash(const std::filesystem::path &path) {
    std::error_code ec;
    const auto status = std::filesystem::status(path, ec);
    if (ec || !std::filesystem::exists(status))
        return makeError(ErrorCode::NotFound, path.string() + ": no such file or directory");
    if (!std::filesystem::is_directory(status))
        return fileHash(path);
    std::vector<std::filesystem::path> files;
    auto it = std::filesystem::recursive_directory_iterator(path, ec);
    for (; !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
        const std::string name = it->path().filename().string();
        if (!name.empty() && name[0] == '.') {
            if (it->is_directory())
                it.disable_recursion_pending();
            continue;
        }
        if (it->is_regular_file())
            files.push_back(it->path().lexically_relative(path));
    }
    if (ec)
        return makeError(ErrorCode::Io, path.string() + ": cannot list: " + ec.message());
    std::sort(files.begin(), files.end());
    Sha256 listing;
    for (const auto &relative : files) {
        LOWBIT_TRY(std::string hash, fileHash(path / relative));
        listing.update(relative.generic_string() + "\t" + hash + "\n");
    }
    return listing.hexDigest();
}

Result<int64_t> RunStore::registerCheckpoint(const CheckpointRecord &c) {
    LOWBIT_TRY(
        Statement insert,
        m_db.prepare(std::string("INSERT OR IGNORE INTO checkpoints (path, format, config_json, "
                                 "parameter_count, content_hash, size_bytes, registered_at) VALUES "
                                 "(?, ?, ?, ?, ?, ?, ") +
                     kNow + ")"));
    insert.bind(1, c.path).bind(2, c.format).bind(3, c.config.dump()).bind(4, c.parameterCount);
    insert.bind(5, c.contentHash).bind(6, c.sizeBytes);
    LOWBIT_CHECK(insert.run());
    LOWBIT_TRY(Statement query,
               m_db.prepare("SELECT id FROM checkpoints WHERE path = ? AND content_hash = ?"));
    query.bind(1, c.path).bind(2, c.contentHash);
    LOWBIT_TRY(bool found, query.step());
    if (!found)
        return makeError(ErrorCode::Internal, "checkpoint " + c.path + " was not registered");
    return query.integer(0);
}

Result<CheckpointRecord> RunStore::checkpoint(int64_t id) const {
    LOWBIT_TRY(
        Statement query,
        m_db.prepare(
            "SELECT id, path, format, config_json, parameter_count, content_hash, size_bytes "
            "FROM checkpoints WHERE id = ?"));
    query.bind(1, id);
    LOWBIT_TRY(bool found, query.step());
    if (!found)
        return makeError(ErrorCode::NotFound,
                         "checkpoint " + std::to_string(id) + " is not in the store");
    CheckpointRecord c;
    c.id = query.integer(0);
    c.path = query.text(1);
    c.format = query.text(2);
    c.config = json::parse(query.text(3), nullptr, false);
    c.parameterCount = query.integer(4);
    c.contentHash = query.text(5);
    c.sizeBytes = query.integer(6);
    return c;
}

Result<int64_t> RunStore::registerDataset(const std::filesystem::path &path) {
    const std::string key = std::filesystem::absolute(path).lexically_normal().string();
    LOWBIT_TRY(std::string hash, contentHash(path));
    LOWBIT_TRY(Statement query,
               m_db.prepare("SELECT id FROM datasets WHERE path = ? AND content_hash = ?"));
    query.bind(1, key).bind(2, hash);
    LOWBIT_TRY(bool found, query.step());
    if (found)
        return query.integer(0);
    int64_t rows = 0, bytes = 0;
    if (!std::filesystem::is_directory(path)) {
        LOWBIT_TRY(rows, countRows(path));
        LOWBIT_TRY(FileStamp stamp, stampOf(path));
        bytes = stamp.sizeBytes;
    }
    LOWBIT_TRY(
        Statement insert,
        m_db.prepare(std::string("INSERT OR IGNORE INTO datasets (path, content_hash, row_count, "
                                 "size_bytes, registered_at) VALUES (?, ?, ?, ?, ") +
                     kNow + ")"));
    insert.bind(1, key).bind(2, hash).bind(3, rows).bind(4, bytes);
    LOWBIT_CHECK(insert.run());
    LOWBIT_CHECK(query.reset());
    query.bind(1, key).bind(2, hash);
    LOWBIT_TRY(found, query.step());
    if (!found)
        return makeError(ErrorCode::Internal, "dataset " + key + " was not registered");
    return query.integer(0);
}

Result<DatasetRecord> RunStore::dataset(int64_t id) const {
    LOWBIT_TRY(Statement query, m_db.prepare("SELECT id, path, content_hash, row_count, size_bytes "
                                             "FROM datasets WHERE id = ?"));
    query.bind(1, id);
    LOWBIT_TRY(bool found, query.step());
    if (!found)
        return makeError(ErrorCode::NotFound,
                         "dataset " + std::to_string(id) + " is not in the store");
    return DatasetRecord{query.integer(0), query.text(1), query.text(2), query.integer(3),
                         query.integer(4)};
}

Result<int64_t> RunStore::addArtifact(const ArtifactRecord &a) {
    LOWBIT_TRY(
        Statement insert,
        m_db.prepare(
            std::string("INSERT INTO artifacts (run_id, checkpoint_hash, method_key, kind, path, "
                        "size_bytes, content_hash, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ") +
            kNow + ")"));
    insert.bind(1, a.runId)
        .bind(2, a.checkpointHash)
        .bind(3, a.methodKey)
        .bind(4, a.kind)
        .bind(5, a.path);
    insert.bind(6, a.sizeBytes).bind(7, a.contentHash);
    LOWBIT_CHECK(insert.run());
    return m_db.lastInsertRowId();
}

Result<std::optional<ArtifactRecord>> RunStore::findArtifact(const std::string &checkpointHash,
                                                             const std::string &methodKey,
                                                             const std::string &kind) {
    LOWBIT_TRY(
        Statement query,
        m_db.prepare(std::string("SELECT ") + kArtifactColumns +
                     " FROM artifacts WHERE checkpoint_hash = ? AND method_key = ? AND kind = ? "
                     "ORDER BY id DESC"));
    query.bind(1, checkpointHash).bind(2, methodKey).bind(3, kind);
    std::vector<ArtifactRecord> candidates;
    for (;;) {
        LOWBIT_TRY(bool row, query.step());
        if (!row)
            break;
        candidates.push_back(readArtifact(query));
    }
    for (ArtifactRecord &a : candidates) {
        std::error_code ec;
        if (!std::filesystem::exists(a.path, ec))
            continue;
        auto hash = contentHash(a.path);
        if (hash.ok() && *hash == a.contentHash)
            return std::optional<ArtifactRecord>(std::move(a));
    }
    return std::optional<ArtifactRecord>();
}

Result<std::vector<ArtifactRecord>> RunStore::artifacts(int64_t runId) const {
    LOWBIT_TRY(Statement query, m_db.prepare(std::string("SELECT ") + kArtifactColumns +
                                             " FROM artifacts WHERE run_id = ? ORDER BY id"));
    query.bind(1, runId);
    std::vector<ArtifactRecord> out;
    for (;;) {
        LOWBIT_TRY(bool row, query.step());
        if (!row)
            return out;
        out.push_back(readArtifact(query));
    }
}

} // namespace lowbit
