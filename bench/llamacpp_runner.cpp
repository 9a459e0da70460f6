#include "llamacpp_runner.h"

#include "bench_support.h"

#include <cstdio>
#include <regex>
#include <sys/resource.h>
#include <sys/wait.h>

namespace lowbit::bench {
namespace {

namespace fs = std::filesystem;

constexpr const char *kBinaryName = "llama-perplexity";

std::optional<fs::path> binaryIn(const fs::path &place) {
    std::error_code ec;
    if (fs::is_regular_file(place, ec))
        return place;
    for (const fs::path &candidate :
         {place / kBinaryName, place / "bin" / kBinaryName, place / "build" / "bin" / kBinaryName})
        if (fs::is_regular_file(candidate, ec))
            return candidate;
    return std::nullopt;
}

// Single-quoted for /bin/sh: every ' becomes '\''.
std::string shellQuote(const std::string &arg) {
    std::string out = "'";
    for (char c : arg) {
        if (c == '\'')
            out += "'\\''";
        else
            out += c;
    }
    return out + "'";
}

// CPU seconds of every waited-for child so far (user + system).
double childrenCpuSeconds() {
    rusage usage{};
    getrusage(RUSAGE_CHILDREN, &usage);
    auto seconds = [](const timeval &t) { return double(t.tv_sec) + double(t.tv_usec) * 1e-6; };
    return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

std::string tail(const std::string &text, size_t chars) {
    return text.size() <= chars ? text : "..." + text.substr(text.size() - chars);
}

} // namespace

std::optional<fs::path> findLlamaPerplexity(const fs::path &override) {
    if (!override.empty())
        return binaryIn(override);
    if (const char *env = std::getenv("LLAMACPP_DIR"); env && *env)
        return binaryIn(env);
    return binaryIn(fs::path(LOWBIT_SOURCE_DIR).parent_path() / "llama.cpp");
}

Result<LlamaCppResult> parseLlamaPerplexityOutput(const std::string &output) {
    LlamaCppResult r;
    std::smatch m;
    static const std::regex finalRe(
        R"(Final estimate: PPL = ([0-9.eE+-]+|nan|inf) \+/- ([0-9.eE+-]+|nan|inf))");
    if (!std::regex_search(output, m, finalRe))
        return makeError(ErrorCode::Format, "llama-perplexity printed no 'Final estimate' line: " +
                                                tail(output, 1500));
    r.perplexity = std::strtod(m[1].str().c_str(), nullptr);
    r.perplexityError = std::strtod(m[2].str().c_str(), nullptr);

    static const std::regex chunksRe(R"(calculating perplexity over (\d+) chunks)");
    if (std::regex_search(output, m, chunksRe))
        r.chunks = std::stoll(m[1].str());

    static const std::regex evalRe(R"(prompt eval time =\s*([0-9.]+) ms /\s*(\d+) tokens)");
    if (!std::regex_search(output, m, evalRe))
        return makeError(ErrorCode::Format,
                         "llama-perplexity printed no 'prompt eval time' line: " +
                             tail(output, 1500));
    r.evalSeconds = std::strtod(m[1].str().c_str(), nullptr) / 1000.0;
    r.evalTokens = std::stoll(m[2].str());
    r.tokensPerSecond = r.evalSeconds > 0 ? double(r.evalTokens) / r.evalSeconds : 0;
    return r;
}

Result<LlamaCppResult> runLlamaPerplexity(const fs::path &binary, const LlamaCppRun &run) {
    std::string cmd = shellQuote(binary.string()) + " -m " + shellQuote(run.model.string()) +
                      " -f " + shellQuote(run.text.string()) + " -c " +
                      std::to_string(run.contextTokens) + " -b " + std::to_string(run.batchTokens) +
                      " -t " + std::to_string(run.threads);
    if (run.chunks > 0)
        cmd += " --chunks " + std::to_string(run.chunks);
    const std::string commandLine = cmd;
    cmd += " 2>&1";

    const auto start = std::chrono::steady_clock::now();
    const double cpuStart = childrenCpuSeconds();
    FILE *pipe = popen(cmd.c_str(), "r");
    if (!pipe)
        return makeError(ErrorCode::Io, "cannot start " + commandLine);
    std::string output;
    char buffer[4096];
    for (size_t n; (n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0;)
        output.append(buffer, n);
    const int status = pclose(pipe);
    const double wall = secondsSince(start);
    if (status != 0) {
        const int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        return makeError(ErrorCode::Io, commandLine + " exited with status " +
                                            std::to_string(code) + ": " + tail(output, 1500));
    }
    LOWBIT_TRY(LlamaCppResult parsed, parseLlamaPerplexityOutput(output));
    parsed.wallSeconds = wall;
    parsed.cpuSeconds = childrenCpuSeconds() - cpuStart;
    parsed.commandLine = commandLine;
    return parsed;
}

} // namespace lowbit::bench
