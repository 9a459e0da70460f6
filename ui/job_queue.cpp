#include "job_queue.h"

#include "workbench_settings.h"

#include <QApplication>
#include <QDateTime>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QPainter>
#include <QPlainTextEdit>
#include <QPushButton>
#include <QSplitter>
#include <QStyledItemDelegate>
#include <QTableView>
#include <QVBoxLayout>

#include <chrono>
#include <map>
#include <mutex>

namespace lowbit::ui {
namespace {

// Draws the progress column as a progress bar (busy-less: an unknown total shows empty).
class ProgressDelegate : public QStyledItemDelegate {
public:
    using QStyledItemDelegate::QStyledItemDelegate;
    void paint(QPainter *painter, const QStyleOptionViewItem &option,
               const QModelIndex &index) const override {
        const int percent = index.data(JobQueueModel::kPercentRole).toInt();
        QStyleOptionProgressBar bar;
        bar.rect = option.rect.adjusted(2, 2, -2, -2);
        bar.minimum = 0;
        bar.maximum = 100;
        bar.progress = qMax(0, percent);
        bar.text = percent < 0 ? QString() : QStringLiteral("%1%").arg(percent);
        bar.textVisible = true;
        bar.state = option.state | QStyle::State_Horizontal;
        QApplication::style()->drawControl(QStyle::CE_ProgressBar, &bar, painter);
    }
};

// Shared with the listener (engine threads): the last forward time per run.
struct Throttle {
    std::mutex mutex;
    std::map<int64_t, std::chrono::steady_clock::time_point> last;

