#include "run_store.h"

#include "core/build_info.h"
#include "schema.h"

#include <cstdlib>

namespace lowbit {

using nlohmann::json;

namespace {

constexpr const char *kNow = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

constexpr const char *kRunColumns =
    "id, status, spec_json, model, checkpoint_hash, checkpoint_id, method, method_key, device, "
    "created_at, started_at, finished_at, heartbeat_at, host, pid, engine_version, engine_commit, "
    "error, phase_seconds_json";

// Stored JSON text back to a value; text that does not parse (never written by us) becomes null.
json parseStored(const std::string &text) {
    if (text.empty())
        return json();
    return json::parse(text, nullptr, /*allow_exceptions=*/false);
}

Result<RunRecord> readRun(const Statement &row) {
    RunRecord run;
    run.id = row.integer(0);
    LOWBIT_TRY(run.status, parseRunStatus(row.text(1)));
    run.spec = parseStored(row.text(2));
    run.model = row.text(3);
    run.checkpointHash = row.text(4);
    if (!row.isNull(5))
        run.checkpointId = row.integer(5);
    run.method = row.text(6);
    run.methodKey = row.text(7);
    run.device = row.text(8);
    run.createdAt = row.text(9);
    run.startedAt = row.text(10);
    run.finishedAt = row.text(11);
    run.heartbeatAt = row.text(12);
    run.host = row.text(13);
    run.pid = row.integer(14);
    run.engineVersion = row.text(15);
    run.engineCommit = row.text(16);
    run.error = row.text(17);
    run.phaseSeconds = parseStored(row.text(18));
    if (!run.phaseSeconds.is_object())
        run.phaseSeconds = json::object();
    return run;
}

Result<TaskState> parseTaskState(const std::string &name) {
    for (TaskState state :
         {TaskState::Pending, TaskState::Running, TaskState::Done, TaskState::Failed})
        if (name == taskStateName(state))
            return state;
    return makeError(ErrorCode::Format, "unknown task state '" + name + "' in the run store");
}

// The owner recorded on a run row (columns host, pid, pid_start, boot_id from `first`).
ProcessIdentity readOwner(const Statement &row, int first) {
    ProcessIdentity owner;
    owner.host = row.text(first);
    owner.pid = row.integer(first + 1);
    owner.startTicks = row.integer(first + 2);
    owner.bootId = row.text(first + 3);
    return owner;
}

bool sameProcess(const ProcessIdentity &a, const ProcessIdentity &b) {
    return a.host == b.host && a.pid == b.pid && a.startTicks == b.startTicks &&
           a.bootId == b.bootId;
}

} // namespace

const char *runStatusName(RunStatus status) {
    switch (status) {
    case RunStatus::Queued: return "queued";
    case RunStatus::Running: return "running";
    case RunStatus::Done: return "done";
    case RunStatus::Failed: return "failed";
    case RunStatus::Cancelled: return "cancelled";
    case RunStatus::Interrupted: return "interrupted";
    }
    return "unknown";
}

Result<RunStatus> parseRunStatus(const std::string &name) {
    for (RunStatus status : {RunStatus::Queued, RunStatus::Running, RunStatus::Done,
                             RunStatus::Failed, RunStatus::Cancelled, RunStatus::Interrupted})
        if (name == runStatusName(status))
            return status;
    return makeError(ErrorCode::InvalidArgument,
                     "unknown run status '" + name +
                         "' (queued, running, done, failed, cancelled, interrupted)");
}

bool isResumable(RunStatus status) {
    return status == RunStatus::Interrupted || status == RunStatus::Failed ||
           status == RunStatus::Cancelled;
}

const char *taskStateName(TaskState state) {
    switch (state) {
    case TaskState::Pending: return "pending";
    case TaskState::Running: return "running";
    case TaskState::Done: return "done";
    case TaskState::Failed: return "failed";
    }
    return "unknown";
}

std::filesystem::path defaultDatabasePath() {
    if (const char *db = std::getenv("LOWBIT_DB"); db && *db)
        return db;
    std::filesystem::path base;
    if (const char *xdg = std::getenv("XDG_DATA_HOME");
        xdg && *xdg && std::filesystem::path(xdg).is_absolute())
        base = xdg;
    else if (const char *home = std::getenv("HOME"); home && *home)
        base = std::filesystem::path(home) / ".local" / "share";
    else
        base = std::filesystem::current_path();
    return base / "lowbit" / "runs.sqlite";
}

Result<RunStore> RunStore::open(const std::filesystem::path &path, const StoreOptions &options) {
    if (!options.readOnly && path.has_parent_path()) {
        std::error_code ec;
        std::filesystem::create_directories(path.parent_path(), ec);
        if (ec)
            return makeError(ErrorCode::Io, path.string() + ": cannot create its folder " +
                                                path.parent_path().string() + ": " + ec.message());
    }
    if (options.readOnly && !std::filesystem::exists(path))
        return makeError(ErrorCode::NotFound, path.string() + ": no run store there");
    LOWBIT_TRY(Database db, Database::open(path, {.readOnly = options.readOnly,
                                                  .create = true,
                                                  .busyTimeoutMs = options.busyTimeoutMs}));
    if (options.readOnly) {
        LOWBIT_CHECK(checkSchemaReadable(db));
        LOWBIT_CHECK(db.exec("PRAGMA foreign_keys = ON"));
        return RunStore(std::move(db), options);
    }
    // Identity first: a foreign file or a newer schema must not even be switched to WAL.
    LOWBIT_CHECK(checkStoreIdentity(db));
    LOWBIT_CHECK(db.exec("PRAGMA journal_mode = WAL"));
    // FULL: a committed sample batch survives an OS crash too, not only a killed process.
    LOWBIT_CHECK(db.exec("PRAGMA synchronous = FULL"));
    LOWBIT_CHECK(db.exec("PRAGMA foreign_keys = ON"));
    LOWBIT_CHECK(migrateSchema(db));
    RunStore store(std::move(db), options);
    LOWBIT_TRY(int stale, store.markStaleRunsInterrupted());
    (void)stale;
    return store;
}

Status RunStore::requireRun(int64_t runId) const {
    LOWBIT_TRY(Statement query, m_db.prepare("SELECT 1 FROM runs WHERE id = ?"));
    query.bind(1, runId);
    LOWBIT_TRY(bool found, query.step());
    if (!found)
        return makeError(ErrorCode::NotFound,
                         "run " + std::to_string(runId) + " does not exist in " + path().string());
    return {};
}

Result<int64_t> RunStore::createRun(const NewRun &run) {
    const ProcessIdentity owner = ProcessIdentity::current();
    LOWBIT_TRY(Transaction transaction, Transaction::begin(m_db));
    LOWBIT_TRY(
        Statement insert,
        m_db.prepare(std::string("INSERT INTO runs (status, spec_json, model, checkpoint_hash, "
                                 "method, method_key, device, created_at, heartbeat_at, host, pid, "
                                 "pid_start, boot_id, engine_version, engine_commit) VALUES "
                                 "('queued', ?, ?, ?, ?, ?, ?, ") +
                     kNow + ", " + kNow + ", ?, ?, ?, ?, ?, ?)"));
    insert.bind(1, run.spec.dump())
        .bind(2, run.model)
        .bind(3, run.checkpointHash)
        .bind(4, run.method);
    insert.bind(5, run.methodKey).bind(6, run.device).bind(7, owner.host).bind(8, owner.pid);
    insert.bind(9, owner.startTicks).bind(10, owner.bootId).bind(11, LOWBIT_VERSION);
    insert.bind(12, LOWBIT_GIT_COMMIT);
    LOWBIT_CHECK(insert.run());
    const int64_t runId = m_db.lastInsertRowId();
    LOWBIT_TRY(Statement task,
               m_db.prepare("INSERT INTO run_tasks (run_id, ordinal, task, task_key, "
                            "options_json) VALUES (?, ?, ?, ?, ?)"));
    for (size_t i = 0; i < run.tasks.size(); ++i) {
        const NewRunTask &t = run.tasks[i];
        task.bind(1, runId)
            .bind(2, int64_t(i))
            .bind(3, t.name)
            .bind(4, t.key)
            .bind(5, t.options.dump());
        LOWBIT_CHECK(task.run());
        LOWBIT_CHECK(task.reset());
    }
    LOWBIT_CHECK(transaction.commit());
    return runId;
}

Status RunStore::claimRun(int64_t runId, const ProcessIdentity &owner) {
    LOWBIT_TRY(Transaction transaction, Transaction::begin(m_db));
    LOWBIT_TRY(Statement query,
               m_db.prepare("SELECT status, host, pid, pid_start, boot_id FROM runs WHERE id = ?"));
    query.bind(1, runId);
    LOWBIT_TRY(bool found, query.step());
    if (!found)
        return makeError(ErrorCode::NotFound,
                         "run " + std::to_string(runId) + " does not exist in " + path().string());
    LOWBIT_TRY(RunStatus status, parseRunStatus(query.text(0)));
    const ProcessIdentity current = readOwner(query, 1);
    if (status == RunStatus::Done)
        return makeError(ErrorCode::InvalidArgument,
                         "run " + std::to_string(runId) + " is already done");
    if ((status == RunStatus::Running || status == RunStatus::Queued) &&
        !sameProcess(current, owner) && current.alive())
        return makeError(ErrorCode::InvalidArgument,
                         "run " + std::to_string(runId) + " is " + runStatusName(status) +
                             " in process " + std::to_string(current.pid) + " on " + current.host);
    LOWBIT_TRY(
        Statement update,
        m_db.prepare(
            std::string("UPDATE runs SET status = 'running', host = ?, pid = ?, pid_start = ?, "
                        "boot_id = ?, error = NULL, finished_at = NULL, started_at = "
                        "coalesce(started_at, ") +
            kNow + "), heartbeat_at = " + kNow + " WHERE id = ?"));
    update.bind(1, owner.host).bind(2, owner.pid).bind(3, owner.startTicks).bind(4, owner.bootId);
    update.bind(5, runId);
    LOWBIT_CHECK(update.run());
    return transaction.commit();
}

Status RunStore::finishRun(int64_t runId, RunStatus status, const std::string &error) {
    LOWBIT_TRY(Statement update,
               m_db.prepare(std::string("UPDATE runs SET status = ?, error = ?, finished_at = ") +
                            kNow + ", heartbeat_at = " + kNow + " WHERE id = ?"));
    update.bind(1, runStatusName(status));
    if (error.empty())
        update.bindNull(2);
    else
        update.bind(2, error);
    update.bind(3, runId);
    LOWBIT_CHECK(update.run());
    if (m_db.changes() == 0)
        return requireRun(runId);
    return {};
}

Status RunStore::heartbeat(int64_t runId) {
    LOWBIT_TRY(Statement update, m_db.prepare(std::string("UPDATE runs SET heartbeat_at = ") +
                                              kNow + " WHERE id = ?"));
    update.bind(1, runId);
    return update.run();
}

Status RunStore::addPhaseSeconds(int64_t runId, const std::string &phase, double seconds) {
    LOWBIT_TRY(Transaction transaction, Transaction::begin(m_db));
    LOWBIT_TRY(Statement query, m_db.prepare("SELECT phase_seconds_json FROM runs WHERE id = ?"));
    query.bind(1, runId);
    LOWBIT_TRY(bool found, query.step());
    if (!found)
        return requireRun(runId);
    json phases = parseStored(query.text(0));
    if (!phases.is_object())
        phases = json::object();
    phases[phase] = phases.value(phase, 0.0) + seconds;
    LOWBIT_TRY(Statement update,
               m_db.prepare("UPDATE runs SET phase_seconds_json = ? WHERE id = ?"));
    update.bind(1, phases.dump()).bind(2, runId);
    LOWBIT_CHECK(update.run());
    return transaction.commit();
}

Status RunStore::setRunCheckpoint(int64_t runId, int64_t checkpointId) {
    LOWBIT_TRY(Statement update, m_db.prepare("UPDATE runs SET checkpoint_id = ? WHERE id = ?"));
    update.bind(1, checkpointId).bind(2, runId);
    return update.run();
}

Result<int> RunStore::markStaleRunsInterrupted() {
    LOWBIT_TRY(Transaction transaction, Transaction::begin(m_db));
    LOWBIT_TRY(Statement query,
               m_db.prepare("SELECT id, host, pid, pid_start, boot_id, "
                            "(julianday('now') - julianday(heartbeat_at)) * 86400.0 FROM runs "
                            "WHERE status IN ('queued', 'running')"));
    std::vector<std::pair<int64_t, ProcessIdentity>> stale;
    for (;;) {
        LOWBIT_TRY(bool row, query.step());
        if (!row)
            break;
        const ProcessIdentity owner = readOwner(query, 1);
        const bool dead = owner.sameHost() ? !owner.alive()
                                           : query.isNull(5) ||
                                                 query.real(5) > m_options.foreignHeartbeatTimeoutS;
        if (dead)
            stale.emplace_back(query.integer(0), owner);
    }
    for (const auto &[runId, owner] : stale) {
        const std::string why = "process " + std::to_string(owner.pid) + " on " + owner.host +
                                " ended without finishing the run";
        LOWBIT_TRY(
            Statement update,
            m_db.prepare(
                std::string("UPDATE runs SET status = 'interrupted', error = ?, finished_at = ") +
                kNow + " WHERE id = ?"));
        update.bind(1, why).bind(2, runId);
        LOWBIT_CHECK(update.run());
        LOWBIT_TRY(Statement tasks, m_db.prepare("UPDATE run_tasks SET status = 'pending' "
                                                 "WHERE run_id = ? AND status = 'running'"));
        tasks.bind(1, runId);
        LOWBIT_CHECK(tasks.run());
        LOWBIT_TRY(Statement line,
                   m_db.prepare(std::string("INSERT INTO run_log (run_id, at, level, message) "
                                            "VALUES (?, ") +
                                kNow + ", 'warning', ?)"));
        line.bind(1, runId).bind(2, "marked interrupted: " + why);
        LOWBIT_CHECK(line.run());
    }
    LOWBIT_CHECK(transaction.commit());
    return int(stale.size());
}

Result<RunRecord> RunStore::run(int64_t runId) const {
    LOWBIT_TRY(Statement query,
               m_db.prepare(std::string("SELECT ") + kRunColumns + " FROM runs WHERE id = ?"));
    query.bind(1, runId);
    LOWBIT_TRY(bool found, query.step());
    if (!found)
        return makeError(ErrorCode::NotFound,
                         "run " + std::to_string(runId) + " does not exist in " + path().string());
    return readRun(query);
}

Result<std::vector<RunRecord>> RunStore::listRuns(const RunFilter &filter) const {
    LOWBIT_TRY(
        Statement query,
        m_db.prepare(
            std::string("SELECT ") + kRunColumns +
            " FROM runs WHERE (?1 = '' OR instr(model, ?1) > 0) AND (?2 = '' OR method = ?2) "
            "AND (?3 = '' OR status = ?3) AND (?4 = '' OR EXISTS (SELECT 1 FROM run_tasks t "
            "WHERE t.run_id = runs.id AND t.task = ?4)) ORDER BY id"));
    query.bind(1, filter.model).bind(2, filter.method);
    query.bind(3, filter.status ? runStatusName(*filter.status) : "").bind(4, filter.task);
    std::vector<RunRecord> runs;
    for (;;) {
        LOWBIT_TRY(bool row, query.step());
        if (!row)
            return runs;
        LOWBIT_TRY(RunRecord run, readRun(query));
        runs.push_back(std::move(run));
    }
}

Status RunStore::deleteRun(int64_t runId) {
    LOWBIT_TRY(Transaction transaction, Transaction::begin(m_db));
    LOWBIT_TRY(Statement query,
               m_db.prepare("SELECT status, host, pid, pid_start, boot_id FROM runs WHERE id = ?"));
    query.bind(1, runId);
    LOWBIT_TRY(bool found, query.step());
    if (!found)
        return makeError(ErrorCode::NotFound,
                         "run " + std::to_string(runId) + " does not exist in " + path().string());
    LOWBIT_TRY(RunStatus status, parseRunStatus(query.text(0)));
    const ProcessIdentity owner = readOwner(query, 1);
    // Also when this process owns it: a runner here may be executing it right now.
    if ((status == RunStatus::Running || status == RunStatus::Queued) && owner.alive())
        return makeError(ErrorCode::InvalidArgument, "run " + std::to_string(runId) + " is " +
                                                         runStatusName(status) + " in process " +
                                                         std::to_string(owner.pid) + " on " +
                                                         owner.host + "; cancel it first");
    LOWBIT_TRY(Statement remove, m_db.prepare("DELETE FROM runs WHERE id = ?"));
    remove.bind(1, runId);
    LOWBIT_CHECK(remove.run());
    return transaction.commit();
}

Result<std::vector<RunTaskRecord>> RunStore::runTasks(int64_t runId) const {
    LOWBIT_CHECK(requireRun(runId));
    LOWBIT_TRY(
        Statement query,
        m_db.prepare(
            "SELECT ordinal, task, task_key, options_json, status, protocol_json, dataset_id, "
            "(SELECT count(*) FROM samples s WHERE s.run_id = t.run_id AND s.task = t.task) "
            "FROM run_tasks t WHERE run_id = ? ORDER BY ordinal"));
    query.bind(1, runId);
    std::vector<RunTaskRecord> tasks;
    for (;;) {
        LOWBIT_TRY(bool row, query.step());
        if (!row)
            return tasks;
        RunTaskRecord task;
        task.runId = runId;
        task.ordinal = int(query.integer(0));
        task.task = query.text(1);
        task.key = query.text(2);
        task.options = parseStored(query.text(3));
        LOWBIT_TRY(task.state, parseTaskState(query.text(4)));
        task.protocol = parseStored(query.text(5));
        if (!query.isNull(6))
            task.datasetId = query.integer(6);
        task.samples = query.integer(7);
        tasks.push_back(std::move(task));
    }
}

Status RunStore::startTask(int64_t runId, const std::string &task, const json &protocol,
                           std::optional<int64_t> datasetId) {
    LOWBIT_TRY(Statement update,
               m_db.prepare("UPDATE run_tasks SET status = 'running', protocol_json = ?, "
                            "dataset_id = ? WHERE run_id = ? AND task = ?"));
    update.bind(1, protocol.dump()).bind(2, datasetId).bind(3, runId).bind(4, task);
    LOWBIT_CHECK(update.run());
    if (m_db.changes() == 0)
        return makeError(ErrorCode::NotFound,
                         "run " + std::to_string(runId) + " has no task '" + task + "'");
    return {};
}

Status RunStore::failTask(int64_t runId, const std::string &task) {
    LOWBIT_TRY(
        Statement update,
        m_db.prepare("UPDATE run_tasks SET status = 'failed' WHERE run_id = ? AND task = ?"));
    update.bind(1, runId).bind(2, task);
    return update.run();
}

Result<std::optional<int64_t>> RunStore::findMeasured(const std::string &checkpointHash,
                                                      const std::string &methodKey,
                                                      const std::string &taskKey) const {
    LOWBIT_TRY(Statement query,
               m_db.prepare("SELECT r.id FROM runs r JOIN run_tasks t ON t.run_id = r.id WHERE "
                            "r.checkpoint_hash = ? AND r.method_key = ? AND t.task_key = ? AND "
                            "t.status = 'done' ORDER BY r.id DESC LIMIT 1"));
    query.bind(1, checkpointHash).bind(2, methodKey).bind(3, taskKey);
    LOWBIT_TRY(bool found, query.step());
    if (!found)
        return std::optional<int64_t>();
    return std::optional<int64_t>(query.integer(0));
}

Status RunStore::log(int64_t runId, const std::string &level, const std::string &message) {
    LOWBIT_TRY(Statement insert,
               m_db.prepare(std::string("INSERT INTO run_log (run_id, at, level, message) "
                                        "VALUES (?, ") +
                            kNow + ", ?, ?)"));
    insert.bind(1, runId).bind(2, level).bind(3, message);
    return insert.run();
}

Result<std::vector<LogLine>> RunStore::logLines(int64_t runId, int limit) const {
    LOWBIT_TRY(
        Statement query,
        m_db.prepare("SELECT at, level, message FROM (SELECT id, at, level, message FROM run_log "
                     "WHERE run_id = ? ORDER BY id DESC LIMIT ?) ORDER BY id"));
    query.bind(1, runId).bind(2, limit > 0 ? int64_t(limit) : int64_t(-1));
    std::vector<LogLine> lines;
    for (;;) {
        LOWBIT_TRY(bool row, query.step());
        if (!row)
            return lines;
        lines.push_back({query.text(0), query.text(1), query.text(2)});
    }
}

} // namespace lowbit
