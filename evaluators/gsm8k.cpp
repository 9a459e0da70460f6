#include "gsm8k.h"

#include "dataset_io.h"
#include "generation.h"
#include "python_random.h"
#include "task_support.h"
#include "tokenizer/chat_template.h"

#include <regex>

namespace lowbit {

Result<std::vector<Gsm8kProblem>> readGsm8k(const std::filesystem::path &file) {
    LOWBIT_TRY(std::vector<JsonLine> rows, readJsonLines(file));
    std::vector<Gsm8kProblem> out;
    for (const JsonLine &row : rows) {
        Gsm8kProblem p;
        p.index = int64_t(out.size());
        LOWBIT_TRY(p.question, jsonString(row.value, "question", file, row.line));
        LOWBIT_TRY(p.answer, jsonString(row.value, "answer", file, row.line));
        if (p.answer.find("#### ") == std::string::npos)
            return dataError(file, row.line, "answer has no '#### ' final line");
        out.push_back(std::move(p));
    }
    return out;
}

std::string gsm8kPrompt(std::span<const Gsm8kProblem> shots, const Gsm8kProblem &problem) {
    std::string prompt;
    for (const Gsm8kProblem &shot : shots)
        prompt += "Question: " + shot.question + "\nAnswer: " + shot.answer + "\n\n";
    return prompt + "Question: " + problem.question + "\nAnswer:";
}

std::vector<std::vector<int64_t>> gsm8kFewshotIndices(int64_t documents, int64_t trainSize, int k, uint64_t seed) {
    PythonRandom rng(seed);
    std::vector<std::vector<int64_t>> out;
    for (int64_t d = 0; d < documents; ++d)
        out.push_back(rng.sample(trainSize, k));
    return out;
}

std::string gsm8kStrictExtract(const std::string &response) {
    static const std::regex pattern("#### (-?[0-9.,]+)");
    std::smatch match;
    if (!std::regex_search(response, match, pattern))
        return kGsm8kInvalid;
    return std::string(trimPythonWhitespace(match[1].str()));
}

std::string gsm8kFlexibleExtract(const std::string &response) {
    static const std::regex pattern("(-?[$0-9.,]{2,})|(-?[0-9]+)");
    std::string last;
    bool found = false;
    for (auto it = std::sregex_iterator(response.begin(), response.end(), pattern); it != std::sregex_iterator(); ++it) {
        // findall() yields the groups; lm-eval keeps the first non-empty one.
        last = (*it)[1].matched && (*it)[1].length() > 0 ? (*it)[1].str() : (*it)[2].str();
        found = true;
    }
    if (!found || last.empty())
        return kGsm8kInvalid;
    return std::string(trimPythonWhitespace(last));
}

std::string gsm8kNormalize(std::string text) {
    auto removeAll = [&](char c) { text.erase(std::remove(text.begin(), text.end(), c), text.end()); };
    removeAll(',');
    removeAll('$');
    // "(?s).*#### ": greedy, so everything through the last "#### ".
    if (const size_t at = text.rfind("#### "); at != std::string::npos)
        text.erase(0, at + 5);
    // "\.$": a final '.', or one right before a final newline (Python's '$').
    if (!text.empty() && text.back() == '.')
        text.pop_back();
    else if (text.size() >= 2 && text[text.size() - 1] == '\n' && text[text.size() - 2] == '.')
        text.erase(text.size() - 2, 1);
    return asciiLower(text);
}

bool gsm8kExactMatch(const std::string &prediction, const std::string &reference) {
    return gsm8kNormalize(prediction) == gsm8kNormalize(reference);
}

namespace {

class Gsm8kTask final : public Task {
public:
    explicit Gsm8kTask(std::filesystem::path dataDir) : m_dataDir(std::move(dataDir)) {}
    std::string name() const override { return "gsm8k"; }

    static int shotsOf(const TaskOptions &options) { return options.shots < 0 ? 5 : options.shots; }
    static int maxTokensOf(const TaskOptions &options) {
        const auto it = options.extra.find("max_tokens");
        return it != options.extra.end() && it->is_number_integer() ? it->get<int>() : 256;
    }
    static bool chatOf(const TaskOptions &options) {
        const auto it = options.extra.find("chat");
        return it != options.extra.end() && it->is_boolean() && it->get<bool>();
    }

