// tokenizer.json (+ tokenizer_config.json) -> BpeSpec. Only what byte-level BPE checkpoints use is
// accepted; anything else is an Unsupported error that names the field, never a silent mismatch.
#include "tokenizer/bpe_tokenizer.h"
#include "tokenizer/tokenizer_loaders.h"

#include <nlohmann/json.hpp>

#include <cctype>
#include <fstream>
#include <map>
#include <sstream>

namespace lowbit {
namespace {

using nlohmann::json;

// Ids beyond the number of entries by more than this are rejected: the vector indexed by id would
// otherwise be as large as a hostile file asks.
constexpr int64_t kMaxIdSlack = 1 << 16;

Error formatError(std::string_view source, const std::string &what) {
    return makeError(ErrorCode::Format, std::string(source) + ": " + what);
}
Error unsupported(std::string_view source, const std::string &what) {
    return makeError(ErrorCode::Unsupported, std::string(source) + ": " + what);
}

// Escapes a literal so that PCRE2 matches it verbatim (HF Split with a "String" pattern).
std::string escapeLiteral(std::string_view literal) {
    std::string escaped;
    for (char c : literal) {
        const auto u = static_cast<unsigned char>(c);
        if (u < 0x80 && !std::isalnum(u))
            escaped += '\\';
        escaped += c;
    }
    return escaped;
}

Result<std::string> parseSplit(const json &node, std::string_view source) {
    const json &pattern = node.value("pattern", json());
    std::string regex;
    if (pattern.is_object() && pattern.contains("Regex") && pattern["Regex"].is_string())
        regex = pattern["Regex"].get<std::string>();
    else if (pattern.is_object() && pattern.contains("String") && pattern["String"].is_string())
        regex = escapeLiteral(pattern["String"].get<std::string>());
    else
        return formatError(source, "pre_tokenizer Split has no Regex or String pattern");
    if (node.value("behavior", std::string("Isolated")) != "Isolated")
        return unsupported(source, "pre_tokenizer Split behavior '" +
                                       node.value("behavior", std::string()) +
                                       "' (only Isolated is supported)");
    if (node.value("invert", false))
        return unsupported(source, "pre_tokenizer Split with invert=true");
    return regex;
}

// Supported: ByteLevel(use_regex=true) alone (GPT-2), or Sequence[Split(Isolated),
// ByteLevel(use_regex=false)] (Llama 3). Returns the split regex.
Result<std::string> parsePreTokenizer(const json &node, std::string_view source) {
    std::vector<json> steps;
    if (node.is_object() && node.value("type", std::string()) == "Sequence" &&
        node.contains("pretokenizers") && node["pretokenizers"].is_array())
        steps.assign(node["pretokenizers"].begin(), node["pretokenizers"].end());
    else if (node.is_object())
        steps.push_back(node);
    std::string regex;
    bool byteLevel = false;
    for (const json &step : steps) {
        const std::string type =
            step.is_object() ? step.value("type", std::string()) : std::string();
        if (type == "Split") {
            if (!regex.empty() || byteLevel)
                return unsupported(source, "pre_tokenizer with more than one splitting step");
            LOWBIT_TRY(regex, parseSplit(step, source));
        } else if (type == "ByteLevel") {
            if (step.value("add_prefix_space", false))
                return unsupported(source, "pre_tokenizer ByteLevel with add_prefix_space=true");
            if (step.value("use_regex", true)) {
                if (!regex.empty())
                    return unsupported(source, "pre_tokenizer with more than one splitting step");
                regex = std::string(kGpt2SplitPattern);
            }
            byteLevel = true;
        } else {
            return unsupported(source, "pre_tokenizer type '" + type +
                                           "' (only byte-level BPE: Split + ByteLevel)");
        }
    }
    if (!byteLevel)
        return unsupported(source, "no ByteLevel pre_tokenizer (only byte-level BPE is supported)");
    if (regex.empty())
        return unsupported(source, "ByteLevel pre_tokenizer without a split regex");
    return regex;
}

Result<std::pair<std::string, std::string>> parseMerge(const json &merge, size_t rank,
                                                       std::string_view source) {
    if (merge.is_string()) {
        const std::string text = merge.get<std::string>();
        const size_t space = text.find(' ');
        if (space != std::string::npos && text.find(' ', space + 1) == std::string::npos)
            return std::make_pair(text.substr(0, space), text.substr(space + 1));
    } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() &&
               merge[1].is_string()) {
        return std::make_pair(merge[0].get<std::string>(), merge[1].get<std::string>());
    }
    return formatError(source, "model.merges[" + std::to_string(rank) +
                                   "] is neither \"a b\" nor [\"a\", \"b\"]");
}

struct AddedEntry {
    std::string content;
    bool special = false;
};

Status parseModel(const json &model, std::string_view source, std::map<int64_t, std::string> &vocab,
                  BpeSpec &spec) {
    if (!model.is_object())
        return formatError(source, "missing object 'model'");
    if (model.contains("type") && model["type"] != "BPE")
        return unsupported(source, "model.type " + model["type"].dump() + " (only BPE)");
    if (!model.contains("vocab") || !model["vocab"].is_object())
        return formatError(source, "missing object model.vocab");
    for (const auto &[piece, id] : model["vocab"].items()) {
        if (!id.is_number_integer() || id.get<int64_t>() < 0)
            return formatError(source,
                               "model.vocab['" + piece + "'] is not a non-negative integer");
        if (!vocab.try_emplace(id.get<int64_t>(), piece).second)
            return formatError(source, "model.vocab id " + std::to_string(id.get<int64_t>()) +
                                           " is used twice");
    }
    for (const char *key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
        if (model.contains(key) && !model[key].is_null() && model[key] != "")
            return unsupported(source, std::string("model.") + key);
    }
    if (model.contains("merges")) {
        if (!model["merges"].is_array())
            return formatError(source, "model.merges is not an array");
        const json &merges = model["merges"];
        spec.merges.reserve(merges.size());
        for (size_t rank = 0; rank < merges.size(); ++rank) {
            LOWBIT_TRY(auto merge, parseMerge(merges[rank], rank, source));
            spec.merges.push_back(std::move(merge));
        }
    }
    spec.ignoreMerges = model.value("ignore_merges", false);
    return {};
}

Status parseAddedTokens(const json &list, std::string_view source,
                        std::map<int64_t, AddedEntry> &added) {
    if (list.is_null())
        return {};
    if (!list.is_array())
        return formatError(source, "added_tokens is not an array");
    for (const json &entry : list) {
        if (!entry.is_object() || !entry.contains("id") || !entry["id"].is_number_integer() ||
            entry["id"].get<int64_t>() < 0 || !entry.contains("content") ||
            !entry["content"].is_string())
            return formatError(source, "an added_tokens entry lacks a valid id or content");
        added[entry["id"].get<int64_t>()] = {entry["content"].get<std::string>(),
                                             entry.value("special", false)};
    }
    return {};
}

// bos_token / eos_token in tokenizer_config.json: a string or {"content": ...}.
std::string tokenName(const json &config, const char *key) {
    if (!config.contains(key))
        return {};
    const json &value = config[key];
    if (value.is_string())
        return value.get<std::string>();
    if (value.is_object() && value.contains("content") && value["content"].is_string())
        return value["content"].get<std::string>();
    return {};
}

Result<json> parseJson(std::string_view text, std::string_view source) {
    json root = json::parse(text.begin(), text.end(), nullptr, false);
    if (root.is_discarded())
        return formatError(source, "invalid JSON");
    if (!root.is_object())
        return formatError(source, "the top level is not a JSON object");
    return root;
}

// Named special tokens, config first, then the Llama 3 / GPT-2 conventions.
void chooseSpecialIds(const json &config, BpeSpec &spec) {
    std::map<std::string, int32_t> byName;
    for (int32_t id = 0; id < static_cast<int32_t>(spec.pieces.size()); ++id) {
        if (!spec.pieces[id].empty())
            byName.try_emplace(spec.pieces[id], id);
    }
    const auto find = [&](std::initializer_list<std::string> names) {
        for (const std::string &name : names) {
            const auto it = name.empty() ? byName.end() : byName.find(name);
            if (it != byName.end())
                return it->second;
        }
        return -1;
    };
    spec.bosId = find({tokenName(config, "bos_token"), "<|begin_of_text|>", "<s>"});
    spec.eosId = find({tokenName(config, "eos_token"), "<|end_of_text|>", "<|endoftext|>", "</s>"});
    spec.unkId = find({tokenName(config, "unk_token")});
    spec.padId = find({tokenName(config, "pad_token")});
    for (const char *name : {"<|eot_id|>", "<|end_of_text|>", "<|eom_id|>", "<|endoftext|>"})
        spec.extraEosIds.push_back(find({name}));
    // The original Llama 3 file has no add_bos_token and leaves BOS to the caller; a model that
    // has a BOS token is trained with it, so that is the default.
    spec.addBos = config.is_object() && config.contains("add_bos_token") &&
                          config["add_bos_token"].is_boolean()
                      ? config["add_bos_token"].get<bool>()
                      : spec.bosId >= 0;
}

Result<BpeSpec> buildSpec(const json &root, const json &config, std::string_view source,
                          std::string_view configName) {
    BpeSpec spec;
    spec.sourceName = std::string(source);
    if (root.contains("normalizer") && !root["normalizer"].is_null())
        return unsupported(source, "normalizer " +
                                       root["normalizer"].value("type", std::string("?")) +
                                       " (byte-level BPE has none)");
    LOWBIT_TRY(spec.splitPattern, parsePreTokenizer(root.value("pre_tokenizer", json()), source));
    std::map<int64_t, std::string> vocab;
    LOWBIT_CHECK(parseModel(root.value("model", json()), source, vocab, spec));
    std::map<int64_t, AddedEntry> added;
    LOWBIT_CHECK(parseAddedTokens(root.value("added_tokens", json()), source, added));
    if (config.is_object() && config.contains("added_tokens_decoder") &&
        config["added_tokens_decoder"].is_object()) {
        for (const auto &[key, entry] : config["added_tokens_decoder"].items()) {
            char *end = nullptr;
            const long long id = std::strtoll(key.c_str(), &end, 10);
            if (key.empty() || *end != '\0' || id < 0 || !entry.is_object() ||
                !entry.contains("content") || !entry["content"].is_string())
                return formatError(configName, "bad added_tokens_decoder entry '" + key + "'");
            added[id] = {entry["content"].get<std::string>(), entry.value("special", false)};
        }
    }
    const int64_t entries = static_cast<int64_t>(vocab.size() + added.size());
    const int64_t maxId = std::max(vocab.empty() ? -1 : vocab.rbegin()->first,
                                   added.empty() ? -1 : added.rbegin()->first);
    if (maxId >= entries + kMaxIdSlack)
        return formatError(source, "token id " + std::to_string(maxId) + " is far beyond the " +
                                       std::to_string(entries) + " entries");
    spec.pieces.resize(maxId + 1);
    spec.tokenTypes.assign(maxId + 1, 1);
    for (auto &[id, piece] : vocab)
        spec.pieces[id] = std::move(piece);
    for (auto &[id, entry] : added) {
        spec.pieces[id] = std::move(entry.content);
        spec.tokenTypes[id] = entry.special ? 3 : 4;
    }
    if (spec.splitPattern == kLlama3SplitPattern)
        spec.pre = "llama-bpe";
    else if (spec.splitPattern == kGpt2SplitPattern)
        spec.pre = "gpt2";
    chooseSpecialIds(config, spec);
    return spec;
}

Result<std::string> readWholeFile(const std::filesystem::path &path) {
    std::ifstream in(path, std::ios::binary);
    if (!in)
        return makeError(ErrorCode::NotFound, path.string() + ": cannot open");
    std::ostringstream buffer;
    buffer << in.rdbuf();
    if (in.bad())
        return makeError(ErrorCode::Io, path.string() + ": read failed");
    return buffer.str();
}

} // namespace

