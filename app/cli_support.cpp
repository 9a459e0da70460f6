#include "cli_support.h"

#include <cstdio>
#include <fstream>
#include <sstream>

namespace lowbit::cli {

int fail(const Error &error) {
    std::fprintf(stderr, "lowbit: %s\n", error.toString().c_str());
    return error.code == ErrorCode::InvalidArgument ? 2 : 1;
}

int fail(const std::string &message) { return fail(makeError(ErrorCode::InvalidArgument, message)); }

Result<std::shared_ptr<const Checkpoint>> loadModelArg(const Args &args) {
    std::string path;
    if (auto model = args.value("model"))
        path = *model;
    else if (!args.positionals().empty())
        path = args.positionals().front();
    else
        return makeError(ErrorCode::InvalidArgument, "no MODEL given (a HF directory, .gguf or llama2.c .bin)");
    LoadOptions options;
    if (auto tokenizer = args.value("tokenizer"))
        options.tokenizerPath = *tokenizer;
    LOWBIT_TRY(Checkpoint checkpoint, loadCheckpoint(path, options));
    return std::make_shared<const Checkpoint>(std::move(checkpoint));
}

Result<DeviceSpec> deviceArg(const Args &args) {
    auto device = parseDevice(args.value("device").value_or("cpu"));
    if (!device.ok())
        return makeError(ErrorCode::InvalidArgument, "--device: " + device.error().message);
    if (device->isCuda()) {
        std::string why;
        const int count = cudaDeviceCount(&why);
        if (count == 0)
            return makeError(ErrorCode::Unsupported, "--device " + device->toString() + ": " + why);
        if (device->index >= count)
            return makeError(ErrorCode::InvalidArgument,
                             "--device " + device->toString() + ": no such device (" +
                                 std::to_string(count) + " present)");
    }
    return device;
}

Result<std::unique_ptr<LanguageModel>> openModelArg(const Args &args,
                                                    std::shared_ptr<const Checkpoint> checkpoint,
                                                    const DeviceSpec &device) {
    LOWBIT_TRY(int64_t threads, args.integer("threads", 0));
    if (threads < 0 || threads > 4096)
        return makeError(ErrorCode::InvalidArgument, "--threads: must be in 0..4096");
    LanguageModelOptions options;
    options.threads = int(threads);
    return openLanguageModel(std::move(checkpoint), device, options);
}

Result<std::string> readTextFile(const std::string &path) {
    std::ifstream in(path, std::ios::binary);
    if (!in)
        return makeError(ErrorCode::NotFound, path + ": cannot open");
    std::ostringstream text;
    text << in.rdbuf();
    if (in.bad())
        return makeError(ErrorCode::Io, path + ": read failed");
    return text.str();
}

void StderrProgress::report(const ProgressEvent &event) {
    const auto now = std::chrono::steady_clock::now();
    const bool last = event.total > 0 && event.done >= event.total;
    if (!last && now - m_last < std::chrono::milliseconds(100))
        return;
    m_last = now;
    std::fprintf(stderr, "\r[%s] %lld/%lld  %.0f tok/s", event.phase.c_str(),
                 static_cast<long long>(event.done), static_cast<long long>(event.total),
                 event.tokensPerSecond);
    if (event.etaSeconds >= 0)
        std::fprintf(stderr, "  ETA %.0fs   ", event.etaSeconds);
    m_printed = true;
}

void StderrProgress::finish() {
    if (m_printed)
        std::fputc('\n', stderr);
    m_printed = false;
}

} // namespace lowbit::cli
