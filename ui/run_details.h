// RunDetails: one run's spec (JSON), status and phases, metrics, and per task the stored samples
// (document, prompt hash, target, output, correct, tokens, NLL). A non-modal dialog; it reads the
// store once, read-only, when built.
#pragma once

#include <QDialog>

#include <filesystem>

class QTableWidget;
class QTabWidget;

namespace lowbit::ui {

class RunDetails : public QDialog {
    Q_OBJECT
public:
    RunDetails(const std::filesystem::path &database, int64_t runId, QWidget *parent = nullptr);

    QTabWidget *tabs() const { return m_tabs; }

private:
    void load(const std::filesystem::path &database, int64_t runId);
    QTabWidget *m_tabs = nullptr;
};

} // namespace lowbit::ui
