#include "method_catalog.h"

#include "quant/quantizer.h"
#include "workbench_settings.h"

#include <map>

namespace lowbit::ui {
namespace {

using Options = std::vector<MethodOptionInfo>;

const MethodOptionInfo kDamp{"damp", 0.01, "Hessian dampening, a fraction of its mean diagonal"};
const MethodOptionInfo kBlock{"block", qlonglong(128), "Columns per lazy-batch block of the sweep"};

// Keys and defaults as the factories read them (engine/quant/*.cpp).
std::map<QString, Options> optionTable() {
    return {
        {"gptq",
         {kDamp,
          kBlock,
          {"act_order", false, "Quantize columns in order of decreasing Hessian diagonal"}}},
        {"nf4",
         {{"double_quant", true, "Quantize the absmax scales again (8-bit, QLoRA)"},
          {"dq_block", qlonglong(256), "Scales per double-quantization block"}}},
        {"pb-llm",
         {{"target_bits", 0.0, "Average bits per weight to reach (0: the bit-width)"},
          {"salient_fraction", -1.0, "Fraction of salient weights kept at high bits (-1: derived)"},
          {"magnitude_salience", false, "Pick salient weights by magnitude, not Hessian"},
          {"high_bits", qlonglong(8), "Bits of the salient weights"},
          kDamp,
          kBlock}},
        {"billm",
         {{"magnitude_salience", false, "Pick salient columns by magnitude, not Hessian"},
          {"block", qlonglong(128), "Columns per block (default: the group size, else 128)"},
          {"max_salient_columns", qlonglong(50), "Most salient columns per block"},
          kDamp}},
        {"slim-llm",
         {{"gptq", true, "Compensate errors with the GPTQ sweep"},
          {"sba", true, "Salience-based bit allocation across groups"},
          {"sba_squared_error", false, "Allocate by squared error instead of salience"},
          {"lambda", 1.0, "Weight of the salience term"},
          {"tau", 0.1, "Grid search temperature"},
          {"tau_steps", qlonglong(50), "Grid search steps"},
          {"norm", 2.4, "Norm of the grid search error"},
          kDamp}},
        {"awq",
         {{"scale", true, "Search per-channel activation-aware scales"},
          {"clip", true, "Search per-group clipping ratios"},
          {"grid", qlonglong(20), "Scale grid points"},
          {"clip_grid", qlonglong(20), "Clip grid points"},
          {"max_shrink", 0.5, "Largest clip shrink"},
          {"clip_tokens", qlonglong(512), "Calibration tokens for the clip search"},
          {"search_tokens", qlonglong(65536), "Calibration tokens for the scale search"}}},
        {"smoothquant",
         {{"alpha", 0.5, "Migration strength (Eq. 4): 0 keeps activations, 1 moves all to W"},
          {"act_bits", qlonglong(0), "Activation bits (0: the weight bit-width)"}}},
        {"quip",
         {{"rescale", true, "Diagonal rescale before the rotations"},
          {"incoherence", true, "Random orthogonal butterflies (incoherence processing)"},
          {"rotate_rows", true, "Rotate rows as well as columns"},
          kDamp,
          kBlock,
          {"seed", qlonglong(0), "Seed of the random rotations"}}},
    };
}

MethodInfo describe(const QuantizerInfo &row, const Options &options) {
    MethodInfo info;
    info.name = toQString(std::string(row.name));
    info.label = info.name.toUpper();
    info.summary = toQString(std::string(row.summary));
    info.options = options;
    for (int bits = 1; bits <= 8; ++bits) {
        QuantizeOptions probe;
        probe.method = std::string(row.name);
        probe.bits = bits;
        auto quantizer = row.factory(probe);
        if (!quantizer.ok())
            continue;
        info.validBits.push_back(bits);
        info.needsCalibration = info.needsCalibration || (*quantizer)->needs().any();
    }
    return info;
}

std::vector<MethodInfo> buildCatalog() {
    std::vector<MethodInfo> methods;
    MethodInfo baseline;
    baseline.name = QStringLiteral("none");
    baseline.label = QStringLiteral("FP baseline");
    baseline.summary = QStringLiteral("The checkpoint as stored, no quantization");
    methods.push_back(baseline);
    const auto table = optionTable();
    for (const QuantizerInfo &row : quantizerRegistry()) {
        const auto found = table.find(toQString(std::string(row.name)));
        methods.push_back(describe(row, found == table.end() ? Options{} : found->second));
    }
    return methods;
}

} // namespace

const std::vector<MethodInfo> &methodCatalog() {
    static const std::vector<MethodInfo> catalog = buildCatalog();
    return catalog;
}

const MethodInfo *findMethod(const QString &name) {
    for (const MethodInfo &method : methodCatalog())
        if (method.name == name)
            return &method;
    return nullptr;
}

} // namespace lowbit::ui