    bool admit(int64_t runId) {
        const auto now = std::chrono::steady_clock::now();
        std::lock_guard lock(mutex);
        auto &at = last[runId];
        if (now - at < std::chrono::milliseconds(JobQueue::kProgressIntervalMs))
            return false;
        at = now;
        return true;
    }
};

QString jobLabel(const JobSpec &spec) {
    QString method = toQString(spec.method.name);
    if (!spec.method.isNone())
        method += QStringLiteral(" w%1").arg(spec.method.bits) +
                  (spec.method.groupSize > 0 ? QStringLiteral(" g%1").arg(spec.method.groupSize)
                                             : QString());
    QStringList tasks;
    for (const TaskSpec &task : spec.tasks)
        tasks << toQString(task.name);
    return QStringLiteral("%1 · %2 · %3")
        .arg(toQString(spec.checkpoint.filename().string()), method, tasks.join(','));
}

} // namespace

JobQueue::JobQueue(QWidget *parent) : QWidget(parent) {
    m_model = new JobQueueModel(this);
    m_view = new QTableView(this);
    m_view->setObjectName(QStringLiteral("jobQueue"));
    m_view->setModel(m_model);
    m_view->setItemDelegateForColumn(JobQueueModel::ProgressColumn, new ProgressDelegate(m_view));
    m_view->setSelectionBehavior(QAbstractItemView::SelectRows);
    m_view->setSelectionMode(QAbstractItemView::SingleSelection);
    m_view->horizontalHeader()->setSectionResizeMode(JobQueueModel::JobColumn,
                                                     QHeaderView::Stretch);
    m_view->verticalHeader()->hide();
    m_log = new QPlainTextEdit(this);
    m_log->setObjectName(QStringLiteral("jobLog"));
    m_log->setReadOnly(true);
    m_log->setMaximumBlockCount(5000);
    m_cancel = new QPushButton(tr("Cancel"), this);
    m_retry = new QPushButton(tr("Retry"), this);
    m_retry->setToolTip(tr("Run the same spec again as a new run"));
    m_resume = new QPushButton(tr("Resume"), this);
    m_resume->setToolTip(tr("Continue the run after its last stored sample"));

    auto *buttons = new QHBoxLayout;
    buttons->addWidget(m_cancel);
    buttons->addWidget(m_retry);
    buttons->addWidget(m_resume);
    buttons->addStretch();
    auto *top = new QWidget(this);
    auto *topLayout = new QVBoxLayout(top);
    topLayout->setContentsMargins(0, 0, 0, 0);
    topLayout->addWidget(m_view);
    topLayout->addLayout(buttons);
    auto *split = new QSplitter(Qt::Vertical, this);
    split->addWidget(top);
    split->addWidget(m_log);
    auto *layout = new QVBoxLayout(this);
    layout->setContentsMargins(0, 0, 0, 0);
    layout->addWidget(split);

    connect(m_cancel, &QPushButton::clicked, this, [this] { cancel(selectedRun()); });
    connect(m_retry, &QPushButton::clicked, this, [this] {
        if (Status status = retry(selectedRun()); !status.ok())
            appendLog(toQString(status.error().toString()));
    });
    connect(m_resume, &QPushButton::clicked, this, [this] {
        if (Status status = resume(selectedRun()); !status.ok())
            appendLog(toQString(status.error().toString()));
    });
    connect(m_view->selectionModel(), &QItemSelectionModel::selectionChanged, this,
            &JobQueue::updateButtons);
    connect(m_model, &QAbstractItemModel::dataChanged, this, &JobQueue::updateButtons);
    updateButtons();
}

JobQueue::~JobQueue() {
    m_runner.reset(); // cancels and joins: no listener call outlives this object
}

void JobQueue::setDatabase(const std::filesystem::path &database, PipelineContext context) {
    m_runner.reset();
    m_database = database;
    auto throttle = std::make_shared<Throttle>();
    auto listener = [this, throttle](const JobEvent &event) {
        if (event.kind == JobEvent::Kind::Progress && !throttle->admit(event.runId))
            return;
        QMetaObject::invokeMethod(
            this, [this, event] { onEvent(event); }, Qt::QueuedConnection);
    };
    m_runner = std::make_unique<JobRunner>(database, std::move(context), listener);
}

Result<Submission> JobQueue::submit(const JobSpec &spec, bool force) {
    if (!m_runner)
        return makeError(ErrorCode::InvalidArgument, "no run database is open");
    Result<Submission> submission = m_runner->submit(spec, force);
    if (!submission.ok()) {
        appendLog(tr("Not queued: %1").arg(toQString(submission.error().toString())));
        return submission;
    }
    for (const AlreadyMeasured &skipped : submission->skipped)
        appendLog(
            tr("%1 already measured in run %2").arg(toQString(skipped.task)).arg(skipped.runId));
    if (submission->runId) {
        m_model->addJob(*submission->runId, jobLabel(spec));
        appendLog(tr("Run %1 queued: %2").arg(*submission->runId).arg(jobLabel(spec)));
        emit runsChanged();
    }
    return submission;
}

Status JobQueue::resume(int64_t runId) {
    if (!m_runner || runId <= 0)
        return makeError(ErrorCode::InvalidArgument, "no run selected");
    LOWBIT_CHECK(m_runner->resume(runId));
    m_model->addJob(runId, QString());
    appendLog(tr("Run %1 resumed").arg(runId));
    return {};
}

Status JobQueue::retry(int64_t runId) {
    if (!m_runner || runId <= 0)
        return makeError(ErrorCode::InvalidArgument, "no run selected");
    LOWBIT_TRY(RunStore store, RunStore::open(m_database, {.readOnly = true}));
    LOWBIT_TRY(RunRecord run, store.run(runId));
    LOWBIT_TRY(JobSpec spec, parseJobSpec(run.spec));
    LOWBIT_TRY(Submission submission, submit(spec, true));
    (void)submission;
    return {};
}

void JobQueue::cancel(int64_t runId) {
    if (m_runner && runId > 0) {
        m_runner->cancel(runId);
        appendLog(tr("Run %1: cancel requested").arg(runId));
    }
}

size_t JobQueue::activeJobs() const {
    return m_runner ? m_runner->activeJobs() : 0;
}

QString JobQueue::logText() const {
    return m_log->toPlainText();
}

void JobQueue::onEvent(const JobEvent &event) {
    m_model->apply(event);
    if (event.kind == JobEvent::Kind::Started)
        appendLog(tr("Run %1 started").arg(event.runId));
    if (event.kind != JobEvent::Kind::Finished)
        return;
    appendLog(tr("Run %1 %2%3")
                  .arg(event.runId)
                  .arg(QString::fromLatin1(runStatusName(event.status)))
                  .arg(event.message.empty() ? QString() : ": " + toQString(event.message)));
    appendStoredLog(event.runId);
    emit jobFinished(event.runId, int(event.status));
    emit runsChanged();
}

void JobQueue::appendLog(const QString &line) {
    m_log->appendPlainText(QStringLiteral("%1  %2").arg(
        QTime::currentTime().toString(QStringLiteral("HH:mm:ss")), line));
}

void JobQueue::appendStoredLog(int64_t runId) {
    auto store = RunStore::open(m_database, {.readOnly = true});
    if (!store.ok())
        return;
    auto lines = store->logLines(runId, 50);
    if (!lines.ok())
        return;
    for (const LogLine &line : *lines)
        m_log->appendPlainText(QStringLiteral("    [%1] %2 %3")
                                   .arg(runId)
                                   .arg(toQString(line.level), toQString(line.message)));
}

int64_t JobQueue::selectedRun() const {
    const QModelIndexList rows = m_view->selectionModel()->selectedRows();
    return rows.isEmpty() ? 0 : m_model->jobAt(rows.first().row()).runId;
}

void JobQueue::updateButtons() {
    const JobRow *job = m_model->job(selectedRun());
    const bool active =
        job && (job->status == RunStatus::Queued || job->status == RunStatus::Running);
    m_cancel->setEnabled(active);
    m_retry->setEnabled(job && !active);
    m_resume->setEnabled(job && isResumable(job->status));
}

} // namespace lowbit::ui
