// GPTQ export of a lowbit quantized checkpoint (layout and limits in the header).
#include "io/gptq_export.h"

#include "core/mapped_file.h"
#include "io/gptq_checkpoint.h"
#include "io/safetensors.h"
#include "quant/quantized_checkpoint.h"

#include <cmath>
#include <cstring>
#include <deque>
#include <fstream>
#include <set>

namespace lowbit {

namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

int64_t ceilDiv(int64_t a, int64_t b) {
    return (a + b - 1) / b;
}

Result<Json> readJson(const fs::path &path) {
    LOWBIT_TRY(std::shared_ptr<MappedFile> file, MappedFile::open(path));
    const char *text = reinterpret_cast<const char *>(file->data());
    try {
        return Json::parse(text, text + file->size());
    } catch (const std::exception &e) {
        return makeError(ErrorCode::Format, path.string() + ": invalid JSON: " + e.what());
    }
}

Status writeJson(const fs::path &path, const Json &json) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << json.dump(2) << "\n";
    if (!out)
        return makeError(ErrorCode::Io, path.string() + ": cannot write");
    return {};
}

int64_t configGroupSize(const QuantizedTensor &t) {
    return t.groupSize >= t.cols ? -1 : t.groupSize;
}

// The model-wide GPTQ parameters; every tensor must agree.
Result<GptqExportReport> checkTensors(const std::vector<QuantizedTensor> &tensors,
                                      const std::string &source) {
    if (tensors.empty())
        return makeError(ErrorCode::InvalidArgument, source + ": no quantized tensors to export");
    GptqExportReport r;
    r.bits = tensors.front().bits;
    r.groupSize = configGroupSize(tensors.front());
    r.symmetric = tensors.front().symmetric;
    bool zeroOfZero = false;
    for (const QuantizedTensor &t : tensors) {
        if (const std::string why = gptqIncompatibility(t); !why.empty())
            return makeError(ErrorCode::Unsupported, source + ": " + why);
        if (t.bits != r.bits || configGroupSize(t) != r.groupSize)
            return makeError(ErrorCode::Unsupported,
                             source + ": '" + t.name +
                                 "' differs in bits or group size from the first tensor (a GPTQ "
                                 "checkpoint has one of each)");
        r.descAct = r.descAct || !t.permutation.empty();
        for (float z : t.zeros)
            zeroOfZero = zeroOfZero || z == 0;
    }
    r.checkpointFormat = zeroOfZero ? "gptq_v2" : "gptq";
    if (zeroOfZero)
        r.notes.push_back("a zero point of 0 occurs: written as checkpoint_format gptq_v2 (zeros "
                          "stored as is; AutoGPTQ's zero - 1 form cannot hold it)");
    return r;
}

Json quantizationConfig(const GptqExportReport &r) {
    return Json{{"quant_method", "gptq"},    {"bits", r.bits},
                {"group_size", r.groupSize}, {"desc_act", r.descAct},
                {"sym", r.symmetric},        {"checkpoint_format", r.checkpointFormat},
                {"true_sequential", true},   {"static_groups", false}};
}

std::vector<std::byte> asBytes(const void *data, size_t bytes) {
    std::vector<std::byte> out(bytes);
    std::memcpy(out.data(), data, bytes);
    return out;
}

} // namespace

Json GptqExportReport::toJson() const {
    return Json{{"packed_linears", packedLinears},
                {"bits", bits},
                {"group_size", groupSize},
                {"desc_act", descAct},
                {"sym", symmetric},
                {"checkpoint_format", checkpointFormat},
                {"scales_changed", scalesChanged},
                {"max_scale_relative_change", maxScaleRelativeChange},
                {"notes", notes}};
}

std::string gptqIncompatibility(const QuantizedTensor &t) {
    const std::string name = "'" + t.name + "' (" + t.method + ")";
    if (!t.codebook.empty())
        return name + " uses a codebook (not a uniform grid)";
    if (!t.groupBits.empty())
        return name + " mixes bit widths per group";
    if (!t.extra.empty())
        return name + " carries extra method data (" + t.extra.begin()->first +
               ") that GPTQ cannot hold";
    if (t.bits != 2 && t.bits != 3 && t.bits != 4 && t.bits != 8)
        return name + " has " + std::to_string(t.bits) + "-bit codes (GPTQ: 2, 3, 4, 8)";
    const float maxq = float((1 << t.bits) - 1);
    for (float z : t.zeros)
        if (!(z >= 0 && z <= maxq && z == std::floor(z)))
            return name + " has a zero point " + std::to_string(z) + " that is not an integer code";
    return {};
}

