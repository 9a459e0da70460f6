#include "quant/quantized_tensor.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace lowbit {

int64_t QuantExtra::numel() const {
    int64_t n = 1;
    for (int64_t d : shape)
        n *= d;
    return n;
}

namespace {

template <typename T>
QuantExtra makeExtra(QuantExtra::Type type, std::vector<int64_t> shape, std::span<const T> values,
                     double storedBits) {
    QuantExtra e;
    e.type = type;
    e.shape = std::move(shape);
    e.data.resize(values.size() * sizeof(T));
    if (!values.empty())
        std::memcpy(e.data.data(), values.data(), e.data.size());
    e.storedBitsPerElement = storedBits;
    return e;
}

template <typename T> std::span<const T> viewAs(const QuantExtra &e, QuantExtra::Type type) {
    if (e.type != type)
        return {};
    return {reinterpret_cast<const T *>(e.data.data()), e.data.size() / sizeof(T)};
}

} // namespace

QuantExtra QuantExtra::fromU8(std::vector<int64_t> shape, std::span<const uint8_t> values,
                              double storedBits) {
    return makeExtra(Type::U8, std::move(shape), values, storedBits);
}
QuantExtra QuantExtra::fromI32(std::vector<int64_t> shape, std::span<const int32_t> values,
                               double storedBits) {
    return makeExtra(Type::I32, std::move(shape), values, storedBits);
}
QuantExtra QuantExtra::fromF32(std::vector<int64_t> shape, std::span<const float> values,
                               double storedBits) {
    return makeExtra(Type::F32, std::move(shape), values, storedBits);
}
std::span<const uint8_t> QuantExtra::u8() const {
    return viewAs<uint8_t>(*this, Type::U8);
}
std::span<const int32_t> QuantExtra::i32() const {
    return viewAs<int32_t>(*this, Type::I32);
}
std::span<const float> QuantExtra::f32() const {
    return viewAs<float>(*this, Type::F32);
}

const char *quantExtraTypeName(QuantExtra::Type type) {
    switch (type) {
    case QuantExtra::Type::U8: return "U8";
    case QuantExtra::Type::I32: return "I32";
    case QuantExtra::Type::F32: return "F32";
    }
    return "?";
}

Result<QuantizedTensor> QuantizedTensor::create(std::string name, std::string method, int64_t rows,
                                                int64_t cols, int bits, int64_t groupSize,
                                                bool symmetric) {
    if (rows <= 0 || cols <= 0)
        return makeError(ErrorCode::InvalidArgument,
                         name + ": quantized shape must be positive, got " + std::to_string(rows) +
                             " x " + std::to_string(cols));
    if (bits < 1 || bits > 8)
        return makeError(ErrorCode::InvalidArgument,
                         name + ": bits must be 1..8, got " + std::to_string(bits));
    QuantizedTensor t;
    t.name = std::move(name);
    t.method = std::move(method);
    t.rows = rows;
    t.cols = cols;
    t.bits = bits;
    t.groupSize = groupSize <= 0 || groupSize >= cols ? cols : groupSize;
    t.symmetric = symmetric;
    t.zeroBits = symmetric ? 0 : bits;
    t.packed.assign(size_t((rows * t.rowBits() + 7) / 8), 0);
    t.scales.assign(size_t(rows * t.groups()), 1.0f);
    t.zeros.assign(size_t(rows * t.groups()), 0.0f);
    return t;
}

int QuantizedTensor::maxBits() const {
    if (groupBits.empty())
        return bits;
    return *std::max_element(groupBits.begin(), groupBits.end());
}

int64_t QuantizedTensor::rowBits() const {
    if (groupBits.empty())
        return cols * bits;
    int64_t total = 0;
    for (int64_t g = 0; g < groups(); ++g)
        total += std::min(groupSize, cols - g * groupSize) * groupWidth(g);
    return total;
}

