// CPU causal grouped-query attention, flash-style: queries in blocks, keys streamed in tiles with
// an online softmax (Dao et al. 2022, Alg. 1), so no more than one tile of scores per query row
// exists at a time, whatever the context length.
#include "backend/cpu_backend.h"

#include "backend/cpu_simd.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace lowbit {

namespace {

constexpr int64_t kQueryBlock = 32;
constexpr int64_t kKeyTile = 128;

// One task: query rows [q0, q1) of one sequence, every query head of one kv head.
void attendBlock(const AttentionSequence &seq, const AttentionShape &shape, int64_t kvHead,
                 int64_t q0, int64_t q1, float *scratch) {
    const int64_t group = shape.heads / shape.kvHeads, hd = shape.headDim;
    float *scores = scratch; // kKeyTile
    float *acc = scores + kKeyTile; // hd
    for (int64_t g = 0; g < group; ++g) {
        const int64_t head = kvHead * group + g;
        for (int64_t i = q0; i < q1; ++i) {
            const float *q = seq.q + i * shape.qStride + head * hd;
            const int64_t keyEnd = seq.firstPosition + i + 1; // causal: keys [0, keyEnd)
            float runningMax = -std::numeric_limits<float>::infinity(), runningSum = 0.0f;
            std::fill(acc, acc + hd, 0.0f);
            for (int64_t k0 = 0; k0 < keyEnd; k0 += kKeyTile) {
                const int64_t k1 = std::min(keyEnd, k0 + kKeyTile);
                float tileMax = runningMax;
                for (int64_t j = k0; j < k1; ++j) {
                    const float s =
                        cpu::dot(q, seq.keys + j * shape.kvStride + kvHead * hd, hd) * shape.scale;
                    scores[j - k0] = s;
                    tileMax = std::max(tileMax, s);
                }
                // Online softmax: rescale what was accumulated under the old maximum.
                const float correction = std::exp(runningMax - tileMax);
                runningSum *= correction;
                bool first = true;
                for (int64_t j = k0; j < k1; ++j) {
                    const float p = std::exp(scores[j - k0] - tileMax);
                    runningSum += p;
                    cpu::scaleAxpy(acc, first ? correction : 1.0f, p,
                                   seq.values + j * shape.kvStride + kvHead * hd, hd);
                    first = false;
                }
                runningMax = tileMax;
            }
            float *out = seq.out + i * shape.qStride + head * hd;
            const float inv = 1.0f / runningSum;
            for (int64_t d = 0; d < hd; ++d)
                out[d] = acc[d] * inv;
        }
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
    m_pool.parallelFor(int64_t(tasks.size()), [&](int64_t t, int thread) {
        const Task &task = tasks[size_t(t)];
        attendBlock(sequences[task.sequence], shape, task.kvHead, task.q0, task.q1,
                    scratch(thread, size_t(kKeyTile + shape.headDim)));
    });
}

} // namespace lowbit
