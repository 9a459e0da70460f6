#include "mmlu.h"

#include "dataset_io.h"
#include "loglikelihood.h"
#include "task_support.h"
#include "tokenizer/chat_template.h"

#include <algorithm>
#include <cmath>

namespace lowbit {

Result<std::vector<MmluQuestion>> readMmluCsv(const std::filesystem::path &file, const std::string &subject) {
    LOWBIT_TRY(std::vector<CsvRow> rows, readCsvFile(file));
    std::vector<MmluQuestion> out;
    for (const CsvRow &row : rows) {
        if (row.fields.size() != 6)
            return dataError(file, row.line, "expected 6 fields (question,A,B,C,D,answer), found " +
                                                 std::to_string(row.fields.size()));
        const std::string &answer = row.fields[5];
        if (answer.size() != 1 || answer[0] < 'A' || answer[0] > 'D')
            return dataError(file, row.line, "answer must be one of A, B, C, D, not '" + answer + "'");
        MmluQuestion q;
        q.subject = subject;
        q.index = int64_t(out.size());
        q.line = row.line;
        q.question = row.fields[0];
        for (size_t c = 0; c < 4; ++c)
            q.choices[c] = row.fields[c + 1];
        q.answer = answer[0] - 'A';
        out.push_back(std::move(q));
    }
    return out;
}

std::string mmluDescription(const std::string &subject) {
    std::string spaced = subject;
    std::replace(spaced.begin(), spaced.end(), '_', ' ');
    return "The following are multiple choice questions (with answers) about " + spaced + ".\n\n";
}

std::string mmluQuestionText(const MmluQuestion &q) {
    return std::string(trimPythonWhitespace(q.question)) + "\nA. " + q.choices[0] + "\nB. " + q.choices[1] +
           "\nC. " + q.choices[2] + "\nD. " + q.choices[3] + "\nAnswer:";
}

std::string mmluHeader(const std::string &subject, std::span<const MmluQuestion> shots) {
    std::string header = mmluDescription(subject);
    for (const MmluQuestion &shot : shots)
        header += mmluQuestionText(shot) + " " + char('A' + shot.answer) + "\n\n";
    return header;
}

std::string mmluPrompt(const std::string &subject, std::span<const MmluQuestion> shots, const MmluQuestion &question) {
    return mmluHeader(subject, shots) + mmluQuestionText(question);
}

namespace {

// A Python literal {"key": ["a", "b"], ...} starting at `at` (the '{'); line numbers for errors.
Result<std::map<std::string, std::vector<std::string>>> parseDictOfLists(std::string_view text, size_t at,
                                                                         const std::filesystem::path &source) {
    std::map<std::string, std::vector<std::string>> out;
    auto lineOf = [&](size_t pos) { return int64_t(std::count(text.begin(), text.begin() + long(pos), '\n') + 1); };
    auto skip = [&] {
        while (at < text.size() && (text[at] == ' ' || text[at] == '\n' || text[at] == '\r' || text[at] == '\t' ||
                                    text[at] == ','))
            ++at;
    };
    auto string = [&]() -> Result<std::string> {
        if (at >= text.size() || (text[at] != '"' && text[at] != '\''))
            return dataError(source, lineOf(at), "expected a quoted string");
        const char quote = text[at];
        const size_t end = text.find(quote, at + 1);
        if (end == std::string_view::npos)
            return dataError(source, lineOf(at), "unterminated string");
        std::string value(text.substr(at + 1, end - at - 1));
        at = end + 1;
        return value;
    };
    ++at; // '{'
    for (skip(); at < text.size() && text[at] != '}'; skip()) {
        LOWBIT_TRY(std::string key, string());
        skip();
        if (at >= text.size() || text[at] != ':')
            return dataError(source, lineOf(at), "expected ':' after '" + key + "'");
        ++at;
        skip();
        if (at >= text.size() || text[at] != '[')
            return dataError(source, lineOf(at), "expected a list for '" + key + "'");
        ++at;
        std::vector<std::string> values;
        for (skip(); at < text.size() && text[at] != ']'; skip()) {
            LOWBIT_TRY(std::string value, string());
            values.push_back(std::move(value));
        }
        if (at >= text.size())
            return dataError(source, lineOf(at), "unterminated list for '" + key + "'");
        ++at;
        out[key] = std::move(values);
    }
    if (at >= text.size())
        return dataError(source, lineOf(text.size()), "unterminated dict");
    return out;
}

std::string categoryKey(std::string name) {
    if (const size_t paren = name.find(" ("); paren != std::string::npos)
        name.resize(paren);
    name = asciiLower(name);
    std::replace(name.begin(), name.end(), ' ', '_');
    return name;
}

} // namespace

Result<std::map<std::string, std::string>> parseMmluCategories(std::string_view text, const std::filesystem::path &source) {
    const size_t sub = text.find("subcategories = {");
    const size_t cat = text.find("\ncategories = {");
    if (sub == std::string_view::npos || cat == std::string_view::npos)
        return dataError(source, 1, "expected 'subcategories = {' and 'categories = {'");
    LOWBIT_TRY(auto subcategories, parseDictOfLists(text, text.find('{', sub), source));
    LOWBIT_TRY(auto categories, parseDictOfLists(text, text.find('{', cat), source));
    std::map<std::string, std::string> bySubcategory;
    for (const auto &[name, members] : categories)
        for (const std::string &member : members)
            bySubcategory[member] = categoryKey(name);
    std::map<std::string, std::string> out;
    for (const auto &[subject, subs] : subcategories) {
        if (subs.empty() || !bySubcategory.count(subs[0]))
            return dataError(source, 1, "subject '" + subject + "' has no category");
        out[subject] = bySubcategory[subs[0]];
    }
    return out;
}

std::vector<std::string> mmluSubjects(const std::filesystem::path &dataDir) {
    std::vector<std::string> subjects;
    std::error_code ec;
    for (const auto &entry : std::filesystem::directory_iterator(dataDir / "mmlu" / "data" / "test", ec)) {
        const std::string file = entry.path().filename().string();
        const std::string suffix = "_test.csv";
        if (file.size() > suffix.size() && file.compare(file.size() - suffix.size(), suffix.size(), suffix) == 0)
            subjects.push_back(file.substr(0, file.size() - suffix.size()));
    }
    std::sort(subjects.begin(), subjects.end());
    return subjects;
}

namespace {

// lm-eval's pooled_sample_stderr: the group stderr from subtask stderrs and sizes.
double pooledStderr(const std::vector<MetricValue> &parts) {
    double numerator = 0, total = 0;
    for (const MetricValue &m : parts) {
        numerator += double(m.n - 1) * m.stderr_ * m.stderr_ * double(m.n);
        total += double(m.n);
    }
    if (total - double(parts.size()) <= 0)
        return 0;
    return std::sqrt(numerator / (total - double(parts.size())) / total);
}

class MmluTask final : public Task {
public:
    explicit MmluTask(std::filesystem::path dataDir) : m_dataDir(std::move(dataDir)) {}
    std::string name() const override { return "mmlu"; }

