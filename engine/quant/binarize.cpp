#include "quant/binarize.h"

#include <cmath>

namespace lowbit {

BinaryParams fitBinary(const float *x, int64_t n, const uint8_t *mask, int64_t stride) {
    double sum = 0;
    int64_t count = 0;
    for (int64_t i = 0; i < n; ++i)
        if (!mask || mask[i]) {
            sum += x[i * stride];
            ++count;
        }
    if (count == 0)
        return {};
    const double mean = sum / double(count);
    double dev = 0;
    for (int64_t i = 0; i < n; ++i)
        if (!mask || mask[i])
            dev += std::abs(double(x[i * stride]) - mean);
    return {float(dev / double(count)), float(mean)};
}

ResidualBinary fitResidualBinary(const float *x, int64_t n, const uint8_t *mask) {
    ResidualBinary r;
    r.first = fitBinary(x, n, mask);
    std::vector<float> residual(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i)
        residual[size_t(i)] = x[i] - r.first.fakeQuant(x[i]);
    r.second = fitBinary(residual.data(), n, mask);
    return r;
}

ScaleZero binaryScaleZero(const BinaryParams &p, bool signLevels) {
    if (p.alpha == 0) // one value mu, code 1 (binarize.h): code 0 may stand for anything
        return signLevels ? ScaleZero{p.mean / 2, -1} : ScaleZero{p.mean, 0};
    if (signLevels)
        return {p.alpha, -p.mean / p.alpha};
    return {2 * p.alpha, 0.5f - p.mean / (2 * p.alpha)};
}

} // namespace lowbit
