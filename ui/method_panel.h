// MethodPanel: how the checkpoint is quantized. Method (FP baseline or a registry method), the
// bit-widths to run (only the method's valid ones can be ticked; ticking several is a sweep: one
// job per width), group size, symmetric grid, calibration set and size, and the method's own
// options with defaults and tooltips. "Also run the FP baseline" adds the unquantized job. A
// fine-tuning method (qlora, irqlora, dbllm) takes its training data file from the "Training
// data" row (a file picker), stored as its option "data".
// A sweep across methods: "Add to sweep" stores what the panel describes now; while the sweep
// list holds entries, methodSpecs() returns all of them (each once) instead of the current choice.
//
// GUI thread only. The panel holds no state beyond its widgets; methodSpecs() reads them.
#pragma once

#include "pipeline/job_spec.h"

#include <QWidget>

#include <vector>

class QCheckBox;
class QComboBox;
class QLineEdit;
class QListWidget;
class QPushButton;
class QSpinBox;
class QTableWidget;

namespace lowbit::ui {

class MethodPanel : public QWidget {
    Q_OBJECT
public:
    explicit MethodPanel(QWidget *parent = nullptr);

    // The sweep list when it has entries; else one spec per ticked bit-width (the method's first
    // valid width when none is ticked), plus the FP baseline when asked for. Options equal to
    // their default are left out.
    std::vector<MethodSpec> methodSpecs() const;
    // Appends the current choice's specs to the sweep list (duplicates skipped).
    void addToSweep();
    void clearSweep();
    size_t sweepSize() const { return m_sweep.size(); }

    // For tests and scripts: pick a method by registry name, tick exactly these widths.
    bool selectMethod(const QString &name);
    void setBits(const std::vector<int> &bits);
    void setGroupSize(int groupSize);
    void setIncludeBaseline(bool include);
    void setTrainingData(const QString &path);
    // Sets a method option's value in the table (no effect for an unknown key).
    void setOptionValue(const QString &key, const QVariant &value);
    // Method-option value shown in the table, invalid when the method has no such key.
    QVariant optionValue(const QString &key) const;
    bool isBitEnabled(int bits) const;

signals:
    void changed();

private:
    void onMethodChanged();
    void fillOptions();
    nlohmann::json changedOptions() const;
    std::vector<MethodSpec> currentSpecs() const;

    QComboBox *m_method = nullptr;
    std::vector<QCheckBox *> m_bits; // index bits - 1
    QSpinBox *m_group = nullptr;
    QCheckBox *m_symmetric = nullptr;
    QCheckBox *m_baseline = nullptr;
    QLineEdit *m_calibrationSet = nullptr;
    QSpinBox *m_calibrationSamples = nullptr;
    QSpinBox *m_calibrationTokens = nullptr;
    QLineEdit *m_trainingData = nullptr;
    QPushButton *m_browseData = nullptr;
    QTableWidget *m_options = nullptr;
    QListWidget *m_sweepList = nullptr;
    std::vector<MethodSpec> m_sweep;
};

} // namespace lowbit::ui
