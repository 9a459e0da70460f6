#include "method_panel.h"

#include "method_catalog.h"
#include "workbench_settings.h"

#include <QCheckBox>
#include <QComboBox>
#include <QFileDialog>
#include <QFormLayout>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QLineEdit>
#include <QListWidget>
#include <QPushButton>
#include <QSpinBox>
#include <QTableWidget>

namespace lowbit::ui {
namespace {

constexpr int kKeyRole = Qt::UserRole + 1;
constexpr int kDefaultRole = Qt::UserRole + 2;

nlohmann::json jsonOf(const QVariant &value) {
    switch (value.typeId()) {
    case QMetaType::Bool: return value.toBool();
    case QMetaType::Double: return value.toDouble();
    case QMetaType::QString: return value.toString().toStdString();
    default: return value.toLongLong();
    }
}

} // namespace

MethodPanel::MethodPanel(QWidget *parent) : QWidget(parent) {
    m_method = new QComboBox(this);
    m_method->setObjectName(QStringLiteral("method"));
    for (const MethodInfo &method : methodCatalog()) {
        m_method->addItem(method.label, method.name);
        m_method->setItemData(m_method->count() - 1, method.summary, Qt::ToolTipRole);
    }
    auto *bitsRow = new QHBoxLayout;
    for (int bits = 1; bits <= 8; ++bits) {
        auto *box = new QCheckBox(QString::number(bits), this);
        box->setObjectName(QStringLiteral("bits%1").arg(bits));
        box->setToolTip(tr("Quantize to %1 bit(s) per weight; tick several for a sweep").arg(bits));
        connect(box, &QCheckBox::toggled, this, &MethodPanel::changed);
        bitsRow->addWidget(box);
        m_bits.push_back(box);
    }
    m_group = new QSpinBox(this);
    m_group->setRange(0, 4096);
    m_group->setSingleStep(32);
    m_group->setSpecialValueText(tr("per-channel"));
    m_group->setToolTip(tr("Weights per quantization group along the input dimension "
                           "(0: one group per output row)"));
    m_symmetric = new QCheckBox(tr("Symmetric grid"), this);
    m_symmetric->setToolTip(tr("Zero point fixed at the grid centre (no stored zero)"));
    m_baseline = new QCheckBox(tr("Also run the FP baseline"), this);
    m_baseline->setObjectName(QStringLiteral("includeBaseline"));
    m_baseline->setToolTip(tr("Queue the unquantized checkpoint too, as the reference"));
    m_calibrationSet = new QLineEdit(this);
    m_calibrationSet->setPlaceholderText(tr("default (wikitext-2 train prefix)"));
    m_calibrationSet->setToolTip(tr("A text file of calibration data"));
    m_calibrationSamples = new QSpinBox(this);
    m_calibrationSamples->setRange(1, 4096);
    m_calibrationSamples->setValue(128);
    m_calibrationSamples->setToolTip(tr("Calibration windows"));
    m_calibrationTokens = new QSpinBox(this);
    m_calibrationTokens->setRange(16, 32768);
    m_calibrationTokens->setValue(2048);
    m_calibrationTokens->setToolTip(tr("Tokens per calibration window"));
    m_trainingData = new QLineEdit(this);
    m_trainingData->setObjectName(QStringLiteral("trainingData"));
    m_trainingData->setToolTip(tr("Fine-tuning data: Alpaca JSON, chat JSONL, OpenAssistant trees "
                                  "or plain text"));
    connect(m_trainingData, &QLineEdit::textChanged, this, &MethodPanel::changed);
    m_browseData = new QPushButton(tr("Browse…"), this);
    connect(m_browseData, &QPushButton::clicked, this, [this] {
        const QString file =
            QFileDialog::getOpenFileName(this, tr("Training data"), m_trainingData->text(),
                                         tr("Training data (*.json *.jsonl *.txt);;All files (*)"));
        if (!file.isEmpty())
            m_trainingData->setText(file);
    });
    auto *dataRow = new QHBoxLayout;
    dataRow->addWidget(m_trainingData, 1);
    dataRow->addWidget(m_browseData);
    m_options = new QTableWidget(0, 2, this);
    m_options->setObjectName(QStringLiteral("methodOptions"));
    m_options->setHorizontalHeaderLabels({tr("Option"), tr("Value")});
    m_options->horizontalHeader()->setStretchLastSection(true);
    m_options->verticalHeader()->hide();

    auto *form = new QFormLayout(this);
    form->addRow(tr("Method"), m_method);
    form->addRow(tr("Bits"), bitsRow);
    form->addRow(tr("Group size"), m_group);
    form->addRow(QString(), m_symmetric);
    form->addRow(tr("Calibration set"), m_calibrationSet);
    form->addRow(tr("Calibration windows"), m_calibrationSamples);
    form->addRow(tr("Window tokens"), m_calibrationTokens);
    form->addRow(tr("Training data"), dataRow);
    form->addRow(tr("Options"), m_options);
    form->addRow(QString(), m_baseline);
    m_sweepList = new QListWidget(this);
    m_sweepList->setObjectName(QStringLiteral("sweep"));
    m_sweepList->setMaximumHeight(90);
    m_sweepList->setToolTip(tr("Jobs of a sweep across methods; empty: run the choice above"));
    auto *add = new QPushButton(tr("Add to sweep"), this);
    auto *clear = new QPushButton(tr("Clear"), this);
    auto *sweepButtons = new QHBoxLayout;
    sweepButtons->addWidget(add);
    sweepButtons->addWidget(clear);
    form->addRow(tr("Sweep"), m_sweepList);
    form->addRow(QString(), sweepButtons);
    connect(add, &QPushButton::clicked, this, &MethodPanel::addToSweep);
    connect(clear, &QPushButton::clicked, this, &MethodPanel::clearSweep);

    connect(m_method, &QComboBox::currentIndexChanged, this, &MethodPanel::onMethodChanged);
    // Start on the most common first choice: RTN when the registry has it.
    const int rtn = m_method->findData(QStringLiteral("rtn"));
    m_method->setCurrentIndex(rtn >= 0 ? rtn : 0);
    onMethodChanged();
}

void MethodPanel::onMethodChanged() {
    const MethodInfo *method = findMethod(m_method->currentData().toString());
    if (!method)
        return;
    for (int bits = 1; bits <= 8; ++bits) {
        QCheckBox *box = m_bits[size_t(bits - 1)];
        const bool valid = std::find(method->validBits.begin(), method->validBits.end(), bits) !=
                           method->validBits.end();
        box->setEnabled(valid);
        if (!valid)
            box->setChecked(false);
    }
    const bool quantized = method->name != QStringLiteral("none");
    m_group->setEnabled(quantized);
    m_calibrationSet->setEnabled(method->needsCalibration);
    m_calibrationSamples->setEnabled(method->needsCalibration);
    m_calibrationTokens->setEnabled(method->needsCalibration);
    m_baseline->setEnabled(quantized);
    m_symmetric->setEnabled(quantized && !method->finetune);
    if (method->finetune)
        m_symmetric->setChecked(false); // the base grids are fixed (NF4, dual binary)
    m_trainingData->setEnabled(method->finetune);
    m_browseData->setEnabled(method->finetune);
    m_trainingData->setPlaceholderText(!method->finetune ? QString()
                                       : method->trainingDataRequired
                                           ? tr("required")
                                           : tr("none: distill on text the FP model writes"));
    fillOptions();
    emit changed();
}

void MethodPanel::fillOptions() {
    const MethodInfo *method = findMethod(m_method->currentData().toString());
    m_options->setRowCount(0);
    if (!method)
        return;
    m_options->setRowCount(int(method->options.size()));
    for (int row = 0; row < int(method->options.size()); ++row) {
        const MethodOptionInfo &option = method->options[size_t(row)];
        auto *key = new QTableWidgetItem(option.key);
        key->setFlags(Qt::ItemIsEnabled);
        key->setToolTip(option.tooltip);
        auto *value = new QTableWidgetItem;
        value->setData(Qt::EditRole, option.defaultValue); // the delegate edits by type
        value->setData(kKeyRole, option.key);
        value->setData(kDefaultRole, option.defaultValue);
        value->setToolTip(
            tr("%1 (default %2)").arg(option.tooltip, option.defaultValue.toString()));
        m_options->setItem(row, 0, key);
        m_options->setItem(row, 1, value);
    }
}

nlohmann::json MethodPanel::changedOptions() const {
    nlohmann::json options = nlohmann::json::object();
    for (int row = 0; row < m_options->rowCount(); ++row) {
        const QTableWidgetItem *item = m_options->item(row, 1);
        const QVariant fallback = item->data(kDefaultRole);
        QVariant value = item->data(Qt::EditRole);
        value.convert(fallback.metaType());
        if (value != fallback)
            options[item->data(kKeyRole).toString().toStdString()] = jsonOf(value);
    }
    return options;
}

std::vector<MethodSpec> MethodPanel::methodSpecs() const {
    return m_sweep.empty() ? currentSpecs() : m_sweep;
}

void MethodPanel::addToSweep() {
    for (const MethodSpec &spec : currentSpecs()) {
        const std::string key = methodKey(spec);
        if (std::any_of(m_sweep.begin(), m_sweep.end(),
                        [&](const MethodSpec &s) { return methodKey(s) == key; }))
            continue;
        m_sweep.push_back(spec);
        QString label = toQString(spec.name);
        if (!spec.isNone())
            label += QStringLiteral(" w%1").arg(spec.bits) +
                     (spec.groupSize > 0 ? QStringLiteral(" g%1").arg(spec.groupSize) : QString());
        m_sweepList->addItem(label);
    }
    emit changed();
}

void MethodPanel::clearSweep() {
    m_sweep.clear();
    m_sweepList->clear();
    emit changed();
}

std::vector<MethodSpec> MethodPanel::currentSpecs() const {
    const MethodInfo *method = findMethod(m_method->currentData().toString());
    std::vector<MethodSpec> specs;
    if (!method)
        return specs;
    if (method->name == QStringLiteral("none"))
        return {MethodSpec{}};
    MethodSpec base;
    base.name = method->name.toStdString();
    base.groupSize = m_group->value();
    base.symmetric = m_symmetric->isChecked();
    base.options = changedOptions();
    if (method->finetune && !m_trainingData->text().isEmpty())
        base.options["data"] = m_trainingData->text().toStdString();
    if (method->needsCalibration &&
        (!m_calibrationSet->text().isEmpty() || m_calibrationSamples->value() != 128 ||
         m_calibrationTokens->value() != 2048)) {
        CalibrationSpec calibration;
        calibration.dataset = m_calibrationSet->text().toStdString();
        calibration.samples = m_calibrationSamples->value();
        calibration.tokens = m_calibrationTokens->value();
        base.calibration = calibration;
    }
    std::vector<int> widths;
    for (int bits = 1; bits <= 8; ++bits)
        if (m_bits[size_t(bits - 1)]->isChecked())
            widths.push_back(bits);
    if (widths.empty() && !method->validBits.empty())
        widths.push_back(method->validBits.front());
    if (m_baseline->isChecked())
        specs.push_back(MethodSpec{});
    for (int bits : widths) {
        MethodSpec spec = base;
        spec.bits = bits;
        specs.push_back(spec);
    }
    return specs;
}

bool MethodPanel::selectMethod(const QString &name) {
    const int index = m_method->findData(name);
    if (index < 0)
        return false;
    m_method->setCurrentIndex(index);
    return true;
}

void MethodPanel::setBits(const std::vector<int> &bits) {
    for (int b = 1; b <= 8; ++b)
        m_bits[size_t(b - 1)]->setChecked(std::find(bits.begin(), bits.end(), b) != bits.end() &&
                                          m_bits[size_t(b - 1)]->isEnabled());
}

void MethodPanel::setGroupSize(int groupSize) {
    m_group->setValue(groupSize);
}

void MethodPanel::setTrainingData(const QString &path) {
    m_trainingData->setText(path);
}

void MethodPanel::setOptionValue(const QString &key, const QVariant &value) {
    for (int row = 0; row < m_options->rowCount(); ++row)
        if (m_options->item(row, 0)->text() == key)
            m_options->item(row, 1)->setData(Qt::EditRole, value);
}

void MethodPanel::setIncludeBaseline(bool include) {
    m_baseline->setChecked(include);
}

QVariant MethodPanel::optionValue(const QString &key) const {
    for (int row = 0; row < m_options->rowCount(); ++row)
        if (m_options->item(row, 0)->text() == key)
            return m_options->item(row, 1)->data(Qt::EditRole);
    return {};
}

bool MethodPanel::isBitEnabled(int bits) const {
    return bits >= 1 && bits <= 8 && m_bits[size_t(bits - 1)]->isEnabled();
}

} // namespace lowbit::ui