Result<std::shared_ptr<const Tokenizer>> loadHfTokenizerFromJson(std::string_view jsonText,
                                                                 std::string_view sourceName,
                                                                 std::string_view configJson,
                                                                 std::string_view configName) {
    try {
        LOWBIT_TRY(const json root, parseJson(jsonText, sourceName));
        json config;
        if (!configJson.empty()) {
            LOWBIT_TRY(config, parseJson(configJson, configName));
        }
        LOWBIT_TRY(BpeSpec spec, buildSpec(root, config, sourceName, configName));
        LOWBIT_TRY(auto tokenizer, BpeTokenizer::create(std::move(spec)));
        return std::shared_ptr<const Tokenizer>(std::move(tokenizer));
    } catch (const std::exception &e) {
        // nlohmann throws on a value of the wrong type deep inside; that is a malformed file.
        return formatError(sourceName, std::string("malformed tokenizer JSON: ") + e.what());
    }
}

Result<std::shared_ptr<const Tokenizer>>
loadHfTokenizer(const std::filesystem::path &tokenizerJson,
                const std::filesystem::path &tokenizerConfigJson) {
    LOWBIT_TRY(const std::string text, readWholeFile(tokenizerJson));
    std::string config;
    if (!tokenizerConfigJson.empty()) {
        LOWBIT_TRY(config, readWholeFile(tokenizerConfigJson));
    }
    return loadHfTokenizerFromJson(text, tokenizerJson.string(), config,
                                   tokenizerConfigJson.string());
}

} // namespace lowbit
