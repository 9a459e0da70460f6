// Seeded random orthogonal "butterfly" matrices: QuIP's incoherence transforms (Chee, Cai,
// Kuleshov, De Sa 2023, "QuIP: 2-Bit Quantization of Large Language Models With Guarantees",
// Sec. 5 "Efficient incoherence processing": a Kronecker-structured random orthogonal matrix costs
// O(n (p1 + p2)) to apply instead of O(n^2)). The structure is that of the reference
// implementation (method.py, gen_rand_ortho_butterfly / mul_ortho_butterfly):
//
//   n = p1 * p2 with p1 = product of the even-indexed prime factors of n (ascending), p2 = product
//   of the odd-indexed ones (64 -> 8 x 8, 4096 -> 64 x 64, 14336 -> 64 x 224, a prime n -> n x 1);
//   B x = P_out F2 F1 P_in x, where
//     P_in, P_out: uniformly random permutations (gathers: (P x)[k] = x[perm[k]]);
//     F1: x viewed as a p1 x p2 matrix, column j multiplied by its own Haar-random p1 x p1 matrix
//         of SO(p1) (p2 independent blocks);
//     F2: row a multiplied by its own Haar-random p2 x p2 matrix of SO(p2) (p1 blocks).
//
// Everything is generated from a 64-bit seed by std::mt19937_64 (whose output the C++ standard
// fixes), with our own Box-Muller normals and Fisher-Yates shuffles (std's distributions differ
// between standard libraries), and LAPACK's QR in float64, so a seed stored in a quantized
// checkpoint rebuilds the same matrix on any platform, to float64 rounding.
#pragma once

#include "core/result.h"

#include <cstdint>
#include <utility>
#include <vector>

namespace lowbit {

// (p1, p2) for n as above; n >= 1.
std::pair<int64_t, int64_t> butterflyFactors(int64_t n);

class RandomButterfly {
public:
    // Errors: n < 1, or a LAPACK failure (reported, never expected).
    static Result<RandomButterfly> create(int64_t n, uint64_t seed);

    int64_t size() const { return m_n; }
    int64_t p1() const { return m_p1; }
    int64_t p2() const { return m_p2; }

    // Each of the `count` rows of x (row-major, count x n) is replaced by B row (forward) or
    // B^T row (inverse). In matrix terms: X <- X B^T, or X <- X B. BLAS uses `threads`.
    void applyRows(float *x, int64_t count, bool inverse, int threads = 1) const;
    void applyRows(double *x, int64_t count, bool inverse, int threads = 1) const;

    // The dense n x n matrix B (row-major), for tests and small sizes.
    std::vector<double> dense() const;

private:
    template <typename T> void apply(T *x, int64_t count, bool inverse, int threads) const;
    int64_t m_n = 0, m_p1 = 1, m_p2 = 1;
    std::vector<int32_t> m_permIn, m_permOut;
    std::vector<double> m_first;  // p2 blocks of p1 x p1, row-major (F1)
    std::vector<double> m_second; // p1 blocks of p2 x p2, row-major (F2)
    std::vector<float> m_firstF, m_secondF;
};

} // namespace lowbit
