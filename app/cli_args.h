// Command-line arguments of the headless subcommands: positionals plus --key value / --flag.
#pragma once

#include "core/result.h"

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace lowbit::cli {

class Args {
public:
    // `valueOptions` take a value (repeatable ones keep all); anything else starting with '-' is
    // a flag. Short aliases map to long names ("-p" -> "prompt").
    static Result<Args> parse(const std::vector<std::string> &argv, const std::set<std::string> &valueOptions,
                              const std::set<std::string> &flags,
                              const std::map<std::string, std::string> &aliases = {});

    const std::vector<std::string> &positionals() const { return m_positionals; }
    bool has(const std::string &name) const { return m_values.count(name) || m_flags.count(name); }
    std::optional<std::string> value(const std::string &name) const;
    std::vector<std::string> values(const std::string &name) const;
    Result<int64_t> integer(const std::string &name, int64_t fallback) const;
    Result<double> number(const std::string &name, double fallback) const;

private:
    std::vector<std::string> m_positionals;
    std::multimap<std::string, std::string> m_values;
    std::set<std::string> m_flags;
};

} // namespace lowbit::cli
