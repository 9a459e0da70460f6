#include "main_window.h"

#include "compare_view.h"
#include "experiment.h"
#include "job_queue.h"
#include "layer_error_map.h"
#include "method_panel.h"
#include "metric_chart.h"
#include "model_panel.h"
#include "report_export.h"
#include "runs_browser.h"
#include "runs_model.h"
#include "settings_dialog.h"
#include "sweep_panel.h"
#include "tasks_panel.h"
#include "workbench_settings.h"

#include <QAction>
#include <QApplication>
#include <QCloseEvent>
#include <QDockWidget>
#include <QFileDialog>
#include <QFileInfo>
#include <QMenuBar>
#include <QSettings>
#include <QStatusBar>
#include <QTabWidget>
#include <QToolBar>

namespace lowbit::ui {
namespace {

constexpr const char *kGeometryKey = "mainWindow/geometry";
constexpr const char *kStateKey = "mainWindow/state";

QDockWidget *dock(const QString &title, const QString &name, QWidget *content, QWidget *parent) {
    auto *widget = new QDockWidget(title, parent);
    widget->setObjectName(name); // saveState() needs object names
    widget->setWidget(content);
    return widget;
}

} // namespace

MainWindow::MainWindow(QWidget *parent) : QMainWindow(parent) {
    setWindowTitle(tr("lowbit workbench"));
    resize(1280, 800);
    m_runsModel = new RunsModel(this);
    m_views = new QTabWidget(this);
    m_views->setObjectName(QStringLiteral("views"));
    m_runsBrowser = new RunsBrowser(m_runsModel, m_views);
    m_chart = new MetricChart(m_views);
    m_compareView = new CompareView(m_views);
    m_layerErrors = new LayerErrorMap(m_views);
    m_views->addTab(m_runsBrowser, tr("&Runs"));
    m_views->addTab(m_chart, tr("C&harts"));
    m_views->addTab(m_layerErrors, tr("&Layer errors"));
    m_views->addTab(m_compareView, tr("Co&mpare"));
    m_sweepPanel = new SweepPanel(m_views);
    m_views->addTab(m_sweepPanel, tr("S&weep"));
    setCentralWidget(m_views);
    buildDocks();
    buildMenus();
    wirePanels();
    applySettings();
    QSettings settings;
    restoreGeometry(settings.value(kGeometryKey).toByteArray());
    restoreState(settings.value(kStateKey).toByteArray());
}

MainWindow::~MainWindow() = default;

void MainWindow::buildDocks() {
    m_modelPanel = new ModelPanel(this);
    m_methodPanel = new MethodPanel(this);
    m_tasksPanel = new TasksPanel(this);
    m_jobQueue = new JobQueue(this);
    addDockWidget(Qt::LeftDockWidgetArea, dock(tr("Model"), "modelDock", m_modelPanel, this));
    addDockWidget(Qt::LeftDockWidgetArea, dock(tr("Method"), "methodDock", m_methodPanel, this));
    addDockWidget(Qt::LeftDockWidgetArea, dock(tr("Tasks"), "tasksDock", m_tasksPanel, this));
    addDockWidget(Qt::BottomDockWidgetArea, dock(tr("Jobs"), "jobsDock", m_jobQueue, this));
}

void MainWindow::buildMenus() {
    QMenu *file = menuBar()->addMenu(tr("&File"));
    QAction *openFile =
        file->addAction(tr("&Open checkpoint file…"), m_modelPanel, &ModelPanel::chooseFile);
    openFile->setShortcut(QKeySequence::Open);
    file->addAction(tr("Open checkpoint &folder…"), m_modelPanel, &ModelPanel::chooseFolder);
    file->addSeparator();
    QAction *report = file->addAction(tr("&Export report…"), this, [this] {
        const QString path = QFileDialog::getSaveFileName(
            this, tr("Export report"), QString(),
            tr("HTML (*.html);;PDF (*.pdf);;CSV (*.csv);;JSON (*.json);;Markdown (*.md)"));
        if (!path.isEmpty())
            if (Status status = exportReport(path); !status.ok())
                showError(toQString(status.error().toString()));
    });
    report->setShortcut(QKeySequence(tr("Ctrl+E")));
    file->addAction(tr("Export &chart…"), this, [this] {
        const QString path = QFileDialog::getSaveFileName(
            this, tr("Export chart"), QString(), tr("PNG (*.png);;PDF (*.pdf);;SVG (*.svg)"));
        if (!path.isEmpty())
            if (Status status = m_chart->exportTo(path); !status.ok())
                showError(toQString(status.error().toString()));
    });
    QAction *settings = file->addAction(tr("&Settings…"), this, [this] {
        SettingsDialog dialog(this);
        if (dialog.exec() == QDialog::Accepted)
            applySettings();
    });
    settings->setShortcut(QKeySequence::Preferences);
    file->addSeparator();
    QAction *quit = file->addAction(tr("&Quit"), qApp, &QApplication::quit);
    quit->setShortcut(QKeySequence::Quit);

    QMenu *run = menuBar()->addMenu(tr("&Run"));
    QAction *start = run->addAction(tr("&Run experiment"), this, [this] { runExperiment(); });
    start->setShortcut(QKeySequence(tr("Ctrl+R")));
    QAction *compare = run->addAction(tr("&Compare selected runs"), this, [this] {
        const auto runs = m_runsBrowser->selectedRuns();
        if (runs.size() < 2)
            showError(tr("Select at least two runs to compare"));
        else
            emit m_runsBrowser->compareRequested(runs);
    });
    compare->setShortcut(QKeySequence(tr("Ctrl+K")));
    QAction *refresh = run->addAction(tr("Re&fresh runs"), m_runsBrowser, &RunsBrowser::refresh);
    refresh->setShortcut(QKeySequence::Refresh);

    QToolBar *tools = addToolBar(tr("Main"));
    tools->setObjectName(QStringLiteral("mainToolBar"));
    tools->addAction(openFile);
    tools->addAction(start);
    tools->addAction(compare);
    tools->addAction(report);
}

void MainWindow::wirePanels() {
    connect(m_modelPanel, &ModelPanel::statusChanged, this,
            [this](const QString &text) { statusBar()->showMessage(text.section('\n', 0, 0)); });
    connect(m_modelPanel, &ModelPanel::checkpointLoaded, this,
            [this](const std::shared_ptr<const Checkpoint> &checkpoint) {
                const QString name =
                    QFileInfo(QString::fromStdString(checkpoint->path.string())).fileName();
                setWindowTitle(tr("%1 — lowbit workbench").arg(name));
            });
    connect(m_jobQueue, &JobQueue::runsChanged, m_runsBrowser, &RunsBrowser::refresh);
    connect(m_sweepPanel, &SweepPanel::runsChanged, m_runsBrowser, &RunsBrowser::refresh);
    connect(m_sweepPanel, &SweepPanel::errorOccurred, this, &MainWindow::showError);
    connect(m_runsModel, &QAbstractItemModel::modelReset, this,
            [this] { m_chart->setRows(m_runsModel->rows()); });
    connect(m_runsBrowser, &RunsBrowser::errorOccurred, this, &MainWindow::showError);
    connect(m_runsBrowser, &RunsBrowser::resumeRequested, this, [this](qint64 runId) {
        if (Status status = m_jobQueue->resume(runId); !status.ok())
            showError(toQString(status.error().toString()));
    });
    connect(m_runsBrowser, &RunsBrowser::compareRequested, this,
            [this](const std::vector<int64_t> &runs) {
                m_chart->setSelectedRuns(runs);
                if (Status status = m_compareView->compare(m_jobQueue->database(), runs);
                    !status.ok())
                    showError(toQString(status.error().toString()));
                else
                    m_views->setCurrentWidget(m_compareView);
            });
    connect(m_runsBrowser, &RunsBrowser::currentRunChanged, this, [this](qint64 runId) {
        if (runId > 0)
            if (Status status = m_layerErrors->showRun(m_jobQueue->database(), runId); !status.ok())
                showError(toQString(status.error().toString()));
    });
    connect(m_chart, &MetricChart::runActivated, m_runsBrowser, &RunsBrowser::showDetails);
}

void MainWindow::applySettings() {
    const std::filesystem::path data = dataDir();
    m_tasksPanel->reload(data);
    m_jobQueue->setDatabase(databasePath(), workbenchPipelineContext(data));
    m_runsBrowser->setDatabase(databasePath());
    m_runsBrowser->refresh();
    m_sweepPanel->setDatabase(databasePath(), workbenchPipelineContext(data));
}

std::vector<int64_t> MainWindow::runExperiment() {
    Experiment experiment;
    if (const auto checkpoint = m_modelPanel->checkpoint())
        experiment.checkpoint = checkpoint->path;
    experiment.methods = m_methodPanel->methodSpecs();
    experiment.tasks = m_tasksPanel->taskSpecs();
    experiment.device = engineDevice().toStdString();
    experiment.threads = engineThreads();
    auto specs = jobSpecs(experiment);
    if (!specs.ok()) {
        showError(toQString(specs.error().message));
        return {};
    }
    std::vector<int64_t> runs;
    for (const JobSpec &spec : *specs) {
        auto submission = m_jobQueue->submit(spec);
        if (!submission.ok())
            showError(toQString(submission.error().toString()));
        else if (submission->runId)
            runs.push_back(*submission->runId);
    }
    statusBar()->showMessage(tr("%n run(s) queued", nullptr, int(runs.size())));
    return runs;
}

std::vector<int64_t> MainWindow::reportRuns() const {
    auto runs = m_runsBrowser->selectedRuns();
    return runs.empty() ? m_compareView->runIds() : runs;
}

Status MainWindow::exportReport(const QString &path) {
    const std::vector<int64_t> runs = reportRuns();
    LOWBIT_TRY(RunStore store, RunStore::open(m_jobQueue->database(), {.readOnly = true}));
    const auto &comparison = m_compareView->comparison();
    const QString comparisonText =
        comparison ? toQString(formatComparison(*comparison)) : QString();
    LOWBIT_CHECK(ui::exportReport(store, runs, path, m_chart->pngBytes(), comparisonText));
    statusBar()->showMessage(tr("Report written to %1").arg(path));
    return {};
}

void MainWindow::showError(const QString &message) {
    statusBar()->showMessage(message, 10000);
}

void MainWindow::closeEvent(QCloseEvent *event) {
    QSettings settings;
    settings.setValue(kGeometryKey, saveGeometry());
    settings.setValue(kStateKey, saveState());
    QMainWindow::closeEvent(event);
}

} // namespace lowbit::ui
