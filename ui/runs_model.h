// RunsModel: every stored run as table rows, one per (run, task), with the task's headline metric
// (ppl for perplexity tasks, acc for accuracy tasks, else the first one stored). Read from the
// store on reload(); the charts and the runs browser share it.
//
// GUI thread only; reload() opens the database read-only for the duration of the call.
#pragma once

#include "core/result.h"
#include "run_records.h"

#include <QAbstractTableModel>
#include <QDateTime>

#include <filesystem>
#include <optional>
#include <vector>

namespace lowbit::ui {

struct RunRow {
    int64_t runId = 0;
    QString model;  // checkpoint file or folder name
    QString method; // "none", "rtn", ...
    int bits = 0;   // 0 for the FP baseline
    int64_t groupSize = 0;
    QString task;
    QString metric; // empty when the task has no metric yet
    std::optional<double> value;
    double stderr_ = 0;
    RunStatus status = RunStatus::Queued;
    QDateTime created;
    double sizeGb = 0; // the quantized artifact, else the checkpoint; 0 when unknown
};

class RunsModel : public QAbstractTableModel {
    Q_OBJECT
public:
    enum Column {
        IdColumn,
        ModelColumn,
        MethodColumn,
        BitsColumn,
        GroupColumn,
        TaskColumn,
        MetricColumn,
        ValueColumn,
        StatusColumn,
        DateColumn,
        ColumnCount
    };
    static constexpr int kRunIdRole = Qt::UserRole + 1;

    using QAbstractTableModel::QAbstractTableModel;

    Status reload(const std::filesystem::path &database);
    const std::vector<RunRow> &rows() const { return m_rows; }

    int rowCount(const QModelIndex &parent = {}) const override;
    int columnCount(const QModelIndex &parent = {}) const override;
    // DisplayRole: text; EditRole: the sortable value (numbers as numbers, dates as QDateTime).
    QVariant data(const QModelIndex &index, int role) const override;
    QVariant headerData(int section, Qt::Orientation orientation, int role) const override;

private:
    std::vector<RunRow> m_rows;
};

// The headline metric of a task's metrics: "ppl", else "acc", else the first.
const MetricValue *headlineMetric(const std::vector<const MetricValue *> &metrics);

} // namespace lowbit::ui