    nlohmann::json protocol(const LanguageModel &model, const TaskOptions &options) const override {
        nlohmann::json p = commonProtocol("gsm8k", model, options, shotsOf(options));
        p["prompt"] = "k x 'Question: {q}\\nAnswer: {answer}\\n\\n' + 'Question: {q}\\nAnswer:'";
        p["fewshot"] = "random.Random(1234).sample(train, k) per document in order";
        p["generation"] = {{"greedy", true}, {"max_tokens", maxTokensOf(options)},
                           {"until", {"Question:", "</s>", "<|eot_id|>"}}, {"chat", chatOf(options)}};
        p["filters"] = {"strict-match", "flexible-extract"};
        return p;
    }

    Status run(TaskContext &context) override {
        LOWBIT_TRY(auto test, readGsm8k(m_dataDir / "gsm8k" / "test.jsonl"));
        LOWBIT_TRY(auto train, readGsm8k(m_dataDir / "gsm8k" / "train.jsonl"));
        const int shots = shotsOf(context.options);
        if (shots < 0 || shots > int(train.size()))
            return makeError(ErrorCode::InvalidArgument, "gsm8k: shots out of range");
        const auto indices = subsampleIndices(int64_t(test.size()), context.options.limit, context.options.seed);
        const auto fewshot = gsm8kFewshotIndices(indices.empty() ? 0 : indices.back() + 1, int64_t(train.size()), shots);
        GenerationOptions options;
        options.batchSize = context.options.batchSize;
        options.addBos = addBosOption(context.options);
        options.maxLength = maxLengthOption(context.model, context.options);
        options.generate.maxTokens = maxTokensOf(context.options);
        options.generate.stopStrings = {"Question:", "</s>", "<|eot_id|>"};
        GenerationEngine engine(context.model, options);
        auto docId = [](int64_t i) { return "test:" + std::to_string(i); };
        const size_t chunk = size_t(std::max(4, 2 * context.options.batchSize));
        return forEachChunk(context, "gsm8k", indices, docId, chunk, [&](std::span<const int64_t> docs) -> Status {
            std::vector<GenerationRequest> requests;
            for (int64_t i : docs) {
                std::vector<Gsm8kProblem> exemplars;
                for (int64_t t : fewshot[size_t(i)])
                    exemplars.push_back(train[size_t(t)]);
                requests.push_back({.prompt = gsm8kPrompt(exemplars, test[size_t(i)]), .chat = chatOf(context.options),
                                    .seed = uint64_t(i)});
            }
            LOWBIT_TRY(auto outputs, engine.run(requests, context.stop));
            for (size_t k = 0; k < docs.size(); ++k) {
                const Gsm8kProblem &p = test[size_t(docs[k])];
                const GenerationOutput &out = outputs[k];
                SampleRecord s;
                s.docId = docId(docs[k]);
                s.docHash = hashHex(p.question + '\x1f' + p.answer);
                s.promptHash = hashHex(out.promptText);
                s.target = gsm8kNormalize(p.answer);
                s.output = out.text;
                s.tokens = int64_t(out.tokens.size());
                const std::string strict = gsm8kStrictExtract(out.text);
                const std::string flexible = gsm8kFlexibleExtract(out.text);
                const bool strictOk = gsm8kExactMatch(strict, p.answer);
                const bool flexibleOk = gsm8kExactMatch(flexible, p.answer);
                s.correct = strictOk ? 1 : 0;
                s.extra["strict"] = strict;
                s.extra["flexible"] = flexible;
                s.extra["exact_match_strict"] = strictOk ? 1 : 0;
                s.extra["exact_match_flexible"] = flexibleOk ? 1 : 0;
                s.extra["stop_reason"] = out.stopReason;
                s.extra["fewshot"] = fewshot[size_t(docs[k])];
                LOWBIT_CHECK(context.samples.onSample(s));
            }
            return {};
        });
    }

    Result<TaskReport> aggregate(std::span<const SampleRecord> samples, const LanguageModel &model,
                                 const TaskOptions &options) const override {
        TaskReport report;
        report.task = "gsm8k";
        report.protocol = protocol(model, options);
        report.metrics.push_back(accuracyMetric(samples, "exact_match,strict-match", "exact_match_strict"));
        report.metrics.push_back(accuracyMetric(samples, "exact_match,flexible-extract", "exact_match_flexible"));
        return report;
    }

private:
    std::filesystem::path m_dataDir;
};

} // namespace

std::unique_ptr<Task> makeGsm8kTask(const std::filesystem::path &dataDir) { return std::make_unique<Gsm8kTask>(dataDir); }

} // namespace lowbit
