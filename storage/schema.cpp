#include "schema.h"

#include <string>

namespace lowbit {

namespace {

// Version 1. Timestamps are UTC ISO 8601 text; JSON columns hold canonical JSON text.
// samples keep their rowid order = the order the task produced them, which aggregation follows.
constexpr const char *kSchemaV1 = R"sql(
CREATE TABLE file_hashes (
    path TEXT PRIMARY KEY,
    size_bytes INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    hashed_at TEXT NOT NULL
);
CREATE TABLE checkpoints (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL,
    format TEXT NOT NULL,
    config_json TEXT NOT NULL,
    parameter_count INTEGER NOT NULL,
    content_hash TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    registered_at TEXT NOT NULL,
    UNIQUE (path, content_hash)
);
CREATE TABLE datasets (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    row_count INTEGER NOT NULL,
    size_bytes INTEGER NOT NULL,
    registered_at TEXT NOT NULL,
    UNIQUE (path, content_hash)
);
CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    status TEXT NOT NULL CHECK (status IN
        ('queued', 'running', 'done', 'failed', 'cancelled', 'interrupted')),
    spec_json TEXT NOT NULL,
    model TEXT NOT NULL,
    checkpoint_hash TEXT NOT NULL,
    checkpoint_id INTEGER REFERENCES checkpoints (id),
    method TEXT NOT NULL,
    method_key TEXT NOT NULL,
    device TEXT NOT NULL,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    heartbeat_at TEXT,
    host TEXT,
    pid INTEGER,
    pid_start INTEGER,
    boot_id TEXT,
    engine_version TEXT NOT NULL,
    engine_commit TEXT NOT NULL,
    error TEXT,
    phase_seconds_json TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX runs_by_status ON runs (status);
CREATE INDEX runs_by_measure ON runs (checkpoint_hash, method_key);
CREATE TABLE run_tasks (
    run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    ordinal INTEGER NOT NULL,
    task TEXT NOT NULL,
    task_key TEXT NOT NULL,
    options_json TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'running', 'done', 'failed')),
    protocol_json TEXT,
    dataset_id INTEGER REFERENCES datasets (id),
    PRIMARY KEY (run_id, task)
);
CREATE TABLE metrics (
    run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    task TEXT NOT NULL,
    metric TEXT NOT NULL,
    value REAL NOT NULL,
    stderr REAL,
    n INTEGER NOT NULL,
    PRIMARY KEY (run_id, task, metric)
);
CREATE TABLE samples (
    run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    task TEXT NOT NULL,
    doc_id TEXT NOT NULL,
    doc_hash TEXT NOT NULL,
    prompt_hash TEXT NOT NULL,
    target TEXT NOT NULL,
    output TEXT NOT NULL,
    choice_ll_json TEXT NOT NULL,
    correct INTEGER NOT NULL,
    tokens INTEGER NOT NULL,
    nll REAL NOT NULL,
    extra_json TEXT NOT NULL,
    UNIQUE (run_id, task, doc_id)
);
CREATE TABLE artifacts (
    id INTEGER PRIMARY KEY,
    run_id INTEGER REFERENCES runs (id) ON DELETE SET NULL,
    checkpoint_hash TEXT NOT NULL,
    method_key TEXT NOT NULL,
    kind TEXT NOT NULL,
    path TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    content_hash TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX artifacts_by_method ON artifacts (checkpoint_hash, method_key, kind);
CREATE TABLE run_log (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    at TEXT NOT NULL,
    level TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX run_log_by_run ON run_log (run_id, id);
)sql";

// Version 2: the per-step curve of a fine-tuning run (issue 8), one row per optimizer step,
// rewritten in place when a resumed run reports a step again. tokens_per_s 0: unknown (a step
// restored from a training checkpoint).
constexpr const char *kSchemaV2 = R"sql(
CREATE TABLE training_steps (
    run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step INTEGER NOT NULL,
    loss REAL NOT NULL,
    learning_rate REAL NOT NULL,
    grad_norm REAL NOT NULL,
    tokens_per_s REAL NOT NULL,
    PRIMARY KEY (run_id, step)
);
)sql";

// kMigrations[v] brings a database from version v to v + 1.
constexpr const char *kMigrations[] = {kSchemaV1, kSchemaV2};
static_assert(std::size(kMigrations) == kSchemaVersion);

struct Identity {
    int64_t applicationId = 0;
    int64_t userVersion = 0;
    int64_t tables = 0;
};

Result<Identity> readIdentity(Database &db) {
    Identity identity;
    // The first read of a file that is not SQLite fails here, with "not a database".
    LOWBIT_TRY(auto tables, db.queryInteger("SELECT count(*) FROM sqlite_schema"));
    LOWBIT_TRY(auto applicationId, db.queryInteger("PRAGMA application_id"));
    LOWBIT_TRY(auto userVersion, db.queryInteger("PRAGMA user_version"));
    identity.tables = tables.value_or(0);
    identity.applicationId = applicationId.value_or(0);
    identity.userVersion = userVersion.value_or(0);
    return identity;
}

Status checkIdentity(const Database &db, const Identity &identity) {
    const std::string name = db.path().string();
    if (identity.applicationId != kApplicationId &&
        (identity.tables > 0 || identity.applicationId != 0))
        return makeError(ErrorCode::Format,
                         name +
                             ": not a lowbit run store (a SQLite database of another program: "
                             "application id " +
                             std::to_string(identity.applicationId) + ", " +
                             std::to_string(identity.tables) +
                             " schema objects); nothing was changed");
    if (identity.userVersion > kSchemaVersion)
        return makeError(ErrorCode::Unsupported,
                         name + ": written by a newer lowbit (schema version " +
                             std::to_string(identity.userVersion) + "; this build knows up to " +
                             std::to_string(kSchemaVersion) + "); nothing was changed");
    return {};
}

} // namespace

Status checkStoreIdentity(Database &db) {
    LOWBIT_TRY(Identity identity, readIdentity(db));
    return checkIdentity(db, identity);
}

Status checkSchemaReadable(Database &db) {
    LOWBIT_TRY(Identity identity, readIdentity(db));
    LOWBIT_CHECK(checkIdentity(db, identity));
    if (identity.userVersion < kSchemaVersion)
        return makeError(ErrorCode::Unsupported,
                         db.path().string() + ": schema version " +
                             std::to_string(identity.userVersion) +
                             " needs an upgrade, which a read-only open cannot do");
    return {};
}

Status migrateSchema(Database &db) {
    LOWBIT_TRY(Identity identity, readIdentity(db));
    LOWBIT_CHECK(checkIdentity(db, identity));
    if (identity.userVersion == kSchemaVersion)
        return {};
    LOWBIT_TRY(Transaction transaction, Transaction::begin(db));
    // Re-read under the write lock: another process may have migrated in the meantime.
    LOWBIT_TRY(identity, readIdentity(db));
    LOWBIT_CHECK(checkIdentity(db, identity));
    for (int64_t v = identity.userVersion; v < kSchemaVersion; ++v)
        LOWBIT_CHECK(db.exec(kMigrations[v]));
    LOWBIT_CHECK(db.exec("PRAGMA application_id = " + std::to_string(kApplicationId)));
    LOWBIT_CHECK(db.exec("PRAGMA user_version = " + std::to_string(kSchemaVersion)));
    return transaction.commit();
}

} // namespace lowbit
