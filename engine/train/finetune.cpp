#include "train/finetune.h"

#include "quant/quantize.h"
#include "train/cuda_train_model.h"
#include "train/dbllm_target.h"
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
    // Sequences never exceed what the model attends to: text windows are capped, and the source
    // gives way first when source + target would not fit (the response is what is scored).
    const int64_t context = source.config.maxPositions;
    data.textWindowTokens = std::min(data.textWindowTokens, context);
    data.targetMaxTokens = std::min(data.targetMaxTokens, context - 1);
    data.sourceMaxTokens = std::min(data.sourceMaxTokens, context - data.targetMaxTokens);
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
            {"first_loss", train.history.empty() ? 0.0 : train.history.front().loss},
            {"final_loss", train.history.empty() ? 0.0 : train.history.back().loss},
            {"adapter_dir", adapterDir.string()},
            {"merged_dir", mergedDir.string()},
            {"history", history}};
}

namespace {

// The quantizer run that makes the method's base.
QuantizeOptions baseQuantizeOptions(const FinetuneOptions &options) {
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
    return q;
}

} // namespace

Result<std::shared_ptr<const Checkpoint>> finetuneBase(const Checkpoint &source,
                                                       const FinetuneOptions &options,
                                                       ProgressSink &progress,
                                                       std::stop_token stop) {
    LOWBIT_TRY(QuantizedModel model,
               quantizeModel(source, baseQuantizeOptions(options), progress, stop));
    return model.checkpoint;
}

namespace {

// The trained model and the Trainer's view of it: LoRA over a quantized base (on the CPU or a
// GPU), or DB-LLM.
struct Trainee {
    LoraOptions lora;
    std::shared_ptr<const Checkpoint> base;
    std::unique_ptr<TrainableModel<float>> loraModel;
    std::unique_ptr<ModelTarget> loraTarget;
    std::unique_ptr<DbLlmTarget> dbllm;
    // On a GPU: the base's packed tensors by name (read when the device model is created, after
    // the data is known) and the device model.
    std::map<std::string, QuantizedTensor> packed;
    std::unique_ptr<CudaTrainModel> device;
    TrainTarget &target() {
        if (dbllm)
            return *dbllm;
        return device ? static_cast<TrainTarget &>(*device) : *loraTarget;
    }
};

Result<Trainee> makeTrainee(std::shared_ptr<const Checkpoint> source,
                            const FinetuneOptions &options, ProgressSink &progress,
                            std::stop_token stop) {
    Trainee t;
    t.lora = options.lora;
    if (options.method == FinetuneMethod::DbLlm) {
        if (options.device.isCuda())
            return makeError(ErrorCode::Unsupported,
                             "finetune: dbllm trains on the CPU only (its trainable dual-binary "
                             "base has no device version); drop --device " +
                                 options.device.toString());
        t.lora.rank = 0; // no adapter: the dual-binary base itself trains
        t.base = source;
        LOWBIT_TRY(t.dbllm, DbLlmTarget::create(source, options.dualBinary, options.distill,
                                                options.threads));
        return t;
    }
    t.lora.elasticConnection = options.method == FinetuneMethod::IrQLora;
    if (options.device.isCuda()) { // fail before the quantization, not after it
        std::string why;
        if (cudaDeviceCount(&why) <= options.device.index)
            return makeError(ErrorCode::Unsupported,
                             "finetune --device " + options.device.toString() + ": " +
                                 (why.empty() ? "no such CUDA device" : why));
        LOWBIT_TRY(QuantizedModel quantized,
                   quantizeModel(*source, baseQuantizeOptions(options), progress, stop));
        t.base = quantized.checkpoint;
        for (QuantizedTensor &tensor : quantized.tensors) {
            std::string name = tensor.name;
            t.packed.emplace(std::move(name), std::move(tensor));
        }
        return t; // the device model is made by attachDevice once the batch size is known
    }
    LOWBIT_TRY(t.base, finetuneBase(*source, options, progress, stop));
    LOWBIT_TRY(t.loraModel, TrainableModel<float>::create(*t.base, t.lora, {}, options.threads));
    t.loraTarget = std::make_unique<ModelTarget>(*t.loraModel);
    return t;
}

// Creates the device model, sized for the trainer's micro-batches of the longest examples.
Status attachDevice(Trainee &t, const FinetuneOptions &options, const DataSet &data) {
    if (!options.device.isCuda())
        return {};
    int64_t longest = 1;
    for (const TrainExample &e : data.examples)
        longest = std::max(longest, int64_t(e.tokens.size()));
    const TrainerOptions &to = options.trainer;
    CudaTrainOptions device;
    device.device = options.device.index;
    device.packed = &t.packed;
    device.maxBatchTokens = (to.microBatchSize > 0 ? to.microBatchSize : to.batchSize) * longest;
    LOWBIT_TRY(t.device, CudaTrainModel::create(*t.base, t.lora, device));
    t.packed.clear(); // uploaded: the host copies are no longer needed
    return {};
}

// The model the merged checkpoint is formed from: the CPU model, or after training on a GPU a CPU
// model given the trained adapter values (CudaTrainModel's parameters have the same names and
// order as TrainableModel<float>'s).
Result<const TrainableModel<float> *> mergeModel(Trainee &t, const FinetuneOptions &options) {
    if (t.dbllm)
        return &t.dbllm->student();
    if (!t.device)
        return t.loraModel.get();
    LOWBIT_TRY(t.loraModel, TrainableModel<float>::create(*t.base, t.lora, {}, options.threads));
    const auto from = t.device->parameters();
    const auto to = t.loraModel->parameters();
    if (from.size() != to.size())
        return makeError(ErrorCode::Internal,
                         "finetune: the device model has " + std::to_string(from.size()) +
                             " parameters, the CPU model " + std::to_string(to.size()));
    for (size_t i = 0; i < from.size(); ++i) {
        if (from[i]->name != to[i]->name || from[i]->value.size() != to[i]->value.size())
            return makeError(ErrorCode::Internal, "finetune: device parameter " + from[i]->name +
                                                      " does not match the CPU model's " +
                                                      to[i]->name);
        to[i]->value = from[i]->value;
    }
    return t.loraModel.get();
}

// The --data file, or for DB-LLM without one the FP model's own text.
Result<DataSet> prepareData(const Checkpoint &source, const FinetuneOptions &options,
                            Trainee &trainee, ProgressSink &progress, std::stop_token stop) {
    if (!trainee.dbllm || !options.dataPath.empty())
        return loadData(source, options);
    DataSet data;
    progress.report({"generate", 0, options.distillData.sequences, 0, -1});
    LOWBIT_TRY(data.examples,
               generateDistillationData(trainee.dbllm->teacher(), options.distillData, stop));
    data.format = DataFormat::Text;
    for (const TrainExample &e : data.examples)
        for (int32_t t : e.targets)
            data.scoredTokens += t != kIgnoreTarget;
    return data;
}

json optionsJson(const FinetuneOptions &options, const TrainerOptions &to, const Trainee &t,
                 const Checkpoint &source) {
    json o = {{"steps", to.steps},
              {"batch_size", to.batchSize},
              {"micro_batch_size", to.microBatchSize},
              {"lr", to.schedule.peak},
              {"schedule", lrScheduleName(to.schedule.kind)},
              {"warmup_steps", to.schedule.warmupSteps},
              {"max_grad_norm", to.maxGradNorm},
              {"weight_decay", to.adam.weightDecay},
              {"seed", to.seed},
              {"rank", t.lora.rank},
              {"alpha", t.lora.alpha},
              {"source_max_len", options.data.sourceMaxTokens},
              {"target_max_len", options.data.targetMaxTokens},
              {"train_on_source", options.data.trainOnSource},
              {"data", options.dataPath.string()},
              {"model", source.path.string()},
              {"device", options.device.toString()}};
    if (t.dbllm)
        o["dbllm"] = {{"group_size", options.dualBinary.groupSize},
                      {"train_latent", options.dualBinary.trainLatent},
                      {"weighting", distillWeightingName(options.distill.weighting)},
                      {"strength", options.distill.strength},
                      {"temperature", options.distill.temperature},
                      {"ce_weight", options.distill.ceWeight},
                      {"distill_sequences", options.distillData.sequences},
                      {"distill_tokens", options.distillData.tokensPerSequence}};
    return o;
}

} // namespace