Result<GptqPackedLinear> packGptqLinear(const QuantizedTensor &t, bool zeroOffset) {
    if (const std::string why = gptqIncompatibility(t); !why.empty())
        return makeError(ErrorCode::Unsupported, why);
    GptqPackedLinear p;
    p.rows = t.rows;
    p.cols = t.cols;
    p.groups = t.groups();
    const int bits = t.bits;
    p.qweight.assign(size_t(ceilDiv(t.cols * bits, 32) * t.rows), 0);
    p.gIdx.assign(size_t(t.cols), 0);
    const std::vector<uint8_t> codes = t.codes();
    for (int64_t j = 0; j < t.cols; ++j) {
        // Stored column j is original column perm[j]: GPTQ keeps original order plus g_idx.
        const int64_t k = t.permutation.empty() ? j : t.permutation[size_t(j)];
        p.gIdx[size_t(k)] = int32_t(t.groupOf(j));
        for (int64_t r = 0; r < t.rows; ++r)
            writePackedCode({p.qweight.data() + r, p.qweight.size() - size_t(r)}, t.rows, k, bits,
                            codes[size_t(r * t.cols + j)]);
    }
    const int64_t zeroWords = ceilDiv(t.rows * bits, 32);
    p.qzeros.assign(size_t(p.groups * zeroWords), 0);
    p.scales.resize(size_t(p.groups * t.rows));
    for (int64_t g = 0; g < p.groups; ++g)
        for (int64_t r = 0; r < t.rows; ++r) {
            const int64_t z = int64_t(t.zero(r, g)) - (zeroOffset ? 1 : 0);
            if (z < 0)
                return makeError(ErrorCode::Unsupported,
                                 "'" + t.name + "': zero 0 needs checkpoint_format gptq_v2");
            writePackedCode({p.qzeros.data() + g * zeroWords, size_t(zeroWords)}, 1, r, bits,
                            uint32_t(z));
            p.scales[size_t(g * t.rows + r)] = t.scale(r, g);
        }
    return p;
}

namespace {

// Scales in `type` as bytes, counting those the conversion changed.
std::vector<std::byte> scaleBytes(const std::vector<float> &scales, DType type,
                                  GptqExportReport &report) {
    std::vector<std::byte> out(scales.size() * dtypeBytes(type));
    for (size_t i = 0; i < scales.size(); ++i) {
        float back = scales[i];
        if (type == DType::F16) {
            const uint16_t h = floatToF16(scales[i]);
            std::memcpy(out.data() + 2 * i, &h, 2);
            back = f16ToFloat(h);
        } else if (type == DType::BF16) {
            const uint16_t h = floatToBf16(scales[i]);
            std::memcpy(out.data() + 2 * i, &h, 2);
            back = bf16ToFloat(h);
        } else {
            std::memcpy(out.data() + 4 * i, &scales[i], 4);
        }
        if (back != scales[i]) {
            ++report.scalesChanged;
            report.maxScaleRelativeChange =
                std::max(report.maxScaleRelativeChange,
                         std::abs(double(back) - scales[i]) / std::abs(double(scales[i])));
        }
    }
    return out;
}

Status copyCompanionFiles(const fs::path &from, const fs::path &to) {
    for (const char *name :
         {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
          "generation_config.json", "chat_template.jinja", "lowbit_vocab.json"}) {
        std::error_code ec;
        if (!fs::exists(from / name, ec))
            continue;
        fs::copy_file(from / name, to / name, fs::copy_options::overwrite_existing, ec);
        if (ec)
            return makeError(ErrorCode::Io,
                             "cannot copy " + (from / name).string() + ": " + ec.message());
    }
    std::error_code ec;
    if (fs::exists(from / "quantization_config.json", ec))
        fs::copy_file(from / "quantization_config.json", to / "lowbit_quantization_report.json",
                      fs::copy_options::overwrite_existing, ec);
    if (ec)
        return makeError(ErrorCode::Io, "cannot copy quantization_config.json: " + ec.message());
    return {};
}

} // namespace

