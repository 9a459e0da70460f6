// CPU causal grouped-query attention, flash-style: queries in blocks, keys streamed in tiles with
// an online softmax (Dao et al. 2022, Alg. 1), so no more than one tile of scores per query row
// exists at a time, whatever the context length. Each key tile is transposed once per task so
// that scores are computed across keys (vectorized for any head size) and reused by every query
// row of the block and every query head sharing the kv head. Small heads (< 32 wide, e.g. the
// 8-wide heads of stories260K) also transpose the value tile: P*V is then hd dot products along
// the keys instead of one short axpy per key, which leaves the vector units mostly idle.
#include "backend/cpu_backend.h"

#include "backend/cpu_simd.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace lowbit {

namespace {

constexpr int64_t kQueryBlock = 32;
constexpr int64_t kKeyTile = 128;
constexpr int64_t kSmallHead = 32;

struct RowState { // online-softmax state of one (query row, head)
    float max;
    float sum;
};

// Floats of scratch one task needs.
size_t attentionScratch(const AttentionShape &shape) {
    const size_t group = size_t(shape.heads / shape.kvHeads), hd = size_t(shape.headDim);
    const size_t rows = size_t(kQueryBlock) * group;
    return 2 * size_t(kKeyTile) * hd + size_t(kKeyTile) + rows * hd + rows * 2;
}

// One task: query rows [q0, q1) of one sequence, every query head of one kv head.
void attendBlock(const AttentionSequence &seq, const AttentionShape &shape, int64_t kvHead,
                 int64_t q0, int64_t q1, float *scratch) {
    const int64_t group = shape.heads / shape.kvHeads, hd = shape.headDim;
    const int64_t rows = (q1 - q0) * group;
    float *keysT = scratch;                   // [hd][kKeyTile]: the key tile, transposed
    float *valuesT = keysT + kKeyTile * hd;   // [hd][kKeyTile]: the value tile (small heads)
    float *scores = valuesT + kKeyTile * hd;  // [kKeyTile]
    float *acc = scores + kKeyTile;         // [rows][hd]
    auto *state = reinterpret_cast<RowState *>(acc + rows * hd);
    std::fill(acc, acc + rows * hd, 0.0f);
    std::fill(state, state + rows, RowState{-std::numeric_limits<float>::infinity(), 0.0f});

    const int64_t keyEnd = seq.firstPosition + q1; // the last row sees keys [0, keyEnd)
    for (int64_t k0 = 0; k0 < keyEnd; k0 += kKeyTile) {
        const int64_t k1 = std::min(keyEnd, k0 + kKeyTile);
        const bool smallHead = hd < kSmallHead;
        for (int64_t j = k0; j < k1; ++j) {
            const float *key = seq.keys + j * shape.kvStride + kvHead * hd;
            const float *value = seq.values + j * shape.kvStride + kvHead * hd;
            for (int64_t d = 0; d < hd; ++d) {
                keysT[d * kKeyTile + (j - k0)] = key[d];
                if (smallHead)
                    valuesT[d * kKeyTile + (j - k0)] = value[d];
            }
        }
        for (int64_t i = q0; i < q1; ++i) {
            const int64_t len = std::min(k1, seq.firstPosition + i + 1) - k0; // causal mask
            if (len <= 0)
                continue;
            for (int64_t g = 0; g < group; ++g) {
                const int64_t head = kvHead * group + g, row = (i - q0) * group + g;
                const float *q = seq.q + i * shape.qStride + head * hd;
                std::fill(scores, scores + len, 0.0f);
                for (int64_t d = 0; d < hd; ++d)
                    cpu::axpy(scores, q[d] * shape.scale, keysT + d * kKeyTile, len);
                RowState &st = state[row];
                const float newMax = cpu::maxValue(scores, len, st.max);
                const float correction = std::exp(st.max - newMax); // rescale the old partial sums
                st.sum = st.sum * correction + cpu::expShiftedSum(scores, len, newMax);
                st.max = newMax;
                float *o = acc + row * hd;
                if (smallHead) {
                    for (int64_t d = 0; d < hd; ++d)
                        o[d] = o[d] * correction + cpu::dot(scores, valuesT + d * kKeyTile, len);
                } else {
                    for (int64_t j = 0; j < len; ++j)
                        cpu::scaleAxpy(o, j == 0 ? correction : 1.0f, scores[j],
                                       seq.values + (k0 + j) * shape.kvStride + kvHead * hd, hd);
                }
            }
        }
    }
    for (int64_t i = q0; i < q1; ++i)
        for (int64_t g = 0; g < group; ++g) {
            const int64_t row = (i - q0) * group + g;
            float *out = seq.out + i * shape.qStride + (kvHead * group + g) * hd;
            const float inv = 1.0f / state[row].sum;
            for (int64_t d = 0; d < hd; ++d)
                out[d] = acc[row * hd + d] * inv;
        }
}

} // namespace

void CpuBackend::attention(std::span<const AttentionSequence> sequences, const AttentionShape &shape) {
    struct Task {
        size_t sequence;
        int64_t kvHead, q0, q1;
    };
    std::vector<Task> tasks;
    for (size_t s = 0; s < sequences.size(); ++s)
        for (int64_t q0 = 0; q0 < sequences[s].queries; q0 += kQueryBlock)
            for (int64_t h = 0; h < shape.kvHeads; ++h)
                tasks.push_back({s, h, q0, std::min(sequences[s].queries, q0 + kQueryBlock)});
    // Later query blocks see more keys: hand them out first so the tail of the loop is short.
    std::stable_sort(tasks.begin(), tasks.end(), [&](const Task &a, const Task &b) {
        return sequences[a.sequence].firstPosition + a.q1 > sequences[b.sequence].firstPosition + b.q1;
    });
    const size_t scratchFloats = attentionScratch(shape);
    m_pool.parallelFor(int64_t(tasks.size()), [&](int64_t t, int thread) {
        const Task &task = tasks[size_t(t)];
        attendBlock(sequences[task.sequence], shape, task.kvHead, task.q0, task.q1,
                    scratch(thread, scratchFloats));
    });
}

} // namespace lowbit
