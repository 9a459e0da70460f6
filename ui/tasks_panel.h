// TasksPanel: one row per benchmark of the evaluators' registry (listTasks of the data folder):
// a checkbox, limit (0: every document), shots (-1: the task's default), context tokens (0: the
// task's default), and whether its data files were found (tooltip: the paths).
//
// GUI thread only. reload() re-reads the registry (the data folder may have changed).
#pragma once

#include "pipeline/job_spec.h"

#include <QWidget>

#include <filesystem>
#include <vector>

class QTableWidget;

namespace lowbit::ui {

class TasksPanel : public QWidget {
    Q_OBJECT
public:
    enum Column { NameColumn, LimitColumn, ShotsColumn, ContextColumn, DataColumn, ColumnCount };

    explicit TasksPanel(QWidget *parent = nullptr);

    void reload(const std::filesystem::path &dataDir);
    // The ticked tasks, in table order.
    std::vector<TaskSpec> taskSpecs() const;

    // For tests and scripts. Return false when no such task is listed.
    bool setTaskChecked(const QString &name, bool checked);
    bool setTaskLimit(const QString &name, int limit);
    bool setTaskContext(const QString &name, int contextTokens);
    // "found" / "missing", empty when no such task.
    QString dataState(const QString &name) const;
    QTableWidget *table() const { return m_table; }

signals:
    void changed();

private:
    int rowOf(const QString &name) const;

    QTableWidget *m_table = nullptr;
};

} // namespace lowbit::ui
