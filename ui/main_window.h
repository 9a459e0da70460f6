// MainWindow: the workbench's top-level window. It only creates the panels and wires their
// signals to the menus, title and status bar; the panels hold all behaviour.
#pragma once

#include <QMainWindow>

namespace lowbit::ui {

class ModelPanel;

class MainWindow : public QMainWindow {
    Q_OBJECT
public:
    explicit MainWindow(QWidget *parent = nullptr);

    ModelPanel *modelPanel() const { return m_modelPanel; }

private:
    void buildMenus();

    ModelPanel *m_modelPanel = nullptr;
};

} // namespace lowbit::ui
