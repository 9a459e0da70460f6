// Reading a whole JSON document from a file, with the error messages every reader of spec,
// manifest and config files gives: "<path>: cannot open <what>" (NotFound), "<path>: not valid
// JSON" (Format). nlohmann::json is parsed without exceptions.
#pragma once

#include "core/result.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <string_view>

namespace lowbit {

// `what` names the document in the open error ("the job spec").
Result<nlohmann::json> readJsonFile(const std::filesystem::path &path, std::string_view what);

} // namespace lowbit
