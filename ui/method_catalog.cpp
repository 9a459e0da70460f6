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

// Fine-tuning methods (storage/pipeline/engine_finetune.cpp, finetuneOptions): keys and defaults
// as the job spec reads them. The training data file is the panel's own row (option "data").
Options trainingOptions(bool lora) {
    Options options = {
        {"steps", qlonglong(10000), "Optimizer steps"},
        {"batch", qlonglong(16), "Examples per optimizer step"},
        {"micro_batch", qlonglong(0), "Examples per forward/backward (0: the whole batch)"},
        {"lr", 2e-4, "Peak learning rate (AdamW)"},
        {"schedule", QStringLiteral("constant"), "Learning-rate schedule: constant or cosine"},
        {"warmup", qlonglong(0), "Linear warmup steps"},
        {"max_grad_norm", 0.3, "Global gradient-norm clip (0: none)"},
        {"weight_decay", 0.0, "Decoupled weight decay"},
        {"seed", qlonglong(0), "Seed of the data order and the adapter initialization"},
        {"save_every", qlonglong(250), "Training checkpoint every N steps (resume point)"},
        {"format", QStringLiteral("auto"), "Data format: auto, alpaca, chat, oasst or text"},
        {"seq_len", qlonglong(256), "Tokens per window of plain-text data"},
        {"source_len", qlonglong(384), "Most prompt tokens per example"},
        {"target_len", qlonglong(128), "Most response tokens per example"},
        {"train_on_source", false, "Score the prompt tokens too"},
    };
    if (lora) {
        options.insert(options.begin() + 4, {{"rank", qlonglong(64), "LoRA rank r"},
                                             {"alpha", 16.0, "LoRA alpha (scale alpha / r)"}});
        return options;
    }
    const Options dbllm = {
        {"dual_group", qlonglong(64), "Weights per dual-binarization group"},
        {"train_latent", true, "Train the latent weights through the STE (not only the scales)"},
        {"weighting", QStringLiteral("ambiguity"),
         "Deviation-aware weighting: ambiguity or uniform"},
        {"strength", 1.0, "Strength of the deviation-aware weighting"},
        {"temperature", 1.0, "Distillation temperature"},
        {"ce_weight", 0.0, "Cross-entropy on the data's targets added to the KD loss"},
        {"distill_sequences", qlonglong(64), "FP-generated sequences when no data file is given"},
        {"distill_tokens", qlonglong(256), "Tokens per generated sequence"},
        {"distill_greedy", qlonglong(0), "Greedy prefix tokens of each generated sequence"},
    };
    options.insert(options.end(), dbllm.begin(), dbllm.end());
    return options;
}

MethodInfo finetuneMethod(const QString &name, const QString &label, int bits, bool lora,
                          const QString &summary) {
    MethodInfo info;
    info.name = name;
    info.label = label;
    info.summary = summary;
    info.validBits = {bits};
    info.finetune = true;
    info.trainingDataRequired = lora;
    info.options = trainingOptions(lora);
    return info;
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
    methods.push_back(
        finetuneMethod("qlora", "QLoRA", 4, true,
                       "LoRA adapters trained over a frozen NF4 base (Dettmers et al. 2023)"));
    methods.push_back(finetuneMethod(
        "irqlora", "IR-QLoRA", 4, true,
        "QLoRA over an entropy-calibrated NF4 base with elastic connections (Qin et al. 2024)"));
    methods.push_back(finetuneMethod(
        "dbllm", "DB-LLM", 2, false,
        "Dual-binarized 2-bit model distilled from the FP model (Chen et al. 2024)"));
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
