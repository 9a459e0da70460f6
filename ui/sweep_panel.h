// SweepPanel: the workbench's sweep mode (docs/SWEEPS.md). Opens a sweep spec, lists its tasks
// (stage-1 quantize, stage-2 evaluate) with each one's state, and offers "Run here" (the local
// backend) or "Submit to Slurm", then Cancel, Retry and Collect into the workbench's database.
//
// Threading: "Run here" runs sweep::runLocal on one worker thread (QtConcurrent) with a stop
// token; Cancel and the destructor request the stop, and the destructor waits for the worker.
// Task states are re-read on the GUI thread (task databases, and squeue/scontrol for a sweep
// with Slurm submissions) every kRefreshMs while anything is active, and on refresh().
#pragma once

#include "core/result.h"
#include "pipeline/pipeline_context.h"
#include "sweep/sweep_collect.h"
#include "sweep/sweep_plan.h"
#include "sweep/sweep_slurm.h"

#include <QFutureWatcher>
#include <QWidget>

#include <filesystem>
#include <optional>
#include <stop_token>

class QLabel;
class QPushButton;
class QStandardItemModel;
class QTableView;
class QTimer;

namespace lowbit::ui {

class SweepPanel : public QWidget {
    Q_OBJECT
public:
    static constexpr int kRefreshMs = 1000;
    enum Column { kIndex, kStage, kTask, kState, kJob, kDetail, kColumns };

    explicit SweepPanel(QWidget *parent = nullptr);
    ~SweepPanel() override;

    // Where Collect merges, and how "Run here" evaluates (tasks, quantization hooks).
    void setDatabase(const std::filesystem::path &database, PipelineContext context);

    // Reads the spec (or a sweep's manifest.json), writes the plan, lists the tasks.
    Status openSweep(const std::filesystem::path &path);
    Status runHere();
    Status submitToSlurm();
    // Stops "Run here", or scancels the sweep's Slurm arrays.
    Status cancel();
    // Runs again (here) or resubmits (Slurm) what is neither done nor queued nor running.
    Status retry();
    Result<sweep::CollectReport> collect();
    Status refresh();

    bool runningHere() const;
    QStandardItemModel *model() const { return m_model; }
    const std::optional<sweep::SweepPlan> &plan() const { return m_plan; }

signals:
    void runsChanged();      // Collect merged runs into the database
    void localRunFinished(); // "Run here" ended (done, failed or stopped)
    void errorOccurred(const QString &message);

private:
    void startLocal(std::vector<int> indices);
    void showStates(const std::vector<sweep::SweepTaskStatus> &states);
    void updateButtons();
    bool hasSlurmSubmissions() const;

    std::filesystem::path m_database;
    PipelineContext m_context;
    std::optional<sweep::SweepPlan> m_plan;
    std::stop_source m_stop;
    QFutureWatcher<int> *m_watcher = nullptr;
    QStandardItemModel *m_model = nullptr;
    QTableView *m_view = nullptr;
    QLabel *m_summary = nullptr;
    QPushButton *m_open = nullptr, *m_runHere = nullptr, *m_submit = nullptr, *m_cancel = nullptr,
                *m_retry = nullptr, *m_collect = nullptr;
    QTimer *m_timer = nullptr;
    bool m_active = false; // something may still change: refresh on the timer
};

} // namespace lowbit::ui
