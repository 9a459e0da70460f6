#include "tasks_panel.h"

#include "task.h"
#include "workbench_settings.h"

#include <QHeaderView>
#include <QTableWidget>
#include <QVBoxLayout>

namespace lowbit::ui {
namespace {

QTableWidgetItem *numberItem(int value, const QString &tooltip) {
    auto *item = new QTableWidgetItem;
    item->setData(Qt::EditRole, value); // int: the default delegate edits with a spin box
    item->setToolTip(tooltip);
    return item;
}

} // namespace

TasksPanel::TasksPanel(QWidget *parent) : QWidget(parent) {
    m_table = new QTableWidget(0, ColumnCount, this);
    m_table->setObjectName(QStringLiteral("tasks"));
    m_table->setHorizontalHeaderLabels(
        {tr("Task"), tr("Limit"), tr("Shots"), tr("Context"), tr("Data")});
    m_table->horizontalHeader()->setStretchLastSection(true);
    m_table->verticalHeader()->hide();
    auto *layout = new QVBoxLayout(this);
    layout->setContentsMargins(0, 0, 0, 0);
    layout->addWidget(m_table);
    connect(m_table, &QTableWidget::itemChanged, this, &TasksPanel::changed);
}

void TasksPanel::reload(const std::filesystem::path &dataDir) {
    const QSignalBlocker blocker(m_table);
    m_table->setRowCount(0);
    const std::vector<TaskInfo> tasks = listTasks(dataDir);
    m_table->setRowCount(int(tasks.size()));
    for (int row = 0; row < int(tasks.size()); ++row) {
        const TaskInfo &info = tasks[size_t(row)];
        auto *name = new QTableWidgetItem(toQString(info.name));
        name->setFlags(Qt::ItemIsEnabled | Qt::ItemIsUserCheckable | Qt::ItemIsSelectable);
        name->setCheckState(Qt::Unchecked);
        name->setToolTip(toQString(info.description));
        QStringList files;
        for (const auto &file : info.dataFiles)
            files << toQString(file.string());
        auto *data = new QTableWidgetItem(info.dataFound ? tr("found") : tr("missing"));
        data->setFlags(Qt::ItemIsEnabled);
        data->setToolTip(files.join('\n'));
        if (!info.dataFound)
            data->setForeground(Qt::red);
        m_table->setItem(row, NameColumn, name);
        m_table->setItem(row, LimitColumn, numberItem(0, tr("Documents to evaluate (0: all)")));
        m_table->setItem(row, ShotsColumn, numberItem(-1, tr("Few-shot examples (-1: default)")));
        m_table->setItem(row, ContextColumn, numberItem(0, tr("Context tokens (0: default)")));
        m_table->setItem(row, DataColumn, data);
    }
    m_table->resizeColumnsToContents();
    emit changed();
}

std::vector<TaskSpec> TasksPanel::taskSpecs() const {
    std::vector<TaskSpec> specs;
    for (int row = 0; row < m_table->rowCount(); ++row) {
        if (m_table->item(row, NameColumn)->checkState() != Qt::Checked)
            continue;
        TaskSpec spec;
        spec.name = m_table->item(row, NameColumn)->text().toStdString();
        spec.limit = qMax(0, m_table->item(row, LimitColumn)->data(Qt::EditRole).toInt());
        spec.shots = qMax(-1, m_table->item(row, ShotsColumn)->data(Qt::EditRole).toInt());
        spec.contextTokens = qMax(0, m_table->item(row, ContextColumn)->data(Qt::EditRole).toInt());
        specs.push_back(spec);
    }
    return specs;
}

int TasksPanel::rowOf(const QString &name) const {
    for (int row = 0; row < m_table->rowCount(); ++row)
        if (m_table->item(row, NameColumn)->text() == name)
            return row;
    return -1;
}

bool TasksPanel::setTaskChecked(const QString &name, bool checked) {
    const int row = rowOf(name);
    if (row >= 0)
        m_table->item(row, NameColumn)->setCheckState(checked ? Qt::Checked : Qt::Unchecked);
    return row >= 0;
}

bool TasksPanel::setTaskLimit(const QString &name, int limit) {
    const int row = rowOf(name);
    if (row >= 0)
        m_table->item(row, LimitColumn)->setData(Qt::EditRole, limit);
    return row >= 0;
}

bool TasksPanel::setTaskContext(const QString &name, int contextTokens) {
    const int row = rowOf(name);
    if (row >= 0)
        m_table->item(row, ContextColumn)->setData(Qt::EditRole, contextTokens);
    return row >= 0;
}

QString TasksPanel::dataState(const QString &name) const {
    const int row = rowOf(name);
    return row >= 0 ? m_table->item(row, DataColumn)->text() : QString();
}

} // namespace lowbit::ui
