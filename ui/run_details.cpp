#include "run_details.h"

#include "loss_chart.h"
#include "pipeline/engine_finetune.h"
#include "run_store.h"
#include "workbench_settings.h"

#include <QDialogButtonBox>
#include <QHeaderView>
#include <QLabel>
#include <QPlainTextEdit>
#include <QTabWidget>
#include <QTableWidget>
#include <QVBoxLayout>

namespace lowbit::ui {
namespace {

QTableWidget *makeTable(const QStringList &headers, QWidget *parent) {
    auto *table = new QTableWidget(0, int(headers.size()), parent);
    table->setHorizontalHeaderLabels(headers);
    table->setEditTriggers(QAbstractItemView::NoEditTriggers);
    table->horizontalHeader()->setStretchLastSection(true);
    table->verticalHeader()->hide();
    return table;
}

void addRow(QTableWidget *table, const QStringList &cells) {
    const int row = table->rowCount();
    table->insertRow(row);
    for (int column = 0; column < cells.size(); ++column) {
        auto *item = new QTableWidgetItem(cells[column]);
        item->setToolTip(cells[column].left(2000));
        table->setItem(row, column, item);
    }
}

QString correctText(int correct) {
    return correct < 0 ? QString() : correct ? QStringLiteral("✓") : QStringLiteral("✗");
}

} // namespace

RunDetails::RunDetails(const std::filesystem::path &database, int64_t runId, QWidget *parent)
    : QDialog(parent), m_database(database), m_runId(runId) {
    setWindowTitle(tr("Run %1").arg(runId));
    resize(820, 560);
    m_tabs = new QTabWidget(this);
    auto *buttons = new QDialogButtonBox(QDialogButtonBox::Close, this);
    connect(buttons, &QDialogButtonBox::rejected, this, &QDialog::reject);
    auto *layout = new QVBoxLayout(this);
    layout->addWidget(m_tabs);
    layout->addWidget(buttons);
    m_refresh.setInterval(kRefreshMs);
    connect(&m_refresh, &QTimer::timeout, this, &RunDetails::refreshTraining);
    load(database, runId);
}

void RunDetails::refreshTraining() {
    auto store = RunStore::open(m_database, {.readOnly = true});
    if (!store.ok())
        return; // keep what is shown; the next tick tries again
    if (auto steps = store->trainingSteps(m_runId); steps.ok() && m_loss)
        m_loss->setSteps(std::move(steps).value());
    auto run = store->run(m_runId);
    if (!run.ok() || (run->status != RunStatus::Queued && run->status != RunStatus::Running))
        m_refresh.stop();
}

void RunDetails::load(const std::filesystem::path &database, int64_t runId) {
    auto store = RunStore::open(database, {.readOnly = true});
    auto run = store.ok() ? store->run(runId) : Result<RunRecord>(store.error());
    if (!run.ok()) {
        m_tabs->addTab(new QLabel(toQString(run.error().toString()), this), tr("Error"));
        return;
    }
    nlohmann::json summary = {{"id", run->id},
                              {"status", runStatusName(run->status)},
                              {"error", run->error},
                              {"created", run->createdAt},
                              {"finished", run->finishedAt},
                              {"host", run->host},
                              {"engine", run->engineVersion + " " + run->engineCommit},
                              {"phase_seconds", run->phaseSeconds},
                              {"spec", run->spec}};
    auto *spec = new QPlainTextEdit(toQString(summary.dump(2)), this);
    spec->setObjectName(QStringLiteral("runSpec"));
    spec->setReadOnly(true);
    m_tabs->addTab(spec, tr("Spec"));

    auto *metrics =
        makeTable({tr("Task"), tr("Metric"), tr("Value"), tr("± stderr"), tr("n")}, this);
    metrics->setObjectName(QStringLiteral("runMetrics"));
    if (auto values = store->metrics(runId); values.ok())
        for (const StoredMetric &m : *values)
            addRow(metrics,
                   {toQString(m.task), toQString(m.metric.name),
                    QString::number(m.metric.value, 'g', 8),
                    QString::number(m.metric.stderr_, 'g', 4), QString::number(m.metric.n)});
    m_tabs->addTab(metrics, tr("Metrics"));

    auto steps = store->trainingSteps(runId);
    const bool active = run->status == RunStatus::Queued || run->status == RunStatus::Running;
    if ((steps.ok() && !steps->empty()) || (active && isFinetuneMethod(run->method))) {
        m_loss = new LossChart(this);
        m_loss->setObjectName(QStringLiteral("lossChart"));
        m_loss->setSteps(steps.ok() ? std::move(steps).value() : std::vector<TrainingStepRecord>());
        m_tabs->addTab(m_loss, tr("Training"));
        if (active)
            m_refresh.start();
    }

    auto tasks = store->runTasks(runId);
    if (!tasks.ok())
        return;
    for (const RunTaskRecord &task : *tasks) {
        auto *samples = makeTable({tr("Document"), tr("Prompt hash"), tr("Target"), tr("Output"),
                                   tr("Correct"), tr("Tokens"), tr("NLL")},
                                  this);
        samples->setObjectName(QStringLiteral("samples_%1").arg(toQString(task.task)));
        if (auto rows = store->samples(runId, task.task); rows.ok())
            for (const SampleRecord &s : *rows)
                addRow(samples, {toQString(s.docId), toQString(s.promptHash.substr(0, 12)),
                                 toQString(s.target), toQString(s.output), correctText(s.correct),
                                 QString::number(s.tokens), QString::number(s.nll, 'g', 8)});
        m_tabs->addTab(samples, tr("Samples: %1").arg(toQString(task.task)));
    }
}

} // namespace lowbit::ui
