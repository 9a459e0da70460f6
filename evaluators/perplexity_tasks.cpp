#include "perplexity_tasks.h"

#include "dataset_io.h"
#include "python_random.h"
#include "task_support.h"
#include "tokenizer/chat_template.h"

#include <cmath>

namespace lowbit {

Result<CorpusSpec> corpusSpec(const std::string &name, const std::filesystem::path &dataDir) {
    if (name.rfind("text:", 0) == 0) {
        if (name.size() == 5)
            return makeError(ErrorCode::InvalidArgument, "task text:PATH needs a file path");
        return CorpusSpec{CorpusKind::TextFile, name, name.substr(5)};
    }
    if (name == "wikitext2")
        return CorpusSpec{CorpusKind::WikiText2, name, dataDir / "wikitext2" / "wiki.test.raw"};
    if (name == "c4")
        return CorpusSpec{CorpusKind::C4, name, dataDir / "c4" / "c4_validation_2k.jsonl"};
    if (name == "ptb")
        return CorpusSpec{CorpusKind::Ptb, name, dataDir / "ptb" / "ptb.valid.txt"};
    if (name == "tinystories")
        return CorpusSpec{CorpusKind::TinyStories, name, dataDir / "tinystories" / "tinystories_val_first1000.txt"};
    return makeError(ErrorCode::NotFound, "unknown perplexity corpus '" + name + "'");
}

int64_t perplexityContext(const LanguageModel &model, const TaskOptions &options) {
    const int64_t modelContext = model.config().maxPositions;
    if (options.contextTokens > 0)
        return options.contextTokens;
    return std::min<int64_t>(2048, modelContext);
}

Result<PerplexityProtocol> perplexityMode(const TaskOptions &options) {
    const std::string *mode = extraString(options, "mode");
    if (!mode || *mode == "paper")
        return PerplexityProtocol::Paper;
    if (*mode == "llamacpp")
        return PerplexityProtocol::LlamaCpp;
    return makeError(ErrorCode::InvalidArgument, "perplexity: mode must be 'paper' or 'llamacpp', not '" + *mode + "'");
}

namespace {

// GPTQ get_ptb: "\n\n".join(sentences), each line of the file stripped (HF ptb_text_only).
std::string ptbText(const std::string &raw) {
    std::string out;
    size_t start = 0;
    bool first = true;
    while (start < raw.size()) {
        size_t end = raw.find('\n', start);
        if (end == std::string::npos)
            end = raw.size();
        if (!first)
            out += "\n\n";
        out += trimPythonWhitespace(std::string_view(raw).substr(start, end - start));
        first = false;
        start = end + 1;
    }
    return out;
}

// GPTQ get_c4's validation windows: random.seed(0); per window, randint over the documents until
// one has at least ctx tokens, then randint(0, len - ctx - 1) for the start.
Result<CorpusChunks> c4Windows(const CorpusSpec &spec, const Tokenizer &tokenizer, int64_t ctx,
                               const TaskOptions &options) {
    LOWBIT_TRY(std::vector<JsonLine> rows, readJsonLines(spec.file));
    std::vector<std::string> texts;
    for (const JsonLine &row : rows) {
        LOWBIT_TRY(std::string text, jsonString(row.value, "text", spec.file, row.line));
        texts.push_back(std::move(text));
    }
    if (texts.empty())
        return makeError(ErrorCode::Format, spec.file.string() + ": no documents");
    int64_t windows = 256;
    if (const auto it = options.extra.find("c4_windows"); it != options.extra.end() && it->is_number_integer())
        windows = it->get<int64_t>();
    if (windows < 1)
        return makeError(ErrorCode::InvalidArgument, "c4: c4_windows must be positive");
    std::vector<std::vector<int32_t>> encoded(texts.size());
    auto tokens = [&](size_t doc) -> const std::vector<int32_t> & {
        if (encoded[doc].empty())
            encoded[doc] = tokenizer.encode(texts[doc], {true, false});
        return encoded[doc];
    };
    CorpusChunks out;
    PythonRandom rng(0);
    int64_t misses = 0;
    while (int64_t(out.chunks.size()) < windows) {
        const auto doc = size_t(rng.randint(0, int64_t(texts.size()) - 1));
        const std::vector<int32_t> &ids = tokens(doc);
        if (int64_t(ids.size()) < ctx) {
            // GPTQ loops forever when no document is long enough; give up after many misses.
            if (++misses > 100000)
                return makeError(ErrorCode::InvalidArgument, "c4: too few documents of at least " +
                                                                 std::to_string(ctx) + " tokens in " + spec.file.string());
            continue;
        }
        // randint(0, len - ctx - 1) fails in Python when len == ctx; the only window is then 0.
        const int64_t begin = int64_t(ids.size()) > ctx ? rng.randint(0, int64_t(ids.size()) - ctx - 1) : 0;
        out.chunks.emplace_back(ids.begin() + begin, ids.begin() + begin + ctx);
        out.textTokens += int64_t(ids.size());
    }
    return out;
}

} // namespace

Result<CorpusChunks> loadCorpusChunks(const CorpusSpec &spec, const Tokenizer &tokenizer,
                                      int64_t contextTokens, const TaskOptions &options) {
    if (contextTokens < 2)
        return makeError(ErrorCode::InvalidArgument, "perplexity: context must be at least 2 tokens");
    CorpusChunks out;
    if (spec.kind == CorpusKind::C4) {
        LOWBIT_TRY(out, c4Windows(spec, tokenizer, contextTokens, options));
    } else {
        LOWBIT_TRY(std::string text, readWholeFile(spec.file));
        if (spec.kind == CorpusKind::Ptb)
            text = ptbText(text);
        const std::vector<int32_t> ids = tokenizer.encode(text, {true, false});
        out.textTokens = int64_t(ids.size());
        for (size_t at = 0; at + size_t(contextTokens) <= ids.size(); at += size_t(contextTokens))
            out.chunks.emplace_back(ids.begin() + long(at), ids.begin() + long(at) + contextTokens);
        if (out.chunks.empty())
            return makeError(ErrorCode::InvalidArgument, spec.file.string() + ": " + std::to_string(ids.size()) +
                                                             " tokens, fewer than one context of " +
                                                             std::to_string(contextTokens));
    }
    std::string bytes;
    for (const auto &chunk : out.chunks)
        bytes.append(reinterpret_cast<const char *>(chunk.data()), chunk.size() * sizeof(int32_t));
    out.tokenHash = hashHex(bytes);
    return out;
}

namespace {

class PerplexityTask final : public Task {
public:
    explicit PerplexityTask(CorpusSpec spec) : m_spec(std::move(spec)) {}

