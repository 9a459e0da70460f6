#include "job_queue_model.h"

#include "workbench_settings.h"

#include <cmath>

namespace lowbit::ui {
namespace {

QString etaText(double seconds) {
    if (seconds < 0)
        return QString();
    const qint64 s = qint64(std::llround(seconds));
    return s >= 3600 ? QStringLiteral("%1:%2:%3")
                           .arg(s / 3600)
                           .arg(s / 60 % 60, 2, 10, QChar('0'))
                           .arg(s % 60, 2, 10, QChar('0'))
                     : QStringLiteral("%1:%2").arg(s / 60).arg(s % 60, 2, 10, QChar('0'));
}

int percentOf(const JobRow &job) {
    if (job.status == RunStatus::Done)
        return 100;
    if (job.total <= 0)
        return -1;
    return int(std::clamp<int64_t>(job.done * 100 / job.total, 0, 100));
}

} // namespace

int JobQueueModel::rowCount(const QModelIndex &parent) const {
    return parent.isValid() ? 0 : int(m_jobs.size());
}

int JobQueueModel::columnCount(const QModelIndex &parent) const {
    return parent.isValid() ? 0 : ColumnCount;
}

QVariant JobQueueModel::data(const QModelIndex &index, int role) const {
    if (!checkIndex(index, CheckIndexOption::IndexIsValid | CheckIndexOption::ParentIsInvalid))
        return {};
    const JobRow &job = m_jobs[size_t(index.row())];
    if (role == kPercentRole && index.column() == ProgressColumn)
        return percentOf(job);
    if (role == Qt::ToolTipRole)
        return job.message.isEmpty() ? QVariant() : QVariant(job.message);
    if (role != Qt::DisplayRole)
        return {};
    switch (index.column()) {
    case RunColumn: return qlonglong(job.runId);
    case JobColumn: return job.label;
    case StatusColumn: return QString::fromLatin1(runStatusName(job.status));
    case PhaseColumn: return job.phase;
    case ProgressColumn: {
        const int percent = percentOf(job);
        return percent < 0 ? QString() : QStringLiteral("%1%").arg(percent);
    }
    case SpeedColumn:
        return job.tokensPerSecond > 0 ? QString::number(job.tokensPerSecond, 'f', 0) : QString();
    case EtaColumn: return job.status == RunStatus::Running ? etaText(job.etaSeconds) : QString();
    }
    return {};
}

QVariant JobQueueModel::headerData(int section, Qt::Orientation orientation, int role) const {
    if (orientation != Qt::Horizontal || role != Qt::DisplayRole || section < 0 ||
        section >= ColumnCount)
        return QAbstractTableModel::headerData(section, orientation, role);
    static const char *const kNames[] = {"Run",      "Job",      "Status", "Phase",
                                         "Progress", "Tokens/s", "ETA"};
    return tr(kNames[section]);
}

int JobQueueModel::rowOf(int64_t runId) const {
    for (size_t i = 0; i < m_jobs.size(); ++i)
        if (m_jobs[i].runId == runId)
            return int(i);
    return -1;
}

void JobQueueModel::addJob(int64_t runId, const QString &label) {
    const int row = rowOf(runId);
    if (row >= 0) {
        JobRow &job = m_jobs[size_t(row)];
        job = JobRow{.runId = runId, .label = label.isEmpty() ? job.label : label};
        emit dataChanged(index(row, 0), index(row, ColumnCount - 1));
        return;
    }
    beginInsertRows({}, int(m_jobs.size()), int(m_jobs.size()));
    m_jobs.push_back(JobRow{.runId = runId, .label = label});
    endInsertRows();
}

void JobQueueModel::apply(const JobEvent &event) {
    int row = rowOf(event.runId);
    if (row < 0) {
        addJob(event.runId, QStringLiteral("run %1").arg(event.runId));
        row = rowOf(event.runId);
    }
    JobRow &job = m_jobs[size_t(row)];
    switch (event.kind) {
    case JobEvent::Kind::Queued: job.status = RunStatus::Queued; break;
    case JobEvent::Kind::Started:
        job.status = RunStatus::Running;
        job.message.clear();
        break;
    case JobEvent::Kind::Progress:
        job.status = RunStatus::Running;
        job.phase = toQString(event.progress.phase);
        job.done = event.progress.done;
        job.total = event.progress.total;
        job.tokensPerSecond = event.progress.tokensPerSecond;
        job.etaSeconds = event.progress.etaSeconds;
        break;
    case JobEvent::Kind::Finished:
        job.status = event.status;
        job.message = toQString(event.message);
        job.etaSeconds = -1;
        break;
    }
    emit dataChanged(index(row, 0), index(row, ColumnCount - 1));
}

const JobRow *JobQueueModel::job(int64_t runId) const {
    const int row = rowOf(runId);
    return row < 0 ? nullptr : &m_jobs[size_t(row)];
}

} // namespace lowbit::ui