    static int shotsOf(const TaskOptions &options) { return options.shots < 0 ? 5 : options.shots; }

    nlohmann::json protocol(const LanguageModel &model, const TaskOptions &options) const override {
        nlohmann::json p = commonProtocol("mmlu", model, options, shotsOf(options));
        p["prompt"] = "description + first-k dev exemplars + '{q}\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer:'";
        p["choices"] = {" A", " B", " C", " D"};
        p["limit_scope"] = "per subject";
        return p;
    }

    Status run(TaskContext &context) override {
        const int shots = shotsOf(context.options);
        if (shots > 5)
            return makeError(ErrorCode::InvalidArgument, "mmlu: at most 5 shots (the dev split has 5 per subject)");
        const auto subjects = mmluSubjects(m_dataDir);
        if (subjects.empty())
            return makeError(ErrorCode::NotFound, (m_dataDir / "mmlu" / "data" / "test").string() + ": no *_test.csv files");
        LOWBIT_TRY(std::string categoriesText, readWholeFile(m_dataDir / "mmlu" / "categories.py"));
        LOWBIT_TRY(auto categories, parseMmluCategories(categoriesText, m_dataDir / "mmlu" / "categories.py"));
        LoglikelihoodEngine engine(context.model, loglikelihoodOptions(context.model, context.options));
        for (const std::string &subject : subjects) {
            const auto base = m_dataDir / "mmlu" / "data";
            LOWBIT_TRY(auto test, readMmluCsv(base / "test" / (subject + "_test.csv"), subject));
            LOWBIT_TRY(auto dev, readMmluCsv(base / "dev" / (subject + "_dev.csv"), subject));
            if (int(dev.size()) < shots)
                return makeError(ErrorCode::Format, (base / "dev" / (subject + "_dev.csv")).string() + ": fewer than " +
                                                        std::to_string(shots) + " exemplars");
            const std::span<const MmluQuestion> exemplars(dev.data(), size_t(shots));
            const std::string category = categories.count(subject) ? categories[subject] : "other";
            // The description and exemplars every question of the subject starts with.
            const std::string header = mmluHeader(subject, exemplars);
            const auto indices = subsampleIndices(int64_t(test.size()), context.options.limit, context.options.seed);
            auto docId = [&](int64_t i) { return subject + ":" + std::to_string(i); };
            const size_t chunk = size_t(std::max(8, 2 * context.options.batchSize));
            LOWBIT_CHECK(forEachChunk(context, "mmlu " + subject, indices, docId, chunk, [&](std::span<const int64_t> docs) -> Status {
                std::vector<LoglikelihoodRequest> requests;
                std::vector<std::string> prompts;
                for (size_t k = 0; k < docs.size(); ++k) {
                    prompts.push_back(mmluPrompt(subject, exemplars, test[size_t(docs[k])]));
                    for (char letter : {'A', 'B', 'C', 'D'})
                        requests.push_back({prompts.back(), std::string(" ") + letter, int64_t(k), header});
                }
                LOWBIT_TRY(auto results, engine.score(requests, context.stop));
                for (size_t k = 0; k < docs.size(); ++k) {
                    const MmluQuestion &q = test[size_t(docs[k])];
                    SampleRecord s;
                    s.docId = docId(docs[k]);
                    s.docHash = hashHex(mmluQuestionText(q) + char('A' + q.answer));
                    s.promptHash = hashHex(prompts[k]);
                    s.target = std::string(1, char('A' + q.answer));
                    int pick = 0;
                    for (int c = 0; c < 4; ++c) {
                        s.choiceLogLikelihoods.push_back(results[k * 4 + size_t(c)].logLikelihood);
                        s.tokens += results[k * 4 + size_t(c)].tokens;
                        if (s.choiceLogLikelihoods[size_t(c)] > s.choiceLogLikelihoods[size_t(pick)])
                            pick = c;
                    }
                    s.output = std::string(1, char('A' + pick));
                    s.correct = pick == q.answer ? 1 : 0;
                    s.extra["subject"] = subject;
                    s.extra["category"] = category;
                    LOWBIT_CHECK(context.samples.onSample(s));
                }
                return {};
            }));
        }
        return {};
    }

