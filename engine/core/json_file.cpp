#include "core/json_file.h"

#include <fstream>
#include <sstream>

namespace lowbit {

Result<nlohmann::json> readJsonFile(const std::filesystem::path &path, std::string_view what) {
    std::ifstream in(path, std::ios::binary);
    if (!in)
        return makeError(ErrorCode::NotFound,
                         path.string() + ": cannot open " + std::string(what));
    std::ostringstream text;
    text << in.rdbuf();
    nlohmann::json value = nlohmann::json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
    if (value.is_discarded())
        return makeError(ErrorCode::Format, path.string() + ": not valid JSON");
    return value;
}

} // namespace lowbit