Result<FinetuneReport> runFinetune(std::shared_ptr<const Checkpoint> source,
                                   const FinetuneOptions &options, ProgressSink &progress,
                                   std::stop_token stop, TrainObserver *observer) {
    if (!source)
        return makeError(ErrorCode::InvalidArgument, "finetune: no model");
    if (options.outDir.empty())
        return makeError(ErrorCode::InvalidArgument, "finetune: no output directory");
    LOWBIT_TRY(Trainee trainee, makeTrainee(source, options, progress, stop));
    LOWBIT_TRY(DataSet data, prepareData(*source, options, trainee, progress, stop));
    LOWBIT_CHECK(attachDevice(trainee, options, data));
    FinetuneReport report;
    report.method = options.method;
    report.dataFormat = data.format;
    report.examples = int64_t(data.examples.size());
    report.skippedExamples = data.skipped;
    report.scoredTokens = data.scoredTokens;
    for (const Parameter<float> *p : trainee.target().parameters())
        report.trainableParameters += int64_t(p->value.size());

    TrainerOptions to = options.trainer;
    to.checkpointDir = options.outDir / "checkpoint";
    if (to.schedule.totalSteps <= 0)
        to.schedule.totalSteps = to.steps;
    Trainer trainer(trainee.target(), data.examples, to);
    trainer.setObserver(observer);
    LOWBIT_TRY(report.train, trainer.run(progress, stop));

    AdapterInfo info;
    info.lora = trainee.lora;
    info.method = finetuneMethodName(options.method);
    info.baseModel = source->path.string();
    if (trainee.dbllm) {
        info.lora.targets = LoraOptions().targets; // every linear carries trained weights
    } else {
        report.adapterDir = options.outDir;
        const auto params = trainee.target().parameters();
        LOWBIT_CHECK(savePeftAdapter(options.outDir, params, info));
    }
    if (options.writeMerged) {
        report.mergedDir = options.outDir / "merged";
        progress.report({"merge", 0, 1, 0, -1});
        LOWBIT_TRY(const TrainableModel<float> *merged, mergeModel(trainee, options));
        LOWBIT_CHECK(
            writeMergedCheckpoint(report.mergedDir, *source, *trainee.base, *merged, info));
    }
    json body = report.toJson();
    body["options"] = optionsJson(options, to, trainee, *source);
    LOWBIT_CHECK(writeReport(options.outDir / "finetune.json", body));
    return report;
}

} // namespace lowbit::train
