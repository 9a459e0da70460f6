#include "pipeline/engine_finetune.h"

#include <set>

namespace lowbit {

namespace {

using nlohmann::json;

Error optionError(const std::string &key, const std::string &what) {
    return makeError(ErrorCode::InvalidArgument, "spec.method.options." + key + ": " + what);
}

// Reads options one key at a time, remembering which keys were known.
class OptionReader {
public:
    explicit OptionReader(const json &options) : m_options(options) {}

    template <typename T> Status integer(const char *key, T &out, int64_t minimum) {
        m_known.insert(key);
        const auto it = m_options.find(key);
        if (it == m_options.end())
            return {};
        if (!it->is_number_integer() || it->get<int64_t>() < minimum)
            return optionError(key, "must be an integer >= " + std::to_string(minimum));
        out = T(it->get<int64_t>());
        return {};
    }
    Status number(const char *key, double &out, double minimum) {
        m_known.insert(key);
        const auto it = m_options.find(key);
        if (it == m_options.end())
            return {};
        if (!it->is_number() || !(it->get<double>() >= minimum))
            return optionError(key, "must be a number >= " + std::to_string(minimum));
        out = it->get<double>();
        return {};
    }
    Status boolean(const char *key, bool &out) {
        m_known.insert(key);
        const auto it = m_options.find(key);
        if (it == m_options.end())
            return {};
        if (!it->is_boolean())
            return optionError(key, "must be true or false");
        out = it->get<bool>();
        return {};
    }
    Result<std::string> string(const char *key, const std::string &fallback) {
        m_known.insert(key);
        const auto it = m_options.find(key);
        if (it == m_options.end())
            return fallback;
        if (!it->is_string())
            return optionError(key, "must be a string");
        return it->get<std::string>();
    }
    Status unknownKeys() const {
        for (const auto &[key, value] : m_options.items())
            if (!m_known.count(key))
                return optionError(key, "unknown option");
        return {};
    }

private:
    const json &m_options;
    std::set<std::string> m_known;
};

Status readTraining(OptionReader &r, train::FinetuneOptions &o) {
    train::TrainerOptions &t = o.trainer;
    LOWBIT_CHECK(r.integer("steps", t.steps, 0));
    LOWBIT_CHECK(r.integer("batch", t.batchSize, 1));
    LOWBIT_CHECK(r.integer("micro_batch", t.microBatchSize, 0));
    LOWBIT_CHECK(r.number("lr", t.schedule.peak, 0));
    LOWBIT_TRY(std::string schedule, r.string("schedule", "constant"));
    auto kind = train::parseLrSchedule(schedule);
    if (!kind)
        return optionError("schedule", kind.error().message);
    t.schedule.kind = *kind;
    LOWBIT_CHECK(r.integer("warmup", t.schedule.warmupSteps, 0));
    LOWBIT_CHECK(r.number("max_grad_norm", t.maxGradNorm, 0));
    LOWBIT_CHECK(r.number("weight_decay", t.adam.weightDecay, 0));
    LOWBIT_CHECK(r.integer("seed", t.seed, 0));
    LOWBIT_CHECK(r.integer("save_every", t.saveEverySteps, 0));
    LOWBIT_CHECK(r.integer("rank", o.lora.rank, 1));
    LOWBIT_CHECK(r.number("alpha", o.lora.alpha, 0));
    o.lora.seed = t.seed;
    return {};
}

Status readData(OptionReader &r, train::FinetuneOptions &o) {
    LOWBIT_TRY(std::string data, r.string("data", ""));
    o.dataPath = data;
    LOWBIT_TRY(std::string format, r.string("format", "auto"));
    auto parsed = train::parseDataFormat(format);
    if (!parsed)
        return optionError("format", parsed.error().message);
    o.data.format = *parsed;
    LOWBIT_CHECK(r.integer("seq_len", o.data.textWindowTokens, 2));
    LOWBIT_CHECK(r.integer("source_len", o.data.sourceMaxTokens, 1));
    LOWBIT_CHECK(r.integer("target_len", o.data.targetMaxTokens, 1));
    LOWBIT_CHECK(r.boolean("train_on_source", o.data.trainOnSource));
    return {};
}

Status readDbLlm(OptionReader &r, train::FinetuneOptions &o) {
    LOWBIT_CHECK(r.integer("dual_group", o.dualBinary.groupSize, 1));
    LOWBIT_CHECK(r.boolean("train_latent", o.dualBinary.trainLatent));
    LOWBIT_TRY(std::string weighting, r.string("weighting", "ambiguity"));
    auto parsed = train::parseDistillWeighting(weighting);
    if (!parsed)
        return optionError("weighting", parsed.error().message);
    o.distill.weighting = *parsed;
    LOWBIT_CHECK(r.number("strength", o.distill.strength, 0));
    LOWBIT_CHECK(r.number("temperature", o.distill.temperature, 1e-6));
    LOWBIT_CHECK(r.number("ce_weight", o.distill.ceWeight, 0));
    LOWBIT_CHECK(r.integer("distill_sequences", o.distillData.sequences, 1));
    LOWBIT_CHECK(r.integer("distill_tokens", o.distillData.tokensPerSequence, 1));
    LOWBIT_CHECK(r.integer("distill_greedy", o.distillData.greedyPrefixTokens, 0));
    o.distillData.sampling.seed = o.trainer.seed;
    return {};
}

} // namespace

bool isFinetuneMethod(const std::string &name) {
    return train::parseFinetuneMethod(name).ok();
}

Result<train::FinetuneOptions> finetuneOptions(const MethodSpec &method, int threads) {
    train::FinetuneOptions o;
    LOWBIT_TRY(o.method, train::parseFinetuneMethod(method.name));
    const bool dbllm = o.method == train::FinetuneMethod::DbLlm;
    const int bits = dbllm ? 2 : 4;
    if (method.bits != bits)
        return makeError(ErrorCode::InvalidArgument,
                         "spec.method.bits: " + method.name + " trains a " + std::to_string(bits) +
                             "-bit model, got " + std::to_string(method.bits));
    if (method.groupSize > 0)
        (dbllm ? o.dualBinary.groupSize : o.blockSize) = method.groupSize;
    if (!method.options.is_object())
        return makeError(ErrorCode::InvalidArgument, "spec.method.options: must be an object");
    o.trainer.saveEverySteps = 250; // as `lowbit finetune` (QLoRA's --save_steps): a crashed
                                    // run loses at most 250 steps
    OptionReader reader(method.options);
    LOWBIT_CHECK(readTraining(reader, o));
    LOWBIT_CHECK(readData(reader, o));
    if (dbllm)
        LOWBIT_CHECK(readDbLlm(reader, o));
    LOWBIT_CHECK(reader.unknownKeys());
    if (o.dataPath.empty() && !dbllm)
        return optionError("data", "required: the training data file (Alpaca JSON, chat "
                                   "JSONL, OpenAssistant trees or plain text)");
    o.threads = threads;
    o.trainer.resume = true; // a rerun of an interrupted run continues its training
    return o;
}

QuantizationHooks withFinetuneMethods(QuantizationHooks hooks) {
    QuantizationHooks wrapped = hooks;
    wrapped.validate = [inner = hooks.validate](const MethodSpec &method) -> Status {
        if (isFinetuneMethod(method.name)) {
            auto options = finetuneOptions(method, 0);
            return options.ok() ? Status() : Status(options.error());
        }
        return inner ? inner(method) : Status();
    };
    wrapped.quantize = [inner = hooks.quantize](const Checkpoint &source, const MethodSpec &method,
                                                int threads, const DeviceSpec &device,
                                                const std::filesystem::path &outDir,
                                                ProgressSink &progress,
                                                std::stop_token stop) -> Result<json> {
        if (!isFinetuneMethod(method.name)) {
            if (!inner)
                return makeError(ErrorCode::Unsupported,
                                 "method '" + method.name + "' is not available yet");
            return inner(source, method, threads, device, outDir, progress, stop);
        }
        LOWBIT_TRY(train::FinetuneOptions options, finetuneOptions(method, threads));
        options.outDir = outDir;
        options.device = device; // the job's device: where the adapters train
        LOWBIT_TRY(train::FinetuneReport report,
                   train::runFinetune(std::make_shared<const Checkpoint>(source), options, progress,
                                      stop));
        json facts = report.toJson();
        facts.erase("history"); // the whole curve stays in OUT/finetune.json
        facts["bits"] = method.bits;
        return facts;
    };
    wrapped.load = [inner = hooks.load](const std::filesystem::path &dir,
                                        const LoadOptions &options) -> Result<Checkpoint> {
        std::error_code ec;
        if (std::filesystem::exists(dir / "merged" / "config.json", ec) &&
            std::filesystem::exists(dir / "finetune.json", ec))
            return loadCheckpoint(dir / "merged", options);
        return inner ? inner(dir, options) : loadCheckpoint(dir, options);
    };
    return wrapped;
}

} // namespace lowbit
