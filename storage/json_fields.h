// JsonFields: reads the fields of one JSON object by name for the spec parsers (job spec, sweep
// spec). Every error names the field by its path ("spec.tasks[1].limit: must be an integer in
// [0, 1000000], got -3"); finish() rejects the keys never asked for, so a typo does not pass
// silently. An absent field leaves `out` unchanged (the caller's default).
#pragma once

#include "core/result.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <set>
#include <string>

namespace lowbit {

Error fieldError(const std::string &field, const std::string &problem);
// A value as an error message shows it: its JSON text, cut to 40 characters.
std::string shownJson(const nlohmann::json &value);

class JsonFields {
public:
    JsonFields(const nlohmann::json &object, std::string path)
        : m_object(object), m_path(std::move(path)) {}

    Status checkIsObject() const;
    std::string field(const std::string &key) const { return m_path + "." + key; }
    // The value of `key` or nullptr; marks the key as known either way.
    const nlohmann::json *find(const std::string &key);

    Status text(const std::string &key, std::string &out, bool allowEmpty = false);
    Status integer(const std::string &key, int64_t min, int64_t max, int64_t &out);
    Status boolean(const std::string &key, bool &out);
    Status object(const std::string &key, nlohmann::json &out);
    // A non-empty array; absent is an error only when `required`.
    Result<const nlohmann::json *> list(const std::string &key, bool required);
    Status finish() const;

private:
    const nlohmann::json &m_object;
    std::string m_path;
    std::set<std::string> m_read;
};

} // namespace lowbit
