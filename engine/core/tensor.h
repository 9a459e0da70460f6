// Tensor: an immutable, typed, row-major view of weight bytes plus whatever keeps them alive
// (a memory mapping or an owned buffer). Copying a Tensor copies the view, not the data.
#pragma once

#include "core/dtype.h"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace lowbit {

struct Tensor {
    std::string name;
    DType dtype = DType::F32;
    std::vector<int64_t> shape; // outermost first; a linear weight is {outFeatures, inFeatures}
    const std::byte *data = nullptr;
    std::shared_ptr<const void> owner; // keeps `data` valid

    bool empty() const { return data == nullptr; }
    int64_t numel() const {
        int64_t n = 1;
        for (int64_t d : shape) n *= d;
        return n;
    }
    size_t bytes() const { return size_t(numel()) * dtypeBytes(dtype); }
    int64_t rows() const { return shape.empty() ? 0 : shape.front(); }
    int64_t cols() const { return shape.size() < 2 ? (shape.empty() ? 0 : 1) : numel() / rows(); }
    const std::byte *row(int64_t r) const { return data + size_t(r) * size_t(cols()) * dtypeBytes(dtype); }

    // A tensor owning a copy of `values` converted to `type`.
    static Tensor fromFloats(std::string name, std::vector<int64_t> shape, const float *values,
                             DType type = DType::F32);
    // A tensor owning `storage` (raw bytes already in `type`).
    static Tensor fromBytes(std::string name, DType type, std::vector<int64_t> shape,
                            std::vector<std::byte> storage);
};

// All elements converted to float.
std::vector<float> tensorToFloats(const Tensor &tensor);

} // namespace lowbit
