// The "kld" task (kl_divergence.h): writes a base file, or compares against one, chunk by chunk.
#include "dataset_io.h"
#include "kl_divergence.h"
#include "perplexity_tasks.h"
#include "task_support.h"

#include <algorithm>
#include <cmath>

namespace lowbit {

namespace {

// numpy.percentile's default (linear interpolation between closest ranks).
double percentile(std::vector<double> values, double q) {
    if (values.empty())
        return 0;
    std::sort(values.begin(), values.end());
    const double rank = q / 100.0 * double(values.size() - 1);
    const auto lo = size_t(std::floor(rank)), hi = std::min(values.size() - 1, lo + 1);
    return values[lo] + (values[hi] - values[lo]) * (rank - double(lo));
}

class KldTask final : public Task {
public:
    KldTask(std::string name, CorpusSpec corpus) : m_name(std::move(name)), m_corpus(std::move(corpus)) {}
    std::string name() const override { return m_name; }

    static int topKOf(const TaskOptions &options) {
        const auto it = options.extra.find("kld_top_k");
        return it != options.extra.end() && it->is_number_integer() ? std::max(1, it->get<int>()) : 32;
    }

    nlohmann::json protocol(const LanguageModel &model, const TaskOptions &options) const override {
        nlohmann::json p = commonProtocol(m_name, model, options, 0);
        p["corpus"] = m_corpus.name;
        p["add_bos"] = true;
        p["max_length"] = perplexityContext(model, options);
        auto mode = perplexityMode(options);
        p["mode"] = mode && *mode == PerplexityProtocol::LlamaCpp ? "llamacpp" : "paper";
        if (const std::string *base = extraString(options, "kld_base"))
            p["kld_base"] = std::filesystem::path(*base).filename().string();
        p["kld_role"] = extraString(options, "kld_write") ? "base" : "compare";
        return p;
    }

    Status run(TaskContext &context) override;

