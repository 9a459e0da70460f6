// RunDetails: one run's spec (JSON), status and phases, metrics, per task the stored samples
// (document, prompt hash, target, output, correct, tokens, NLL), and for a fine-tuning run its
// training curve (a "Training" tab with the loss chart). A non-modal dialog; it reads the store
// read-only when built; while the run is queued or running it re-reads the training steps every
// kRefreshMs, so the loss curve grows as the run trains.
#pragma once

#include <QDialog>
#include <QTimer>

#include <filesystem>

class QTableWidget;
class QTabWidget;

namespace lowbit::ui {

class LossChart;

class RunDetails : public QDialog {
    Q_OBJECT
public:
    RunDetails(const std::filesystem::path &database, int64_t runId, QWidget *parent = nullptr);

    static constexpr int kRefreshMs = 2000;

    QTabWidget *tabs() const { return m_tabs; }
    // The training curve; null for a run that neither trains nor stored training steps.
    LossChart *lossChart() const { return m_loss; }
    bool refreshing() const { return m_refresh.isActive(); }
    // Re-reads the training steps and the run's status (stops refreshing once it finished).
    void refreshTraining();

private:
    void load(const std::filesystem::path &database, int64_t runId);
    std::filesystem::path m_database;
    int64_t m_runId = 0;
    QTabWidget *m_tabs = nullptr;
    LossChart *m_loss = nullptr;
    QTimer m_refresh;
};

} // namespace lowbit::ui
