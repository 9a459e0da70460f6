// GGUF export of quantized checkpoints (mapping and exactness rules in the header). Block layouts
// follow ggml-quants.c (engine/quant/ggml_blocks.cpp lists them).
#include "io/gguf_export.h"

#include "io/gguf_writer.h"
#include "quant/ggml_blocks.h"
#include "quant/quantized_checkpoint.h"
#include "quant/quantized_tensor.h"

#include <cmath>
#include <cstring>

namespace lowbit {

namespace {

namespace fs = std::filesystem;

void putF16(std::byte *dst, float value) {
    const uint16_t h = floatToF16(value);
    std::memcpy(dst, &h, 2);
}

// Why `t` has no block form (empty when it has one).
std::string blockIncompatibility(const QuantizedTensor &t) {
    if (!t.codebook.empty())
        return "codebook grid";
    if (!t.groupBits.empty())
        return "mixed bit widths";
    if (!t.extra.empty())
        return "extra method data (" + t.extra.begin()->first + ")";
    if (!t.permutation.empty())
        return "act-order permutation (groups are not contiguous in the original columns)";
    if (t.cols % 32 != 0)
        return "row length " + std::to_string(t.cols) + " is not a multiple of 32";
    if (t.groupSize % 32 != 0 && t.groupSize < t.cols)
        return "group size " + std::to_string(t.groupSize) + " is not a multiple of 32";
    for (float z : t.zeros)
        if (z != std::floor(z))
            return "non-integer zero point";
    return {};
}

// One 32-value block: v = code - zero (ints), the group's scale and zero.
void encodeBlock(GgmlType type, const int *v, const uint8_t *codes, float scale, float zero,
                 std::byte *dst) {
    switch (type) {
    case GgmlType::Q4_0:
        putF16(dst, scale);
        for (int j = 0; j < 16; ++j)
            dst[2 + j] = std::byte(uint8_t((v[j] + 8) | ((v[j + 16] + 8) << 4)));
        break;
    case GgmlType::Q4_1:
        putF16(dst, scale);
        putF16(dst + 2, -scale * zero);
        for (int j = 0; j < 16; ++j)
            dst[4 + j] = std::byte(uint8_t(codes[j] | (codes[j + 16] << 4)));
        break;
    case GgmlType::Q5_0: {
        putF16(dst, scale);
        uint32_t qh = 0;
        for (int j = 0; j < 32; ++j)
            qh |= uint32_t(((v[j] + 16) >> 4) & 1) << j;
        std::memcpy(dst + 2, &qh, 4);
        for (int j = 0; j < 16; ++j)
            dst[6 + j] = std::byte(uint8_t(((v[j] + 16) & 15) | (((v[j + 16] + 16) & 15) << 4)));
        break;
    }
    default: // Q8_0
        putF16(dst, scale);
        for (int j = 0; j < 32; ++j)
            dst[2 + j] = std::byte(uint8_t(int8_t(v[j])));
        break;
    }
}

} // namespace

Result<GgufEncodedRows> encodeGgufBlocks(const QuantizedTensor &t,
                                         const std::vector<int64_t> &rowOrder,
                                         const GgufExportOptions &options) {
    if (const std::string why = blockIncompatibility(t); !why.empty())
        return makeError(ErrorCode::Unsupported, t.name + ": " + why);
    if (int64_t(rowOrder.size()) != t.rows)
        return makeError(ErrorCode::InvalidArgument, t.name + ": row order size mismatch");
    const std::vector<uint8_t> codes = t.codes();
    int lo = 0, hi = 0;
    for (int64_t r = 0; r < t.rows; ++r)
        for (int64_t c = 0; c < t.cols; ++c) {
            const int v = int(codes[size_t(r * t.cols + c)]) - int(t.zero(r, t.groupOf(c)));
            lo = std::min(lo, v);
            hi = std::max(hi, v);
        }
    GgmlType type = GgmlType::Q8_0;
    if (lo >= -8 && hi <= 7)
        type = GgmlType::Q4_0;
    else if (options.compact && t.bits <= 4)
        type = GgmlType::Q4_1;
    else if (lo >= -16 && hi <= 15)
        type = GgmlType::Q5_0;
    else if (lo < -128 || hi > 127)
        return makeError(ErrorCode::Unsupported, t.name + ": code - zero outside Q8_0's range");
    const GgmlTypeInfo &info = ggmlTypeInfo(type);
    const int64_t blocksPerRow = t.cols / 32;
    GgufEncodedRows out;
    out.type = std::string(info.name);
    out.data.resize(size_t(t.rows * blocksPerRow * info.bytesPerBlock));
    int v[32];
    for (int64_t i = 0; i < t.rows; ++i) {
        const int64_t r = rowOrder[size_t(i)];
        const uint8_t *rowCodes = codes.data() + r * t.cols;
        for (int64_t b = 0; b < blocksPerRow; ++b) {
            const int64_t g = t.groupOf(b * 32); // a block never spans two groups
            const float zero = t.zero(r, g);
            for (int j = 0; j < 32; ++j)
                v[j] = int(rowCodes[b * 32 + j]) - int(zero);
            encodeBlock(type, v, rowCodes + b * 32, t.scale(r, g), zero,
                        out.data.data() + (i * blocksPerRow + b) * info.bytesPerBlock);
        }
    }
    return out;
}

nlohmann::json GgufExportReport::toJson() const {
    nlohmann::json list = nlohmann::json::array();
    for (const GgufTensorExport &t : tensors)
        list.push_back({{"name", t.name},
                        {"type", t.type},
                        {"blocks", t.blocks},
                        {"exact_f16_scales", t.exactF16},
                        {"max_abs_error", t.maxAbsError},
                        {"rms_error", t.rmsError},
                        {"note", t.note}});
    return {{"tensors", list}, {"tensors_by_type", tensorsByType}, {"max_abs_error", maxAbsError}};
}

namespace {

// GGUF row i of a linear: its Hugging Face row (q/k go back to the interleaved RoPE order).
std::vector<int64_t> ggufRowOrder(const QuantizedTensor &t, const ModelConfig &c) {
    std::vector<int64_t> order(size_t(t.rows));
    const bool q = t.name.find("self_attn.q_proj") != std::string::npos;
    const bool k = t.name.find("self_attn.k_proj") != std::string::npos;
    const int64_t hd = c.headDim;
    for (int64_t i = 0; i < t.rows; ++i) {
        if (!q && !k) {
            order[size_t(i)] = i;
            continue;
        }
        const int64_t h = i / hd, local = i % hd;
        order[size_t(i)] = h * hd + (local % 2) * (hd / 2) + local / 2;
    }
    return order;
}

// Compares the encoded blocks with the grid (F32 scales: error; F16 scales: exactness).
Status measure(const QuantizedTensor &t, const std::vector<int64_t> &order,
               const GgufEncodedRows &rows, GgufTensorExport &report) {
    const GgmlType type = *ggmlTypeFromName(rows.type);
    std::vector<float> decoded(size_t(t.rows * t.cols));
    LOWBIT_CHECK(dequantizeRow(type, rows.data.data(), decoded.data(), t.rows * t.cols));
    const std::vector<float> exact = t.dequantize();
    QuantizedTensor rounded = t;
    for (float &s : rounded.scales)
        s = f16ToFloat(floatToF16(s));
    const std::vector<float> gridF16 = rounded.dequantize();
    report.exactF16 = true;
    double sq = 0;
    for (int64_t i = 0; i < t.rows; ++i)
        for (int64_t c = 0; c < t.cols; ++c) {
            const size_t at = size_t(order[size_t(i)] * t.cols + c);
            const float got = decoded[size_t(i * t.cols + c)];
            report.exactF16 = report.exactF16 && got == gridF16[at];
            const double e = std::abs(double(got) - exact[at]);
            report.maxAbsError = std::max(report.maxAbsError, e);
            sq += e * e;
        }
    report.rmsError = std::sqrt(sq / double(t.rows * t.cols));
    return {};
}

} // namespace

Result<GgufExportReport> exportGgufCheckpoint(const fs::path &quantizedDir, const fs::path &outFile,
                                              const GgufExportOptions &options) {
    LOWBIT_TRY(std::vector<QuantizedTensor> tensors,
               readQuantizedTensors(quantizedDir / "quantized.safetensors"));
    LOWBIT_TRY(Checkpoint ckpt, loadQuantizedCheckpoint(quantizedDir));
    GgufExportReport report;
    GgufWeightOverrides overrides;
    const DType stored = ckpt.weights.tokenEmbedding.dtype;
    for (const QuantizedTensor &t : tensors) {
        GgufTensorExport r;
        r.name = t.name;
        const std::vector<int64_t> order = ggufRowOrder(t, ckpt.config);
        auto rows = encodeGgufBlocks(t, order, options);
        if (rows.ok()) {
            LOWBIT_CHECK(measure(t, order, *rows, r));
            r.type = rows->type;
            r.blocks = true;
            overrides[t.name] = {*ggmlTypeFromName(rows->type), std::move(rows->data)};
        } else if (rows.error().code == ErrorCode::Unsupported) {
            r.type = std::string(dtypeName(stored));
            r.note = "kept as dequantized " + r.type + ": " + rows.error().message;
            // The dequantized weights themselves: no error, but not in blocks.
        } else {
            return rows.error();
        }
        report.maxAbsError = std::max(report.maxAbsError, r.maxAbsError);
        ++report.tensorsByType[r.type];
        report.tensors.push_back(std::move(r));
    }
    const GgmlType weightType = stored == DType::F32    ? GgmlType::F32
                                : stored == DType::BF16 ? GgmlType::BF16
                                                        : GgmlType::F16;
    LOWBIT_CHECK(writeGgufCheckpoint(ckpt, outFile, weightType, &overrides));
    return report;
}

} // namespace lowbit
