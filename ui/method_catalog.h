// What the method panel offers: the FP baseline, every method of the quantizer registry, and the
// fine-tuning methods (qlora, irqlora, dbllm: storage/pipeline/engine_finetune.h), with the
// bit-widths each accepts and its method-specific options (defaults and tooltips).
//
// Valid bit-widths are asked of the method itself: its factory is called with each width 1..8
// and default options, and the widths it accepts are listed (factories only validate, they do
// not touch weights). The options table mirrors the keys the factories read
// (engine/quant/<method>.cpp, MethodOptions calls); a key the factory does not know would be
// refused at submission with the factory's message, so a drift shows, it does not pass silently.
#pragma once

#include <QString>
#include <QVariant>

#include <vector>

namespace lowbit::ui {

struct MethodOptionInfo {
    QString key;           // "damp"
    QVariant defaultValue; // bool, int (qlonglong), double or QString
    QString tooltip;
};

struct MethodInfo {
    QString name;               // "none", "rtn", "gptq", ...
    QString label;              // "FP baseline", "RTN", ...
    QString summary;            // tooltip
    std::vector<int> validBits; // empty for the FP baseline
    bool needsCalibration = false;
    bool finetune = false;             // trains: the panel's training data file is option "data"
    bool trainingDataRequired = false; // qlora, irqlora (dbllm can distill on FP-written text)
    std::vector<MethodOptionInfo> options;
};

// The FP baseline first, then the registry's methods in registry order, then qlora, irqlora and
// dbllm. Computed once.
const std::vector<MethodInfo> &methodCatalog();
const MethodInfo *findMethod(const QString &name);

} // namespace lowbit::ui
