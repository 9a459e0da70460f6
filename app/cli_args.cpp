#include "cli_args.h"

#include <charconv>
#include <cstdlib>

namespace lowbit::cli {

Result<Args> Args::parse(const std::vector<std::string> &argv, const std::set<std::string> &valueOptions,
                         const std::set<std::string> &flags,
                         const std::map<std::string, std::string> &aliases) {
    Args args;
    for (size_t i = 0; i < argv.size(); ++i) {
        const std::string &a = argv[i];
        if (a.size() < 2 || a[0] != '-' || (a.size() > 1 && (std::isdigit(static_cast<unsigned char>(a[1])) != 0))) {
            args.m_positionals.push_back(a);
            continue;
        }
        std::string name = a.substr(a[1] == '-' ? 2 : 1);
        std::optional<std::string> inlineValue;
        if (const size_t eq = name.find('='); eq != std::string::npos) {
            inlineValue = name.substr(eq + 1);
            name.resize(eq);
        }
        if (auto alias = aliases.find(name); alias != aliases.end())
            name = alias->second;
        if (valueOptions.count(name)) {
            if (!inlineValue && i + 1 >= argv.size())
                return makeError(ErrorCode::InvalidArgument, "option --" + name + " needs a value");
            args.m_values.emplace(name, inlineValue ? *inlineValue : argv[++i]);
        } else if (flags.count(name)) {
            args.m_flags.insert(name);
        } else {
            return makeError(ErrorCode::InvalidArgument, "unknown option " + a);
        }
    }
    return args;
}

std::optional<std::string> Args::value(const std::string &name) const {
    auto range = m_values.equal_range(name);
    if (range.first == range.second)
        return std::nullopt;
    return std::prev(range.second)->second;
}

std::vector<std::string> Args::values(const std::string &name) const {
    std::vector<std::string> out;
    for (auto [it, end] = m_values.equal_range(name); it != end; ++it)
        out.push_back(it->second);
    return out;
}

Result<int64_t> Args::integer(const std::string &name, int64_t fallback) const {
    const auto text = value(name);
    if (!text)
        return fallback;
    int64_t v = 0;
    auto [end, ec] = std::from_chars(text->data(), text->data() + text->size(), v);
    if (ec != std::errc() || end != text->data() + text->size())
        return makeError(ErrorCode::InvalidArgument, "--" + name + ": not an integer: " + *text);
    return v;
}

Result<double> Args::number(const std::string &name, double fallback) const {
    const auto text = value(name);
    if (!text)
        return fallback;
    char *end = nullptr;
    const double v = std::strtod(text->c_str(), &end);
    if (text->empty() || end != text->c_str() + text->size())
        return makeError(ErrorCode::InvalidArgument, "--" + name + ": not a number: " + *text);
    return v;
}

} // namespace lowbit::cli
