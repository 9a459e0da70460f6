#include "dataset_io.h"

#include "tokenizer/utf8.h"

#include <fstream>
#include <sstream>

#if LOWBIT_HAVE_BZIP2
#include <bzlib.h>
#endif

namespace lowbit {

Error dataError(const std::filesystem::path &path, int64_t line, const std::string &message) {
    return makeError(ErrorCode::Format, path.string() + ":" + std::to_string(line) + ": " + message);
}

Result<std::string> readWholeFile(const std::filesystem::path &path) {
    std::ifstream in(path, std::ios::binary);
    if (!in)
        return makeError(ErrorCode::NotFound, path.string() + ": cannot open the file");
    std::ostringstream text;
    text << in.rdbuf();
    if (in.bad())
        return makeError(ErrorCode::Io, path.string() + ": read failed");
    return text.str();
}

Result<std::string> readBzip2File(const std::filesystem::path &path) {
    LOWBIT_TRY(std::string packed, readWholeFile(path));
#if LOWBIT_HAVE_BZIP2
    bz_stream stream{};
    if (BZ2_bzDecompressInit(&stream, 0, 0) != BZ_OK)
        return makeError(ErrorCode::Internal, path.string() + ": bzip2 init failed");
    std::string out;
    std::vector<char> buffer(1 << 20);
    stream.next_in = packed.data();
    stream.avail_in = unsigned(packed.size());
    int status = BZ_OK;
    while (status == BZ_OK) {
        stream.next_out = buffer.data();
        stream.avail_out = unsigned(buffer.size());
        status = BZ2_bzDecompress(&stream);
        out.append(buffer.data(), buffer.size() - stream.avail_out);
        // A concatenated (multi-stream) file continues with a fresh stream.
        if (status == BZ_STREAM_END && stream.avail_in > 0) {
            const unsigned left = stream.avail_in;
            char *next = stream.next_in;
            BZ2_bzDecompressEnd(&stream);
            stream = {};
            BZ2_bzDecompressInit(&stream, 0, 0);
            stream.next_in = next;
            stream.avail_in = left;
            status = BZ_OK;
        }
        if (status == BZ_OK && stream.avail_in == 0 && stream.avail_out > 0)
            status = BZ_UNEXPECTED_EOF;
    }
    BZ2_bzDecompressEnd(&stream);
    if (status != BZ_STREAM_END)
        return makeError(ErrorCode::Format, path.string() + ": corrupt or truncated bzip2 data (code " +
                                                std::to_string(status) + ")");
    return out;
#else
    return makeError(ErrorCode::Unsupported, path.string() + ": this build has no bzip2 support (libbz2)");
#endif
}

Result<std::vector<JsonLine>> readJsonLines(const std::filesystem::path &path) {
    LOWBIT_TRY(std::string text, readWholeFile(path));
    std::vector<JsonLine> rows;
    size_t start = 0;
    for (int64_t line = 1; start < text.size(); ++line) {
        size_t end = text.find('\n', start);
        if (end == std::string::npos)
            end = text.size();
        std::string_view row(text.data() + start, end - start);
        start = end + 1;
        if (row.find_first_not_of(" \t\r") == std::string_view::npos)
            continue;
        auto value = nlohmann::json::parse(row, nullptr, false);
        if (value.is_discarded())
            return dataError(path, line, "not valid JSON");
        rows.push_back({line, std::move(value)});
    }
    return rows;
}

Result<std::vector<CsvRow>> parseCsv(std::string_view text, const std::filesystem::path &source) {
    std::vector<CsvRow> rows;
    CsvRow row;
    std::string field;
    int64_t line = 1;
    size_t i = 0;
    bool rowHasContent = false;
    auto endField = [&] {
        row.fields.push_back(std::move(field));
        field.clear();
    };
    auto endRow = [&] {
        endField();
        if (rowHasContent)
            rows.push_back(std::move(row));
        row = CsvRow{};
        rowHasContent = false;
    };
    while (i < text.size()) {
        if (!rowHasContent)
            row.line = line;
        const char c = text[i];
        if (c == '"' && field.empty()) {
            rowHasContent = true;
            const int64_t openedAt = line;
            ++i;
            for (;;) {
                if (i >= text.size())
                    return dataError(source, openedAt, "quoted field is never closed");
                if (text[i] == '"') {
                    if (i + 1 < text.size() && text[i + 1] == '"') {
                        field += '"';
                        i += 2;
                        continue;
                    }
                    ++i;
                    break;
                }
                if (text[i] == '\n')
                    ++line;
                field += text[i++];
            }
            if (i < text.size() && text[i] != ',' && text[i] != '\n' && text[i] != '\r')
                return dataError(source, line, "unexpected text after a closing quote");
            continue;
        }
        if (c == ',') {
            rowHasContent = true;
            endField();
        } else if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') {
            ++i;
            continue;
        } else if (c == '\n') {
            endRow();
            ++line;
        } else {
            rowHasContent = true;
            field += c;
        }
        ++i;
    }
    if (rowHasContent || !field.empty())
        endRow();
    return rows;
}

Result<std::vector<CsvRow>> readCsvFile(const std::filesystem::path &path) {
    LOWBIT_TRY(std::string text, readWholeFile(path));
    return parseCsv(text, path);
}

Result<std::string> jsonString(const nlohmann::json &object, const char *field,
                               const std::filesystem::path &path, int64_t line) {
    if (!object.is_object())
        return dataError(path, line, "expected a JSON object");
    const auto it = object.find(field);
    if (it == object.end())
        return dataError(path, line, std::string("missing field '") + field + "'");
    if (!it->is_string())
        return dataError(path, line, std::string("field '") + field + "' is not a string");
    return it->get<std::string>();
}

std::string hashHex(std::string_view bytes) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (unsigned char c : bytes) {
        h ^= c;
        h *= 0x100000001b3ull;
    }
    static const char *kDigits = "0123456789abcdef";
    std::string out(16, '0');
    for (int i = 15; i >= 0; --i, h >>= 4)
        out[size_t(i)] = kDigits[h & 15];
    return out;
}

int64_t pythonLength(std::string_view text) {
    int64_t count = 0;
    for (size_t pos = 0; pos < text.size(); pos += utf8::charLength(text, pos))
        ++count;
    return count;
}

std::string asciiLower(std::string_view text) {
    std::string out(text);
    for (char &c : out)
        if (c >= 'A' && c <= 'Z')
            c = char(c - 'A' + 'a');
    return out;
}

} // namespace lowbit
