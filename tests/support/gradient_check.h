// Central-difference gradient check for the training tests (issue 8's tolerance: 1e-5 absolute
// + 1e-3 relative, in double precision).
#pragma once

#include <QString>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

namespace lowbit::test {

inline constexpr double kGradientStep = 1e-5;
inline constexpr double kGradientAbsTolerance = 1e-5, kGradientRelTolerance = 1e-3;

// Compares analytic[i] with the central difference of loss() in values[i], for every i.
// Returns an empty string when all agree, else a description of the first mismatch.
inline QString checkGradient(const std::string &what, std::vector<double> &values,
                             const std::vector<double> &analytic,
                             const std::function<double()> &loss) {
    for (size_t i = 0; i < values.size(); ++i) {
        const double keep = values[i];
        values[i] = keep + kGradientStep;
        const double plus = loss();
        values[i] = keep - kGradientStep;
        const double minus = loss();
        values[i] = keep;
        const double numeric = (plus - minus) / (2 * kGradientStep);
        if (!(std::abs(numeric - analytic[i]) <=
              kGradientAbsTolerance + kGradientRelTolerance * std::abs(numeric)))
            return QString("%1[%2]: analytic %3, central difference %4")
                .arg(QString::fromStdString(what))
                .arg(i)
                .arg(analytic[i], 0, 'g', 10)
                .arg(numeric, 0, 'g', 10);
    }
    return {};
}

} // namespace lowbit::test
