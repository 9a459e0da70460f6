// RunStore::mergeFrom: importing another store's finished runs (sweep task databases) row by row
// between two connections. ATTACH is avoided on purpose: BEGIN IMMEDIATE would then take the
// source's write lock too, which fails on a read-only sweep folder and blocks a running task.
#include "run_store.h"

#include <sqlite3.h>

#include <map>
#include <memory>
#include <sstream>

namespace lowbit {

namespace {

using Ids = std::map<std::string, std::optional<int64_t>>;

struct Finalize {
    void operator()(sqlite3_stmt *statement) const { sqlite3_finalize(statement); }
};
using Raw = std::unique_ptr<sqlite3_stmt, Finalize>;

Result<Raw> prepareRaw(Database &db, const std::string &sql) {
    sqlite3_stmt *statement = nullptr;
    const int rc =
        sqlite3_prepare_v2(db.handle(), sql.c_str(), int(sql.size()), &statement, nullptr);
    if (rc != SQLITE_OK)
        return sqliteError(db.handle(), rc, "preparing a merge statement");
    return Raw(statement);
}

Result<bool> stepRaw(Database &db, sqlite3_stmt *statement, const char *what) {
    const int rc = sqlite3_step(statement);
    if (rc == SQLITE_ROW)
        return true;
    if (rc == SQLITE_DONE)
        return false;
    return sqliteError(db.handle(), rc, what);
}

Result<std::vector<std::string>> columnsOf(Database &db, const std::string &table) {
    LOWBIT_TRY(Statement info, db.prepare("PRAGMA table_info(" + table + ")"));
    std::vector<std::string> columns;
    for (;;) {
        LOWBIT_TRY(bool row, info.step());
        if (!row)
            break;
        columns.push_back(info.text(1));
    }
    return columns;
}

// Copies the rows of `table` that `where` selects in `source` (one integer parameter) into
// `target`, with the columns in `ids` replaced (remapped ids; nullopt: NULL) and `id` (the rowid
// key) left for the target to assign. Returns the last inserted rowid.
Result<int64_t> copyRows(Database &source, Database &target, const std::string &table,
                         const std::string &where, int64_t key, const Ids &ids,
                         const std::string &insertVerb = "INSERT") {
    LOWBIT_TRY(std::vector<std::string> all, columnsOf(target, table));
    std::vector<std::string> columns;
    for (const std::string &c : all)
        if (c != "id")
            columns.push_back(c);
    std::string list, marks;
    for (size_t i = 0; i < columns.size(); ++i) {
        list += (i ? ", " : "") + columns[i];
        marks += i ? ", ?" : "?";
    }
    LOWBIT_TRY(Raw select,
               prepareRaw(source, "SELECT " + list + " FROM " + table + " WHERE " + where));
    sqlite3_bind_int64(select.get(), 1, key);
    LOWBIT_TRY(Raw insert, prepareRaw(target, insertVerb + " INTO " + table + " (" + list +
                                                  ") VALUES (" + marks + ")"));
    for (;;) {
        LOWBIT_TRY(bool row, stepRaw(source, select.get(), "reading the source store"));
        if (!row)
            break;
        sqlite3_reset(insert.get());
        for (size_t i = 0; i < columns.size(); ++i) {
            const int at = int(i) + 1;
            const auto replaced = ids.find(columns[i]);
            if (replaced == ids.end())
                sqlite3_bind_value(insert.get(), at, sqlite3_column_value(select.get(), int(i)));
            else if (replaced->second)
                sqlite3_bind_int64(insert.get(), at, *replaced->second);
            else
                sqlite3_bind_null(insert.get(), at);
        }
        LOWBIT_TRY(bool ignored,
                   stepRaw(target, insert.get(), ("importing into " + table).c_str()));
        (void)ignored;
    }
    return target.lastInsertRowId();
}

// A catalog row (checkpoint or dataset, unique by path and content hash) copied when new; its id
// in the target.
Result<std::optional<int64_t>> catalogId(Database &source, Database &target,
                                         const std::string &table, std::optional<int64_t> id) {
    if (!id)
        return std::optional<int64_t>();
    LOWBIT_TRY(Statement key,
               source.prepare("SELECT path, content_hash FROM " + table + " WHERE id = ?"));
    key.bind(1, *id);
    LOWBIT_TRY(bool found, key.step());
    if (!found)
        return std::optional<int64_t>();
    LOWBIT_CHECK(copyRows(source, target, table, "id = ?", *id, {}, "INSERT OR IGNORE"));
    LOWBIT_TRY(Statement lookup,
               target.prepare("SELECT id FROM " + table + " WHERE path = ? AND content_hash = ?"));
    lookup.bind(1, key.text(0)).bind(2, key.text(1));
    LOWBIT_TRY(bool again, lookup.step());
    if (!again)
        return makeError(ErrorCode::Internal, table + " row vanished during a merge");
    return std::optional<int64_t>(lookup.integer(0));
}

// What must agree for two copies of a run to be the same: status, task states, metrics, samples.
Result<std::string> fingerprint(Database &db, int64_t runId) {
    std::ostringstream out;
    out.precision(17);
    LOWBIT_TRY(Statement run, db.prepare("SELECT status FROM runs WHERE id = ?"));
    run.bind(1, runId);
    LOWBIT_TRY(bool found, run.step());
    out << (found ? run.text(0) : "?") << ";";
    LOWBIT_TRY(Statement tasks,
               db.prepare("SELECT task, status FROM run_tasks WHERE run_id = ? ORDER BY ordinal"));
    tasks.bind(1, runId);
    for (;;) {
        LOWBIT_TRY(bool row, tasks.step());
        if (!row)
            break;
        out << tasks.text(0) << "=" << tasks.text(1) << ";";
    }
    LOWBIT_TRY(Statement metrics, db.prepare("SELECT task, metric, value, stderr, n FROM metrics "
                                             "WHERE run_id = ? ORDER BY task, metric"));
    metrics.bind(1, runId);
    for (;;) {
        LOWBIT_TRY(bool row, metrics.step());
        if (!row)
            break;
        out << metrics.text(0) << "/" << metrics.text(1) << "=" << metrics.real(2) << "+-"
            << (metrics.isNull(3) ? 0.0 : metrics.real(3)) << "n" << metrics.integer(4) << ";";
    }
    LOWBIT_TRY(Statement samples, db.prepare("SELECT count(*), total(nll), total(correct) FROM "
                                             "samples WHERE run_id = ?"));
    samples.bind(1, runId);
    LOWBIT_TRY(bool any, samples.step());
    if (any)
        out << "samples " << samples.integer(0) << " " << samples.real(1) << " " << samples.real(2);
    return out.str();
}

constexpr const char *kOriginColumns =
    "created_at, host, pid, spec_json, checkpoint_hash, method_key";

// The id in `target` of the run whose origin equals source run `runId`'s.
Result<std::optional<int64_t>> sameOrigin(Database &source, Database &target, int64_t runId) {
    LOWBIT_TRY(Raw origin, prepareRaw(source, std::string("SELECT ") + kOriginColumns +
                                                  " FROM runs WHERE id = ?"));
    sqlite3_bind_int64(origin.get(), 1, runId);
    LOWBIT_TRY(bool found, stepRaw(source, origin.get(), "reading a source run"));
    if (!found)
        return std::optional<int64_t>();
    LOWBIT_TRY(Raw match, prepareRaw(target, "SELECT id FROM runs WHERE created_at IS ? AND "
                                             "host IS ? AND pid IS ? AND spec_json IS ? AND "
                                             "checkpoint_hash IS ? AND method_key IS ?"));
    for (int i = 0; i < 6; ++i)
        sqlite3_bind_value(match.get(), i + 1, sqlite3_column_value(origin.get(), i));
    LOWBIT_TRY(bool here, stepRaw(target, match.get(), "matching a run"));
    if (!here)
        return std::optional<int64_t>();
    return std::optional<int64_t>(sqlite3_column_int64(match.get(), 0));
}

Result<std::optional<int64_t>> optionalColumn(Database &db, const std::string &sql, int64_t id) {
    LOWBIT_TRY(Statement query, db.prepare(sql));
    query.bind(1, id);
    LOWBIT_TRY(bool row, query.step());
    if (!row || query.isNull(0))
        return std::optional<int64_t>();
    return std::optional<int64_t>(query.integer(0));
}

Result<std::vector<int64_t>> integers(Database &db, const std::string &sql) {
    LOWBIT_TRY(Statement query, db.prepare(sql));
    std::vector<int64_t> values;
    for (;;) {
        LOWBIT_TRY(bool row, query.step());
        if (!row)
            break;
        values.push_back(query.integer(0));
    }
    return values;
}

Result<int64_t> importRun(Database &source, Database &target, int64_t runId) {
    LOWBIT_TRY(auto sourceCheckpoint,
               optionalColumn(source, "SELECT checkpoint_id FROM runs WHERE id = ?", runId));
    LOWBIT_TRY(auto checkpointId, catalogId(source, target, "checkpoints", sourceCheckpoint));
    LOWBIT_TRY(int64_t newId, copyRows(source, target, "runs", "id = ?", runId,
                                       {{"checkpoint_id", checkpointId}}));
    LOWBIT_TRY(Statement tasks,
               source.prepare("SELECT ordinal, dataset_id FROM run_tasks WHERE run_id = ?"));
    tasks.bind(1, runId);
    for (;;) {
        LOWBIT_TRY(bool row, tasks.step());
        if (!row)
            break;
        std::optional<int64_t> dataset;
        if (!tasks.isNull(1))
            dataset = tasks.integer(1);
        LOWBIT_TRY(auto datasetId, catalogId(source, target, "datasets", dataset));
        LOWBIT_CHECK(copyRows(source, target, "run_tasks",
                              "run_id = " + std::to_string(runId) + " AND ordinal = ?",
                              tasks.integer(0), {{"run_id", newId}, {"dataset_id", datasetId}}));
    }
    for (const char *table : {"metrics", "samples", "run_log", "training_steps"})
        LOWBIT_CHECK(copyRows(source, target, table, "run_id = ? ORDER BY rowid", runId,
                              {{"run_id", newId}}));
    return newId;
}

// Artifacts are the same when kind, content and place agree; a new one keeps its producing run
// when that run was imported, else NULL.
Result<int> importArtifacts(Database &source, Database &target,
                            const std::map<int64_t, int64_t> &runIds) {
    LOWBIT_TRY(std::vector<int64_t> ids, integers(source, "SELECT id FROM artifacts ORDER BY id"));
    int imported = 0;
    for (int64_t id : ids) {
        LOWBIT_TRY(Raw key, prepareRaw(source, "SELECT checkpoint_hash, method_key, kind, path, "
                                               "content_hash, run_id FROM artifacts WHERE id = ?"));
        sqlite3_bind_int64(key.get(), 1, id);
        LOWBIT_TRY(bool found, stepRaw(source, key.get(), "reading an artifact"));
        if (!found)
            continue;
        LOWBIT_TRY(Raw match, prepareRaw(target, "SELECT 1 FROM artifacts WHERE checkpoint_hash "
                                                 "= ? AND method_key = ? AND kind = ? AND path = "
                                                 "? AND content_hash = ?"));
        for (int i = 0; i < 5; ++i)
            sqlite3_bind_value(match.get(), i + 1, sqlite3_column_value(key.get(), i));
        LOWBIT_TRY(bool present, stepRaw(target, match.get(), "matching an artifact"));
        if (present)
            continue;
        std::optional<int64_t> runId;
        if (sqlite3_column_type(key.get(), 5) != SQLITE_NULL) {
            const auto it = runIds.find(sqlite3_column_int64(key.get(), 5));
            if (it != runIds.end())
                runId = it->second;
        }
        LOWBIT_CHECK(copyRows(source, target, "artifacts", "id = ?", id, {{"run_id", runId}}));
        ++imported;
    }
    return imported;
}

} // namespace

Result<MergeReport> RunStore::mergeFrom(const std::filesystem::path &sourcePath) {
    std::error_code ec;
    if (std::filesystem::equivalent(sourcePath, path(), ec))
        return makeError(ErrorCode::InvalidArgument,
                         sourcePath.string() + ": cannot merge a store into itself");
    LOWBIT_TRY(RunStore source, RunStore::open(sourcePath, {.readOnly = true}));
    Database &from = source.database();
    MergeReport report;
    LOWBIT_TRY(std::vector<int64_t> done,
               integers(from, "SELECT id FROM runs WHERE status = 'done' ORDER BY id"));
    LOWBIT_TRY(auto unfinished,
               from.queryInteger("SELECT count(*) FROM runs WHERE status <> 'done'"));
    report.runsUnfinished = int(unfinished.value_or(0));
    LOWBIT_TRY(Transaction transaction, Transaction::begin(m_db));
    std::map<int64_t, int64_t> imported; // source id -> id here
    for (int64_t runId : done) {
        LOWBIT_TRY(auto here, sameOrigin(from, m_db, runId));
        if (!here) {
            LOWBIT_TRY(imported[runId], importRun(from, m_db, runId));
            ++report.runsImported;
            continue;
        }
        LOWBIT_TRY(std::string theirs, fingerprint(from, runId));
        LOWBIT_TRY(std::string ours, fingerprint(m_db, *here));
        if (theirs == ours) {
            imported[runId] = *here;
            ++report.runsPresent;
        } else {
            report.conflicts.push_back(sourcePath.string() + ": run " + std::to_string(runId) +
                                       " is run " + std::to_string(*here) + " of " +
                                       path().string() +
                                       " (same origin) but its results differ; not imported");
        }
    }
    LOWBIT_TRY(report.artifactsImported, importArtifacts(from, m_db, imported));
    // The content-hash cache (keyed by path, size and mtime, so valid wherever the same file is
    // seen): a sweep's evaluate task then does not re-read a checkpoint its quantize task hashed.
    LOWBIT_CHECK(copyRows(from, m_db, "file_hashes", "1 = ?", 1, {}, "INSERT OR IGNORE"));
    LOWBIT_CHECK(transaction.commit());
    return report;
}

} // namespace lowbit
