// A thin RAII layer over the SQLite C API: one connection (Database), prepared statements
// (Statement) and write transactions. Every SQLite failure becomes an Error whose message names
// the database file and says what happened in words ("disk full", "not a database", ...).
//
// Thread affinity: a Database is used by one thread at a time; give each thread its own
// connection (SQLite serialises writers across connections and processes through the file lock).
#pragma once

#include "core/result.h"

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

struct sqlite3;
struct sqlite3_stmt;

namespace lowbit {

class Statement {
public:
    Statement() = default;
    Statement(Statement &&other) noexcept;
    Statement &operator=(Statement &&other) noexcept;
    ~Statement();

    // Parameters are numbered from 1, as in SQL `?` placeholders.
    Statement &bind(int index, int64_t value);
    Statement &bind(int index, int value) { return bind(index, int64_t(value)); }
    Statement &bind(int index, double value);
    Statement &bind(int index, std::string_view text);
    Statement &bind(int index, const char *text) { return bind(index, std::string_view(text)); }
    Statement &bind(int index, const std::string &text) {
        return bind(index, std::string_view(text));
    }
    Statement &bindNull(int index);
    Statement &bind(int index, const std::optional<int64_t> &value);

    // true: a row is ready (read it with the column getters); false: done.
    Result<bool> step();
    // Runs a statement that returns no rows (or ignores them).
    Status run();
    Status reset();

    bool isNull(int column) const;
    int64_t integer(int column) const;
    double real(int column) const;
    std::string text(int column) const;

private:
    friend class Database;
    explicit Statement(sqlite3_stmt *statement) : m_statement(statement) {}
    sqlite3_stmt *m_statement = nullptr;
};

struct OpenOptions {
    bool readOnly = false;
    bool create = true;        // create the file when missing (ignored when readOnly)
    int busyTimeoutMs = 60000; // how long a writer waits for another before giving up
};

class Database {
public:
    static Result<Database> open(const std::filesystem::path &path,
                                 const OpenOptions &options = {});
    Database(Database &&other) noexcept;
    Database &operator=(Database &&other) noexcept;
    ~Database();

    const std::filesystem::path &path() const { return m_path; }
    bool readOnly() const { return m_readOnly; }

    Status exec(std::string_view sql);
    Result<Statement> prepare(std::string_view sql) const;
    // A single integer from a query (e.g. PRAGMA user_version); nullopt when no row.
    Result<std::optional<int64_t>> queryInteger(std::string_view sql) const;
    int64_t lastInsertRowId() const;
    int changes() const;

    sqlite3 *handle() const { return m_db; }

private:
    Database(sqlite3 *db, std::filesystem::path path, bool readOnly)
        : m_db(db), m_path(std::move(path)), m_readOnly(readOnly) {}
    sqlite3 *m_db = nullptr;
    std::filesystem::path m_path;
    bool m_readOnly = false;
};

// A write transaction, taken with BEGIN IMMEDIATE so that the write lock is acquired (waiting on
// the busy timeout) up front: a deferred transaction that reads and then writes can fail with
// SQLITE_BUSY without waiting when another connection wrote in between. Rolls back on destruction
// unless committed.
class Transaction {
public:
    static Result<Transaction> begin(Database &db);
    Transaction(Transaction &&other) noexcept : m_db(other.m_db) { other.m_db = nullptr; }
    Transaction &operator=(Transaction &&) = delete;
    ~Transaction();
    Status commit();

private:
    explicit Transaction(Database *db) : m_db(db) {}
    Database *m_db = nullptr;
};

// An Error for SQLite result `code` on connection `db` while doing `what`: names the database
// file (`name`, else the connection's file) and says what the code means.
Error sqliteError(sqlite3 *db, int code, std::string_view what, std::string_view name = {});

} // namespace lowbit
