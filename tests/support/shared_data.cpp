#include "shared_data.h"

#include <cstdlib>
#include <fstream>
#include <sstream>

namespace lowbit::test {

std::filesystem::path sharedDir() {
    if (const char *env = std::getenv("LOWBIT_SHARED_DIR"); env && *env)
        return env;
    return std::filesystem::path(LOWBIT_SOURCE_DIR).parent_path() / "shared";
}

std::filesystem::path sharedPath(const std::string &relative) { return sharedDir() / relative; }

bool sharedRequired() {
    const char *env = std::getenv("LOWBIT_REQUIRE_SHARED");
    return env && std::string(env) == "1";
}

std::string readFile(const std::filesystem::path &path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

std::vector<VocabCase> readVocabCases(const std::filesystem::path &inp,
                                      const std::filesystem::path &out) {
    const std::string inputs = readFile(inp);
    const std::string separator = "\n__ggml_vocab_test__\n";
    std::vector<VocabCase> cases;
    for (size_t pos = 0;;) {
        const size_t hit = inputs.find(separator, pos);
        cases.push_back(
            {inputs.substr(pos, hit == std::string::npos ? std::string::npos : hit - pos), {}});
        if (hit == std::string::npos)
            break;
        pos = hit + separator.size();
    }
    std::istringstream lines(readFile(out));
    std::string line;
    for (VocabCase &c : cases) {
        if (!std::getline(lines, line))
            break;
        std::istringstream numbers(line);
        for (int32_t id; numbers >> id;)
            c.ids.push_back(id);
    }
    return cases;
}

} // namespace lowbit::test
