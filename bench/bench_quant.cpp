// bench_quant: the quantizers' CPU cost on one LLaMA-3-8B-shaped decoder layer (hidden 4096,
// FFN 14336, 32 query / 8 key-value heads of 128, random weights):
//   1. the machine's sgemm and dgemm rate (4096^3, all threads), measured in the same run;
//   2. Hessian accumulation H = 2 X^T X / N for the four linear inputs from 16 x 512 tokens
//      (StatsHook: blocked-float32 ssyrk and float64 dsyrk), in GFLOP/s (n(n+1)k per syrk) and
//      as a share of the matching gemm rate (target >= 70%);
//   3. the GPTQ sweep of all seven linears given those Hessians (4-bit, g128 and per-channel;
//      target < 60 s);
//   4. RTN (4-bit g128) of the same seven linears.
// Wall-clock rates beside rates per CPU-second of this process: on a shared machine the latter
// are the ones to compare.
// Activations are Gaussian with a few large channels; only their shape matters for the timing.
#include "bench_support.h"

#include "quant/calibration.h"
#include "quant/gptq.h"
#include "quant/linalg.h"
#include "quant/rtn.h"

#include <cblas.h>

#include <cstdio>
#include <cstring>
#include <ctime>
#include <map>
#include <random>
#include <string>
#include <vector>

using namespace lowbit;

namespace {

struct Linear {
    const char *name;
    int64_t rows, cols;
    LinearInput input;
};

// LLaMA-3-8B: hidden 4096, 32 heads x 128 (q 4096), 8 kv heads (k, v 1024), FFN 14336.
const Linear kLinears[] = {
    {"q_proj", 4096, 4096, LinearInput::Attention},
    {"k_proj", 1024, 4096, LinearInput::Attention},
    {"v_proj", 1024, 4096, LinearInput::Attention},
    {"o_proj", 4096, 4096, LinearInput::AttentionOutput},
    {"gate_proj", 14336, 4096, LinearInput::Mlp},
    {"up_proj", 14336, 4096, LinearInput::Mlp},
    {"down_proj", 4096, 14336, LinearInput::MlpDown},
};
const std::pair<LinearInput, int64_t> kInputs[] = {{LinearInput::Attention, 4096},
                                                   {LinearInput::AttentionOutput, 4096},
                                                   {LinearInput::Mlp, 4096},
                                                   {LinearInput::MlpDown, 14336}};

std::vector<float> gaussian(std::mt19937 &rng, size_t n, float sigma) {
    std::normal_distribution<float> d(0, sigma);
    std::vector<float> v(n);
    for (float &x : v)
        x = d(rng);
    return v;
}

double cpuSeconds() {
    timespec ts{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

struct Rate {
    double wall = 0; // GFLOP per wall-clock second
    double cpu = 0;  // GFLOP per CPU second of this process (robust to other processes' load)
};

// Best of three 4096^3 gemms: the machine is shared, the best run is the closest to its peak.
Rate gemmRate(bool doublePrecision, int threads) {
    const int n = 4096;
    const double gflop = 2.0 * n * n * double(n) / 1e9;
    BlasThreads blas(threads);
    Rate best;
    std::vector<double> ad, bd, cd;
    std::vector<float> af, bf, cf;
    if (doublePrecision) {
        ad.assign(size_t(n) * n, 0.5), bd.assign(size_t(n) * n, 0.25), cd.resize(size_t(n) * n);
    } else {
        af.assign(size_t(n) * n, 0.5f), bf.assign(size_t(n) * n, 0.25f), cf.resize(size_t(n) * n);
    }
    for (int rep = 0; rep < 3; ++rep) {
        const auto start = std::chrono::steady_clock::now();
        const double cpu = cpuSeconds();
        if (doublePrecision)
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0, ad.data(), n,
                        bd.data(), n, 0.0, cd.data(), n);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, af.data(), n,
                        bf.data(), n, 0.0f, cf.data(), n);
        best.wall = std::max(best.wall, gflop / bench::secondsSince(start));
        best.cpu = std::max(best.cpu, gflop / (cpuSeconds() - cpu));
    }
    return best;
}

// Feeds every input `tokens` rows in batches of 4096 (the runner's default batch) and returns
// the statistics; `rate` covers only the time inside the hook.
LayerStatistics accumulate(HessianPrecision precision, int threads, int64_t tokens, Rate &rate,
                           double &seconds) {
    std::mt19937 rng(1);
    StatsHook hook({LinearInput::Attention, LinearInput::AttentionOutput, LinearInput::Mlp,
                    LinearInput::MlpDown},
                   {true, true, true}, precision, threads);
    double cpu = 0, gflop = 0;
    seconds = 0;
    const int64_t batch = 4096;
    for (const auto &[input, cols] : kInputs)
        for (int64_t t0 = 0; t0 < tokens; t0 += batch) {
            const int64_t rows = std::min(batch, tokens - t0);
            std::vector<float> x = gaussian(rng, size_t(rows * cols), 1.0f);
            for (int64_t r = 0; r < rows; ++r)
                for (int64_t j = 0; j < cols; j += 97)
                    x[size_t(r * cols + j)] *= 20; // outlier channels, as LLM activations have
            const auto start = std::chrono::steady_clock::now();
            const double cpu0 = cpuSeconds();
            hook.onLinearInput(0, input, x.data(), rows, cols);
            seconds += bench::secondsSince(start);
            cpu += cpuSeconds() - cpu0;
            gflop += double(cols) * double(cols + 1) * double(rows) / 1e9;
        }
    rate = {gflop / seconds, gflop / cpu};
    return hook.finish();
}

// GPTQ of the seven linears given the Hessians; group <= 0 is per-channel (the LDL form).
bool runGptq(const LayerStatistics &stats, std::map<std::string, std::vector<float>> &weights,
             int64_t group, int threads) {
    const bool perChannel = group <= 0;
    std::printf("\nGPTQ 4-bit %s (damp 0.01, block 128), H factored once per input (%s):\n",
                perChannel ? "per-channel" : ("g" + std::to_string(group)).c_str(),
                perChannel ? "LDL form: one Cholesky"
                           : "chol(H^-1): Cholesky + triangular inverse");
    GptqOptions go;
    go.bits = 4;
    go.groupSize = perChannel ? 0 : group;
    go.threads = threads;
    const auto gptqStart = std::chrono::steady_clock::now();
    const double gptqCpu = cpuSeconds();
    std::map<LinearInput, PreparedHessian> prepared;
    for (const Linear &l : kLinears) {
        const auto start = std::chrono::steady_clock::now();
        const double cpu = cpuSeconds();
        if (!prepared.count(l.input)) {
            auto p = prepareHessian(stats.at(l.input).hessian, l.cols,
                                    {go.damp, false, threads, perChannel});
            if (!p) {
                std::fprintf(stderr, "bench_quant: %s\n", p.error().message.c_str());
                return false;
            }
            prepared.emplace(l.input, std::move(*p));
        }
        const double prepSeconds = bench::secondsSince(start), prepCpu = cpuSeconds() - cpu;
        auto q = quantizeGptq(l.name, weights[l.name], l.rows, l.cols, prepared.at(l.input), go);
        if (!q) {
            std::fprintf(stderr, "bench_quant: %s\n", q.error().message.c_str());
            return false;
        }
        std::printf(
            "  %-9s %5lld x %5lld: %6.2f s wall, %6.2f s CPU (factoring H: %.2f s, %.2f s CPU)\n",
            l.name, static_cast<long long>(l.rows), static_cast<long long>(l.cols),
            bench::secondsSince(start), cpuSeconds() - cpu, prepSeconds, prepCpu);
    }
    std::printf("  total: %.1f s wall, %.1f s CPU (target < 60 s)\n",
                bench::secondsSince(gptqStart), cpuSeconds() - gptqCpu);
    return true;
}

} // namespace

