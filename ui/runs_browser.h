// RunsBrowser: the stored runs (RunsModel) in a sortable table behind a QSortFilterProxyModel; the
// filter box matches any column. Actions on the selection: details, delete, resume, compare.
//
// GUI thread only. The model is shared: the browser does not own it.
#pragma once

#include <QWidget>

#include <filesystem>
#include <vector>

class QLineEdit;
class QSortFilterProxyModel;
class QTableView;

namespace lowbit::ui {

class RunsModel;

class RunsBrowser : public QWidget {
    Q_OBJECT
public:
    RunsBrowser(RunsModel *model, QWidget *parent = nullptr);

    void setDatabase(const std::filesystem::path &database) { m_database = database; }
    // Selected run ids, each once, in view order.
    std::vector<int64_t> selectedRuns() const;
    void selectRuns(const std::vector<int64_t> &runIds);
    void setFilterText(const QString &text);
    QSortFilterProxyModel *proxy() const { return m_proxy; }

public slots:
    void refresh();
    void showDetails(qint64 runId);
    // Asks, then deletes the selected runs from the store. `confirm` false: no dialog (tests).
    void deleteSelected(bool confirm = true);

signals:
    void compareRequested(const std::vector<int64_t> &runIds);
    void resumeRequested(qint64 runId);
    // The first selected run changed (0: none selected).
    void currentRunChanged(qint64 runId);
    void errorOccurred(const QString &message);

private:
    RunsModel *m_model = nullptr;
    QSortFilterProxyModel *m_proxy = nullptr;
    QTableView *m_view = nullptr;
    QLineEdit *m_filter = nullptr;
    std::filesystem::path m_database;
};

} // namespace lowbit::ui
