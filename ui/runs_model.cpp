#include "runs_model.h"

#include "run_store.h"
#include "workbench_settings.h"

#include <map>

namespace lowbit::ui {
namespace {

double gigabytes(int64_t bytes) {
    return double(bytes) / 1e9;
}

double runSizeGb(RunStore &store, const RunRecord &run) {
    if (auto artifacts = store.artifacts(run.id); artifacts.ok())
        for (const ArtifactRecord &artifact : *artifacts)
            if (artifact.sizeBytes > 0)
                return gigabytes(artifact.sizeBytes);
    if (run.checkpointId)
        if (auto checkpoint = store.checkpoint(*run.checkpointId); checkpoint.ok())
            return gigabytes(checkpoint->sizeBytes);
    return 0;
}

std::vector<RunRow> rowsOf(RunStore &store, const RunRecord &run) {
    RunRow base;
    base.runId = run.id;
    base.model = toQString(std::filesystem::path(run.model).filename().string());
    base.method = toQString(run.method);
    const nlohmann::json &method = run.spec.value("method", nlohmann::json::object());
    base.bits = method.value("bits", 0);
    base.groupSize = method.value("group_size", int64_t(0));
    base.status = run.status;
    base.created = QDateTime::fromString(toQString(run.createdAt), Qt::ISODate);
    base.sizeGb = runSizeGb(store, run);
    std::map<std::string, std::vector<const MetricValue *>> byTask;
    auto metrics = store.metrics(run.id);
    if (metrics.ok())
        for (const StoredMetric &m : *metrics)
            byTask[m.task].push_back(&m.metric);
    std::vector<RunRow> rows;
    auto tasks = store.runTasks(run.id);
    if (!tasks.ok() || tasks->empty())
        return {base};
    for (const RunTaskRecord &task : *tasks) {
        RunRow row = base;
        row.task = toQString(task.task);
        if (const MetricValue *m = headlineMetric(byTask[task.task])) {
            row.metric = toQString(m->name);
            row.value = m->value;
            row.stderr_ = m->stderr_;
        }
        rows.push_back(row);
    }
    return rows;
}

} // namespace

const MetricValue *headlineMetric(const std::vector<const MetricValue *> &metrics) {
    for (const char *preferred : {"ppl", "acc"})
        for (const MetricValue *m : metrics)
            if (m->name == preferred)
                return m;
    return metrics.empty() ? nullptr : metrics.front();
}

Status RunsModel::reload(const std::filesystem::path &database) {
    std::vector<RunRow> rows;
    if (std::filesystem::exists(database)) {
        LOWBIT_TRY(RunStore store, RunStore::open(database, {.readOnly = true}));
        LOWBIT_TRY(std::vector<RunRecord> runs, store.listRuns());
        for (const RunRecord &run : runs)
            for (RunRow &row : rowsOf(store, run))
                rows.push_back(std::move(row));
    }
    beginResetModel();
    m_rows = std::move(rows);
    endResetModel();
    return {};
}

int RunsModel::rowCount(const QModelIndex &parent) const {
    return parent.isValid() ? 0 : int(m_rows.size());
}

int RunsModel::columnCount(const QModelIndex &parent) const {
    return parent.isValid() ? 0 : ColumnCount;
}

QVariant RunsModel::data(const QModelIndex &index, int role) const {
    if (!checkIndex(index, CheckIndexOption::IndexIsValid | CheckIndexOption::ParentIsInvalid))
        return {};
    const RunRow &row = m_rows[size_t(index.row())];
    if (role == kRunIdRole)
        return qlonglong(row.runId);
    if (role != Qt::DisplayRole && role != Qt::EditRole)
        return {};
    const bool display = role == Qt::DisplayRole;
    switch (index.column()) {
    case IdColumn: return qlonglong(row.runId);
    case ModelColumn: return row.model;
    case MethodColumn: return row.method;
    case BitsColumn: return display && row.bits == 0 ? QStringLiteral("FP") : QVariant(row.bits);
    case GroupColumn:
        return display && row.groupSize <= 0 ? QStringLiteral("–")
                                             : QVariant(qlonglong(row.groupSize));
    case TaskColumn: return row.task;
    case MetricColumn: return row.metric;
    case ValueColumn:
        if (!row.value)
            return display ? QVariant(QString()) : QVariant(qQNaN());
        return display ? QVariant(QString::number(*row.value, 'g', 6)) : QVariant(*row.value);
    case StatusColumn: return QString::fromLatin1(runStatusName(row.status));
    case DateColumn:
        return display ? QVariant(
                             row.created.toLocalTime().toString(QStringLiteral("yyyy-MM-dd HH:mm")))
                       : QVariant(row.created);
    }
    return {};
}

QVariant RunsModel::headerData(int section, Qt::Orientation orientation, int role) const {
    if (orientation != Qt::Horizontal || role != Qt::DisplayRole || section < 0 ||
        section >= ColumnCount)
        return QAbstractTableModel::headerData(section, orientation, role);
    static const char *const kNames[] = {"Run",  "Model",  "Method", "Bits",   "Group",
                                         "Task", "Metric", "Value",  "Status", "Date"};
    return tr(kNames[section]);
}

} // namespace lowbit::ui