Result<GptqExportReport> exportGptqCheckpoint(const fs::path &quantizedDir, const fs::path &outDir,
                                              const GptqExportOptions &options) {
    const fs::path packedPath = quantizedDir / "quantized.safetensors";
    LOWBIT_TRY(std::vector<QuantizedTensor> tensors, readQuantizedTensors(packedPath));
    LOWBIT_TRY(GptqExportReport report, checkTensors(tensors, packedPath.string()));
    const fs::path modelPath = quantizedDir / "model.safetensors";
    LOWBIT_TRY(RawSafetensorsFile model, readSafetensorsRaw(modelPath));
    LOWBIT_TRY(Json config, readJson(quantizedDir / "config.json"));

    std::set<std::string> quantizedNames;
    for (const QuantizedTensor &t : tensors)
        quantizedNames.insert(t.name);
    std::vector<RawTensor> out;
    std::deque<std::vector<std::byte>> storage; // stable addresses for the RawTensor views
    std::string linearDtype;
    for (const auto &[name, t] : model.tensors) {
        if (quantizedNames.count(name)) {
            linearDtype = t.dtype;
            continue;
        }
        out.push_back(t);
    }
    const bool offset = report.checkpointFormat == "gptq";
    for (const QuantizedTensor &t : tensors) {
        if (!model.tensors.count(t.name))
            return makeError(ErrorCode::Format, modelPath.string() + ": no tensor '" + t.name +
                                                    "' for the quantized linear of that name");
        LOWBIT_TRY(GptqPackedLinear p, packGptqLinear(t, offset));
        std::string stem = t.name;
        if (stem.size() > 7 && stem.compare(stem.size() - 7, 7, ".weight") == 0)
            stem.resize(stem.size() - 7);
        auto add = [&](const std::string &suffix, const char *dtype, std::vector<int64_t> shape,
                       std::vector<std::byte> bytes) {
            storage.push_back(std::move(bytes));
            out.push_back({stem + suffix, dtype, std::move(shape), storage.back()});
        };
        add(".qweight", "I32", {ceilDiv(p.cols * t.bits, 32), p.rows},
            asBytes(p.qweight.data(), p.qweight.size() * 4));
        add(".qzeros", "I32", {p.groups, ceilDiv(p.rows * t.bits, 32)},
            asBytes(p.qzeros.data(), p.qzeros.size() * 4));
        add(".scales", std::string(dtypeName(options.scaleType)).c_str(), {p.groups, p.rows},
            scaleBytes(p.scales, options.scaleType, report));
        add(".g_idx", "I32", {p.cols}, asBytes(p.gIdx.data(), p.gIdx.size() * 4));
        if (t.cols * t.bits % 32 != 0)
            report.notes.push_back(t.name + ": in features * bits is not a multiple of 32 (last "
                                            "qweight word zero-padded; AutoGPTQ kernels need "
                                            "in % 32 == 0)");
        ++report.packedLinears;
    }
    if (!config.contains("torch_dtype") && !config.contains("dtype") && !linearDtype.empty())
        config["torch_dtype"] = linearDtype == "F32"    ? "float32"
                                : linearDtype == "BF16" ? "bfloat16"
                                                        : "float16";
    config["quantization_config"] = quantizationConfig(report);

    std::error_code ec;
    fs::create_directories(outDir, ec);
    if (ec)
        return makeError(ErrorCode::Io, outDir.string() + ": cannot create: " + ec.message());
    LOWBIT_CHECK(writeSafetensorsRaw(outDir / "model.safetensors", out,
                                     {{"format", "pt"}, {"lowbit.export", "gptq"}}));
    LOWBIT_CHECK(writeJson(outDir / "config.json", config));
    LOWBIT_CHECK(writeJson(outDir / "quantize_config.json", quantizationConfig(report)));
    LOWBIT_CHECK(copyCompanionFiles(quantizedDir, outDir));
    return report;
}

} // namespace lowbit
