#include "python_random.h"

#include <cmath>
#include <unordered_set>

namespace lowbit {

namespace {
constexpr int kN = 624, kM = 397;
constexpr uint32_t kMatrixA = 0x9908b0dfu, kUpperMask = 0x80000000u, kLowerMask = 0x7fffffffu;
} // namespace

// Matsumoto & Nishimura's reference init_genrand / init_by_array, as in _randommodule.c.
void PythonRandom::initGenrand(uint32_t s) {
    m_state[0] = s;
    for (int i = 1; i < kN; ++i)
        m_state[size_t(i)] = 1812433253u * (m_state[size_t(i - 1)] ^ (m_state[size_t(i - 1)] >> 30)) + uint32_t(i);
    m_index = kN;
}

void PythonRandom::initByArray(const std::vector<uint32_t> &key) {
    initGenrand(19650218u);
    size_t i = 1, j = 0;
    const size_t keyLength = key.size();
    for (size_t k = std::max<size_t>(kN, keyLength); k; --k) {
        m_state[i] = (m_state[i] ^ ((m_state[i - 1] ^ (m_state[i - 1] >> 30)) * 1664525u)) + key[j] + uint32_t(j);
        ++i;
        ++j;
        if (i >= size_t(kN)) {
            m_state[0] = m_state[kN - 1];
            i = 1;
        }
        if (j >= keyLength)
            j = 0;
    }
    for (size_t k = kN - 1; k; --k) {
        m_state[i] = (m_state[i] ^ ((m_state[i - 1] ^ (m_state[i - 1] >> 30)) * 1566083941u)) - uint32_t(i);
        ++i;
        if (i >= size_t(kN)) {
            m_state[0] = m_state[kN - 1];
            i = 1;
        }
    }
    m_state[0] = 0x80000000u; // MSB is 1, assuring a non-zero initial array
    m_index = kN;
}

PythonRandom::PythonRandom(uint64_t seed) {
    // random_seed(): the absolute value of the int, split into 32-bit words, least significant
    // first; zero gives the one-word key [0].
    std::vector<uint32_t> key;
    for (uint64_t v = seed; v; v >>= 32)
        key.push_back(uint32_t(v & 0xffffffffu));
    if (key.empty())
        key.push_back(0);
    initByArray(key);
}

uint32_t PythonRandom::nextUint32() {
    if (m_index >= kN) {
        int k = 0;
        auto twist = [&](int a, int b, int c) {
            const uint32_t y = (m_state[size_t(a)] & kUpperMask) | (m_state[size_t(b)] & kLowerMask);
            m_state[size_t(a)] = m_state[size_t(c)] ^ (y >> 1) ^ ((y & 1u) ? kMatrixA : 0u);
        };
        for (; k < kN - kM; ++k)
            twist(k, k + 1, k + kM);
        for (; k < kN - 1; ++k)
            twist(k, k + 1, k + (kM - kN));
        twist(kN - 1, 0, kM - 1);
        m_index = 0;
    }
    uint32_t y = m_state[size_t(m_index++)];
    y ^= (y >> 11);
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= (y >> 18);
    return y;
}

uint64_t PythonRandom::getrandbits(int bits) {
    if (bits <= 32)
        return uint64_t(nextUint32() >> (32 - bits));
    // Words are filled least significant first; the last word keeps its top bits.
    const uint64_t low = nextUint32();
    const uint64_t high = uint64_t(nextUint32() >> (64 - bits));
    return low | (high << 32);
}

uint64_t PythonRandom::randbelow(uint64_t n) {
    if (n == 0)
        return 0;
    int bits = 0;
    for (uint64_t v = n; v; v >>= 1)
        ++bits;
    uint64_t r = getrandbits(bits);
    while (r >= n)
        r = getrandbits(bits);
    return r;
}

int64_t PythonRandom::randint(int64_t a, int64_t b) { return a + int64_t(randbelow(uint64_t(b - a + 1))); }

double PythonRandom::random() {
    const uint32_t a = nextUint32() >> 5, b = nextUint32() >> 6;
    return (double(a) * 67108864.0 + double(b)) * (1.0 / 9007199254740992.0);
}

std::vector<int64_t> PythonRandom::sample(int64_t n, int64_t k) {
    std::vector<int64_t> result;
    if (k < 0 || k > n)
        return result;
    // Lib/random.py sample(): a pool for small populations, rejection against a set otherwise.
    int64_t setSize = 21;
    if (k > 5)
        setSize += int64_t(std::pow(4.0, std::ceil(std::log(double(k * 3)) / std::log(4.0))));
    if (n <= setSize) {
        std::vector<int64_t> pool(static_cast<size_t>(n));
        for (int64_t i = 0; i < n; ++i)
            pool[size_t(i)] = i;
        for (int64_t i = 0; i < k; ++i) {
            const auto j = int64_t(randbelow(uint64_t(n - i)));
            result.push_back(pool[size_t(j)]);
            pool[size_t(j)] = pool[size_t(n - i - 1)];
        }
        return result;
    }
    std::unordered_set<int64_t> selected;
    for (int64_t i = 0; i < k; ++i) {
        auto j = int64_t(randbelow(uint64_t(n)));
        while (selected.count(j))
            j = int64_t(randbelow(uint64_t(n)));
        selected.insert(j);
        result.push_back(j);
    }
    return result;
}

} // namespace lowbit
