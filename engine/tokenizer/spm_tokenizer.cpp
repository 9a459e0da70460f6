#include "tokenizer/spm_tokenizer.h"

#include "tokenizer/vocab_checks.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <queue>

namespace lowbit {
namespace {

constexpr int32_t kTypeNormal = 1;
constexpr int32_t kTypeUnknown = 2;
constexpr int32_t kTypeControl = 3;
constexpr int32_t kTypeUserDefined = 4;
constexpr int32_t kTypeUnused = 5;
constexpr int32_t kTypeByte = 6;
constexpr std::string_view kSpaceMarker = "\xE2\x96\x81"; // U+2581, SentencePiece's "▁"

// "<0x0A>" -> 10; -1 when the piece is not a byte piece.
int parseBytePiece(std::string_view piece) {
    if (piece.size() != 6 || piece.substr(0, 3) != "<0x" || piece[5] != '>')
        return -1;
    int value = 0;
    for (char c : piece.substr(3, 2)) {
        int digit = -1;
        if (c >= '0' && c <= '9')
            digit = c - '0';
        else if (c >= 'A' && c <= 'F')
            digit = c - 'A' + 10;
        else if (c >= 'a' && c <= 'f')
            digit = c - 'a' + 10;
        if (digit < 0)
            return -1;
        value = value * 16 + digit;
    }
    return value;
}

std::string replaceAll(std::string_view text, std::string_view from, std::string_view to) {
    std::string out;
    out.reserve(text.size());
    size_t pos = 0;
    for (size_t hit; (hit = text.find(from, pos)) != std::string_view::npos;
         pos = hit + from.size()) {
        out.append(text.substr(pos, hit - pos));
        out.append(to);
    }
    out.append(text.substr(pos));
    return out;
}

int32_t inferType(const SpmSpec &spec, int32_t id) {
    if (id == spec.unkId)
        return kTypeUnknown;
    if (id == spec.bosId || id == spec.eosId || id == spec.padId)
        return kTypeControl;
    return parseBytePiece(spec.pieces[id]) >= 0 ? kTypeByte : kTypeNormal;
}

} // namespace

Result<std::shared_ptr<const SpmTokenizer>> SpmTokenizer::create(SpmSpec spec) {
    LOWBIT_CHECK(checkVocabShape(spec.sourceName, spec.pieces.size(), spec.tokenTypes.size(),
                                 spec.scores.size(),
                                 {spec.bosId, spec.eosId, spec.unkId, spec.padId}));
    const auto vocabSize = static_cast<int32_t>(spec.pieces.size());
    std::shared_ptr<SpmTokenizer> tok(new SpmTokenizer());
    if (spec.tokenTypes.empty()) {
        for (int32_t id = 0; id < vocabSize; ++id)
            spec.tokenTypes.push_back(inferType(spec, id));
    }
    if (spec.scores.empty())
        spec.scores.assign(vocabSize, 0.0f);
    // A NaN score would break the heap's ordering; such a piece is simply never preferred.
    for (float &score : spec.scores) {
        if (std::isnan(score))
            score = -std::numeric_limits<float>::infinity();
    }
    tok->m_byteIds.fill(-1);
    tok->m_decoded.resize(vocabSize);
    std::vector<AddedToken> added;
    for (int32_t id = 0; id < vocabSize; ++id) {
        const std::string &piece = spec.pieces[id];
        const int32_t type = spec.tokenTypes[id];
        const int byte = parseBytePiece(piece);
        if (type == kTypeByte && byte >= 0) {
            if (tok->m_byteIds[byte] < 0)
                tok->m_byteIds[byte] = id;
            tok->m_decoded[id] = std::string(1, static_cast<char>(byte));
        } else if (type == kTypeNormal || type == kTypeUserDefined) {
            tok->m_pieceToId.try_emplace(piece, id);
            tok->m_decoded[id] = replaceAll(piece, kSpaceMarker, " ");
        } else if (type != kTypeUnused) {
            tok->m_decoded[id] = piece;
        }
        // llama.cpp matches user-defined pieces always, control and unknown ones on request.
        if (!piece.empty() &&
            (type == kTypeUserDefined || type == kTypeControl || type == kTypeUnknown))
            added.push_back({piece, id, type != kTypeUserDefined});
    }
    tok->m_added = AddedTokenMatcher(std::move(added));
    tok->m_pieces = std::move(spec.pieces);
    tok->m_scores = std::move(spec.scores);
    tok->m_types = std::move(spec.tokenTypes);
    tok->m_bosId = spec.bosId;
    tok->m_eosId = spec.eosId;
    tok->m_unkId = spec.unkId;
    tok->m_padId = spec.padId;
    tok->m_addBos = spec.addBos;
    tok->m_addSpacePrefix = spec.addSpacePrefix;
    return std::shared_ptr<const SpmTokenizer>(std::move(tok));
}

std::vector<int32_t> SpmTokenizer::encode(std::string_view text,
                                          const EncodeOptions &options) const {
    std::vector<int32_t> ids;
    if (options.addBos && m_bosId >= 0)
        ids.push_back(m_bosId);
    std::vector<TextFragment> fragments;
    m_added.split(text, options.parseSpecial, fragments);
    bool afterSpecial = true; // llama.cpp: the dummy prefix goes before the first fragment and
                              // before each fragment that follows an added token
    for (const TextFragment &fragment : fragments) {
        if (fragment.tokenId >= 0) {
            ids.push_back(fragment.tokenId);
            afterSpecial = true;
            continue;
        }
        std::string escaped =
            m_addSpacePrefix && afterSpecial ? std::string(kSpaceMarker) : std::string();
        escaped += replaceAll(fragment.text, " ", kSpaceMarker);
        encodeFragment(escaped, ids);
        afterSpecial = false;
    }
    return ids;
}

// Merging by score with a heap of candidate pairs over a linked list of symbols (llama.cpp's
// llm_tokenizer_spm): the same result as llama2.c's repeated scan for the best pair, in
// O(n log n) instead of O(n^2) for long texts.
void SpmTokenizer::encodeFragment(std::string_view text, std::vector<int32_t> &out) const {
    struct Symbol {
        int32_t start, length, prev, next;
    };
    struct Candidate {
        float score;
        int32_t left, right, length;
        bool operator<(const Candidate &o) const {
            return score != o.score ? score < o.score : left > o.left;
        }
    };
    std::vector<Symbol> symbols;
    for (size_t pos = 0; pos < text.size();) {
        const auto length = static_cast<int32_t>(utf8::charLength(text, pos));
        const auto index = static_cast<int32_t>(symbols.size());
        symbols.push_back({static_cast<int32_t>(pos), length, index - 1, index + 1});
        pos += length;
    }
    const auto n = static_cast<int32_t>(symbols.size());
    std::priority_queue<Candidate> queue;
    const auto consider = [&](int32_t left, int32_t right) {
        if (left < 0 || right >= n)
            return;
        const int32_t length = symbols[left].length + symbols[right].length;
        const auto it = m_pieceToId.find(text.substr(symbols[left].start, length));
        if (it != m_pieceToId.end())
            queue.push({m_scores[it->second], left, right, length});
    };
    for (int32_t i = 0; i + 1 < n; ++i)
        consider(i, i + 1);
    while (!queue.empty()) {
        const Candidate top = queue.top();
        queue.pop();
        Symbol &left = symbols[top.left];
        Symbol &right = symbols[top.right];
        // Stale entries: one side has been merged into something else since.
        if (left.length == 0 || right.length == 0 || left.length + right.length != top.length)
            continue;
        left.length = top.length;
        right.length = 0;
        left.next = right.next;
        if (left.next < n)
            symbols[left.next].prev = top.left;
        consider(left.prev, top.left);
        consider(top.left, left.next);
    }
    for (int32_t i = 0; i < n; i = symbols[i].next)
        emitSymbol(text.substr(symbols[i].start, symbols[i].length), out);
}

void SpmTokenizer::emitSymbol(std::string_view symbol, std::vector<int32_t> &out) const {
    const auto it = m_pieceToId.find(symbol);
    if (it != m_pieceToId.end()) {
        out.push_back(it->second);
        return;
    }
    for (char c : symbol) {
        const int32_t id = m_byteIds[static_cast<unsigned char>(c)];
        if (id >= 0)
            out.push_back(id);
        else if (m_unkId >= 0)
            out.push_back(m_unkId);
    }
}

std::string SpmTokenizer::decode(std::span<const int32_t> ids) const {
    std::string text;
    bool atStart = true;
    for (int32_t id : ids) {
        if (id < 0 || id >= vocabSize())
            continue;
        std::string_view piece = m_decoded[id];
        const bool textual = m_types[id] == kTypeNormal || m_types[id] == kTypeUserDefined;
        if (m_addSpacePrefix && atStart && textual && !piece.empty() && piece[0] == ' ')
            piece.remove_prefix(1);
        text += piece;
        atStart = id == m_bosId;
    }
    return text;
}

std::string_view SpmTokenizer::piece(int32_t id) const {
    return id >= 0 && id < vocabSize() ? std::string_view(m_pieces[id]) : std::string_view();
}

std::vector<int32_t> SpmTokenizer::eosIds() const {
    return m_eosId >= 0 ? std::vector<int32_t>{m_eosId} : std::vector<int32_t>{};
}

bool SpmTokenizer::isSpecial(int32_t id) const {
    return id >= 0 && id < vocabSize() && m_types[id] == kTypeControl;
}

VocabExport SpmTokenizer::exportVocab() const {
    VocabExport vocab;
    vocab.model = "llama";
    vocab.tokens = m_pieces;
    vocab.scores = m_scores;
    vocab.tokenTypes = m_types;
    vocab.bosId = m_bosId;
    vocab.eosId = m_eosId;
    vocab.unkId = m_unkId;
    vocab.padId = m_padId;
    vocab.addBos = m_addBos;
    vocab.addSpacePrefix = m_addSpacePrefix;
    return vocab;
}

} // namespace lowbit
