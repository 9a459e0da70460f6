// Loaders of the zero-shot multiple-choice sets, each into lm-eval's doc_to_text / doc_to_choice /
// doc_to_target form (lm_eval/tasks/{piqa,arc,hellaswag,winogrande}).
#include "dataset_io.h"
#include "multiple_choice.h"
#include "tokenizer/chat_template.h"

namespace lowbit {

Result<std::vector<MultipleChoiceDoc>> loadPiqa(const std::filesystem::path &dataDir) {
    const auto file = dataDir / "piqa" / "dev.jsonl";
    const auto labelsFile = dataDir / "piqa" / "dev-labels.lst";
    LOWBIT_TRY(std::vector<JsonLine> rows, readJsonLines(file));
    LOWBIT_TRY(std::string labels, readWholeFile(labelsFile));
    std::vector<MultipleChoiceDoc> docs;
    size_t at = 0;
    int64_t labelLine = 0;
    for (const JsonLine &row : rows) {
        LOWBIT_TRY(std::string goal, jsonString(row.value, "goal", file, row.line));
        LOWBIT_TRY(std::string sol1, jsonString(row.value, "sol1", file, row.line));
        LOWBIT_TRY(std::string sol2, jsonString(row.value, "sol2", file, row.line));
        // The labels file has one 0/1 per line, in the order of dev.jsonl.
        ++labelLine;
        if (at >= labels.size())
            return dataError(labelsFile, labelLine, "fewer labels than rows in " + file.filename().string());
        size_t end = labels.find('\n', at);
        if (end == std::string::npos)
            end = labels.size();
        const std::string label(trimPythonWhitespace(std::string_view(labels).substr(at, end - at)));
        if (label != "0" && label != "1")
            return dataError(labelsFile, labelLine, "label must be 0 or 1, not '" + label + "'");
        at = end + 1;
        MultipleChoiceDoc doc;
        const auto id = row.value.find("id");
        doc.id = id != row.value.end() && id->is_string() ? id->get<std::string>() : "dev:" + std::to_string(docs.size());
        doc.context = "Question: " + goal + "\nAnswer:";
        doc.choices = {sol1, sol2};
        doc.gold = label == "1" ? 1 : 0;
        docs.push_back(std::move(doc));
    }
    return docs;
}

Result<std::vector<MultipleChoiceDoc>> loadArc(const std::filesystem::path &dataDir, bool challenge) {
    const std::string set = challenge ? "ARC-Challenge" : "ARC-Easy";
    const auto file = dataDir / "arc" / set / (set + "-Test.jsonl");
    LOWBIT_TRY(std::vector<JsonLine> rows, readJsonLines(file));
    std::vector<MultipleChoiceDoc> docs;
    for (const JsonLine &row : rows) {
        const nlohmann::json &v = row.value;
        LOWBIT_TRY(std::string id, jsonString(v, "id", file, row.line));
        LOWBIT_TRY(std::string answer, jsonString(v, "answerKey", file, row.line));
        const auto question = v.find("question");
        if (question == v.end() || !question->is_object())
            return dataError(file, row.line, "missing object 'question'");
        LOWBIT_TRY(std::string stem, jsonString(*question, "stem", file, row.line));
        const auto choices = question->find("choices");
        if (choices == question->end() || !choices->is_array() || choices->size() < 2)
            return dataError(file, row.line, "'question.choices' must be an array of at least 2");
        MultipleChoiceDoc doc;
        doc.id = id;
        doc.context = "Question: " + stem + "\nAnswer:";
        for (const auto &choice : *choices) {
            LOWBIT_TRY(std::string text, jsonString(choice, "text", file, row.line));
            LOWBIT_TRY(std::string label, jsonString(choice, "label", file, row.line));
            if (label == answer)
                doc.gold = int(doc.choices.size());
            doc.choices.push_back(std::move(text));
        }
        if (doc.gold < 0)
            return dataError(file, row.line, "answerKey '" + answer + "' is none of the choice labels");
        docs.push_back(std::move(doc));
    }
    return docs;
}

namespace {

// Python str.replace(old, new): every non-overlapping occurrence, left to right.
std::string replaceAll(std::string_view text, std::string_view from, std::string_view to) {
    std::string out;
    size_t at = 0;
    for (size_t hit; (hit = text.find(from, at)) != std::string_view::npos; at = hit + from.size()) {
        out.append(text.substr(at, hit - at));
        out.append(to);
    }
    out.append(text.substr(at));
    return out;
}

// Python str.capitalize(): first character upper-cased, the rest lower-cased (ASCII here).
std::string capitalize(std::string_view text) {
    std::string out = asciiLower(text);
    if (!out.empty() && out[0] >= 'a' && out[0] <= 'z')
        out[0] = char(out[0] - 'a' + 'A');
    return out;
}

} // namespace

std::string hellaswagPreprocess(std::string_view text) {
    std::string s(trimPythonWhitespace(text));
    s = replaceAll(s, " [title]", ". ");
    // re.sub("\\[.*?\\]", "", s): from each '[' to the nearest ']' (no newlines in a line).
    std::string cleaned;
    for (size_t i = 0; i < s.size();) {
        if (s[i] == '[') {
            const size_t close = s.find(']', i + 1);
            const size_t newline = s.find('\n', i + 1);
            if (close != std::string::npos && (newline == std::string::npos || close < newline)) {
                i = close + 1;
                continue;
            }
        }
        cleaned += s[i++];
    }
    return replaceAll(cleaned, "  ", " ");
}

std::string hellaswagQuery(std::string_view line) {
    const size_t colon = line.find(": ");
    const size_t ctxStart = colon == std::string_view::npos ? 0 : colon + 2;
    size_t fragment = ctxStart;
    for (const char *end : {". ", "! ", "? "}) {
        const size_t at = line.rfind(end);
        if (at != std::string_view::npos && at + 2 > fragment && at >= ctxStart)
            fragment = at + 2;
    }
    std::string query(line);
    if (fragment < line.size() && line[fragment] >= 'a' && line[fragment] <= 'z')
        query = std::string(line.substr(0, fragment)) + capitalize(line.substr(fragment));
    return hellaswagPreprocess(query);
}

Result<std::vector<MultipleChoiceDoc>> parseHellaswag(std::string_view text, const std::filesystem::path &source) {
    std::vector<std::string_view> lines;
    for (size_t at = 0; at < text.size();) {
        size_t end = text.find('\n', at);
        if (end == std::string_view::npos)
            end = text.size();
        std::string_view line = text.substr(at, end - at);
        if (!line.empty() && line.back() == '\r')
            line.remove_suffix(1);
        lines.push_back(line);
        at = end + 1;
    }
    while (!lines.empty() && lines.back().empty())
        lines.pop_back();
    if (lines.size() % 6 != 0)
        return dataError(source, int64_t(lines.size()), "expected 6 lines per task, the file has " +
                                                            std::to_string(lines.size()) + " lines");
    std::vector<MultipleChoiceDoc> docs;
    for (size_t t = 0; t < lines.size(); t += 6) {
        const std::string_view label = lines[t + 1];
        if (label.size() != 1 || label[0] < '0' || label[0] > '3')
            return dataError(source, int64_t(t + 2), "gold label must be 0..3, not '" + std::string(label) + "'");
        MultipleChoiceDoc doc;
        doc.id = "val:" + std::to_string(t / 6);
        doc.context = hellaswagQuery(lines[t]);
        for (size_t e = 0; e < 4; ++e)
            doc.choices.push_back(hellaswagPreprocess(lines[t + 2 + e]));
        doc.gold = label[0] - '0';
        docs.push_back(std::move(doc));
    }
    return docs;
}

Result<std::vector<MultipleChoiceDoc>> loadHellaswag(const std::filesystem::path &dataDir) {
    const auto file = dataDir / "hellaswag" / "hellaswag_val_full.txt.bz2";
    LOWBIT_TRY(std::string text, readBzip2File(file));
    return parseHellaswag(text, file);
}

Result<MultipleChoiceDoc> winograndeDoc(const nlohmann::json &row, const std::filesystem::path &source, int64_t line) {
    LOWBIT_TRY(std::string id, jsonString(row, "qID", source, line));
    LOWBIT_TRY(std::string sentence, jsonString(row, "sentence", source, line));
    LOWBIT_TRY(std::string option1, jsonString(row, "option1", source, line));
    LOWBIT_TRY(std::string option2, jsonString(row, "option2", source, line));
    LOWBIT_TRY(std::string answer, jsonString(row, "answer", source, line));
    const size_t blank = sentence.find('_');
    if (blank == std::string::npos)
        return dataError(source, line, "sentence has no '_' blank");
    if (answer != "1" && answer != "2")
        return dataError(source, line, "answer must be \"1\" or \"2\", not '" + answer + "'");
    MultipleChoiceDoc doc;
    doc.id = id;
    doc.contexts = {sentence.substr(0, blank) + option1, sentence.substr(0, blank) + option2};
    doc.choices = {option1, option2};
    doc.continuation = std::string(trimPythonWhitespace(std::string_view(sentence).substr(blank + 1)));
    doc.gold = answer == "1" ? 0 : 1;
    return doc;
}

Result<std::vector<MultipleChoiceDoc>> loadWinogrande(const std::filesystem::path &dataDir) {
    const auto file = dataDir / "winogrande" / "dev.jsonl";
    LOWBIT_TRY(std::vector<JsonLine> rows, readJsonLines(file));
    std::vector<MultipleChoiceDoc> docs;
    for (const JsonLine &row : rows) {
        LOWBIT_TRY(MultipleChoiceDoc doc, winograndeDoc(row.value, file, row.line));
        docs.push_back(std::move(doc));
    }
    return docs;
}

} // namespace lowbit
