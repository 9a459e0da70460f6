#include "core/tensor.h"

namespace lowbit {

Tensor Tensor::fromBytes(std::string name, DType type, std::vector<int64_t> shape,
                         std::vector<std::byte> storage) {
    auto owned = std::make_shared<std::vector<std::byte>>(std::move(storage));
    Tensor t;
    t.name = std::move(name);
    t.dtype = type;
    t.shape = std::move(shape);
    t.data = owned->data();
    t.owner = owned;
    return t;
}

Tensor Tensor::fromFloats(std::string name, std::vector<int64_t> shape, const float *values,
                          DType type) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    std::vector<std::byte> storage(size_t(n) * dtypeBytes(type));
    if (type == DType::F32) {
        std::memcpy(storage.data(), values, storage.size());
    } else {
        auto *out = reinterpret_cast<uint16_t *>(storage.data());
        for (int64_t i = 0; i < n; ++i)
            out[i] = type == DType::F16 ? floatToF16(values[i]) : floatToBf16(values[i]);
    }
    return fromBytes(std::move(name), type, std::move(shape), std::move(storage));
}

std::vector<float> tensorToFloats(const Tensor &tensor) {
    std::vector<float> out(size_t(tensor.numel()));
    convertToFloat(tensor.dtype, tensor.data, out.data(), out.size());
    return out;
}

} // namespace lowbit
