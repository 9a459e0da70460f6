// MainWindow: the workbench's top-level window. It only creates the panels and wires their
// signals together and to the menus, title and status bar; the panels hold all behaviour.
//
//   docks (left): Model, Method, Tasks        centre tabs: Runs, Charts, Layer errors, Compare,
//                                                          Sweep
//   dock (bottom): Jobs (queue + log)
//
// Window geometry and dock layout are saved on close and restored on start (QSettings).
#pragma once

#include "core/result.h"

#include <QMainWindow>

#include <vector>

class QTabWidget;

namespace lowbit::ui {

class CompareView;
class JobQueue;
class LayerErrorMap;
class MethodPanel;
class MetricChart;
class ModelPanel;
class RunsBrowser;
class RunsModel;
class SweepPanel;
class TasksPanel;

class MainWindow : public QMainWindow {
    Q_OBJECT
public:
    explicit MainWindow(QWidget *parent = nullptr);
    ~MainWindow() override;

    ModelPanel *modelPanel() const { return m_modelPanel; }
    MethodPanel *methodPanel() const { return m_methodPanel; }
    TasksPanel *tasksPanel() const { return m_tasksPanel; }
    JobQueue *jobQueue() const { return m_jobQueue; }
    RunsModel *runsModel() const { return m_runsModel; }
    RunsBrowser *runsBrowser() const { return m_runsBrowser; }
    MetricChart *chart() const { return m_chart; }
    CompareView *compareView() const { return m_compareView; }
    LayerErrorMap *layerErrors() const { return m_layerErrors; }
    QTabWidget *views() const { return m_views; }
    SweepPanel *sweepPanel() const { return m_sweepPanel; }

public slots:
    // Queues one job per method spec of the panels; returns the new run ids (errors: status bar).
    std::vector<int64_t> runExperiment();
    // The runs selected in the browser (else those compared) with the chart and comparison.
    Status exportReport(const QString &path);
    // Re-reads the settings: database, data folder (tasks list), runner.
    void applySettings();

protected:
    void closeEvent(QCloseEvent *event) override;

private:
    void buildDocks();
    void buildMenus();
    void wirePanels();
    void showError(const QString &message);
    std::vector<int64_t> reportRuns() const;

    ModelPanel *m_modelPanel = nullptr;
    MethodPanel *m_methodPanel = nullptr;
    TasksPanel *m_tasksPanel = nullptr;
    JobQueue *m_jobQueue = nullptr;
    RunsModel *m_runsModel = nullptr;
    RunsBrowser *m_runsBrowser = nullptr;
    MetricChart *m_chart = nullptr;
    CompareView *m_compareView = nullptr;
    LayerErrorMap *m_layerErrors = nullptr;
    QTabWidget *m_views = nullptr;
    SweepPanel *m_sweepPanel = nullptr;
};

} // namespace lowbit::ui