std::vector<uint32_t> QuantizedTensor::groupBitOffsets() const {
    std::vector<uint32_t> offsets(static_cast<size_t>(groups()));
    uint64_t bit = 0;
    for (int64_t g = 0; g < groups(); ++g) {
        offsets[size_t(g)] = uint32_t(bit);
        bit += uint64_t(groupWidth(g)) * uint64_t(std::min(groupSize, cols - g * groupSize));
    }
    return offsets;
}

Status QuantizedTensor::setGroupBits(std::vector<uint8_t> widths) {
    if (int64_t(widths.size()) != groups())
        return makeError(ErrorCode::InvalidArgument, name + ": " + std::to_string(widths.size()) +
                                                         " group widths for " +
                                                         std::to_string(groups()) + " groups");
    for (uint8_t w : widths)
        if (w < 1 || w > 8)
            return makeError(ErrorCode::InvalidArgument,
                             name + ": group width " + std::to_string(w) + " outside 1..8");
    groupBits = std::move(widths);
    packed.assign(size_t((rows * rowBits() + 7) / 8), 0);
    return {};
}

namespace {

// LSB-first bit stream: value bits go to increasing bit positions, byte by byte.
void writeBits(std::vector<uint8_t> &stream, int64_t bitPos, unsigned value, int width) {
    for (int done = 0; done < width;) {
        const int64_t byte = (bitPos + done) / 8;
        const int shift = int((bitPos + done) % 8);
        const int take = std::min(width - done, 8 - shift);
        const unsigned mask = ((1u << take) - 1u) << shift;
        stream[size_t(byte)] =
            uint8_t((stream[size_t(byte)] & ~mask) | (((value >> done) << shift) & mask));
        done += take;
    }
}

unsigned readBits(const std::vector<uint8_t> &stream, int64_t bitPos, int width) {
    unsigned value = 0;
    for (int done = 0; done < width;) {
        const int64_t byte = (bitPos + done) / 8;
        const int shift = int((bitPos + done) % 8);
        const int take = std::min(width - done, 8 - shift);
        value |= ((unsigned(stream[size_t(byte)]) >> shift) & ((1u << take) - 1u)) << done;
        done += take;
    }
    return value;
}

} // namespace

Status QuantizedTensor::setRowCodes(int64_t row, std::span<const uint8_t> codes) {
    if (row < 0 || row >= rows || int64_t(codes.size()) != cols)
        return makeError(ErrorCode::InvalidArgument, name + ": setRowCodes: bad row or length");
    int64_t pos = row * rowBits();
    for (int64_t j = 0; j < cols; ++j) {
        const int width = groupWidth(groupOf(j));
        if (codes[size_t(j)] >> width)
            return makeError(ErrorCode::InvalidArgument,
                             name + ": code " + std::to_string(codes[size_t(j)]) + " at (" +
                                 std::to_string(row) + ", " + std::to_string(j) +
                                 ") does not fit " + std::to_string(width) + " bits");
        writeBits(packed, pos, codes[size_t(j)], width);
        pos += width;
    }
    return {};
}

Status QuantizedTensor::setCodes(std::span<const uint8_t> codes) {
    if (int64_t(codes.size()) != rows * cols)
        return makeError(ErrorCode::InvalidArgument,
                         name + ": setCodes: " + std::to_string(codes.size()) + " codes for " +
                             std::to_string(rows * cols) + " weights");
    for (int64_t r = 0; r < rows; ++r)
        LOWBIT_CHECK(setRowCodes(r, codes.subspan(size_t(r * cols), size_t(cols))));
    return {};
}

void QuantizedTensor::rowCodes(int64_t row, uint8_t *out) const {
    int64_t pos = row * rowBits();
    if (groupBits.empty() && bits == 8) {
        std::memcpy(out, packed.data() + pos / 8, size_t(cols));
        return;
    }
    for (int64_t j = 0; j < cols; ++j) {
        const int width = groupWidth(groupOf(j));
        out[j] = uint8_t(readBits(packed, pos, width));
        pos += width;
    }
}

std::vector<uint8_t> QuantizedTensor::codes() const {
    std::vector<uint8_t> out(size_t(rows * cols));
    for (int64_t r = 0; r < rows; ++r)
        rowCodes(r, out.data() + r * cols);
    return out;
}

