// RunStore: the SQLite database of runs (see docs/ARCHITECTURE.md, "Run store").
//
// Opening a store creates or migrates the schema, switches the file to WAL (readers never block
// the writer), enables foreign keys, sets a busy timeout (a writer waits for another process's
// write; it does not fail), and marks runs whose owning process died as `interrupted`.
// Every write is one short BEGIN IMMEDIATE transaction; a failed write (disk full, read-only
// location) is rolled back and leaves stored runs as they were.
//
// Thread affinity: one thread at a time. Threads and processes that share a database each open
// their own RunStore.
#pragma once

#include "core/result.h"
#include "process_identity.h"
#include "run_records.h"
#include "sqlite_database.h"

#include <filesystem>
#include <set>
#include <span>

namespace lowbit {

struct StoreOptions {
    bool readOnly = false; // queries only; nothing is created, migrated or marked
    int busyTimeoutMs = 60000;
    // A run owned by a process on another host counts as dead when its heartbeat is older.
    int foreignHeartbeatTimeoutS = 900;
};

// What RunStore::mergeFrom did (run_store_merge.cpp).
struct MergeReport {
    int runsImported = 0;   // done runs new to this store
    int runsPresent = 0;    // done runs already here with the same results
    int runsUnfinished = 0; // not done in the source (queued, running, failed, ...): left out
    int artifactsImported = 0;
    std::vector<std::string> conflicts; // same run (by origin) with different results: left out
};

class RunStore {
public:
    static Result<RunStore> open(const std::filesystem::path &path,
                                 const StoreOptions &options = {});

    const std::filesystem::path &path() const { return m_db.path(); }
    Database &database() { return m_db; }

    // Runs -------------------------------------------------------------------------------------
    // A new run in state `queued`, with its tasks pending. Returns its id.
    Result<int64_t> createRun(const NewRun &run);
    // Takes a queued or resumable run for this process (state `running`, owner recorded). Errors:
    // the run is done, or running in a live process.
    Status claimRun(int64_t runId, const ProcessIdentity &owner);
    // Ends a run: done, failed (with the error text), cancelled or interrupted.
    Status finishRun(int64_t runId, RunStatus status, const std::string &error = {});
    Status heartbeat(int64_t runId);
    Status addPhaseSeconds(int64_t runId, const std::string &phase, double seconds);
    Status setRunCheckpoint(int64_t runId, int64_t checkpointId);
    // Marks `queued`/`running` runs whose owner is gone as `interrupted`; returns how many.
    Result<int> markStaleRunsInterrupted();

    Result<RunRecord> run(int64_t runId) const;
    Result<std::vector<RunRecord>> listRuns(const RunFilter &filter = {}) const;
    // Deletes a run with its tasks, metrics, samples and log; its artifacts stay (unlinked).
    // Refused while it is queued or running in a live process (this one included).
    Status deleteRun(int64_t runId);

    // Tasks, samples, metrics ------------------------------------------------------------------
    Result<std::vector<RunTaskRecord>> runTasks(int64_t runId) const;
    Status startTask(int64_t runId, const std::string &task, const nlohmann::json &protocol,
                     std::optional<int64_t> datasetId);
    Status failTask(int64_t runId, const std::string &task);
    // Commits a batch of samples in one transaction (all or none).
    Status appendSamples(int64_t runId, const std::string &task,
                         std::span<const SampleRecord> samples);
    // In the order they were stored (= the order the task produced them).
    Result<std::vector<SampleRecord>> samples(int64_t runId, const std::string &task) const;
    Result<std::set<std::string>> sampleDocIds(int64_t runId, const std::string &task) const;
    // Replaces the task's metrics and marks it done, in one transaction.
    Status completeTask(int64_t runId, const std::string &task,
                        std::span<const MetricValue> metrics);
    Result<std::vector<StoredMetric>> metrics(int64_t runId) const;

    // The latest run that finished task `taskKey` on this checkpoint content and method spec.
    Result<std::optional<int64_t>> findMeasured(const std::string &checkpointHash,
                                                const std::string &methodKey,
                                                const std::string &taskKey) const;

    // Training curve (run_store_training.cpp) -------------------------------------------------
    // Stores a batch of steps in one transaction (all or none), replacing steps already stored
    // under the same number (a resumed run reports them again); a tokensPerSecond of 0 keeps the
    // stored value. Non-finite numbers are refused with the step named.
    Status appendTrainingSteps(int64_t runId, std::span<const TrainingStepRecord> steps);
    // Ordered by step; empty for a run that did not train.
    Result<std::vector<TrainingStepRecord>> trainingSteps(int64_t runId) const;

    // Log --------------------------------------------------------------------------------------
    Status log(int64_t runId, const std::string &level, const std::string &message);
    // The last `limit` lines (0: all), oldest first.
    Result<std::vector<LogLine>> logLines(int64_t runId, int limit = 0) const;

    // Checkpoints, datasets, artifacts (run_store_catalog.cpp) ---------------------------------
    // SHA-256 of a file, or for a directory of "relative path, file hash" lines of its regular
    // files (sorted, hidden entries skipped). Each file's hash is cached by path + size + mtime,
    // so an unchanged 16 GB checkpoint is read once. A read-only store computes without caching.
    Result<std::string> contentHash(const std::filesystem::path &path);
    Result<int64_t> registerCheckpoint(const CheckpointRecord &checkpoint);
    Result<CheckpointRecord> checkpoint(int64_t id) const;
    // Hashes (cached) and counts rows once per content; returns the dataset's id.
    Result<int64_t> registerDataset(const std::filesystem::path &path);
    Result<DatasetRecord> dataset(int64_t id) const;
    Result<int64_t> addArtifact(const ArtifactRecord &artifact);
    // The newest artifact of that kind whose file still exists with the recorded size and hash.
    Result<std::optional<ArtifactRecord>> findArtifact(const std::string &checkpointHash,
                                                       const std::string &methodKey,
                                                       const std::string &kind);
    Result<std::vector<ArtifactRecord>> artifacts(int64_t runId) const;

    // Merging (run_store_merge.cpp) ------------------------------------------------------------
    // Imports the done runs of the store at `source` (with their tasks, samples, metrics, log,
    // checkpoint and dataset rows, under new ids) and its artifacts, in one transaction. A run's
    // origin (created_at, host, pid, spec, checkpoint hash, method key) identifies it across
    // stores: one already here is not imported again, so merging twice changes nothing; one here
    // with other results is a conflict (reported, not imported). File-hash cache entries for
    // paths not cached here are copied too. The source is only read.
    Result<MergeReport> mergeFrom(const std::filesystem::path &source);

private:
    RunStore(Database db, StoreOptions options) : m_db(std::move(db)), m_options(options) {}
    Status requireRun(int64_t runId) const;
    Result<std::string> fileHash(const std::filesystem::path &file);
    Database m_db;
    StoreOptions m_options;
};

// Default database file: $LOWBIT_DB, else $XDG_DATA_HOME/lowbit/runs.sqlite, else
// ~/.local/share/lowbit/runs.sqlite (XDG base directory spec).
std::filesystem::path defaultDatabasePath();

} // namespace lowbit
