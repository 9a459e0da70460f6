// Reading the benchmark files in their original formats (plain text, JSON lines, RFC 4180 CSV,
// bzip2) with errors that name the file and the line, plus the small string helpers the scorers
// share (content hashes, Python's len() of a UTF-8 string).
#pragma once

#include "core/result.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace lowbit {

// "format: PATH:LINE: message"
Error dataError(const std::filesystem::path &path, int64_t line, const std::string &message);

Result<std::string> readWholeFile(const std::filesystem::path &path);
// A .bz2 file decompressed whole (Unsupported when built without libbz2).
Result<std::string> readBzip2File(const std::filesystem::path &path);

struct JsonLine {
    int64_t line = 0; // 1-based line number in the file
    nlohmann::json value;
};
// Every non-blank line parsed as one JSON value; a line that does not parse is an error naming it.
Result<std::vector<JsonLine>> readJsonLines(const std::filesystem::path &path);

struct CsvRow {
    int64_t line = 0; // 1-based line on which the record starts
    std::vector<std::string> fields;
};
// RFC 4180: comma separated, fields optionally in double quotes ("" for a quote inside, line breaks
// allowed inside quotes), CRLF or LF records. Blank lines are skipped. Errors: an unterminated
// quote, text after a closing quote.
Result<std::vector<CsvRow>> parseCsv(std::string_view text, const std::filesystem::path &source);
Result<std::vector<CsvRow>> readCsvFile(const std::filesystem::path &path);

// A JSON object's string field; an error naming file, line and field when missing or not a string.
Result<std::string> jsonString(const nlohmann::json &object, const char *field,
                               const std::filesystem::path &path, int64_t line);

// 64-bit FNV-1a of the bytes, as 16 lower-case hex digits (content and prompt hashes).
std::string hashHex(std::string_view bytes);
// Python's len(str) of UTF-8 text: the number of code points (acc_norm divides by it).
int64_t pythonLength(std::string_view text);
// Python's str.lower()/str.strip() restricted to ASCII letters / Python whitespace.
std::string asciiLower(std::string_view text);

} // namespace lowbit
