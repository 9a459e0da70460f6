#include "train/train_data.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <sstream>

namespace lowbit::train {

namespace {

using nlohmann::json;
namespace fs = std::filesystem;

Error dataError(const fs::path &path, int64_t line, const std::string &what) {
    return makeError(ErrorCode::Format,
                     path.filename().string() + ":" + std::to_string(line) + ": " + what);
}

// 1-based line of every top-level element of a JSON array text (the line its first byte is on),
// found by tracking strings and nesting: nlohmann's DOM keeps no positions.
std::vector<int64_t> arrayElementLines(std::string_view text) {
    std::vector<int64_t> lines;
    int64_t line = 1;
    int depth = 0;
    bool inString = false, escaped = false, expectElement = false;
    for (char c : text) {
        if (c == '\n')
            ++line;
        if (inString) {
            if (escaped)
                escaped = false;
            else if (c == '\\')
                escaped = true;
            else if (c == '"')
                inString = false;
            continue;
        }
        if (expectElement && c != ' ' && c != '\n' && c != '\r' && c != '\t' && c != ']') {
            lines.push_back(line);
            expectElement = false;
        }
        if (c == '"')
            inString = true;
        else if (c == '[' || c == '{')
            expectElement = ++depth == 1 && c == '[';
        else if (c == ']' || c == '}')
            --depth;
        else if (c == ',' && depth == 1)
            expectElement = true;
    }
    return lines;
}

Result<std::string> stringField(const json &row, const char *key, bool required,
                                const fs::path &path, int64_t line) {
    const auto it = row.find(key);
    if (it == row.end() || it->is_null()) {
        if (required)
            return dataError(path, line, std::string("field '") + key + "' missing");
        return std::string();
    }
    if (!it->is_string())
        return dataError(path, line, std::string("field '") + key + "' is not a string");
    return it->get<std::string>();
}

std::vector<int32_t> encodePlain(const Tokenizer &tokenizer, std::string_view text) {
    return tokenizer.encode(text, {false, false});
}

int32_t eosId(const Tokenizer &tokenizer) {
    const auto eos = tokenizer.eosIds();
    return eos.empty() ? -1 : eos.front();
}

void addExample(DataSet &set, TrainExample example) {
    const auto scored = std::count_if(example.targets.begin(), example.targets.end(),
                                      [](int32_t t) { return t != kIgnoreTarget; });
    if (scored == 0) {
        ++set.skipped;
        return;
    }
    set.scoredTokens += scored;
    set.examples.push_back(std::move(example));
}

// LIMA's `history`: [[user, assistant], ...] before the row's instruction.
Result<std::string> historyPrefix(const json &row, const fs::path &path, int64_t line) {
    const auto it = row.find("history");
    if (it == row.end() || it->is_null())
        return std::string();
    if (!it->is_array())
        return dataError(path, line, "field 'history' is not an array of [user, assistant] pairs");
    std::string prefix;
    for (const json &turn : *it) {
        if (!turn.is_array() || turn.size() != 2 || !turn[0].is_string() || !turn[1].is_string())
            return dataError(path, line,
                             "field 'history' holds an entry that is not a "
                             "[user, assistant] pair of strings");
        prefix += "### Instruction:\n" + turn[0].get<std::string>() +
                  "\n\n### Response: " + turn[1].get<std::string>() + "\n\n";
    }
    return prefix;
}

Status addAlpacaRow(DataSet &set, const json &row, const fs::path &path, int64_t line,
                    const Tokenizer &tokenizer, const DataOptions &options) {
    if (!row.is_object())
        return dataError(path, line, "row is not a JSON object");
    LOWBIT_TRY(std::string instruction, stringField(row, "instruction", true, path, line));
    LOWBIT_TRY(std::string input, stringField(row, "input", false, path, line));
    LOWBIT_TRY(std::string output, stringField(row, "output", true, path, line));
    LOWBIT_TRY(std::string history, historyPrefix(row, path, line));
    std::vector<int32_t> source;
    if (tokenizer.bosId() >= 0)
        source.push_back(tokenizer.bosId());
    std::string prompt = alpacaPrompt(instruction, input);
    if (!history.empty()) // after the preamble sentence, before "### Instruction:"
        prompt.insert(prompt.find("### Instruction:"), history);
    const auto promptIds = encodePlain(tokenizer, prompt);
    source.insert(source.end(), promptIds.begin(), promptIds.end());
    std::vector<int32_t> target = encodePlain(tokenizer, output);
    if (eosId(tokenizer) >= 0)
        target.push_back(eosId(tokenizer));
    addExample(set, makeSourceTargetExample(std::move(source), std::move(target), options));
    return {};
}

Result<ChatMessage> parseMessage(const json &m, const fs::path &path, int64_t line) {
    if (!m.is_object())
        return dataError(path, line, "a message is not a JSON object");
    ChatMessage message;
    const char *roleKey = m.contains("role") ? "role" : "from";
    const char *contentKey = m.contains("content") ? "content"
                             : m.contains("text")  ? "text"
                                                   : "value";
    LOWBIT_TRY(message.role, stringField(m, roleKey, true, path, line));
    LOWBIT_TRY(message.content, stringField(m, contentKey, true, path, line));
    // ShareGPT spells the roles "human" / "gpt"; OASST "prompter".
    if (message.role == "human" || message.role == "prompter")
        message.role = "user";
    else if (message.role == "gpt")
        message.role = "assistant";
    return message;
}

Status addConversation(DataSet &set, std::span<const ChatMessage> messages, const fs::path &path,
                       int64_t line, const Tokenizer &tokenizer, const ChatTemplate *chat,
                       const DataOptions &options) {
    auto segments = conversationSegments(messages, chat, tokenizer);
    if (!segments)
        return dataError(path, line, segments.error().message);
    std::vector<int32_t> ids;
    std::vector<bool> scored;
    if (!chat && tokenizer.bosId() >= 0) {
        ids.push_back(tokenizer.bosId());
        scored.push_back(false);
    }
    for (const TextSegment &s : *segments) {
        const auto piece = tokenizer.encode(s.text, {false, chat != nullptr});
        ids.insert(ids.end(), piece.begin(), piece.end());
        scored.insert(scored.end(), piece.size(), s.scored || options.trainOnSource);
    }
    if (!chat && eosId(tokenizer) >= 0) {
        ids.push_back(eosId(tokenizer));
        scored.push_back(true);
    }
    const size_t limit = size_t(options.sourceMaxTokens + options.targetMaxTokens);
    ids.resize(std::min(ids.size(), limit));
    TrainExample example;
    example.tokens = ids;
    example.targets.assign(ids.size(), kIgnoreTarget);
    for (size_t i = 0; i + 1 < ids.size(); ++i)
        if (scored[i + 1])
            example.targets[i] = ids[i + 1];
    addExample(set, std::move(example));
    return {};
}

Result<std::vector<ChatMessage>> oasstConversation(const json &tree, const fs::path &path,
                                                   int64_t line) {
    std::vector<ChatMessage> messages;
    const json *node = &tree.at("prompt");
    while (node) {
        LOWBIT_TRY(ChatMessage m, parseMessage(*node, path, line));
        messages.push_back(std::move(m));
        const auto replies = node->find("replies");
        if (replies == node->end() || !replies->is_array() || replies->empty())
            break;
        const json *best = &replies->front();
        for (const json &r : *replies)
            if (r.contains("rank") && r["rank"].is_number() && r["rank"].get<int64_t>() == 0)
                best = &r;
        node = best;
    }
    // A conversation ends on an assistant turn: a trailing prompter message trains nothing.
    if (!messages.empty() && messages.back().role == "user")
        messages.pop_back();
    return messages;
}

Status addJsonRow(DataSet &set, DataFormat format, const json &row, const fs::path &path,
                  int64_t line, const Tokenizer &tokenizer, const ChatTemplate *chat,
                  const DataOptions &options) {
    if (format == DataFormat::Alpaca)
        return addAlpacaRow(set, row, path, line, tokenizer, options);
    if (!row.is_object())
        return dataError(path, line, "row is not a JSON object");
    std::vector<ChatMessage> messages;
    if (format == DataFormat::Oasst) {
        if (!row.contains("prompt") || !row["prompt"].is_object())
            return dataError(path, line, "OASST tree without a 'prompt' object");
        if (!options.includeSynthetic && row["prompt"].contains("synthetic") &&
            row["prompt"]["synthetic"] == true) {
            ++set.skipped;
            return {};
        }
        LOWBIT_TRY(messages, oasstConversation(row, path, line));
    } else {
        const char *key = row.contains("messages") ? "messages" : "conversations";
        if (!row.contains(key) || !row[key].is_array())
            return dataError(path, line, "chat row without a 'messages' array");
        for (const json &m : row[key]) {
            LOWBIT_TRY(ChatMessage message, parseMessage(m, path, line));
            messages.push_back(std::move(message));
        }
    }
    return addConversation(set, messages, path, line, tokenizer, chat, options);
}

DataFormat detectRowFormat(const json &row) {
    if (row.is_string())
        return DataFormat::Text;
    if (row.is_object() && row.contains("message_tree_id"))
        return DataFormat::Oasst;
    if (row.is_object() && (row.contains("messages") || row.contains("conversations")))
        return DataFormat::Chat;
    return DataFormat::Alpaca;
}

Result<std::string> readWhole(const fs::path &path) {
    std::ifstream in(path, std::ios::binary);
    if (!in)
        return makeError(ErrorCode::Io, path.string() + ": cannot open the training data file");
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

void addTextWindows(DataSet &set, const std::string &text, const Tokenizer &tokenizer,
                    const DataOptions &options) {
    const auto ids = tokenizer.encode(text, {true, false});
    const size_t window = size_t(std::max<int64_t>(2, options.textWindowTokens));
    for (size_t start = 0; start + 1 < ids.size(); start += window) {
        const size_t n = std::min(window, ids.size() - 1 - start);
        TrainExample e;
        e.tokens.assign(ids.begin() + long(start), ids.begin() + long(start + n));
        e.targets.assign(ids.begin() + long(start + 1), ids.begin() + long(start + n + 1));
        addExample(set, std::move(e));
    }
}

Status readJsonArray(DataSet &set, const std::string &text, const fs::path &path,
                     const Tokenizer &tokenizer, const ChatTemplate *chat,
                     const DataOptions &options) {
    const json doc = json::parse(text, nullptr, false);
    if (doc.is_discarded() || !doc.is_array())
        return makeError(ErrorCode::Format,
                         path.filename().string() +
                             ": not a JSON array of rows (malformed JSON, or a JSONL file "
                             "that should be named .jsonl)");
    const auto lines = arrayElementLines(text);
    DataFormat format = set.format;
    for (size_t i = 0; i < doc.size(); ++i) {
        const int64_t line = i < lines.size() ? lines[i] : 0;
        if (format == DataFormat::Auto)
            format = set.format = detectRowFormat(doc[i]);
        if (format == DataFormat::Text) {
            if (!doc[i].is_string())
                return dataError(path, line, "text rows must be JSON strings");
            addTextWindows(set, doc[i].get<std::string>(), tokenizer, options);
        } else {
            LOWBIT_CHECK(addJsonRow(set, format, doc[i], path, line, tokenizer, chat, options));
        }
        if (options.maxExamples > 0 && int64_t(set.examples.size()) >= options.maxExamples)
            break;
    }
    return {};
}

Status readJsonLines(DataSet &set, const std::string &text, const fs::path &path,
                     const Tokenizer &tokenizer, const ChatTemplate *chat,
                     const DataOptions &options) {
    std::istringstream in(text);
    std::string lineText;
    int64_t line = 0;
    while (std::getline(in, lineText)) {
        ++line;
        if (lineText.find_first_not_of(" \t\r") == std::string::npos)
            continue;
        const json row = json::parse(lineText, nullptr, false);
        if (row.is_discarded())
            return dataError(path, line, "malformed JSON");
        if (set.format == DataFormat::Auto)
            set.format = detectRowFormat(row);
        if (set.format == DataFormat::Text) {
            if (!row.is_string())
                return dataError(path, line, "text rows must be JSON strings");
            addTextWindows(set, row.get<std::string>(), tokenizer, options);
        } else {
            LOWBIT_CHECK(addJsonRow(set, set.format, row, path, line, tokenizer, chat, options));
        }
        if (options.maxExamples > 0 && int64_t(set.examples.size()) >= options.maxExamples)
            break;
    }
    return {};
}

} // namespace

Result<DataFormat> parseDataFormat(std::string_view name) {
    for (DataFormat f : {DataFormat::Auto, DataFormat::Alpaca, DataFormat::Chat, DataFormat::Oasst,
                         DataFormat::Text})
        if (name == dataFormatName(f))
            return f;
    return makeError(ErrorCode::InvalidArgument, "unknown data format '" + std::string(name) +
                                                     "' (auto, alpaca, chat, oasst, text)");
}

const char *dataFormatName(DataFormat format) {
    switch (format) {
    case DataFormat::Auto: return "auto";
    case DataFormat::Alpaca: return "alpaca";
    case DataFormat::Chat: return "chat";
    case DataFormat::Oasst: return "oasst";
    case DataFormat::Text: return "text";
    }
    return "?";
}

std::string alpacaPrompt(std::string_view instruction, std::string_view input) {
    // qlora.py ALPACA_PROMPT_DICT: note the space after "### Response:".
    std::string p;
    if (input.empty()) {
        p = "Below is an instruction that describes a task. Write a response that appropriately "
            "completes the request.\n\n### Instruction:\n";
        p.append(instruction);
    } else {
        p = "Below is an instruction that describes a task, paired with an input that provides "
            "further context. Write a response that appropriately completes the request.\n\n"
            "### Instruction:\n";
        p.append(instruction);
        p += "\n\n### Input:\n";
        p.append(input);
    }
    p += "\n\n### Response: ";
    return p;
}

TrainExample makeSourceTargetExample(std::vector<int32_t> source, std::vector<int32_t> target,
                                     const DataOptions &options) {
    source.resize(std::min(source.size(), size_t(std::max<int64_t>(0, options.sourceMaxTokens))));
    target.resize(std::min(target.size(), size_t(std::max<int64_t>(0, options.targetMaxTokens))));
    TrainExample e;
    e.tokens = source;
    e.tokens.insert(e.tokens.end(), target.begin(), target.end());
    e.targets.assign(e.tokens.size(), kIgnoreTarget);
    // targets[i] predicts tokens[i + 1]; HF labels would be tokens with the source masked.
    const size_t firstScored = options.trainOnSource ? 1 : source.size();
    for (size_t i = 0; i + 1 < e.tokens.size(); ++i)
        if (i + 1 >= firstScored)
            e.targets[i] = e.tokens[i + 1];
    return e;
}

Result<std::vector<TextSegment>> conversationSegments(std::span<const ChatMessage> messages,
                                                      const ChatTemplate *chat,
                                                      const Tokenizer &tokenizer) {
    (void)tokenizer;
    if (messages.empty())
        return makeError(ErrorCode::Format, "empty conversation");
    std::vector<TextSegment> segments;
    if (!chat) {
        for (const ChatMessage &m : messages) {
            const bool assistant = m.role == "assistant";
            segments.push_back({assistant ? "### Assistant: " : "### Human: ", false});
            segments.push_back({m.content, assistant});
        }
        return segments;
    }
    // Render growing prefixes: the text up to each assistant turn's header is unscored, the turn
    // itself (content and end-of-turn token) scored. Holds because each rendering is a prefix of
    // the next for the Llama 3 templates; checked.
    ChatRenderOptions ro;
    std::string done, lastTail;
    for (size_t i = 0; i < messages.size(); ++i) {
        if (messages[i].role != "assistant")
            continue;
        ro.addGenerationPrompt = true;
        LOWBIT_TRY(std::string prefix, chat->render(messages.subspan(0, i), ro));
        ro.addGenerationPrompt = false;
        LOWBIT_TRY(std::string full, chat->render(messages.subspan(0, i + 1), ro));
        if (prefix.compare(0, done.size(), done) != 0 || full.compare(0, prefix.size(), prefix))
            return makeError(ErrorCode::Unsupported,
                             "the chat template's renderings are not prefixes of each other");
        segments.push_back({prefix.substr(done.size()), false});
        std::string turn = full.substr(prefix.size());
        // A template that always appends the assistant header ends `full` with it: unscored.
        const std::string header = "<|start_header_id|>assistant<|end_header_id|>\n\n";
        std::string tail;
        if (turn.size() > header.size() && turn.ends_with(header)) {
            tail = header;
            turn.resize(turn.size() - header.size());
        }
        segments.push_back({turn, true});
        done = prefix + turn; // the next rendering continues after the turn, not the header
        lastTail = tail;
    }
    if (!lastTail.empty())
        segments.push_back({lastTail, false});
    if (segments.empty())
        return makeError(ErrorCode::Format, "conversation without an assistant turn");
    return segments;
}

Result<DataSet> loadTrainingData(const fs::path &path, const Tokenizer &tokenizer,
                                 const DataOptions &options, const ChatTemplate *chat) {
    LOWBIT_TRY(std::string text, readWhole(path));
    DataSet set;
    set.format = options.format;
    const std::string ext = path.extension().string();
    const bool jsonl = ext == ".jsonl";
    const bool jsonArray = ext == ".json";
    if (set.format == DataFormat::Text && !jsonl && !jsonArray) {
        addTextWindows(set, text, tokenizer, options);
    } else if (jsonl) {
        LOWBIT_CHECK(readJsonLines(set, text, path, tokenizer, chat, options));
    } else if (jsonArray) {
        LOWBIT_CHECK(readJsonArray(set, text, path, tokenizer, chat, options));
    } else {
        set.format = DataFormat::Text;
        addTextWindows(set, text, tokenizer, options);
    }
    if (options.maxExamples > 0 && int64_t(set.examples.size()) > options.maxExamples)
        set.examples.resize(size_t(options.maxExamples));
    set.scoredTokens = 0;
    for (const TrainExample &e : set.examples)
        set.scoredTokens += std::count_if(e.targets.begin(), e.targets.end(),
                                          [](int32_t t) { return t != kIgnoreTarget; });
    if (set.examples.empty())
        return makeError(ErrorCode::Format,
                         path.filename().string() + ": no training example with a scored token");
    return set;
}

} // namespace lowbit::train
