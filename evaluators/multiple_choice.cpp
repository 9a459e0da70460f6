#include "multiple_choice.h"

#include "dataset_io.h"
#include "task_support.h"

#include <functional>

namespace lowbit {

std::vector<LoglikelihoodRequest> multipleChoiceRequests(const MultipleChoiceDoc &doc, int64_t group) {
    std::vector<LoglikelihoodRequest> requests;
    if (doc.partial()) {
        for (const std::string &context : doc.contexts)
            requests.push_back({context, " " + doc.continuation, group});
    } else {
        for (const std::string &choice : doc.choices)
            requests.push_back({doc.context, " " + choice, group});
    }
    return requests;
}

MultipleChoiceScore scoreMultipleChoice(const MultipleChoiceDoc &doc, std::span<const double> logLikelihoods) {
    MultipleChoiceScore score;
    double best = 0, bestNorm = 0;
    for (size_t i = 0; i < logLikelihoods.size(); ++i) {
        const double ll = logLikelihoods[i];
        if (score.pick < 0 || ll > best) {
            score.pick = int(i);
            best = ll;
        }
        if (doc.partial() || i >= doc.choices.size())
            continue;
        const double norm = ll / double(std::max<int64_t>(1, pythonLength(doc.choices[i])));
        if (score.pickNorm < 0 || norm > bestNorm) {
            score.pickNorm = int(i);
            bestNorm = norm;
        }
    }
    return score;
}

namespace {

using Loader = std::function<Result<std::vector<MultipleChoiceDoc>>()>;

struct McInfo {
    const char *prompt;
    bool hasNorm;
};

McInfo mcInfo(const std::string &task) {
    if (task == "winogrande")
        return {"partial evaluation: sentence[:blank] + option | ' ' + sentence[blank+1:].strip()", false};
    if (task == "hellaswag")
        return {"preprocess(activity_label + ': ' + ctx) | ' ' + preprocess(ending)", true};
    return {"'Question: {question}\\nAnswer:' | ' ' + choice", true};
}

class MultipleChoiceTask final : public Task {
public:
    MultipleChoiceTask(std::string name, std::vector<std::filesystem::path> files, Loader loader)
        : m_name(std::move(name)), m_files(std::move(files)), m_loader(std::move(loader)) {}

    std::string name() const override { return m_name; }

    nlohmann::json protocol(const LanguageModel &model, const TaskOptions &options) const override {
        nlohmann::json p = commonProtocol(m_name, model, options, 0);
        p["prompt"] = mcInfo(m_name).prompt;
        p["scoring"] = mcInfo(m_name).hasNorm ? "acc: argmax ll; acc_norm: argmax ll/len(choice)" : "acc: argmax ll";
        p["file"] = m_files.empty() ? "" : m_files[0].filename().string();
        if (m_name == "hellaswag")
            p["hellaswag_ctx_b"] = "trailing lower-case fragment capitalized (text format)";
        return p;
    }

    Status run(TaskContext &context) override {
        LOWBIT_TRY(std::vector<MultipleChoiceDoc> docs, m_loader());
        LoglikelihoodEngine engine(context.model, loglikelihoodOptions(context.model, context.options));
        const auto indices = subsampleIndices(int64_t(docs.size()), context.options.limit, context.options.seed);
        auto docId = [&](int64_t i) { return docs[size_t(i)].id; };
        const size_t chunk = size_t(std::max(8, 4 * context.options.batchSize));
        return forEachChunk(context, m_name, indices, docId, chunk, [&](std::span<const int64_t> chunkDocs) -> Status {
            std::vector<LoglikelihoodRequest> requests;
            for (size_t k = 0; k < chunkDocs.size(); ++k)
                for (auto &r : multipleChoiceRequests(docs[size_t(chunkDocs[k])], int64_t(k)))
                    requests.push_back(std::move(r));
            LOWBIT_TRY(std::vector<LoglikelihoodResult> results, engine.score(requests, context.stop));
            size_t at = 0;
            for (int64_t i : chunkDocs) {
                const MultipleChoiceDoc &doc = docs[size_t(i)];
                const size_t n = doc.partial() ? doc.contexts.size() : doc.choices.size();
                LOWBIT_CHECK(context.samples.onSample(record(doc, {results.data() + at, n})));
                at += n;
            }
            return {};
        });
    }

