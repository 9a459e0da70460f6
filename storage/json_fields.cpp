#include "json_fields.h"

namespace lowbit {

using nlohmann::json;

Error fieldError(const std::string &field, const std::string &problem) {
    return makeError(ErrorCode::InvalidArgument, field + ": " + problem);
}

std::string shownJson(const json &value) {
    std::string text = value.dump();
    return text.size() > 40 ? text.substr(0, 37) + "..." : text;
}

Status JsonFields::checkIsObject() const {
    if (!m_object.is_object())
        return fieldError(m_path, "must be a JSON object, got " + shownJson(m_object));
    return {};
}

const json *JsonFields::find(const std::string &key) {
    m_read.insert(key);
    const auto it = m_object.find(key);
    return it == m_object.end() ? nullptr : &*it;
}

Status JsonFields::text(const std::string &key, std::string &out, bool allowEmpty) {
    const json *value = find(key);
    if (!value)
        return {};
    if (!value->is_string() || (!allowEmpty && value->get<std::string>().empty()))
        return fieldError(field(key), "must be a non-empty string, got " + shownJson(*value));
    out = value->get<std::string>();
    return {};
}

Status JsonFields::integer(const std::string &key, int64_t min, int64_t max, int64_t &out) {
    const json *value = find(key);
    if (!value)
        return {};
    // An unsigned value past INT64_MAX would read back negative.
    if (!value->is_number_integer() ||
        (value->is_number_unsigned() && value->get<uint64_t>() > uint64_t(INT64_MAX)) ||
        value->get<int64_t>() < min || value->get<int64_t>() > max)
        return fieldError(field(key), "must be an integer in [" + std::to_string(min) + ", " +
                                          std::to_string(max) + "], got " + shownJson(*value));
    out = value->get<int64_t>();
    return {};
}

Status JsonFields::boolean(const std::string &key, bool &out) {
    const json *value = find(key);
    if (!value)
        return {};
    if (!value->is_boolean())
        return fieldError(field(key), "must be true or false, got " + shownJson(*value));
    out = value->get<bool>();
    return {};
}

Status JsonFields::object(const std::string &key, json &out) {
    const json *value = find(key);
    if (!value)
        return {};
    if (!value->is_object())
        return fieldError(field(key), "must be a JSON object, got " + shownJson(*value));
    out = *value;
    return {};
}

Result<const json *> JsonFields::list(const std::string &key, bool required) {
    const json *value = find(key);
    if (!value && !required)
        return value;
    if (!value || !value->is_array() || value->empty())
        return fieldError(field(key), "must be a non-empty list");
    return value;
}

Status JsonFields::finish() const {
    for (const auto &[key, value] : m_object.items())
        if (!m_read.count(key))
            return fieldError(field(key), "unknown field");
    return {};
}

} // namespace lowbit
