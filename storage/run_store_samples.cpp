// RunStore: samples and metrics.
#include "run_store.h"

#include <cmath>

namespace lowbit {

using nlohmann::json;

namespace {

// Non-finite values cannot live in JSON or (NaN) in a NOT NULL REAL column: refuse them with the
// document named rather than store something that reads back differently.
Status checkFinite(const SampleRecord &sample, const std::string &task) {
    bool finite = std::isfinite(sample.nll);
    for (double ll : sample.choiceLogLikelihoods)
        finite = finite && std::isfinite(ll);
    if (!finite)
        return makeError(ErrorCode::InvalidArgument,
                         "task '" + task + "', document '" + sample.docId +
                             "': non-finite NLL or log-likelihood, not stored");
    return {};
}

} // namespace

Status RunStore::appendSamples(int64_t runId, const std::string &task,
                               std::span<const SampleRecord> samples) {
    if (samples.empty())
        return {};
    LOWBIT_TRY(Transaction transaction, Transaction::begin(m_db));
    LOWBIT_TRY(
        Statement insert,
        m_db.prepare(
            "INSERT INTO samples (run_id, task, doc_id, doc_hash, prompt_hash, target, output, "
            "choice_ll_json, correct, tokens, nll, extra_json) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"));
    for (const SampleRecord &s : samples) {
        LOWBIT_CHECK(checkFinite(s, task));
        insert.bind(1, runId)
            .bind(2, task)
            .bind(3, s.docId)
            .bind(4, s.docHash)
            .bind(5, s.promptHash);
        insert.bind(6, s.target).bind(7, s.output).bind(8, json(s.choiceLogLikelihoods).dump());
        insert.bind(9, int64_t(s.correct))
            .bind(10, s.tokens)
            .bind(11, s.nll)
            .bind(12, s.extra.dump());
        Status status = insert.run();
        if (!status.ok()) {
            Error error = status.error();
            if (error.code == ErrorCode::InvalidArgument)
                error.message = "task '" + task + "' produced document '" + s.docId +
                                "' twice (or run " + std::to_string(runId) +
                                " is gone): " + error.message;
            return error;
        }
        LOWBIT_CHECK(insert.reset());
    }
    LOWBIT_TRY(Statement beat, m_db.prepare("UPDATE runs SET heartbeat_at = "
                                            "strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ?"));
    beat.bind(1, runId);
    LOWBIT_CHECK(beat.run());
    return transaction.commit();
}

Result<std::vector<SampleRecord>> RunStore::samples(int64_t runId, const std::string &task) const {
    LOWBIT_TRY(
        Statement query,
        m_db.prepare(
            "SELECT doc_id, doc_hash, prompt_hash, target, output, choice_ll_json, correct, "
            "tokens, nll, extra_json FROM samples WHERE run_id = ? AND task = ? ORDER BY rowid"));
    query.bind(1, runId).bind(2, task);
    std::vector<SampleRecord> samples;
    for (;;) {
        LOWBIT_TRY(bool row, query.step());
        if (!row)
            return samples;
        SampleRecord s;
        s.docId = query.text(0);
        s.docHash = query.text(1);
        s.promptHash = query.text(2);
        s.target = query.text(3);
        s.output = query.text(4);
        const json lls = json::parse(query.text(5), nullptr, false);
        if (!lls.is_array())
            return makeError(ErrorCode::Format, path().string() + ": run " + std::to_string(runId) +
                                                    ", document '" + s.docId +
                                                    "': unreadable log-likelihoods");
        for (const json &ll : lls)
            s.choiceLogLikelihoods.push_back(ll.is_number() ? ll.get<double>() : NAN);
        s.correct = int(query.integer(6));
        s.tokens = query.integer(7);
        s.nll = query.real(8);
        s.extra = json::parse(query.text(9), nullptr, false);
        if (s.extra.is_discarded())
            s.extra = json::object();
        samples.push_back(std::move(s));
    }
}

Result<std::set<std::string>> RunStore::sampleDocIds(int64_t runId, const std::string &task) const {
    LOWBIT_TRY(Statement query,
               m_db.prepare("SELECT doc_id FROM samples WHERE run_id = ? AND task = ?"));
    query.bind(1, runId).bind(2, task);
    std::set<std::string> ids;
    for (;;) {
        LOWBIT_TRY(bool row, query.step());
        if (!row)
            return ids;
        ids.insert(query.text(0));
    }
}

Status RunStore::completeTask(int64_t runId, const std::string &task,
                              std::span<const MetricValue> metrics) {
    LOWBIT_TRY(Transaction transaction, Transaction::begin(m_db));
    LOWBIT_TRY(Statement remove, m_db.prepare("DELETE FROM metrics WHERE run_id = ? AND task = ?"));
    remove.bind(1, runId).bind(2, task);
    LOWBIT_CHECK(remove.run());
    LOWBIT_TRY(Statement insert,
               m_db.prepare("INSERT INTO metrics (run_id, task, metric, value, stderr, n) "
                            "VALUES (?, ?, ?, ?, ?, ?)"));
    for (const MetricValue &m : metrics) {
        if (!std::isfinite(m.value))
            return makeError(ErrorCode::InvalidArgument, "task '" + task + "': metric '" + m.name +
                                                             "' is not finite, not stored");
        insert.bind(1, runId).bind(2, task).bind(3, m.name).bind(4, m.value);
        if (std::isfinite(m.stderr_))
            insert.bind(5, m.stderr_);
        else
            insert.bindNull(5);
        insert.bind(6, m.n);
        LOWBIT_CHECK(insert.run());
        LOWBIT_CHECK(insert.reset());
    }
    LOWBIT_TRY(Statement done,
               m_db.prepare("UPDATE run_tasks SET status = 'done' WHERE run_id = ? AND task = ?"));
    done.bind(1, runId).bind(2, task);
    LOWBIT_CHECK(done.run());
    if (m_db.changes() == 0)
        return makeError(ErrorCode::NotFound,
                         "run " + std::to_string(runId) + " has no task '" + task + "'");
    return transaction.commit();
}

Result<std::vector<StoredMetric>> RunStore::metrics(int64_t runId) const {
    LOWBIT_TRY(
        Statement query,
        m_db.prepare(
            "SELECT m.task, m.metric, m.value, m.stderr, m.n FROM metrics m JOIN run_tasks t "
            "ON t.run_id = m.run_id AND t.task = m.task WHERE m.run_id = ? "
            "ORDER BY t.ordinal, m.rowid"));
    query.bind(1, runId);
    std::vector<StoredMetric> metrics;
    for (;;) {
        LOWBIT_TRY(bool row, query.step());
        if (!row)
            return metrics;
        StoredMetric m;
        m.task = query.text(0);
        m.metric.name = query.text(1);
        m.metric.value = query.real(2);
        m.metric.stderr_ = query.isNull(3) ? 0.0 : query.real(3);
        m.metric.n = query.integer(4);
        metrics.push_back(std::move(m));
    }
}

} // namespace lowbit
