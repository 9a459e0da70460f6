#include "train/finetune.h"

#include "quant/quantize.h"
#include "train/peft_adapter.h"
#include "train/trainable_model.h"

#include <fstream>

namespace lowbit::train {

namespace {

using nlohmann::json;
namespace fs = std::filesystem;

class ModelTarget final : public TrainTarget {
public:
    explicit ModelTarget(TrainableModel<float> &model, LossFunction<float> *loss = nullptr)
        : m_model(model), m_loss(loss) {}
    std::vector<Parameter<float> *> parameters() override { return m_model.parameters(); }
    void zeroGrad() override { m_model.zeroGrad(); }
    Result<LossStats> accumulate(std::span<const TrainExample> batch) override {
        return m_model.accumulate(batch, m_loss);
    }
    void afterStep() override { m_model.afterStep(); }

private:
    TrainableModel<float> &m_model;
    LossFunction<float> *m_loss;
};

// DB-LLM: the FP model's logits on each micro-batch, then the student's distillation loss.
class DistillTarget final : public TrainTarget {
public:
    DistillTarget(TrainableModel<float> &student, Model &teacher, DistillationOptions options)
        : m_student(student), m_teacher(teacher), m_options(options) {}
    std::vector<Parameter<float> *> parameters() override { return m_student.parameters(); }
    void zeroGrad() override { m_student.zeroGrad(); }
    Result<LossStats> accumulate(std::span<const TrainExample> batch) override {
        LOWBIT_TRY(TeacherTable table, TeacherTable::compute(m_teacher, batch));
        DistillationLoss<float> loss(table.source(), m_options);
        LOWBIT_TRY(LossStats stats, m_student.accumulate(batch, &loss));
        if (!loss.status().ok())
            return loss.status().error();
        return stats;
    }
    void afterStep() override { m_student.afterStep(); }

private:
    TrainableModel<float> &m_student;
    Model &m_teacher;
    DistillationOptions m_options;
};

Status writeReport(const fs::path &path, const json &body) {
    const fs::path tmp = path.string() + ".tmp";
    {
        std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
        out << body.dump(2) << "\n";
        if (!out)
            return makeError(ErrorCode::Io, tmp.string() + ": cannot write");
    }
    std::error_code ec;
    fs::rename(tmp, path, ec);
    if (ec)
        return makeError(ErrorCode::Io, path.string() + ": cannot rename: " + ec.message());
    return {};
}

Result<DataSet> loadData(const Checkpoint &source, const FinetuneOptions &options) {
    if (!source.tokenizer)
        return makeError(ErrorCode::InvalidArgument,
                         "finetune: the model has no tokenizer (llama2.c: pass --tokenizer)");
    std::optional<ChatTemplate> chat;
    if (!source.chatTemplate.empty()) {
        auto parsed = ChatTemplate::fromJinja(source.chatTemplate);
        if (parsed)
            chat = *parsed; // an unsupported template: conversations use the Guanaco format
    }
    DataOptions data = options.data;
    // Text windows never exceed what the model attends to.
    data.textWindowTokens = std::min(data.textWindowTokens, source.config.maxPositions);
    return loadTrainingData(options.dataPath, *source.tokenizer, data, chat ? &*chat : nullptr);
}

} // namespace

Result<FinetuneMethod> parseFinetuneMethod(std::string_view name) {
    if (name == "qlora")
        return FinetuneMethod::QLora;
    if (name == "irqlora" || name == "ir-qlora")
        return FinetuneMethod::IrQLora;
    if (name == "dbllm" || name == "db-llm")
        return FinetuneMethod::DbLlm;
    return makeError(ErrorCode::InvalidArgument, "unknown fine-tuning method '" +
                                                     std::string(name) +
                                                     "' (qlora, irqlora, dbllm)");
}

const char *finetuneMethodName(FinetuneMethod method) {
    switch (method) {
    case FinetuneMethod::QLora: return "qlora";
    case FinetuneMethod::IrQLora: return "irqlora";
    case FinetuneMethod::DbLlm: return "dbllm";
    }
    return "?";
}

json FinetuneReport::toJson() const {
    json history = json::array();
    for (const StepMetrics &s : train.history)
        history.push_back({{"step", s.step},
                           {"loss", s.loss},
                           {"lr", s.learningRate},
                           {"grad_norm", s.gradNorm},
                           {"tokens_per_second", s.tokensPerSecond}});
    return {{"method", finetuneMethodName(method)},
            {"data_format", dataFormatName(dataFormat)},
            {"examples", examples},
            {"skipped_examples", skippedExamples},
            {"scored_tokens", scoredTokens},
            {"trainable_parameters", trainableParameters},
            {"steps_done", train.stepsDone},
            {"resumed_from_step", train.resumedFromStep},
            {"seconds", train.seconds},
            {"tokens_per_second", train.tokensPerSecond},
            {"adapter_dir", adapterDir.string()},
            {"merged_dir", mergedDir.string()},
            {"history", history}};
}

Result<std::shared_ptr<const Checkpoint>> finetuneBase(const Checkpoint &source,
                                                       const FinetuneOptions &options,
                                                       ProgressSink &progress,
                                                       std::stop_token stop) {
    QuantizeOptions q;
    q.method = options.method == FinetuneMethod::IrQLora ? "icq" : "nf4";
    q.bits = 4;
    q.groupSize = options.blockSize;
    if (options.method == FinetuneMethod::DbLlm) { // what dual binarization starts from
        q.method = "rtn";
        q.bits = 2;
        q.groupSize = options.dualBinary.groupSize;
    }
    q.threads = options.threads;
    q.methodOptions = options.methodOptions;
    LOWBIT_TRY(QuantizedModel model, quantizeModel(source, q, progress, stop));
    return model.checkpoint;
}

Result<FinetuneReport> runFinetune(std::shared_ptr<const Checkpoint> source,
                                   const FinetuneOptions &options, ProgressSink &progress,
                                   std::stop_token stop, TrainObserver *observer) {
    if (!source)
        return makeError(ErrorCode::InvalidArgument, "finetune: no model");
    if (options.outDir.empty())
        return makeError(ErrorCode::InvalidArgument, "finetune: no output directory");
    const bool dbllm = options.method == FinetuneMethod::DbLlm;
    std::unique_ptr<Model> teacher;
    DataSet data;
    if (dbllm) {
        LOWBIT_TRY(teacher, Model::create(source, {options.threads}));
        if (options.dataPath.empty()) {
            progress.report({"generate", 0, options.distillData.sequences, 0, -1});
            LOWBIT_TRY(data.examples,
                       generateDistillationData(*teacher, options.distillData, stop));
            data.format = DataFormat::Text;
            for (const TrainExample &e : data.examples)
                for (int32_t t : e.targets)
                    data.scoredTokens += t != kIgnoreTarget;
        }
    }
    if (data.examples.empty()) {
        LOWBIT_TRY(data, loadData(*source, options));
    }
    LoraOptions lora = options.lora;
    lora.elasticConnection = options.method == FinetuneMethod::IrQLora;
    std::shared_ptr<const Checkpoint> base = source;
    LinearBaseFactory<float> factory;
    if (dbllm) {
        lora.rank = 0; // no adapter: the dual-binary base itself trains
        factory = makeDualBinaryFactory<float>(options.dualBinary);
    } else {
        LOWBIT_TRY(base, finetuneBase(*source, options, progress, stop));
    }
    LOWBIT_TRY(auto model, TrainableModel<float>::create(*base, lora, factory));

    FinetuneReport report;
    report.method = options.method;
    report.dataFormat = data.format;
    report.examples = int64_t(data.examples.size());
    report.skippedExamples = data.skipped;
    report.scoredTokens = data.scoredTokens;
    for (const Parameter<float> *p : model->parameters())
        report.trainableParameters += int64_t(p->value.size());

    TrainerOptions to = options.trainer;
    to.checkpointDir = options.outDir / "checkpoint";
    if (to.schedule.totalSteps <= 0)
        to.schedule.totalSteps = to.steps;
    ModelTarget loraTarget(*model);
    std::unique_ptr<DistillTarget> distillTarget;
    if (dbllm)
        distillTarget = std::make_unique<DistillTarget>(*model, *teacher, options.distill);
    TrainTarget &target = dbllm ? static_cast<TrainTarget &>(*distillTarget) : loraTarget;
    Trainer trainer(target, data.examples, to);
    trainer.setObserver(observer);
    LOWBIT_TRY(report.train, trainer.run(progress, stop));

    AdapterInfo info;
    info.lora = lora;
    info.method = finetuneMethodName(options.method);
    info.baseModel = source->path.string();
    if (dbllm)
        info.lora.targets = LoraOptions().targets; // every linear carries trained weights
    if (!dbllm) {
        report.adapterDir = options.outDir;
        const auto params = model->parameters();
        LOWBIT_CHECK(savePeftAdapter(options.outDir, params, info));
    }
    if (options.writeMerged) {
        report.mergedDir = options.outDir / "merged";
        progress.report({"merge", 0, 1, 0, -1});
        LOWBIT_CHECK(writeMergedCheckpoint(report.mergedDir, *source, *base, *model, info));
    }
    json body = report.toJson();
    body["options"] = {{"steps", to.steps},
                       {"batch_size", to.batchSize},
                       {"micro_batch_size", to.microBatchSize},
                       {"lr", to.schedule.peak},
                       {"schedule", lrScheduleName(to.schedule.kind)},
                       {"warmup_steps", to.schedule.warmupSteps},
                       {"max_grad_norm", to.maxGradNorm},
                       {"weight_decay", to.adam.weightDecay},
                       {"seed", to.seed},
                       {"rank", lora.rank},
                       {"alpha", lora.alpha},
                       {"source_max_len", options.data.sourceMaxTokens},
                       {"target_max_len", options.data.targetMaxTokens},
                       {"train_on_source", options.data.trainOnSource},
                       {"data", options.dataPath.string()},
                       {"model", source->path.string()}};
    LOWBIT_CHECK(writeReport(options.outDir / "finetune.json", body));
    return report;
}

} // namespace lowbit::train