    std::string name() const override { return m_spec.name; }

    nlohmann::json protocol(const LanguageModel &model, const TaskOptions &options) const override {
        nlohmann::json p = commonProtocol(name(), model, options, 0);
        p["add_bos"] = true; // the text is tokenized once, with BOS, as GPTQ's loaders do
        p["max_length"] = perplexityContext(model, options);
        auto mode = perplexityMode(options);
        p["mode"] = mode && *mode == PerplexityProtocol::LlamaCpp ? "llamacpp" : "paper";
        p["file"] = m_spec.file.filename().string();
        if (m_spec.kind == CorpusKind::C4) {
            const auto it = options.extra.find("c4_windows");
            p["c4_windows"] = it != options.extra.end() ? *it : nlohmann::json(256);
            p["c4_window_seed"] = 0;
        }
        return p;
    }

    Status run(TaskContext &context) override {
        const Tokenizer *tokenizer = context.model.tokenizer();
        if (!tokenizer)
            return makeError(ErrorCode::InvalidArgument, name() + ": the model has no tokenizer");
        LOWBIT_TRY(PerplexityProtocol mode, perplexityMode(context.options));
        const int64_t ctx = perplexityContext(context.model, context.options);
        LOWBIT_TRY(CorpusChunks corpus, loadCorpusChunks(m_spec, *tokenizer, ctx, context.options));
        const auto indices = subsampleIndices(int64_t(corpus.chunks.size()), context.options.limit, context.options.seed);
        auto docId = [](int64_t i) { return "chunk:" + std::to_string(i); };
        PerplexityOptions ppl;
        ppl.contextTokens = ctx;
        ppl.protocol = mode;
        ppl.maxChunks = 1;
        ppl.batchTokens = ctx;
        NullProgress quiet;
        return forEachChunk(context, "ppl", indices, docId, 1, [&](std::span<const int64_t> chunk) -> Status {
            const auto &tokens = corpus.chunks[size_t(chunk[0])];
            LOWBIT_TRY(PerplexityReport report, evaluatePerplexity(context.model, tokens, ppl, quiet, context.stop));
            SampleRecord s;
            s.docId = docId(chunk[0]);
            const std::string_view bytes(reinterpret_cast<const char *>(tokens.data()), tokens.size() * sizeof(int32_t));
            s.docHash = hashHex(bytes);
            s.promptHash = s.docHash;
            s.tokens = report.predictedTokens;
            s.nll = report.meanNll * double(report.predictedTokens);
            s.extra["chunk"] = chunk[0];
            return context.samples.onSample(s);
        });
    }

    Result<TaskReport> aggregate(std::span<const SampleRecord> samples, const LanguageModel &model,
                                 const TaskOptions &options) const override {
        TaskReport report;
        report.task = name();
        report.protocol = protocol(model, options);
        if (samples.empty())
            return makeError(ErrorCode::InvalidArgument, name() + ": no samples to aggregate");
        auto meanNll = [&](std::span<const int64_t> pick) {
            double nll = 0, tokens = 0;
            for (int64_t i : pick) {
                nll += samples[size_t(i)].nll;
                tokens += double(samples[size_t(i)].tokens);
            }
            return tokens > 0 ? nll / tokens : 0.0;
        };
        std::vector<int64_t> all;
        int64_t tokens = 0;
        for (size_t i = 0; i < samples.size(); ++i) {
            all.push_back(int64_t(i));
            tokens += samples[i].tokens;
        }
        const double nll = meanNll(all);
        const int64_t n = int64_t(samples.size());
        report.metrics.push_back({"ppl", std::exp(nll),
                                  bootstrapStderr(n, [&](auto pick) { return std::exp(meanNll(pick)); }), tokens});
        report.metrics.push_back({"nll", nll, bootstrapStderr(n, meanNll), tokens});
        report.metrics.push_back({"chunks", double(n), 0, n});
        return report;
    }

private:
    CorpusSpec m_spec;
};

} // namespace

std::unique_ptr<Task> makePerplexityTask(const CorpusSpec &spec) { return std::make_unique<PerplexityTask>(spec); }

} // namespace lowbit
