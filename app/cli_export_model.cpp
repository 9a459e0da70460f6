// lowbit export-model: a quantized checkpoint directory (`lowbit quantize --out DIR`) as a
// Hugging Face GPTQ checkpoint (engine/io/gptq_export.h) or a llama.cpp GGUF file
// (engine/io/gguf_export.h), with the mapping and its error reported.
#include "cli_commands.h"
#include "cli_support.h"

#include "io/gguf_export.h"
#include "io/gptq_export.h"

#include <cstdio>

namespace lowbit::cli {

namespace {

int exportGptq(const Args &args, const std::string &dir, const std::string &out) {
    GptqExportOptions options;
    const std::string scales = args.value("scale-dtype").value_or("f16");
    if (scales != "f16" && scales != "f32" && scales != "bf16")
        return fail("export-model: --scale-dtype must be f16, bf16 or f32");
    options.scaleType = scales == "f32" ? DType::F32 : scales == "bf16" ? DType::BF16 : DType::F16;
    auto report = exportGptqCheckpoint(dir, out, options);
    if (!report)
        return fail(report.error());
    if (args.has("json")) {
        std::printf("%s\n", report->toJson().dump().c_str());
        return 0;
    }
    for (const std::string &note : report->notes)
        std::fprintf(stderr, "lowbit: note: %s\n", note.c_str());
    std::printf("gptq %d-bit group %lld%s%s (%s): %lld linears; %lld scales changed by the %s "
                "conversion (max relative %.3g) -> %s\n",
                report->bits, static_cast<long long>(report->groupSize),
                report->descAct ? " act-order" : "", report->symmetric ? " sym" : "",
                report->checkpointFormat.c_str(), static_cast<long long>(report->packedLinears),
                static_cast<long long>(report->scalesChanged), scales.c_str(),
                report->maxScaleRelativeChange, out.c_str());
    return 0;
}

int exportGguf(const Args &args, const std::string &dir, const std::string &out) {
    GgufExportOptions options;
    options.compact = args.has("compact");
    auto report = exportGgufCheckpoint(dir, out, options);
    if (!report)
        return fail(report.error());
    if (args.has("json")) {
        std::printf("%s\n", report->toJson().dump().c_str());
        return 0;
    }
    int64_t exact = 0;
    for (const GgufTensorExport &t : report->tensors) {
        exact += t.exactF16;
        if (!t.note.empty())
            std::fprintf(stderr, "lowbit: note: %s\n", t.note.c_str());
    }
    std::printf("gguf:");
    for (const auto &[type, count] : report->tensorsByType)
        std::printf(" %s x%lld", type.c_str(), static_cast<long long>(count));
    std::printf("; %lld of %zu linears equal the F16-scale grid; max |error| vs float32 scales "
                "%.3g -> %s\n",
                static_cast<long long>(exact), report->tensors.size(), report->maxAbsError,
                out.c_str());
    return 0;
}

} // namespace

int runExportModel(const std::vector<std::string> &argv) {
    auto args = Args::parse(argv, {"format", "out", "scale-dtype"}, {"compact", "json"});
    if (!args)
        return fail(args.error());
    if (args->positionals().size() != 1)
        return fail("export-model: expected one quantized checkpoint directory");
    const auto format = args->value("format");
    const auto out = args->value("out");
    if (!format || !out)
        return fail("export-model: --format gptq|gguf and --out PATH are required");
    const std::string dir = args->positionals().front();
    if (*format == "gptq")
        return exportGptq(*args, dir, *out);
    if (*format == "gguf")
        return exportGguf(*args, dir, *out);
    return fail("export-model: unknown --format '" + *format + "' (gptq, gguf)");
}

} // namespace lowbit::cli
