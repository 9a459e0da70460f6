// PythonRandom: CPython's `random.Random` (MT19937, seeded from an int as CPython does), for the
// few draws whose exact sequence the reference tools fix: lm-evaluation-harness draws few-shot
// exemplars with random.Random(1234).sample(train_docs, k), GPTQ's C4 loader picks windows with
// random.seed(0) + random.randint. Reproducing the generator (CPython Modules/_randommodule.c,
// Lib/random.py) lets our prompts and windows be the very same ones.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

namespace lowbit {

class PythonRandom {
public:
    // random.Random(seed) for a non-negative int seed (init_by_array over its 32-bit words).
    explicit PythonRandom(uint64_t seed);

    uint32_t nextUint32();              // genrand_uint32
    uint64_t getrandbits(int bits);     // random.getrandbits(bits), 0 < bits <= 64
    uint64_t randbelow(uint64_t n);     // Random._randbelow_with_getrandbits(n), n > 0
    int64_t randint(int64_t a, int64_t b); // random.randint(a, b), a <= b
    double random();                    // random.random()
    // random.sample(range(n), k): k distinct indices in [0, n) in draw order (k <= n).
    std::vector<int64_t> sample(int64_t n, int64_t k);

private:
    void initGenrand(uint32_t s);
    void initByArray(const std::vector<uint32_t> &key);
    std::array<uint32_t, 624> m_state{};
    int m_index = 625;
};

} // namespace lowbit
