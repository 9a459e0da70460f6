#include "tokenizer/vocab_json.h"

#include <nlohmann/json.hpp>

namespace lowbit {

namespace {

using Json = nlohmann::json;

bool isValidUtf8(std::string_view s) {
    size_t i = 0;
    while (i < s.size()) {
        const unsigned char c = static_cast<unsigned char>(s[i]);
        const size_t len = c < 0x80         ? 1
                           : (c >> 5) == 6  ? 2
                           : (c >> 4) == 14 ? 3
                           : (c >> 3) == 30 ? 4
                                            : 0;
        if (len == 0 || i + len > s.size() || (len == 2 && c < 0xc2))
            return false;
        for (size_t k = 1; k < len; ++k)
            if ((static_cast<unsigned char>(s[i + k]) >> 6) != 2)
                return false;
        i += len;
    }
    return true;
}

Json pieceToJson(const std::string &piece) {
    if (isValidUtf8(piece))
        return piece;
    static const char *kHex = "0123456789abcdef";
    std::string hex;
    for (unsigned char c : piece) {
        hex += kHex[c >> 4];
        hex += kHex[c & 15];
    }
    return Json{{"hex", hex}};
}

Result<std::string> pieceFromJson(const Json &j, const std::string &source, const char *field,
                                  size_t index) {
    if (j.is_string())
        return j.get<std::string>();
    const auto bad =
        makeError(ErrorCode::Format, source + ": " + field + "[" + std::to_string(index) +
                                         "] is neither a string nor {\"hex\": ...}");
    if (!j.is_object() || !j.contains("hex") || !j["hex"].is_string())
        return bad;
    const std::string hex = j["hex"].get<std::string>();
    if (hex.size() % 2)
        return bad;
    std::string out;
    for (size_t i = 0; i < hex.size(); i += 2) {
        const auto nibble = [](char c) {
            return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        };
        const int hi = nibble(hex[i]), lo = nibble(hex[i + 1]);
        if (hi < 0 || lo < 0)
            return bad;
        out += char(hi * 16 + lo);
    }
    return out;
}

} // namespace

std::string vocabToJson(const VocabExport &vocab) {
    Json tokens = Json::array();
    for (const std::string &t : vocab.tokens)
        tokens.push_back(pieceToJson(t));
    Json merges = Json::array();
    for (const std::string &m : vocab.merges)
        merges.push_back(pieceToJson(m));
    const Json j = {{"format", "lowbit-vocab"},
                    {"version", 1},
                    {"model", vocab.model},
                    {"pre", vocab.pre},
                    {"tokens", tokens},
                    {"scores", vocab.scores},
                    {"token_types", vocab.tokenTypes},
                    {"merges", merges},
                    {"bos_id", vocab.bosId},
                    {"eos_id", vocab.eosId},
                    {"unk_id", vocab.unkId},
                    {"pad_id", vocab.padId},
                    {"add_bos", vocab.addBos},
                    {"add_space_prefix", vocab.addSpacePrefix}};
    return j.dump();
}

Result<VocabExport> vocabFromJson(std::string_view text, const std::string &source) {
    const Json j = Json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.is_object())
        return makeError(ErrorCode::Format, source + ": not a JSON object");
    if (j.value("format", "") != "lowbit-vocab")
        return makeError(ErrorCode::Format, source + ": field 'format' must be \"lowbit-vocab\"");
    VocabExport v;
    try {
        v.model = j.at("model").get<std::string>();
        v.pre = j.value("pre", "");
        const Json &tokens = j.at("tokens");
        if (!tokens.is_array())
            return makeError(ErrorCode::Format, source + ": field 'tokens' must be an array");
        v.tokens.reserve(tokens.size());
        for (size_t i = 0; i < tokens.size(); ++i) {
            LOWBIT_TRY(std::string piece, pieceFromJson(tokens[i], source, "tokens", i));
            v.tokens.push_back(std::move(piece));
        }
        v.scores = j.value("scores", std::vector<float>());
        v.tokenTypes = j.value("token_types", std::vector<int32_t>());
        if (const auto merges = j.find("merges"); merges != j.end()) {
            if (!merges->is_array())
                return makeError(ErrorCode::Format, source + ": field 'merges' must be an array");
            v.merges.reserve(merges->size());
            for (size_t i = 0; i < merges->size(); ++i) {
                LOWBIT_TRY(std::string merge, pieceFromJson((*merges)[i], source, "merges", i));
                v.merges.push_back(std::move(merge));
            }
        }
        v.bosId = j.value("bos_id", -1);
        v.eosId = j.value("eos_id", -1);
        v.unkId = j.value("unk_id", -1);
        v.padId = j.value("pad_id", -1);
        v.addBos = j.value("add_bos", false);
        v.addSpacePrefix = j.value("add_space_prefix", true);
    } catch (const std::exception &e) {
        return makeError(ErrorCode::Format, source + ": malformed vocabulary: " + e.what());
    }
    if (v.tokens.empty())
        return makeError(ErrorCode::Format, source + ": the vocabulary has no tokens");
    return v;
}

} // namespace lowbit