    Result<TaskReport> aggregate(std::span<const SampleRecord> samples, const LanguageModel &model,
                                 const TaskOptions &options) const override {
        TaskReport report;
        report.task = "mmlu";
        report.protocol = protocol(model, options);
        std::map<std::string, std::vector<double>> bySubject;
        std::map<std::string, std::string> categoryOf;
        for (const SampleRecord &s : samples) {
            const std::string subject = s.extra.value("subject", std::string("unknown"));
            bySubject[subject].push_back(double(s.correct == 1));
            categoryOf[subject] = s.extra.value("category", std::string("other"));
        }
        std::map<std::string, std::vector<MetricValue>> byCategory;
        std::vector<MetricValue> subjects, all;
        for (const auto &[subject, values] : bySubject) {
            MetricValue m = meanMetric("acc," + subject, values);
            subjects.push_back(m);
            byCategory[categoryOf[subject]].push_back(m);
            all.push_back(m);
        }
        // Weighted by subject size: the mean over all questions, with the pooled stderr.
        auto group = [](const std::string &name, const std::vector<MetricValue> &parts) {
            MetricValue g{name, 0, 0, 0};
            for (const MetricValue &m : parts) {
                g.value += m.value * double(m.n);
                g.n += m.n;
            }
            g.value = g.n > 0 ? g.value / double(g.n) : 0;
            g.stderr_ = pooledStderr(parts);
            return g;
        };
        report.metrics.push_back(group("acc", all));
        for (const auto &[category, parts] : byCategory)
            report.metrics.push_back(group("acc," + category, parts));
        for (const MetricValue &m : subjects)
            report.metrics.push_back(m);
        return report;
    }

private:
    std::filesystem::path m_dataDir;
};

} // namespace

std::unique_ptr<Task> makeMmluTask(const std::filesystem::path &dataDir) { return std::make_unique<MmluTask>(dataDir); }

} // namespace lowbit
