// ModelPanel: opens a checkpoint (Hugging Face folder, .gguf, llama2.c .bin) from a file dialog,
// a drop, or the recent list, loads it off the GUI thread and shows what it holds.
//
// Threading: loadCheckpoint runs on the global QThreadPool; its result comes back through a
// QFutureWatcher owned by the panel, so every slot and signal here runs on the GUI thread. One
// load runs at a time: asking for another while one runs queues it (the newest request wins) and
// the running one's result is dropped. The destructor waits for a running load (loaders cannot
// be interrupted; they only map and validate files).
//
// A failed load keeps the previously loaded checkpoint and shows the loader's message in the
// panel: no dialog, so a burst of bad drops cannot stack modals.
#pragma once

#include "model/checkpoint.h"

#include <QFutureWatcher>
#include <QString>
#include <QWidget>

#include <memory>

class QLabel;
class QListWidget;
class QListWidgetItem;
class QPushButton;
class QTreeWidget;

namespace lowbit::ui {

struct LoadOutcome {
    QString path;
    std::shared_ptr<const Checkpoint> checkpoint; // null on failure
    QString error;                                // loader message on failure
    qint64 elapsedMs = 0;
};

class ModelPanel : public QWidget {
    Q_OBJECT
public:
    enum class State { Empty, Loading, Loaded, Failed };

    // QSettings key of the recent checkpoints list (newest first, at most kMaxRecent).
    static constexpr const char *kRecentKey = "modelPanel/recentCheckpoints";
    static constexpr int kMaxRecent = 10;

    explicit ModelPanel(QWidget *parent = nullptr);
    ~ModelPanel() override;

    State state() const { return m_state; }
    QString statusText() const;
    std::shared_ptr<const Checkpoint> checkpoint() const { return m_checkpoint; }
    // Value shown for a fact label ("Hidden size"), empty when not shown.
    QString factValue(const QString &label) const;

public slots:
    void openCheckpoint(const QString &path);
    void chooseFile();
    void chooseFolder();

signals:
    void checkpointLoaded(std::shared_ptr<const lowbit::Checkpoint> checkpoint);
    void statusChanged(const QString &text);

protected:
    void dragEnterEvent(QDragEnterEvent *event) override;
    void dropEvent(QDropEvent *event) override;

private:
    void startLoad(const QString &path);
    void onLoadFinished();
    void showCheckpoint(const Checkpoint &checkpoint);
    void setStatus(State state, const QString &text);
    void rememberRecent(const QString &path);
    void reloadRecent();
    void onRecentActivated(QListWidgetItem *item);

    QPushButton *m_openFile = nullptr;
    QPushButton *m_openFolder = nullptr;
    QLabel *m_status = nullptr;
    QTreeWidget *m_facts = nullptr;
    QListWidget *m_recent = nullptr;
    QFutureWatcher<LoadOutcome> *m_watcher = nullptr;
    QString m_pendingPath; // requested while a load was running
    State m_state = State::Empty;
    std::shared_ptr<const Checkpoint> m_checkpoint;
};

} // namespace lowbit::ui
