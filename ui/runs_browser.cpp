#include "runs_browser.h"

#include "run_details.h"
#include "run_store.h"
#include "runs_model.h"
#include "workbench_settings.h"

#include <QHBoxLayout>
#include <QHeaderView>
#include <QLineEdit>
#include <QMessageBox>
#include <QPushButton>
#include <QSortFilterProxyModel>
#include <QTableView>
#include <QVBoxLayout>

#include <algorithm>

namespace lowbit::ui {

RunsBrowser::RunsBrowser(RunsModel *model, QWidget *parent) : QWidget(parent), m_model(model) {
    m_proxy = new QSortFilterProxyModel(this);
    m_proxy->setSourceModel(m_model);
    m_proxy->setSortRole(Qt::EditRole);
    m_proxy->setFilterKeyColumn(-1);
    m_proxy->setFilterCaseSensitivity(Qt::CaseInsensitive);
    m_filter = new QLineEdit(this);
    m_filter->setObjectName(QStringLiteral("runsFilter"));
    m_filter->setPlaceholderText(tr("Filter runs (model, method, task, status…)"));
    m_filter->setClearButtonEnabled(true);
    m_view = new QTableView(this);
    m_view->setObjectName(QStringLiteral("runsTable"));
    m_view->setModel(m_proxy);
    m_view->setSortingEnabled(true);
    m_view->sortByColumn(RunsModel::IdColumn, Qt::DescendingOrder);
    m_view->setSelectionBehavior(QAbstractItemView::SelectRows);
    m_view->setSelectionMode(QAbstractItemView::ExtendedSelection);
    m_view->horizontalHeader()->setStretchLastSection(true);
    m_view->verticalHeader()->hide();

    auto *details = new QPushButton(tr("Details…"), this);
    auto *compare = new QPushButton(tr("Compare"), this);
    compare->setToolTip(tr("Compare the selected runs (the first selected is the baseline)"));
    auto *resume = new QPushButton(tr("Resume"), this);
    auto *remove = new QPushButton(tr("Delete"), this);
    auto *buttons = new QHBoxLayout;
    buttons->addWidget(m_filter, 1);
    buttons->addWidget(details);
    buttons->addWidget(compare);
    buttons->addWidget(resume);
    buttons->addWidget(remove);
    auto *layout = new QVBoxLayout(this);
    layout->setContentsMargins(0, 0, 0, 0);
    layout->addLayout(buttons);
    layout->addWidget(m_view);

    connect(m_filter, &QLineEdit::textChanged, this, &RunsBrowser::setFilterText);
    connect(m_view->selectionModel(), &QItemSelectionModel::selectionChanged, this, [this] {
        const auto runs = selectedRuns();
        emit currentRunChanged(runs.empty() ? 0 : runs.front());
    });
    connect(details, &QPushButton::clicked, this, [this] {
        const auto runs = selectedRuns();
        if (!runs.empty())
            showDetails(runs.front());
    });
    connect(m_view, &QTableView::doubleClicked, this, [this](const QModelIndex &index) {
        showDetails(index.data(RunsModel::kRunIdRole).toLongLong());
    });
    connect(compare, &QPushButton::clicked, this, [this] {
        const auto runs = selectedRuns();
        if (runs.size() < 2)
            emit errorOccurred(tr("Select at least two runs to compare"));
        else
            emit compareRequested(runs);
    });
    connect(resume, &QPushButton::clicked, this, [this] {
        for (int64_t run : selectedRuns())
            emit resumeRequested(run);
    });
    connect(remove, &QPushButton::clicked, this, [this] { deleteSelected(true); });
}

std::vector<int64_t> RunsBrowser::selectedRuns() const {
    std::vector<int64_t> runs;
    for (const QModelIndex &index : m_view->selectionModel()->selectedRows()) {
        const int64_t id = index.data(RunsModel::kRunIdRole).toLongLong();
        if (std::find(runs.begin(), runs.end(), id) == runs.end())
            runs.push_back(id);
    }
    return runs;
}

void RunsBrowser::selectRuns(const std::vector<int64_t> &runIds) {
    m_view->clearSelection();
    for (int row = 0; row < m_proxy->rowCount(); ++row) {
        const QModelIndex index = m_proxy->index(row, 0);
        const int64_t id = index.data(RunsModel::kRunIdRole).toLongLong();
        if (std::find(runIds.begin(), runIds.end(), id) != runIds.end())
            m_view->selectionModel()->select(index, QItemSelectionModel::Select |
                                                        QItemSelectionModel::Rows);
    }
}

void RunsBrowser::setFilterText(const QString &text) {
    if (m_filter->text() != text)
        m_filter->setText(text);
    m_proxy->setFilterFixedString(text);
}

void RunsBrowser::refresh() {
    const auto selected = selectedRuns();
    if (Status status = m_model->reload(m_database); !status.ok())
        emit errorOccurred(toQString(status.error().toString()));
    selectRuns(selected);
}

void RunsBrowser::showDetails(qint64 runId) {
    if (runId <= 0)
        return;
    auto *dialog = new RunDetails(m_database, runId, this);
    dialog->setAttribute(Qt::WA_DeleteOnClose);
    dialog->show();
}

void RunsBrowser::deleteSelected(bool confirm) {
    const auto runs = selectedRuns();
    if (runs.empty())
        return;
    if (confirm && QMessageBox::question(this, tr("Delete runs"),
                                         tr("Delete %n run(s) with their samples?", nullptr,
                                            int(runs.size()))) != QMessageBox::Yes)
        return;
    auto store = RunStore::open(m_database);
    if (!store.ok()) {
        emit errorOccurred(toQString(store.error().toString()));
        return;
    }
    for (int64_t run : runs)
        if (Status status = store->deleteRun(run); !status.ok())
            emit errorOccurred(toQString(status.error().toString()));
    refresh();
}

} // namespace lowbit::ui
