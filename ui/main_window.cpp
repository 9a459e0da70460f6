#include "main_window.h"

#include "model_panel.h"

#include <QAction>
#include <QApplication>
#include <QFileInfo>
#include <QMenuBar>
#include <QStatusBar>

namespace lowbit::ui {

MainWindow::MainWindow(QWidget *parent) : QMainWindow(parent) {
    setWindowTitle(tr("lowbit workbench"));
    resize(900, 640);

    m_modelPanel = new ModelPanel(this);
    setCentralWidget(m_modelPanel);
    buildMenus();

    connect(m_modelPanel, &ModelPanel::statusChanged, this,
            [this](const QString &text) { statusBar()->showMessage(text.section('\n', 0, 0)); });
    connect(m_modelPanel, &ModelPanel::checkpointLoaded, this,
            [this](const std::shared_ptr<const Checkpoint> &checkpoint) {
                const QString name =
                    QFileInfo(QString::fromStdString(checkpoint->path.string())).fileName();
                setWindowTitle(tr("%1 — lowbit workbench").arg(name));
            });
}

void MainWindow::buildMenus() {
    QMenu *file = menuBar()->addMenu(tr("&File"));
    QAction *openFile =
        file->addAction(tr("&Open checkpoint file…"), m_modelPanel, &ModelPanel::chooseFile);
    openFile->setShortcut(QKeySequence::Open);
    file->addAction(tr("Open checkpoint &folder…"), m_modelPanel, &ModelPanel::chooseFolder);
    file->addSeparator();
    QAction *quit = file->addAction(tr("&Quit"), qApp, &QApplication::quit);
    quit->setShortcut(QKeySequence::Quit);
}

} // namespace lowbit::ui