    Result<TaskReport> aggregate(std::span<const SampleRecord> samples, const LanguageModel &model,
                                 const TaskOptions &options) const override {
        TaskReport report;
        report.task = m_name;
        report.protocol = protocol(model, options);
        report.metrics.push_back(accuracyMetric(samples, "acc"));
        if (mcInfo(m_name).hasNorm)
            report.metrics.push_back(accuracyMetric(samples, "acc_norm", "acc_norm"));
        return report;
    }

private:
    SampleRecord record(const MultipleChoiceDoc &doc, std::span<const LoglikelihoodResult> results) const {
        std::vector<double> lls;
        nlohmann::json greedy = nlohmann::json::array(), tokens = nlohmann::json::array();
        for (const LoglikelihoodResult &r : results) {
            lls.push_back(r.logLikelihood);
            greedy.push_back(r.isGreedy);
            tokens.push_back(r.tokens);
        }
        const MultipleChoiceScore score = scoreMultipleChoice(doc, lls);
        SampleRecord s;
        s.docId = doc.id;
        std::string content = doc.context + '\x1f' + doc.continuation;
        for (const auto &c : doc.contexts)
            content += '\x1f' + c;
        std::string prompt = content;
        for (const auto &c : doc.choices)
            content += '\x1f' + c;
        content += '\x1f' + std::to_string(doc.gold);
        s.docHash = hashHex(content);
        s.promptHash = hashHex(prompt);
        s.target = doc.gold >= 0 && size_t(doc.gold) < doc.choices.size() ? doc.choices[size_t(doc.gold)] : "";
        s.output = score.pick >= 0 && size_t(score.pick) < doc.choices.size() ? doc.choices[size_t(score.pick)] : "";
        s.choiceLogLikelihoods = lls;
        s.correct = score.pick == doc.gold ? 1 : 0;
        s.tokens = 0;
        for (const LoglikelihoodResult &r : results)
            s.tokens += r.tokens;
        s.extra["gold"] = doc.gold;
        s.extra["pick"] = score.pick;
        s.extra["is_greedy"] = greedy;
        s.extra["choice_tokens"] = tokens;
        if (!doc.partial()) {
            s.extra["pick_norm"] = score.pickNorm;
            s.extra["acc_norm"] = score.pickNorm == doc.gold ? 1 : 0;
        }
        return s;
    }

    std::string m_name;
    std::vector<std::filesystem::path> m_files;
    Loader m_loader;
};

} // namespace

std::vector<std::filesystem::path> multipleChoiceFiles(const std::string &task, const std::filesystem::path &dataDir) {
    if (task == "piqa")
        return {dataDir / "piqa" / "dev.jsonl", dataDir / "piqa" / "dev-labels.lst"};
    if (task == "arc_easy")
        return {dataDir / "arc" / "ARC-Easy" / "ARC-Easy-Test.jsonl"};
    if (task == "arc_challenge")
        return {dataDir / "arc" / "ARC-Challenge" / "ARC-Challenge-Test.jsonl"};
    if (task == "hellaswag")
        return {dataDir / "hellaswag" / "hellaswag_val_full.txt.bz2"};
    if (task == "winogrande")
        return {dataDir / "winogrande" / "dev.jsonl"};
    return {};
}

std::unique_ptr<Task> makeMultipleChoiceTask(const std::string &task, const std::filesystem::path &dataDir) {
    Loader loader;
    if (task == "piqa")
        loader = [dataDir] { return loadPiqa(dataDir); };
    else if (task == "arc_easy" || task == "arc_challenge")
        loader = [dataDir, challenge = task == "arc_challenge"] { return loadArc(dataDir, challenge); };
    else if (task == "hellaswag")
        loader = [dataDir] { return loadHellaswag(dataDir); };
    else if (task == "winogrande")
        loader = [dataDir] { return loadWinogrande(dataDir); };
    else
        return nullptr;
    return std::make_unique<MultipleChoiceTask>(task, multipleChoiceFiles(task, dataDir), std::move(loader));
}

} // namespace lowbit