    Result<TaskReport> aggregate(std::span<const SampleRecord> samples, const LanguageModel &model,
                                 const TaskOptions &options) const override;

private:
    std::string m_name;
    CorpusSpec m_corpus;
};

// The base file for this run: created (kld_write) or opened and checked against this run's
// corpus, context, mode and vocabulary (kld_base).
Result<std::unique_ptr<KldBaseFile>> openBase(const std::string &task, const TaskOptions &options,
                                              const nlohmann::json &header) {
    const std::string *writePath = extraString(options, "kld_write");
    const std::string *basePath = extraString(options, "kld_base");
    if (!writePath == !basePath)
        return makeError(ErrorCode::InvalidArgument, task + ": give exactly one of kld_write (base run) and kld_base (compare)");
    if (writePath)
        return KldBaseFile::create(*writePath, header);
    LOWBIT_TRY(auto file, KldBaseFile::open(*basePath));
    for (const char *key : {"corpus", "token_hash", "ctx", "mode", "vocab", "chunks", "positions"})
        if (file->header().value(key, nlohmann::json()) != header[key])
            return makeError(ErrorCode::InvalidArgument, *basePath + ": base run differs in '" + key + "' (base " +
                                                             file->header().value(key, nlohmann::json()).dump() +
                                                             ", this run " + header[key].dump() + ")");
    return file;
}

// One chunk's positions against the base: per-token KLD and Δp, top-1 agreements, both NLLs.
Status compareChunk(KldBaseFile &file, int64_t chunk, const Logits &logits, std::span<const int32_t> targets,
                    SampleRecord &s) {
    LOWBIT_TRY(auto base, file.readChunk(chunk));
    nlohmann::json kld = nlohmann::json::array(), dp = nlohmann::json::array();
    int64_t agree = 0;
    double baseNll = 0;
    for (size_t t = 0; t < targets.size(); ++t) {
        const KldPoint point = compareToBase(base[t], logits.row(int64_t(t)), logits.vocab, targets[t]);
        kld.push_back(float(point.kld));
        dp.push_back(float(point.deltaP));
        agree += point.top1Agrees ? 1 : 0;
        s.nll += point.nll;
        baseNll -= double(base[t].targetLogProb);
    }
    s.extra["kld"] = std::move(kld);
    s.extra["delta_p"] = std::move(dp);
    s.extra["top1_agree"] = agree;
    s.extra["base_nll"] = baseNll;
    return {};
}

Status KldTask::run(TaskContext &context) {
    const Tokenizer *tokenizer = context.model.tokenizer();
    if (!tokenizer)
        return makeError(ErrorCode::InvalidArgument, m_name + ": the model has no tokenizer");
    LOWBIT_TRY(PerplexityProtocol mode, perplexityMode(context.options));
    const int64_t ctx = perplexityContext(context.model, context.options);
    LOWBIT_TRY(CorpusChunks corpus, loadCorpusChunks(m_corpus, *tokenizer, ctx, context.options));
    const int64_t firstScored = mode == PerplexityProtocol::LlamaCpp ? ctx / 2 : 0;
    const int64_t positions = ctx - 1 - firstScored, vocab = context.model.config().vocabSize;
    const int topK = int(std::min<int64_t>(topKOf(context.options), vocab));
    const nlohmann::json header = {{"version", 1}, {"corpus", m_corpus.name}, {"token_hash", corpus.tokenHash},
                                   {"ctx", ctx}, {"mode", mode == PerplexityProtocol::LlamaCpp ? "llamacpp" : "paper"},
                                   {"vocab", vocab}, {"top_k", topK}, {"chunks", int64_t(corpus.chunks.size())},
                                   {"positions", positions}};
    LOWBIT_TRY(auto file, openBase(m_name, context.options, header));
    const bool writing = extraString(context.options, "kld_write") != nullptr;
    const int32_t bos = tokenizer->bosId() >= 0 ? tokenizer->bosId() : context.model.config().bosId;
    if (mode == PerplexityProtocol::LlamaCpp && bos < 0)
        return makeError(ErrorCode::InvalidArgument, m_name + ": the llama.cpp protocol needs a BOS token");
    LOWBIT_TRY(auto cache, context.model.allocateCache(1, ctx));
    const auto indices = subsampleIndices(int64_t(corpus.chunks.size()), context.options.limit, context.options.seed);
    auto docId = [](int64_t i) { return "chunk:" + std::to_string(i); };
    return forEachChunk(context, "kld", indices, docId, 1, [&](std::span<const int64_t> chunk) -> Status {
        std::vector<int32_t> tokens = corpus.chunks[size_t(chunk[0])];
        if (mode == PerplexityProtocol::LlamaCpp)
            tokens[0] = bos;
        cache->clear(0);
        const SequenceInput input{0, tokens, LogitsWanted::All, firstScored};
        LOWBIT_TRY(Logits logits, context.model.forward(*cache, {&input, 1}));
        const std::span<const int32_t> targets(tokens.data() + firstScored + 1, size_t(positions));
        SampleRecord s;
        s.docId = docId(chunk[0]);
        s.docHash = hashHex({reinterpret_cast<const char *>(tokens.data()), tokens.size() * sizeof(int32_t)});
        s.promptHash = s.docHash;
        s.tokens = positions;
        if (writing) {
            std::vector<BaseTokenDistribution> dists;
            for (int64_t t = 0; t < positions; ++t) {
                dists.push_back(topKDistribution(logits.row(t), vocab, topK, targets[size_t(t)]));
                s.nll -= double(dists.back().targetLogProb);
            }
            LOWBIT_CHECK(file->writeChunk(chunk[0], dists));
        } else {
            LOWBIT_CHECK(compareChunk(*file, chunk[0], logits, targets, s));
        }
        return context.samples.onSample(s);
    });
}

Result<TaskReport> KldTask::aggregate(std::span<const SampleRecord> samples, const LanguageModel &model,
                                      const TaskOptions &options) const {
    TaskReport report;
    report.task = m_name;
    report.protocol = protocol(model, options);
    double nll = 0, baseNll = 0;
    int64_t tokens = 0, agree = 0;
    std::vector<double> klds, deltas;
    for (const SampleRecord &s : samples) {
        nll += s.nll;
        tokens += s.tokens;
        baseNll += s.extra.value("base_nll", 0.0);
        agree += s.extra.value("top1_agree", int64_t(0));
        if (const auto it = s.extra.find("kld"); it != s.extra.end() && it->is_array())
            for (const auto &v : *it)
                klds.push_back(v.get<double>());
        if (const auto it = s.extra.find("delta_p"); it != s.extra.end() && it->is_array())
            for (const auto &v : *it)
                deltas.push_back(v.get<double>());
    }
    if (tokens == 0)
        return makeError(ErrorCode::InvalidArgument, m_name + ": no samples to aggregate");
    report.metrics.push_back({"ppl", std::exp(nll / double(tokens)), 0, tokens});
    if (klds.empty())
        return report; // a base run: only its own perplexity
    report.metrics.push_back({"ppl_base", std::exp(baseNll / double(tokens)), 0, tokens});
    report.metrics.push_back({"ln_ppl_ratio", (nll - baseNll) / double(tokens), 0, tokens});
    MetricValue mean = meanMetric("kld_mean", klds);
    report.metrics.push_back(mean);
    report.metrics.push_back({"kld_median", percentile(klds, 50), 0, mean.n});
    report.metrics.push_back({"kld_p99", percentile(klds, 99), 0, mean.n});
    report.metrics.push_back({"kld_max", *std::max_element(klds.begin(), klds.end()), 0, mean.n});
    report.metrics.push_back(meanMetric("delta_p_mean", deltas));
    double squares = 0;
    for (double d : deltas)
        squares += d * d;
    report.metrics.push_back({"delta_p_rms", std::sqrt(squares / double(std::max<size_t>(1, deltas.size()))), 0,
                              int64_t(deltas.size())});
    const double p = double(agree) / double(tokens);
    report.metrics.push_back({"top1_agreement", p, std::sqrt(p * (1 - p) / double(tokens)), tokens});
    return report;
}

} // namespace

std::unique_ptr<Task> makeKldTask(const std::string &name, const std::filesystem::path &dataDir) {
    if (name != "kld" && name.rfind("kld:", 0) != 0)
        return nullptr;
    auto corpus = corpusSpec(name == "kld" ? "wikitext2" : name.substr(4), dataDir);
    if (!corpus)
        return nullptr;
    return std::make_unique<KldTask>(name, *corpus);
}

} // namespace lowbit