int main(int argc, char **argv) {
    int threads = 0;
    int64_t tokens = 16 * 512;
    int64_t group = 128;
    bool skipF64 = false;
    for (int i = 1; i < argc; ++i) {
        if (!std::strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = std::atoi(argv[++i]);
        else if (!std::strcmp(argv[i], "--tokens") && i + 1 < argc)
            tokens = std::atoll(argv[++i]);
        else if (!std::strcmp(argv[i], "--group") && i + 1 < argc)
            group = std::atoll(argv[++i]);
        else if (!std::strcmp(argv[i], "--no-f64"))
            skipF64 = true;
        else {
            std::fprintf(stderr, "usage: bench_quant [--threads N] [--tokens N] [--group G (0: "
                                 "per-channel)] [--no-f64]\n");
            return 2;
        }
    }
    std::printf("bench_quant: one LLaMA-3-8B-shaped layer, %lld calibration tokens, threads %d (0 "
                "= all)\n\n",
                static_cast<long long>(tokens), threads);
    const Rate sgemm = gemmRate(false, threads), dgemm = gemmRate(true, threads);
    std::printf("sgemm 4096^3: %.1f GFLOP/s wall, %.1f GFLOP per CPU-s\n", sgemm.wall, sgemm.cpu);
    std::printf("dgemm 4096^3: %.1f GFLOP/s wall, %.1f GFLOP per CPU-s\n\n", dgemm.wall, dgemm.cpu);

    Rate rate;
    double seconds = 0;
    LayerStatistics stats =
        accumulate(HessianPrecision::BlockedFloat32, threads, tokens, rate, seconds);
    std::printf(
        "Hessian accumulation, blocked float32 (ssyrk): %.2f s, %.1f GFLOP/s = %.0f%% of sgemm "
        "(per CPU-s: %.1f = %.0f%%)\n",
        seconds, rate.wall, 100 * rate.wall / sgemm.wall, rate.cpu, 100 * rate.cpu / sgemm.cpu);
    if (!skipF64) {
        Rate rate64;
        double seconds64 = 0;
        accumulate(HessianPrecision::Float64, threads, tokens, rate64, seconds64);
        std::printf(
            "Hessian accumulation, float64 (dsyrk):         %.2f s, %.1f GFLOP/s = %.0f%% of dgemm "
            "(per CPU-s: %.1f = %.0f%%)\n",
            seconds64, rate64.wall, 100 * rate64.wall / dgemm.wall, rate64.cpu,
            100 * rate64.cpu / dgemm.cpu);
    }

    std::mt19937 rng(2);
    std::map<std::string, std::vector<float>> weights;
    for (const Linear &l : kLinears)
        weights[l.name] = gaussian(rng, size_t(l.rows * l.cols), 0.02f);

    for (const int64_t g : {group, int64_t(0)})
        if (!runGptq(stats, weights, g, threads))
            return 1;

    const auto rtnStart = std::chrono::steady_clock::now();
    for (const Linear &l : kLinears)
        if (!quantizeRtn(l.name, weights[l.name].data(), l.rows, l.cols, 4, group, false))
            return 1;
    std::printf("\nRTN 4-bit g%lld, seven linears (one thread): %.2f s\n",
                static_cast<long long>(group), bench::secondsSince(rtnStart));
    std::printf(
        "\nsgemm again after the run: %.1f GFLOP/s (the machine is shared: compare the two)\n",
        gemmRate(false, threads).wall);
    return 0;
}
