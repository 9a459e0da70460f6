// SettingsDialog: the workbench's QSettings (workbench_settings.h): run database, datasets
// folder, engine threads, device (a list of cpu and this machine's CUDA devices, editable so that
// a job for another host can name its GPU). accept() writes them; the caller re-reads them.
#pragma once

#include <QDialog>

class QComboBox;
class QLineEdit;
class QSpinBox;

namespace lowbit::ui {

class SettingsDialog : public QDialog {
    Q_OBJECT
public:
    explicit SettingsDialog(QWidget *parent = nullptr);
    void accept() override;

private:
    QLineEdit *m_database = nullptr;
    QLineEdit *m_dataDir = nullptr;
    QSpinBox *m_threads = nullptr;
    QComboBox *m_device = nullptr;
};

} // namespace lowbit::ui
