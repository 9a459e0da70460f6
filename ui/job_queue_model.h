// JobQueueModel: the jobs of this session, one row each (run id, job, status, phase, progress,
// tokens/s, ETA). Fed by JobQueue with JobRunner events that already arrived on the GUI thread.
#pragma once

// JobRunner has a private member named emit, which Qt's `emit` keyword macro would erase.
#pragma push_macro("emit")
#undef emit
#include "pipeline/job_runner.h"
#pragma pop_macro("emit")

#include <QAbstractTableModel>

#include <vector>

namespace lowbit::ui {

struct JobRow {
    int64_t runId = 0;
    QString label;
    RunStatus status = RunStatus::Queued;
    QString phase{};
    int64_t done = 0, total = 0;
    double tokensPerSecond = 0;
    double etaSeconds = -1;
    QString message{}; // the error of a failed job
};

class JobQueueModel : public QAbstractTableModel {
    Q_OBJECT
public:
    enum Column {
        RunColumn,
        JobColumn,
        StatusColumn,
        PhaseColumn,
        ProgressColumn,
        SpeedColumn,
        EtaColumn,
        ColumnCount
    };
    // ProgressColumn's Qt::UserRole: percent done (0..100), -1 when unknown.
    static constexpr int kPercentRole = Qt::UserRole;

    using QAbstractTableModel::QAbstractTableModel;

    int rowCount(const QModelIndex &parent = {}) const override;
    int columnCount(const QModelIndex &parent = {}) const override;
    QVariant data(const QModelIndex &index, int role) const override;
    QVariant headerData(int section, Qt::Orientation orientation, int role) const override;

    // Adds the job, or renames it and marks it queued again (resume, retry of the same run).
    void addJob(int64_t runId, const QString &label);
    void apply(const JobEvent &event);
    const JobRow *job(int64_t runId) const;
    const JobRow &jobAt(int row) const { return m_jobs[size_t(row)]; }

private:
    int rowOf(int64_t runId) const;
    std::vector<JobRow> m_jobs;
};

} // namespace lowbit::ui
