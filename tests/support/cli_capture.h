// Runs a `lowbit` subcommand in-process (an app/cli_commands.h entry point) with stdout and stderr
// redirected into files of a folder, and returns its exit code and both texts: what a user of the
// command line would see.
#pragma once

#include "shared_data.h"

#include <cstdio>
#include <filesystem>
#include <sstream>
#include <string>
#include <unistd.h>
#include <vector>

namespace lowbit::test {

struct CliOutput {
    int code = -1;
    std::string out, err;
    // The non-empty lines of stdout.
    std::vector<std::string> lines() const {
        std::vector<std::string> result;
        std::istringstream in(out);
        for (std::string line; std::getline(in, line);)
            if (!line.empty())
                result.push_back(line);
        return result;
    }
};

// `dir` receives stdout.txt and stderr.txt (overwritten by each call).
inline CliOutput runCli(int (*command)(const std::vector<std::string> &),
                        const std::vector<std::string> &args, const std::filesystem::path &dir) {
    const auto outPath = dir / "stdout.txt", errPath = dir / "stderr.txt";
    std::fflush(stdout);
    std::fflush(stderr);
    const int savedOut = dup(1), savedErr = dup(2);
    FILE *out = std::fopen(outPath.c_str(), "w"), *err = std::fopen(errPath.c_str(), "w");
    dup2(fileno(out), 1);
    dup2(fileno(err), 2);
    CliOutput result;
    result.code = command(args);
    std::fflush(stdout);
    std::fflush(stderr);
    dup2(savedOut, 1);
    dup2(savedErr, 2);
    close(savedOut);
    close(savedErr);
    std::fclose(out);
    std::fclose(err);
    result.out = readFile(outPath);
    result.err = readFile(errPath);
    return result;
}

} // namespace lowbit::test
