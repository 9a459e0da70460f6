#include "tokenizer/bpe_tokenizer.h"

#include "tokenizer/vocab_checks.h"

#include <algorithm>
#include <queue>

namespace lowbit {
namespace {

constexpr int32_t kTypeNormal = 1;
constexpr int32_t kTypeControl = 3;
constexpr int32_t kTypeUserDefined = 4;
constexpr int32_t kTypeUnused = 5;
// The word cache is a speed-up for running text (WikiText repeats most words); it is bounded so
// that a long-lived tokenizer does not grow without limit.
constexpr size_t kCacheMaxEntries = 1 << 17;
constexpr size_t kCacheMaxWordBytes = 64;

bool isAddedType(int32_t type) {
    return type == kTypeControl || type == kTypeUserDefined;
}

uint64_t pairKey(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
           static_cast<uint32_t>(right);
}

// Inverse of byteToUnicode for codepoints below 0x144 (the largest one it produces is U+0143).
constexpr uint32_t kUnicodeLimit = 0x144;
std::array<int16_t, kUnicodeLimit> makeUnicodeToByte() {
    std::array<int16_t, kUnicodeLimit> table{};
    table.fill(-1);
    const auto &forward = byteToUnicode();
    for (int b = 0; b < 256; ++b)
        table[forward[b]] = static_cast<int16_t>(b);
    return table;
}

std::string byteLevelDecode(std::string_view piece) {
    static const std::array<int16_t, kUnicodeLimit> unicodeToByte = makeUnicodeToByte();
    std::string bytes;
    for (size_t pos = 0; pos < piece.size();) {
        const size_t length = utf8::charLength(piece, pos);
        const uint32_t cp = utf8::decodeAt(piece, pos, length);
        if (length > 1 || cp < 0x80) {
            if (cp < kUnicodeLimit && unicodeToByte[cp] >= 0) {
                bytes += static_cast<char>(unicodeToByte[cp]);
                pos += length;
                continue;
            }
        }
        // Not in the byte alphabet (a hand-written vocab): keep the character's own bytes.
        bytes.append(piece.substr(pos, length));
        pos += length;
    }
    return bytes;
}

} // namespace

const std::array<uint32_t, 256> &byteToUnicode() {
    static const std::array<uint32_t, 256> table = [] {
        std::array<uint32_t, 256> result{};
        uint32_t next = 256;
        for (uint32_t b = 0; b < 256; ++b) {
            const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
            result[b] = printable ? b : next++;
        }
        return result;
    }();
    return table;
}

Result<std::shared_ptr<const BpeTokenizer>> BpeTokenizer::create(BpeSpec spec) {
    LOWBIT_CHECK(checkVocabShape(spec.sourceName, spec.pieces.size(), spec.tokenTypes.size(), 0,
                                 {spec.bosId, spec.eosId, spec.unkId, spec.padId}));
    const auto vocabSize = static_cast<int64_t>(spec.pieces.size());
    const std::string &name = spec.sourceName;
    std::shared_ptr<BpeTokenizer> tok(new BpeTokenizer());
    tok->m_pieces = std::move(spec.pieces);
    tok->m_types = std::move(spec.tokenTypes);
    if (tok->m_types.empty())
        tok->m_types.assign(tok->m_pieces.size(), kTypeNormal);
    tok->m_decoded.resize(tok->m_pieces.size());
    std::vector<AddedToken> added;
    for (int32_t id = 0; id < static_cast<int32_t>(tok->m_pieces.size()); ++id) {
        const std::string &piece = tok->m_pieces[id];
        const int32_t type = tok->m_types[id];
        if (piece.empty() || type == kTypeUnused)
            continue;
        if (isAddedType(type)) {
            added.push_back({piece, id, type == kTypeControl});
            tok->m_decoded[id] = piece;
        } else {
            tok->m_pieceToId.try_emplace(piece, id);
            tok->m_decoded[id] = byteLevelDecode(piece);
        }
    }
    tok->m_added = AddedTokenMatcher(std::move(added));
    for (int b = 0; b < 256; ++b) {
        std::string symbol;
        utf8::appendCodepoint(symbol, byteToUnicode()[b]);
        const auto it = tok->m_pieceToId.find(symbol);
        tok->m_byteIds[b] = it == tok->m_pieceToId.end() ? -1 : it->second;
    }
    LOWBIT_CHECK(tok->buildMerges(spec));
    LOWBIT_TRY(tok->m_splitter, RegexSplitter::compile(spec.splitPattern, name));
    tok->m_pre = std::move(spec.pre);
    tok->m_ignoreMerges = spec.ignoreMerges;
    tok->m_bosId = spec.bosId;
    tok->m_eosId = spec.eosId;
    tok->m_unkId = spec.unkId;
    tok->m_padId = spec.padId;
    tok->m_addBos = spec.addBos;
    if (spec.eosId >= 0)
        tok->m_eosIds.push_back(spec.eosId);
    for (int32_t id : spec.extraEosIds) {
        if (id >= 0 && id < vocabSize &&
            std::find(tok->m_eosIds.begin(), tok->m_eosIds.end(), id) == tok->m_eosIds.end())
            tok->m_eosIds.push_back(id);
    }
    return std::shared_ptr<const BpeTokenizer>(std::move(tok));
}

Status BpeTokenizer::buildMerges(const BpeSpec &spec) {
    m_merges.reserve(spec.merges.size());
    m_mergeList.reserve(spec.merges.size());
    const auto lookup = [&](const std::string &piece, size_t rank) -> Result<int32_t> {
        const auto it = m_pieceToId.find(piece);
        if (it == m_pieceToId.end())
            return makeError(ErrorCode::Format,
                             spec.sourceName + ": merge " + std::to_string(rank) + " ('" +
                                 spec.merges[rank].first + " " + spec.merges[rank].second +
                                 "') references the unknown token '" + piece + "'");
        return it->second;
    };
    for (size_t rank = 0; rank < spec.merges.size(); ++rank) {
        const auto &[leftPiece, rightPiece] = spec.merges[rank];
        LOWBIT_TRY(const int32_t left, lookup(leftPiece, rank));
        LOWBIT_TRY(const int32_t right, lookup(rightPiece, rank));
        LOWBIT_TRY(const int32_t result, lookup(leftPiece + rightPiece, rank));
        // A repeated merge keeps its first (best) rank, as HF does when building its map.
        if (m_merges.try_emplace(pairKey(left, right), Merge{static_cast<int32_t>(rank), result})
                .second)
            m_mergeList.emplace_back(left, right);
    }
    return {};
}

std::vector<int32_t> BpeTokenizer::encode(std::string_view text,
                                          const EncodeOptions &options) const {
    std::vector<int32_t> ids;
    if (options.addBos && m_bosId >= 0)
        ids.push_back(m_bosId);
    std::vector<TextFragment> fragments;
    m_added.split(text, options.parseSpecial, fragments);
    std::vector<std::string_view> words;
    for (const TextFragment &fragment : fragments) {
        if (fragment.tokenId >= 0) {
            ids.push_back(fragment.tokenId);
            continue;
        }
        words.clear();
        m_splitter->split(fragment.text, words);
        for (std::string_view word : words)
            encodeWord(word, ids);
    }
    return ids;
}

void BpeTokenizer::encodeWord(std::string_view word, std::vector<int32_t> &out) const {
    if (word.size() == 1) {
        const int32_t id = m_byteIds[static_cast<unsigned char>(word[0])];
        if (id >= 0)
            out.push_back(id);
        else if (m_unkId >= 0)
            out.push_back(m_unkId);
        return;
    }
    const bool cacheable = word.size() <= kCacheMaxWordBytes;
    if (cacheable) {
        std::lock_guard lock(m_cacheMutex);
        const auto it = m_cache.find(word);
        if (it != m_cache.end()) {
            out.insert(out.end(), it->second.begin(), it->second.end());
            return;
        }
    }
    std::vector<int32_t> ids;
    if (m_ignoreMerges) {
        std::string symbols;
        for (char byte : word)
            utf8::appendCodepoint(symbols, byteToUnicode()[static_cast<unsigned char>(byte)]);
        const auto it = m_pieceToId.find(symbols);
        if (it != m_pieceToId.end())
            ids.push_back(it->second);
    }
    if (ids.empty())
        ids = mergeWord(word);
    out.insert(out.end(), ids.begin(), ids.end());
    if (cacheable) {
        std::lock_guard lock(m_cacheMutex);
        if (m_cache.size() >= kCacheMaxEntries)
            m_cache.clear();
        m_cache.try_emplace(std::string(word), std::move(ids));
    }
}

// Merges the byte symbols of one pre-token, lowest rank first and leftmost among equal ranks, with
// a heap of candidate pairs and a linked list of symbols: O(n log n) in the word length, which
// matters for long runs of spaces or punctuation.
std::vector<int32_t> BpeTokenizer::mergeWord(std::string_view word) const {
    constexpr int32_t kDead = -2;
    struct Symbol {
        int32_t id, prev, next;
    };
    struct Candidate {
        int32_t rank, left, leftId, rightId;
        bool operator>(const Candidate &o) const {
            return rank != o.rank ? rank > o.rank : left > o.left;
        }
    };
    const auto n = static_cast<int32_t>(word.size());
    std::vector<Symbol> symbols(n);
    for (int32_t i = 0; i < n; ++i)
        symbols[i] = {m_byteIds[static_cast<unsigned char>(word[i])], i - 1, i + 1};

    std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
    const auto consider = [&](int32_t left) {
        if (left < 0 || symbols[left].next >= n)
            return;
        const int32_t leftId = symbols[left].id;
        const int32_t rightId = symbols[symbols[left].next].id;
        if (leftId < 0 || rightId < 0)
            return;
        const auto it = m_merges.find(pairKey(leftId, rightId));
        if (it != m_merges.end())
            queue.push({it->second.rank, left, leftId, rightId});
    };
    for (int32_t i = 0; i + 1 < n; ++i)
        consider(i);
    while (!queue.empty()) {
        const Candidate top = queue.top();
        queue.pop();
        Symbol &left = symbols[top.left];
        // Stale entries (a side was merged away since) no longer describe the pair.
        if (left.id != top.leftId || left.next >= n || symbols[left.next].id != top.rightId)
            continue;
        Symbol &right = symbols[left.next];
        left.id = m_merges.find(pairKey(top.leftId, top.rightId))->second.result;
        right.id = kDead;
        left.next = right.next;
        if (left.next < n)
            symbols[left.next].prev = top.left;
        consider(left.prev);
        consider(top.left);
    }
    std::vector<int32_t> ids;
    for (int32_t i = 0; i < n; i = symbols[i].next) {
        if (symbols[i].id >= 0)
            ids.push_back(symbols[i].id);
        else if (m_unkId >= 0)
            ids.push_back(m_unkId);
    }
    return ids;
}

std::string BpeTokenizer::decode(std::span<const int32_t> ids) const {
    std::string text;
    for (int32_t id : ids) {
        if (id >= 0 && id < vocabSize())
            text += m_decoded[id];
    }
    return text;
}

std::string_view BpeTokenizer::piece(int32_t id) const {
    return id >= 0 && id < vocabSize() ? std::string_view(m_pieces[id]) : std::string_view();
}

bool BpeTokenizer::isSpecial(int32_t id) const {
    return id >= 0 && id < vocabSize() && m_types[id] == kTypeControl;
}

VocabExport BpeTokenizer::exportVocab() const {
    VocabExport vocab;
    vocab.model = "gpt2";
    vocab.pre = m_pre;
    vocab.tokens = m_pieces;
    vocab.tokenTypes = m_types;
    for (size_t id = 0; id < vocab.tokens.size(); ++id) {
        // GGUF wants a distinct string per id; llama.cpp's converter names holes the same way.
        if (vocab.tokens[id].empty()) {
            vocab.tokens[id] = "[PAD" + std::to_string(id) + "]";
            vocab.tokenTypes[id] = kTypeUnused;
        }
    }
    vocab.merges.reserve(m_mergeList.size());
    for (const auto &[left, right] : m_mergeList)
        vocab.merges.push_back(m_pieces[left] + " " + m_pieces[right]);
    vocab.bosId = m_bosId;
    vocab.eosId = m_eosId;
    vocab.unkId = m_unkId;
    vocab.padId = m_padId;
    vocab.addBos = m_addBos;
    return vocab;
}

} // namespace lowbit
