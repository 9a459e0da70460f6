#include "sweep_panel.h"

#include "sweep/sweep_local.h"
#include "workbench_settings.h"

#include <QCoreApplication>
#include <QFileDialog>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QLabel>
#include <QPushButton>
#include <QStandardItemModel>
#include <QTableView>
#include <QTimer>
#include <QVBoxLayout>
#include <QtConcurrent>


namespace lowbit::ui {

using namespace lowbit::sweep;

namespace {

// A spec is planned and its folder written, so that "Run here" and "Submit" find the task specs.
Result<SweepPlan> loadPlan(const std::filesystem::path &path) {
    LOWBIT_TRY(SweepPlan plan, loadSweep(path));
    if (path != plan.manifestPath())
        LOWBIT_CHECK(writePlan(plan));
    return plan;
}

} // namespace

SweepPanel::SweepPanel(QWidget *parent) : QWidget(parent) {
    m_model = new QStandardItemModel(0, kColumns, this);
    m_model->setHorizontalHeaderLabels(
        {tr("#"), tr("Stage"), tr("Task"), tr("State"), tr("Slurm job"), tr("Detail")});
    m_view = new QTableView(this);
    m_view->setModel(m_model);
    m_view->setEditTriggers(QAbstractItemView::NoEditTriggers);
    m_view->setSelectionBehavior(QAbstractItemView::SelectRows);
    m_view->verticalHeader()->hide();
    m_view->horizontalHeader()->setStretchLastSection(true);
    m_summary = new QLabel(tr("Open a sweep spec (File > Open sweep, or the button)."), this);
    m_summary->setWordWrap(true);
    m_open = new QPushButton(tr("&Open sweep…"), this);
    m_runHere = new QPushButton(tr("Run &here"), this);
    m_submit = new QPushButton(tr("Submit to &Slurm"), this);
    m_cancel = new QPushButton(tr("&Cancel"), this);
    m_retry = new QPushButton(tr("Re&try"), this);
    m_collect = new QPushButton(tr("C&ollect results"), this);
    m_submit->setObjectName(QStringLiteral("submitToSlurm"));
    m_runHere->setObjectName(QStringLiteral("runHere"));
    auto *buttons = new QHBoxLayout;
    for (QPushButton *button : {m_open, m_runHere, m_submit, m_cancel, m_retry, m_collect})
        buttons->addWidget(button);
    buttons->addStretch(1);
    auto *layout = new QVBoxLayout(this);
    layout->addWidget(m_summary);
    layout->addLayout(buttons);
    layout->addWidget(m_view, 1);
    m_watcher = new QFutureWatcher<int>(this);
    m_timer = new QTimer(this);
    m_timer->setInterval(kRefreshMs);

    const auto report = [this](const Status &status) {
        if (!status.ok())
            emit errorOccurred(toQString(status.error().message));
    };
    connect(m_open, &QPushButton::clicked, this, [this, report] {
        const QString path = QFileDialog::getOpenFileName(this, tr("Open sweep spec"), {},
                                                          tr("Sweep specs (*.json)"));
        if (!path.isEmpty())
            report(openSweep(path.toStdString()));
    });
    connect(m_runHere, &QPushButton::clicked, this, [this, report] { report(runHere()); });
    connect(m_submit, &QPushButton::clicked, this, [this, report] { report(submitToSlurm()); });
    connect(m_cancel, &QPushButton::clicked, this, [this, report] { report(cancel()); });
    connect(m_retry, &QPushButton::clicked, this, [this, report] { report(retry()); });
    connect(m_collect, &QPushButton::clicked, this, [this] {
        if (auto collected = collect(); !collected.ok())
            emit errorOccurred(toQString(collected.error().message));
    });
    connect(m_timer, &QTimer::timeout, this, [this, report] { report(refresh()); });
    connect(m_watcher, &QFutureWatcher<int>::finished, this, [this, report] {
        const int failed = m_watcher->result();
        report(refresh());
        if (failed > 0)
            emit errorOccurred(
                tr("%n sweep task(s) failed; Retry runs them again", nullptr, failed));
        updateButtons();
        emit localRunFinished();
    });
    updateButtons();
}

SweepPanel::~SweepPanel() {
    m_stop.request_stop();
    m_watcher->waitForFinished();
}

void SweepPanel::setDatabase(const std::filesystem::path &database, PipelineContext context) {
    m_database = database;
    m_context = std::move(context);
}

Status SweepPanel::openSweep(const std::filesystem::path &path) {
    if (runningHere())
        return makeError(ErrorCode::InvalidArgument,
                         "a sweep is running here; cancel it before opening another");
    LOWBIT_TRY(SweepPlan plan, loadPlan(path));
    m_plan = std::move(plan);
    m_model->setRowCount(0);
    for (const SweepTask &task : m_plan->tasks) {
        QList<QStandardItem *> row;
        for (int c = 0; c < kColumns; ++c)
            row.append(new QStandardItem);
        row[kIndex]->setData(task.index, Qt::DisplayRole);
        row[kStage]->setText(stageName(task.stage));
        row[kTask]->setText(toQString(task.label));
        m_model->appendRow(row);
    }
    m_active = true; // read the states once at least
    return refresh();
}

bool SweepPanel::runningHere() const {
    return m_watcher->isRunning();
}

bool SweepPanel::hasSlurmSubmissions() const {
    return m_plan && !m_plan->submissions.empty();
}

void SweepPanel::startLocal(std::vector<int> indices) {
    m_stop = std::stop_source();
    const SweepPlan plan = *m_plan;
    const PipelineContext context = m_context;
    const std::stop_token stop = m_stop.get_token();
    m_watcher->setFuture(QtConcurrent::run([plan, context, stop, indices] {
        NullProgress progress;
        int failed = 0;
        for (const LocalOutcome &outcome : runLocal(plan, context, progress, stop, indices))
            failed += outcome.status.ok() ? 0 : 1;
        return failed;
    }));
    m_active = true;
    m_timer->start();
    updateButtons();
}

Status SweepPanel::runHere() {
    if (!m_plan)
        return makeError(ErrorCode::InvalidArgument, "open a sweep first");
    if (runningHere())
        return makeError(ErrorCode::InvalidArgument, "the sweep is already running here");
    startLocal({}); // done tasks are skipped
    return {};
}

Status SweepPanel::submitToSlurm() {
    if (!m_plan)
        return makeError(ErrorCode::InvalidArgument, "open a sweep first");
    LOWBIT_TRY(SlurmClient client, SlurmClient::detect());
    std::filesystem::path lowbit = m_plan->spec.slurm.lowbit;
    if (lowbit.empty()) // the workbench is the lowbit binary
        lowbit = QCoreApplication::applicationFilePath().toStdString();
    LOWBIT_TRY(auto submitted, sweep::submitToSlurm(*m_plan, client, lowbit));
    (void)submitted;
    m_active = true;
    m_timer->start();
    return refresh();
}

Status SweepPanel::cancel() {
    if (runningHere()) {
        m_stop.request_stop();
        return {};
    }
    if (!hasSlurmSubmissions())
        return makeError(ErrorCode::InvalidArgument, "nothing to cancel");
    LOWBIT_TRY(SlurmClient client, SlurmClient::detect());
    LOWBIT_CHECK(cancelSweep(*m_plan, client));
    return refresh();
}

Status SweepPanel::retry() {
    if (!m_plan)
        return makeError(ErrorCode::InvalidArgument, "open a sweep first");
    if (!hasSlurmSubmissions())
        return runHere();
    LOWBIT_TRY(SlurmClient client, SlurmClient::detect());
    std::filesystem::path lowbit = m_plan->spec.slurm.lowbit;
    if (lowbit.empty())
        lowbit = QCoreApplication::applicationFilePath().toStdString();
    LOWBIT_TRY(auto submitted, retrySweep(*m_plan, client, lowbit));
    (void)submitted;
    m_active = true;
    m_timer->start();
    return refresh();
}

Result<CollectReport> SweepPanel::collect() {
    if (!m_plan)
        return makeError(ErrorCode::InvalidArgument, "open a sweep first");
    if (m_database.empty())
        return makeError(ErrorCode::InvalidArgument, "no database set");
    LOWBIT_TRY(RunStore store, RunStore::open(m_database));
    LOWBIT_TRY(CollectReport report, collectSweep(*m_plan, store));
    const MergeReport &m = report.merged;
    m_summary->setText(tr("Collected into %1: %2 run(s) new, %3 already there, %4 conflict(s).")
                           .arg(toQString(m_database.string()))
                           .arg(m.runsImported)
                           .arg(m.runsPresent)
                           .arg(m.conflicts.size()));
    for (const std::string &conflict : m.conflicts)
        emit errorOccurred(toQString(conflict));
    if (m.runsImported > 0)
        emit runsChanged();
    return report;
}

Status SweepPanel::refresh() {
    if (!m_plan)
        return {};
    std::optional<SlurmClient> client;
    if (hasSlurmSubmissions()) {
        auto detected = SlurmClient::detect();
        if (detected.ok())
            client = *detected;
    }
    LOWBIT_TRY(auto states, sweepStatus(*m_plan, client ? &*client : nullptr));
    showStates(states);
    const bool busy = std::any_of(states.begin(), states.end(), [](const SweepTaskStatus &s) {
        return s.state == "pending" || s.state == "running";
    });
    m_active = busy || runningHere();
    if (!m_active)
        m_timer->stop();
    updateButtons();
    return {};
}

void SweepPanel::showStates(const std::vector<SweepTaskStatus> &states) {
    int done = 0;
    for (const SweepTaskStatus &s : states) {
        if (s.index >= m_model->rowCount())
            continue;
        m_model->item(s.index, kState)->setText(toQString(s.state));
        m_model->item(s.index, kJob)->setText(toQString(s.jobId));
        m_model->item(s.index, kDetail)->setText(toQString(s.detail));
        done += s.state == "done" ? 1 : 0;
    }
    if (m_plan)
        m_summary->setText(tr("Sweep %1 in %2: %3 of %4 task(s) done%5.")
                               .arg(toQString(m_plan->spec.name))
                               .arg(toQString(m_plan->spec.output.string()))
                               .arg(done)
                               .arg(states.size())
                               .arg(runningHere() ? tr(", running here") : QString()));
}

void SweepPanel::updateButtons() {
    const bool open = m_plan.has_value(), here = runningHere();
    const auto slurm = SlurmClient::detect();
    m_open->setEnabled(!here);
    m_runHere->setEnabled(open && !here);
    m_submit->setEnabled(open && !here && slurm.ok());
    m_submit->setToolTip(slurm.ok() ? tr("sbatch one job array per stage")
                                    : toQString(slurm.error().message));
    m_cancel->setEnabled(here || hasSlurmSubmissions());
    m_retry->setEnabled(open && !here);
    m_collect->setEnabled(open);
}

} // namespace lowbit::ui