std::vector<float> QuantizedTensor::dequantizeStored() const {
    std::vector<float> out(size_t(rows * cols));
    std::vector<uint8_t> rowBuf(static_cast<size_t>(cols));
    for (int64_t r = 0; r < rows; ++r) {
        rowCodes(r, rowBuf.data());
        float *o = out.data() + r * cols;
        for (int64_t j = 0; j < cols; ++j) {
            const int64_t g = groupOf(j);
            o[j] = scale(r, g) * (level(rowBuf[size_t(j)]) - zero(r, g));
        }
    }
    return out;
}

std::vector<float> QuantizedTensor::dequantize() const {
    std::vector<float> stored = dequantizeStored();
    if (permutation.empty())
        return stored;
    std::vector<float> out(stored.size());
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < cols; ++j)
            out[size_t(r * cols + permutation[size_t(j)])] = stored[size_t(r * cols + j)];
    return out;
}

uint64_t QuantizedTensor::storageBits() const {
    double total = double(rows) * double(rowBits());
    total += double(scales.size()) * scaleBits + double(zeros.size()) * zeroBits;
    total += double(codebook.size()) * codebookBits;
    if (!permutation.empty() && groupSize < cols)
        total += double(cols) * 32; // act-order with groups needs the column -> group map
    for (const auto &[key, e] : extra)
        total += double(e.numel()) * e.storedBitsPerElement;
    if (!groupBits.empty())
        total += double(groupBits.size()) * 8;
    return uint64_t(std::llround(total));
}

Status QuantizedTensor::validate() const {
    auto bad = [&](const std::string &what) {
        return makeError(ErrorCode::Format, "quantized tensor '" + name + "': " + what);
    };
    if (rows <= 0 || cols <= 0)
        return bad("non-positive shape");
    if (bits < 1 || bits > 8)
        return bad("bits " + std::to_string(bits) + " outside 1..8");
    if (groupSize <= 0 || groupSize > cols)
        return bad("group size " + std::to_string(groupSize) + " outside 1.." +
                   std::to_string(cols));
    if (!groupBits.empty()) {
        if (int64_t(groupBits.size()) != groups())
            return bad("group widths do not match the group count");
        for (uint8_t w : groupBits)
            if (w < 1 || w > 8)
                return bad("group width outside 1..8");
    }
    if (!codebook.empty() && codebook.size() < (size_t(1) << maxBits()))
        return bad("codebook has " + std::to_string(codebook.size()) + " levels, codes need " +
                   std::to_string(size_t(1) << maxBits()));
    if (int64_t(packed.size()) != (rows * rowBits() + 7) / 8)
        return bad("packed codes are " + std::to_string(packed.size()) + " bytes, expected " +
                   std::to_string((rows * rowBits() + 7) / 8));
    if (int64_t(scales.size()) != rows * groups() || int64_t(zeros.size()) != rows * groups())
        return bad("scales/zeros must hold rows x groups values");
    for (float v : scales)
        if (!std::isfinite(v))
            return bad("non-finite scale");
    for (float v : zeros)
        if (!std::isfinite(v))
            return bad("non-finite zero");
    if (!permutation.empty()) {
        if (int64_t(permutation.size()) != cols)
            return bad("permutation length differs from the column count");
        std::vector<bool> seen(static_cast<size_t>(cols), false);
        for (int32_t p : permutation) {
            if (p < 0 || p >= cols || seen[size_t(p)])
                return bad("permutation is not a permutation of 0.." + std::to_string(cols - 1));
            seen[size_t(p)] = true;
        }
    }
    for (const auto &[key, e] : extra)
        if (int64_t(e.data.size()) != e.numel() * int64_t(e.elementBytes()))
            return bad("extra '" + key + "' size does not match its shape");
    return {};
}

Tensor floatsToTensor(std::string name, int64_t rows, int64_t cols, std::span<const float> values,
                      DType type) {
    return Tensor::fromFloats(std::move(name), {rows, cols}, values.data(), type);
}

} // namespace lowbit
