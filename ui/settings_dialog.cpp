#include "settings_dialog.h"

#include "workbench_settings.h"

#include "runtime/language_model.h"

#include <QComboBox>
#include <QDialogButtonBox>
#include <QFileDialog>
#include <QFormLayout>
#include <QHBoxLayout>
#include <QLineEdit>
#include <QPushButton>
#include <QSettings>
#include <QSpinBox>
#include <QThread>

namespace lowbit::ui {
namespace {

QWidget *withBrowse(QLineEdit *edit, bool folder, QWidget *parent) {
    auto *row = new QWidget(parent);
    auto *layout = new QHBoxLayout(row);
    layout->setContentsMargins(0, 0, 0, 0);
    auto *browse = new QPushButton(QObject::tr("Browse…"), row);
    layout->addWidget(edit, 1);
    layout->addWidget(browse);
    QObject::connect(browse, &QPushButton::clicked, row, [edit, folder, row] {
        const QString path =
            folder ? QFileDialog::getExistingDirectory(row, QString(), edit->text())
                   : QFileDialog::getSaveFileName(row, QString(), edit->text(),
                                                  QObject::tr("SQLite database (*.sqlite *.db)"),
                                                  nullptr, QFileDialog::DontConfirmOverwrite);
        if (!path.isEmpty())
            edit->setText(path);
    });
    return row;
}

} // namespace

SettingsDialog::SettingsDialog(QWidget *parent) : QDialog(parent) {
    setWindowTitle(tr("Settings"));
    m_database = new QLineEdit(toQString(databasePath().string()), this);
    m_database->setToolTip(tr("The SQLite file every run is stored in"));
    m_dataDir = new QLineEdit(toQString(dataDir().string()), this);
    m_dataDir->setToolTip(tr("Folder holding the benchmark datasets (wikitext2/, arc/, …)"));
    m_threads = new QSpinBox(this);
    m_threads->setRange(0, 1024);
    m_threads->setSpecialValueText(tr("all (%1)").arg(QThread::idealThreadCount()));
    m_threads->setValue(engineThreads());
    m_device = new QComboBox(this);
    m_device->setEditable(true);
    for (const DeviceSpec &device : availableDevices())
        m_device->addItem(toQString(device.toString()));
    m_device->setCurrentText(engineDevice());
    std::string why; // cudaDeviceCount is cheap; device names would need a context per GPU
    m_device->setToolTip(cudaDeviceCount(&why) > 0
                             ? tr("cpu, or cuda:N")
                             : tr("cpu, or cuda:N (no CUDA device here: %1)").arg(toQString(why)));
    auto *buttons = new QDialogButtonBox(QDialogButtonBox::Ok | QDialogButtonBox::Cancel, this);
    connect(buttons, &QDialogButtonBox::accepted, this, &SettingsDialog::accept);
    connect(buttons, &QDialogButtonBox::rejected, this, &SettingsDialog::reject);
    auto *form = new QFormLayout(this);
    form->addRow(tr("Run database"), withBrowse(m_database, false, this));
    form->addRow(tr("Datasets folder"), withBrowse(m_dataDir, true, this));
    form->addRow(tr("Engine threads"), m_threads);
    form->addRow(tr("Device"), m_device);
    form->addRow(buttons);
}

void SettingsDialog::accept() {
    QSettings settings;
    settings.setValue(kDatabaseKey, m_database->text());
    settings.setValue(kDataDirKey, m_dataDir->text());
    settings.setValue(kThreadsKey, m_threads->value());
    settings.setValue(kDeviceKey, m_device->currentText().trimmed());
    QDialog::accept();
}

} // namespace lowbit::ui
