#include "model_panel.h"

#include "checkpoint_facts.h"

#include <QDir>
#include <QDragEnterEvent>
#include <QDropEvent>
#include <QElapsedTimer>
#include <QFileDialog>
#include <QFileInfo>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QLabel>
#include <QListWidget>
#include <QMimeData>
#include <QPushButton>
#include <QSettings>
#include <QTreeWidget>
#include <QVBoxLayout>
#include <QtConcurrent/QtConcurrentRun>

#include <exception>
#include <utility>

namespace lowbit::ui {
namespace {

QString toQString(const std::string &text) {
    return QString::fromUtf8(text.data(), qsizetype(text.size()));
}

// Runs on a pool thread. Exceptions (allocation failure, third-party code) end as an error value
// here, at the job boundary, so the GUI thread only ever sees a LoadOutcome.
LoadOutcome loadOffThread(const QString &path) {
    LoadOutcome outcome;
    outcome.path = path;
    QElapsedTimer timer;
    timer.start();
    try {
        Result<Checkpoint> loaded = loadCheckpoint(std::filesystem::path(path.toStdString()));
        if (loaded.ok())
            outcome.checkpoint = std::make_shared<const Checkpoint>(std::move(loaded).value());
        else
            outcome.error = toQString(loaded.error().toString());
    } catch (const std::exception &e) {
        outcome.error = QStringLiteral("internal: %1: %2").arg(path, QString::fromUtf8(e.what()));
    }
    outcome.elapsedMs = timer.elapsed();
    return outcome;
}

} // namespace

ModelPanel::ModelPanel(QWidget *parent) : QWidget(parent) {
    setAcceptDrops(true);

    m_openFile = new QPushButton(tr("Open file…"), this);
    m_openFile->setToolTip(tr("A GGUF file or a llama2.c .bin checkpoint"));
    m_openFolder = new QPushButton(tr("Open folder…"), this);
    m_openFolder->setToolTip(tr("A Hugging Face checkpoint folder (config.json + safetensors)"));
    auto *buttons = new QHBoxLayout;
    buttons->addWidget(m_openFile);
    buttons->addWidget(m_openFolder);
    buttons->addStretch();

    m_status = new QLabel(this);
    m_status->setObjectName(QStringLiteral("modelStatus"));
    m_status->setWordWrap(true);
    m_status->setTextInteractionFlags(Qt::TextSelectableByMouse);

    m_facts = new QTreeWidget(this);
    m_facts->setObjectName(QStringLiteral("modelFacts"));
    m_facts->setColumnCount(2);
    m_facts->setHeaderLabels({tr("Property"), tr("Value")});
    m_facts->header()->setSectionResizeMode(0, QHeaderView::ResizeToContents);
    m_facts->setRootIsDecorated(true);

    m_recent = new QListWidget(this);
    m_recent->setObjectName(QStringLiteral("recentCheckpoints"));
    m_recent->setMaximumHeight(120);

    auto *layout = new QVBoxLayout(this);
    layout->addLayout(buttons);
    layout->addWidget(m_status);
    layout->addWidget(m_facts, 1);
    layout->addWidget(new QLabel(tr("Recent checkpoints"), this));
    layout->addWidget(m_recent);

    m_watcher = new QFutureWatcher<LoadOutcome>(this);
    connect(m_watcher, &QFutureWatcherBase::finished, this, &ModelPanel::onLoadFinished);
    connect(m_openFile, &QPushButton::clicked, this, &ModelPanel::chooseFile);
    connect(m_openFolder, &QPushButton::clicked, this, &ModelPanel::chooseFolder);
    connect(m_recent, &QListWidget::itemActivated, this, &ModelPanel::onRecentActivated);

    reloadRecent();
    setStatus(State::Empty, tr("Open a checkpoint, or drop a Hugging Face folder, a .gguf or a "
                               "llama2.c .bin here."));
}

ModelPanel::~ModelPanel() {
    // The pool thread holds no pointer into the panel, but waiting keeps shutdown orderly.
    m_watcher->disconnect(this);
    m_watcher->waitForFinished();
}

QString ModelPanel::statusText() const {
    return m_status->text();
}

QString ModelPanel::factValue(const QString &label) const {
    const QList<QTreeWidgetItem *> hits =
        m_facts->findItems(label, Qt::MatchExactly | Qt::MatchRecursive, 0);
    return hits.isEmpty() ? QString() : hits.first()->text(1);
}

void ModelPanel::openCheckpoint(const QString &path) {
    if (path.isEmpty())
        return;
    if (m_watcher->isRunning()) {
        m_pendingPath = path;
        setStatus(State::Loading, tr("Loading %1 (after the current load)…").arg(path));
        return;
    }
    startLoad(path);
}

void ModelPanel::chooseFile() {
    const QString path = QFileDialog::getOpenFileName(
        this, tr("Open checkpoint"), QString(), tr("Checkpoints (*.gguf *.bin);;All files (*)"));
    openCheckpoint(path);
}

void ModelPanel::chooseFolder() {
    openCheckpoint(
        QFileDialog::getExistingDirectory(this, tr("Open Hugging Face checkpoint folder")));
}

void ModelPanel::dragEnterEvent(QDragEnterEvent *event) {
    const QMimeData *mime = event->mimeData();
    if (mime->hasUrls() && !mime->urls().isEmpty() && mime->urls().first().isLocalFile())
        event->acceptProposedAction();
}

void ModelPanel::dropEvent(QDropEvent *event) {
    const QList<QUrl> urls = event->mimeData()->urls();
    if (urls.isEmpty() || !urls.first().isLocalFile())
        return;
    event->acceptProposedAction();
    openCheckpoint(urls.first().toLocalFile()); // one model per panel: extra items are ignored
}

void ModelPanel::startLoad(const QString &path) {
    setStatus(State::Loading, tr("Loading %1…").arg(QDir::toNativeSeparators(path)));
    m_watcher->setFuture(QtConcurrent::run(loadOffThread, path));
}

void ModelPanel::onLoadFinished() {
    const LoadOutcome outcome = m_watcher->result();
    if (!m_pendingPath.isEmpty()) {
        const QString next = std::exchange(m_pendingPath, QString());
        startLoad(next);
        return;
    }
    if (!outcome.checkpoint) {
        QString text =
            tr("Could not open %1\n%2").arg(QDir::toNativeSeparators(outcome.path), outcome.error);
        if (m_checkpoint)
            text += tr("\nStill showing %1.").arg(toQString(m_checkpoint->path.string()));
        setStatus(State::Failed, text);
        return;
    }
    m_checkpoint = outcome.checkpoint;
    showCheckpoint(*m_checkpoint);
    rememberRecent(outcome.path);
    setStatus(State::Loaded, tr("Loaded %1 in %2 ms")
                                 .arg(QDir::toNativeSeparators(outcome.path))
                                 .arg(outcome.elapsedMs));
    emit checkpointLoaded(m_checkpoint);
}

void ModelPanel::showCheckpoint(const Checkpoint &checkpoint) {
    m_facts->clear();
    for (const FactGroup &group : describeCheckpoint(checkpoint)) {
        auto *groupItem = new QTreeWidgetItem(m_facts, {toQString(group.title)});
        for (const Fact &fact : group.facts)
            new QTreeWidgetItem(groupItem, {toQString(fact.label), toQString(fact.value)});
        groupItem->setExpanded(group.title != "File metadata");
    }
}

void ModelPanel::setStatus(State state, const QString &text) {
    m_state = state;
    m_status->setText(text);
    // Errors stand out; everything else is plain.
    m_status->setStyleSheet(state == State::Failed ? QStringLiteral("color: #b00020;") : QString());
    emit statusChanged(text);
}

void ModelPanel::rememberRecent(const QString &path) {
    const QString absolute = QFileInfo(path).absoluteFilePath();
    QSettings settings;
    QStringList recent = settings.value(kRecentKey).toStringList();
    recent.removeAll(absolute);
    recent.prepend(absolute);
    while (recent.size() > kMaxRecent)
        recent.removeLast();
    settings.setValue(kRecentKey, recent);
    reloadRecent();
}

void ModelPanel::reloadRecent() {
    m_recent->clear();
    const QStringList recent = QSettings().value(kRecentKey).toStringList();
    for (const QString &path : recent) {
        auto *item = new QListWidgetItem(QDir::toNativeSeparators(path), m_recent);
        item->setData(Qt::UserRole, path);
        item->setToolTip(path);
    }
}

void ModelPanel::onRecentActivated(QListWidgetItem *item) {
    openCheckpoint(item->data(Qt::UserRole).toString());
}

} // namespace lowbit::ui
