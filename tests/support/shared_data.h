// Locating ../shared (LOWBIT_SHARED_DIR, default: ../shared next to the repository) from tests.
// A test that needs a shared file calls LOWBIT_REQUIRE_SHARED_FILE: it skips with a clear message
// when the file is absent, or fails when LOWBIT_REQUIRE_SHARED=1 (CI), so that in CI a skip is a
// failure.
#pragma once

#include <QString>
#include <QtTest>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace lowbit::test {

std::filesystem::path sharedDir();
std::filesystem::path sharedPath(const std::string &relative);
bool sharedRequired();
// Reads a whole file (test data); empty on failure.
std::string readFile(const std::filesystem::path &path);

// llama.cpp's tokenizer test vectors: .inp holds inputs separated by "\n__ggml_vocab_test__\n",
// .out one line of expected ids per input.
struct VocabCase {
    std::string text;
    std::vector<int32_t> ids;
};
std::vector<VocabCase> readVocabCases(const std::filesystem::path &inp,
                                      const std::filesystem::path &out);

} // namespace lowbit::test

#define LOWBIT_REQUIRE_SHARED_FILE(var, relative)                                                  \
    const std::filesystem::path var = lowbit::test::sharedPath(relative);                          \
    if (!std::filesystem::exists(var)) {                                                           \
        const QByteArray lowbitMsg =                                                               \
            QByteArray("shared file missing: ") + var.string().c_str() +                          \
            " (set LOWBIT_SHARED_DIR to the shared data folder)";                                  \
        if (lowbit::test::sharedRequired())                                                        \
            QFAIL(lowbitMsg.constData());                                                          \
        QSKIP(lowbitMsg.constData());                                                              \
    }
