// Pieces shared by the headless subcommands: loading a model from arguments, error reporting,
// progress lines on stderr.
#pragma once

#include "backend/device.h"
#include "cli_args.h"
#include "core/progress.h"
#include "model/checkpoint.h"
#include "runtime/language_model.h"

#include <chrono>
#include <memory>

namespace lowbit::cli {

// Prints "lowbit: <message>" on stderr; returns the exit code for the error.
int fail(const Error &error);
int fail(const std::string &message);

// MODEL is the first positional or --model; --tokenizer overrides/provides the tokenizer.
Result<std::shared_ptr<const Checkpoint>> loadModelArg(const Args &args);
Result<std::string> readTextFile(const std::string &path);

// --device cpu|cuda|cuda:N (default cpu), checked before anything is loaded: a GPU this build or
// machine does not have is an error naming the reason.
Result<DeviceSpec> deviceArg(const Args &args);
// The model of `checkpoint` on `device` with --threads (openLanguageModel; applies a W8A8
// checkpoint's activation quantization).
Result<std::unique_ptr<LanguageModel>> openModelArg(const Args &args,
                                                    std::shared_ptr<const Checkpoint> checkpoint,
                                                    const DeviceSpec &device);

// "\r[phase] done/total  tok/s  ETA" on stderr, at most ~10 lines a second; newline on finish().
class StderrProgress final : public ProgressSink {
public:
    void report(const ProgressEvent &event) override;
    void finish();

private:
    std::chrono::steady_clock::time_point m_last{};
    bool m_printed = false;
};

} // namespace lowbit::cli
