#include "sqlite_database.h"

#include <sqlite3.h>

#include <utility>

namespace lowbit {

namespace {

// What a primary result code means for the user, and the ErrorCode it maps to.
std::pair<ErrorCode, const char *> describe(int code) {
    switch (code & 0xff) {
    case SQLITE_FULL:
        return {ErrorCode::Io, "disk full (or the database reached its size limit); the write was "
                               "rolled back and stored runs are intact"};
    case SQLITE_NOTADB:
        return {ErrorCode::Format, "not a SQLite database (the file's header is not SQLite's)"};
    case SQLITE_CORRUPT: return {ErrorCode::Format, "the database file is corrupt"};
    case SQLITE_READONLY:
        return {ErrorCode::Io,
                "the database is read-only (no write permission on the file or its folder)"};
    case SQLITE_CANTOPEN:
        return {ErrorCode::Io, "cannot open the database (missing folder or no permission)"};
    case SQLITE_PERM: return {ErrorCode::Io, "permission denied"};
    case SQLITE_IOERR: return {ErrorCode::Io, "I/O error"};
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return {ErrorCode::Io,
                "the database stayed locked by another writer past the busy timeout"};
    case SQLITE_CONSTRAINT: return {ErrorCode::InvalidArgument, "a constraint was violated"};
    case SQLITE_NOMEM: return {ErrorCode::OutOfMemory, "out of memory"};
    default: return {ErrorCode::Internal, "database error"};
    }
}

std::string databaseName(sqlite3 *db) {
    const char *name = db ? sqlite3_db_filename(db, "main") : nullptr;
    return name && *name ? name : "database";
}

} // namespace

Error sqliteError(sqlite3 *db, int code, std::string_view what, std::string_view name) {
    const auto [errorCode, words] = describe(code);
    std::string message = (name.empty() ? databaseName(db) : std::string(name)) + ": " + words;
    const char *detail = db ? sqlite3_errmsg(db) : sqlite3_errstr(code);
    if (detail && *detail)
        message += std::string(" (sqlite: ") + detail + ")";
    if (!what.empty())
        message += std::string(" while ") + std::string(what);
    return makeError(errorCode, message);
}

Statement::Statement(Statement &&other) noexcept
    : m_statement(std::exchange(other.m_statement, nullptr)) {}

Statement &Statement::operator=(Statement &&other) noexcept {
    if (this != &other) {
        sqlite3_finalize(m_statement);
        m_statement = std::exchange(other.m_statement, nullptr);
    }
    return *this;
}

Statement::~Statement() {
    sqlite3_finalize(m_statement);
}

// Bind failures (index out of range, out of memory) are programming errors or OOM; they surface
// as an error from the following step(), which reports sqlite3_errmsg.
Statement &Statement::bind(int index, int64_t value) {
    sqlite3_bind_int64(m_statement, index, value);
    return *this;
}

Statement &Statement::bind(int index, double value) {
    sqlite3_bind_double(m_statement, index, value);
    return *this;
}

Statement &Statement::bind(int index, std::string_view text) {
    sqlite3_bind_text64(m_statement, index, text.data(), text.size(), SQLITE_TRANSIENT,
                        SQLITE_UTF8);
    return *this;
}

Statement &Statement::bindNull(int index) {
    sqlite3_bind_null(m_statement, index);
    return *this;
}

Statement &Statement::bind(int index, const std::optional<int64_t> &value) {
    return value ? bind(index, *value) : bindNull(index);
}

Result<bool> Statement::step() {
    const int rc = sqlite3_step(m_statement);
    if (rc == SQLITE_ROW)
        return true;
    if (rc == SQLITE_DONE)
        return false;
    sqlite3 *db = sqlite3_db_handle(m_statement);
    const char *sql = sqlite3_sql(m_statement);
    std::string what = sql ? std::string(sql).substr(0, 60) : "a statement";
    return sqliteError(
        db, rc, "running \"" + what + (sql && std::string(sql).size() > 60 ? "...\"" : "\""));
}

Status Statement::run() {
    for (;;) {
        LOWBIT_TRY(bool row, step());
        if (!row)
            return {};
    }
}

Status Statement::reset() {
    sqlite3_reset(m_statement);
    sqlite3_clear_bindings(m_statement);
    return {};
}

bool Statement::isNull(int column) const {
    return sqlite3_column_type(m_statement, column) == SQLITE_NULL;
}
int64_t Statement::integer(int column) const {
    return sqlite3_column_int64(m_statement, column);
}
double Statement::real(int column) const {
    return sqlite3_column_double(m_statement, column);
}

std::string Statement::text(int column) const {
    const auto *data = reinterpret_cast<const char *>(sqlite3_column_text(m_statement, column));
    return data ? std::string(data, size_t(sqlite3_column_bytes(m_statement, column)))
                : std::string();
}

Result<Database> Database::open(const std::filesystem::path &path, const OpenOptions &options) {
    int flags = SQLITE_OPEN_NOMUTEX; // one thread per connection (see the header)
    if (options.readOnly)
        flags |= SQLITE_OPEN_READONLY;
    else
        flags |= SQLITE_OPEN_READWRITE | (options.create ? SQLITE_OPEN_CREATE : 0);
    sqlite3 *db = nullptr;
    const int rc = sqlite3_open_v2(path.c_str(), &db, flags, nullptr);
    if (rc != SQLITE_OK) {
        Error error = sqliteError(db, rc, "opening it", path.string());
        sqlite3_close(db);
        return error;
    }
    sqlite3_extended_result_codes(db, 1);
    sqlite3_busy_timeout(db, options.busyTimeoutMs);
    return Database(db, path, options.readOnly);
}

Database::Database(Database &&other) noexcept
    : m_db(std::exchange(other.m_db, nullptr)), m_path(std::move(other.m_path)),
      m_readOnly(other.m_readOnly) {}

Database &Database::operator=(Database &&other) noexcept {
    if (this != &other) {
        sqlite3_close_v2(m_db);
        m_db = std::exchange(other.m_db, nullptr);
        m_path = std::move(other.m_path);
        m_readOnly = other.m_readOnly;
    }
    return *this;
}

Database::~Database() {
    sqlite3_close_v2(m_db);
}

Status Database::exec(std::string_view sql) {
    char *message = nullptr;
    const int rc = sqlite3_exec(m_db, std::string(sql).c_str(), nullptr, nullptr, &message);
    sqlite3_free(message);
    if (rc != SQLITE_OK)
        return sqliteError(m_db, rc, "running \"" + std::string(sql.substr(0, 60)) + "\"");
    return {};
}

Result<Statement> Database::prepare(std::string_view sql) const {
    sqlite3_stmt *statement = nullptr;
    const int rc = sqlite3_prepare_v2(m_db, sql.data(), int(sql.size()), &statement, nullptr);
    if (rc != SQLITE_OK)
        return sqliteError(m_db, rc, "preparing \"" + std::string(sql.substr(0, 60)) + "\"");
    return Statement(statement);
}

Result<std::optional<int64_t>> Database::queryInteger(std::string_view sql) const {
    LOWBIT_TRY(Statement statement, prepare(sql));
    LOWBIT_TRY(bool row, statement.step());
    if (!row)
        return std::optional<int64_t>();
    return std::optional<int64_t>(statement.integer(0));
}

int64_t Database::lastInsertRowId() const {
    return sqlite3_last_insert_rowid(m_db);
}
int Database::changes() const {
    return sqlite3_changes(m_db);
}

Result<Transaction> Transaction::begin(Database &db) {
    LOWBIT_CHECK(db.exec("BEGIN IMMEDIATE"));
    return Transaction(&db);
}

Transaction::~Transaction() {
    if (m_db && !sqlite3_get_autocommit(m_db->handle()))
        (void)m_db->exec("ROLLBACK");
}

Status Transaction::commit() {
    Database *db = std::exchange(m_db, nullptr);
    const Status status = db->exec("COMMIT");
    if (!status.ok() && !sqlite3_get_autocommit(db->handle()))
        (void)db->exec("ROLLBACK");
    return status;
}

} // namespace lowbit
