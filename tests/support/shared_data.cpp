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

} // namespace lowbit::test
