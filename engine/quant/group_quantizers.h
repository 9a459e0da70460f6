// The per-(row, group) quantizers of one column sweep (engine/quant/obs_sweep.h) and the codes
// they give: the bookkeeping that the sweep quantizers of GPTQ, QuIP, SliM-LLM and PB-LLM share.
// Q is any one-group quantizer with
//     uint8_t code(float w) const;     // its code for w (clamped to the grid)
//     float value(uint8_t code) const; // the value the code stands for
// (GridParams, engine/quant/minmax_grid.h, is one). Codes start at 0; a weight never passed to
// quantize keeps code 0 (PB-LLM's salient weights, stored elsewhere).
#pragma once

#include "core/result.h"
#include "quant/quantized_tensor.h"

#include <algorithm>
#include <cstdint>
#include <vector>

namespace lowbit {

template <typename Q> class GroupQuantizers {
public:
    GroupQuantizers(int64_t rows, int64_t cols, int64_t groupSize)
        : m_rows(rows), m_cols(cols), m_group(groupSize),
          m_groups((cols + groupSize - 1) / groupSize), m_quantizers(size_t(rows * m_groups)),
          m_codes(size_t(rows * cols), 0) {}

    int64_t rows() const { return m_rows; }
    int64_t groups() const { return m_groups; }
    Q &at(int64_t r, int64_t g) { return m_quantizers[size_t(r * m_groups + g)]; }
    const Q &at(int64_t r, int64_t g) const { return m_quantizers[size_t(r * m_groups + g)]; }

    // fit(g, firstColumn, width) for each group whose first column lies in [first, first +
    // count): the groups a sweep's block opens (gptq.py's find_params when (i1 + i) % groupsize
    // == 0), to be fitted on the weights as updated so far.
    template <typename F> void forGroupsStarting(int64_t first, int64_t count, F &&fit) const {
        for (int64_t c = (first + m_group - 1) / m_group * m_group; c < first + count;
             c += m_group)
            fit(c / m_group, c, std::min(m_group, m_cols - c));
    }

    // Weight (r, col) with current value w: its code is stored, its value returned.
    float quantize(int64_t r, int64_t col, float w) {
        const uint8_t code = at(r, col / m_group).code(w);
        m_codes[size_t(r * m_cols + col)] = code;
        return at(r, col / m_group).value(code);
    }

    // SweepQuantizer::quantizeColumn: column `col` of rows [r0, r1), values w -> q.
    void quantizeColumn(int64_t col, int64_t r0, int64_t r1, const float *w, float *q) {
        const int64_t g = col / m_group;
        for (int64_t r = r0; r < r1; ++r) {
            const Q &quantizer = at(r, g);
            const uint8_t code = quantizer.code(w[r - r0]);
            m_codes[size_t(r * m_cols + col)] = code;
            q[r - r0] = quantizer.value(code);
        }
    }

    const std::vector<uint8_t> &codes() const { return m_codes; }

    // Writes each (row, group)'s scale and zero, scaleZero(quantizer) (anything with .scale and
    // .zero), then the codes, into t (of the same shape and group size).
    template <typename F> Status fill(QuantizedTensor &t, F &&scaleZero) const {
        for (int64_t r = 0; r < m_rows; ++r)
            for (int64_t g = 0; g < m_groups; ++g) {
                const auto sz = scaleZero(at(r, g));
                t.scale(r, g) = sz.scale;
                t.zero(r, g) = sz.zero;
            }
        return t.setCodes(m_codes);
    }

private:
    int64_t m_rows, m_cols, m_group, m_groups;
    std::vector<Q> m_quantizers;
    std::vector<uint8_t> m_codes;
};

} // namespace lowbit
