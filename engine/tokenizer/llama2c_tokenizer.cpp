// llama2.c tokenizer .bin -> SpmTokenizer. The file (written by llama2.c's tokenizer.py export) is
//   int32 max_token_length, then per token: float32 score, int32 length, `length` bytes,
// with SentencePiece's "▁" already turned into ' ' and BOS/EOS spelled "\n<s>\n" / "\n</s>\n".
// Pieces are brought back to the GGUF form ("▁", "<s>", "</s>") so that both sources export the
// same vocabulary. Token ids: UNK=0, BOS=1, EOS=2 (llama2.c run.c).
#include "tokenizer/spm_tokenizer.h"
#include "tokenizer/tokenizer_loaders.h"

#include <cstring>
#include <fstream>
#include <iterator>

namespace lowbit {
namespace {

constexpr int32_t kUnkId = 0;
constexpr int32_t kBosId = 1;
constexpr int32_t kEosId = 2;

std::string toGgufPiece(std::string_view raw, int32_t id) {
    if (id == kBosId && raw == "\n<s>\n")
        return "<s>";
    if (id == kEosId && raw == "\n</s>\n")
        return "</s>";
    std::string piece;
    for (char c : raw) {
        if (c == ' ')
            piece += "\xE2\x96\x81";
        else
            piece += c;
    }
    return piece;
}

// Reads little-endian values with bounds checks; every failure names the file and the offset.
class Reader {
public:
    Reader(const std::string &bytes, std::string name) : m_bytes(bytes), m_name(std::move(name)) {}

    template <typename T> Result<T> read(const char *what) {
        if (m_bytes.size() - m_pos < sizeof(T))
            return truncated(what);
        T value;
        std::memcpy(&value, m_bytes.data() + m_pos, sizeof(T));
        m_pos += sizeof(T);
        return value;
    }
    Result<std::string_view> bytes(size_t count, const char *what) {
        if (m_bytes.size() - m_pos < count)
            return truncated(what);
        std::string_view view(m_bytes.data() + m_pos, count);
        m_pos += count;
        return view;
    }
    bool atEnd() const { return m_pos == m_bytes.size(); }

private:
    Error truncated(const char *what) const {
        return makeError(ErrorCode::Format, m_name + ": truncated: " + what + " at byte offset " +
                                                std::to_string(m_pos) + " runs past the end (" +
                                                std::to_string(m_bytes.size()) + " bytes)");
    }

    const std::string &m_bytes;
    std::string m_name;
    size_t m_pos = 0;
};

} // namespace

Result<std::shared_ptr<const Tokenizer>> loadLlama2cTokenizer(const std::filesystem::path &file,
                                                              int32_t vocabSize) {
    const std::string name = file.string();
    if (vocabSize < 0)
        return makeError(ErrorCode::InvalidArgument,
                         name + ": vocab size " + std::to_string(vocabSize) + " is negative");
    std::ifstream in(file, std::ios::binary);
    if (!in)
        return makeError(ErrorCode::NotFound, name + ": cannot open");
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (in.bad())
        return makeError(ErrorCode::Io, name + ": read failed");

    Reader reader(bytes, name);
    LOWBIT_TRY(const int32_t maxTokenLength, reader.read<int32_t>("max_token_length"));
    if (maxTokenLength <= 0)
        return makeError(ErrorCode::Format, name + ": max_token_length " +
                                                std::to_string(maxTokenLength) +
                                                " is not positive");
    SpmSpec spec;
    spec.sourceName = name;
    // vocabSize 0: as many tokens as the file holds (a tokenizer given without its model).
    const bool readAll = vocabSize == 0;
    for (int32_t id = 0; readAll ? !reader.atEnd() : id < vocabSize; ++id) {
        LOWBIT_TRY(const float score, reader.read<float>("token score"));
        LOWBIT_TRY(const int32_t length, reader.read<int32_t>("token length"));
        if (length < 0 || length > maxTokenLength)
            return makeError(ErrorCode::Format, name + ": token " + std::to_string(id) +
                                                    " has length " + std::to_string(length) +
                                                    " (max_token_length " +
                                                    std::to_string(maxTokenLength) + ")");
        LOWBIT_TRY(const std::string_view raw,
                   reader.bytes(static_cast<size_t>(length), "token bytes"));
        spec.scores.push_back(score);
        spec.pieces.push_back(toGgufPiece(raw, id));
    }
    if (spec.pieces.size() <= static_cast<size_t>(kEosId))
        return makeError(ErrorCode::Format, name + ": only " + std::to_string(spec.pieces.size()) +
                                                " tokens (UNK, BOS and EOS are required)");
    spec.unkId = kUnkId;
    spec.bosId = kBosId;
    spec.eosId = kEosId;
    spec.addBos = true;
    spec.addSpacePrefix = true; // run.c encode() prepends the " " piece to non-empty text
    LOWBIT_TRY(auto tokenizer, SpmTokenizer::create(std::move(spec)));
    return std::shared_ptr<const Tokenizer>(std::move(tokenizer));
}

} // namespace lowbit
