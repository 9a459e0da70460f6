// JobQueue: the live job queue. Owns the JobRunner (its engine threads run the jobs; nothing
// heavy runs on the GUI thread), shows each job with a progress bar, phase, tokens/s and ETA,
// and offers cancel, retry (the stored spec again as a new run) and resume (an interrupted,
// failed or cancelled run continues after its last committed sample). A log pane below shows
// job events and, when a job ends, its log lines from the store.
//
// Threading: the runner's listener runs on engine threads. It drops progress events that come
// sooner than kProgressIntervalMs after the last one forwarded for that run (so at most ~10
// updates/s reach the GUI), and forwards the rest as queued calls into this object; every slot
// and signal here runs on the GUI thread. The destructor cancels running jobs and joins the
// engine threads before the widgets go.
#pragma once

#include "core/result.h"
#include "job_queue_model.h"

#include <QWidget>

#include <filesystem>
#include <memory>

class QPlainTextEdit;
class QPushButton;
class QTableView;

namespace lowbit::ui {

class JobQueue : public QWidget {
    Q_OBJECT
public:
    static constexpr int kProgressIntervalMs = 100;

    explicit JobQueue(QWidget *parent = nullptr);
    ~JobQueue() override;

    // (Re)starts the runner on this database; running jobs of the previous one are cancelled.
    void setDatabase(const std::filesystem::path &database, PipelineContext context);
    const std::filesystem::path &database() const { return m_database; }

    // Stores and queues the job. Tasks already measured for this checkpoint and method are
    // skipped (reported in the log); the result's runId is empty when nothing was left to run.
    Result<Submission> submit(const JobSpec &spec, bool force = false);
    Status resume(int64_t runId);
    Status retry(int64_t runId);
    void cancel(int64_t runId);

    JobQueueModel *model() const { return m_model; }
    size_t activeJobs() const;
    QString logText() const;

signals:
    void jobFinished(qint64 runId, int status); // status: a lowbit::RunStatus
    void runsChanged();

private:
    void onEvent(const JobEvent &event);
    void appendLog(const QString &line);
    void appendStoredLog(int64_t runId);
    int64_t selectedRun() const;
    void updateButtons();

    std::filesystem::path m_database;
    std::unique_ptr<JobRunner> m_runner;
    JobQueueModel *m_model = nullptr;
    QTableView *m_view = nullptr;
    QPlainTextEdit *m_log = nullptr;
    QPushButton *m_cancel = nullptr;
    QPushButton *m_retry = nullptr;
    QPushButton *m_resume = nullptr;
};

} // namespace lowbit::ui
