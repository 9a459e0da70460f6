// bench_cuda_train: one QLoRA optimizer step on the GPU (issue 8, done-when 4) — CudaTrainModel on
// a random LLaMA-3-8B-shaped model (hidden 4096, ffn 14336, 32/8 heads of 128, vocab 128256,
// untied bf16 embedding and head) whose --layers (default all 32) decoder layers are packed NF4
// (block 64; random codes and absmax generated directly, every layer its own buffers), LoRA r 64 /
// alpha 16 on all seven projections, batch 16 × 512 tokens all scored. A step is what the Trainer
// does: zeroGrad, accumulate (upload of changed adapters, forward + backward on the device,
// gradient download), global-norm clipping and AdamW on the host.
// Reports peak device memory measured two ways — the device's used memory (total − free from
// cudaMemGetInfo, sampled every millisecond by a second thread from before the model exists to
// the last step; includes the CUDA context and cuBLAS) and the model's own allocation peak — beside
// the model's estimate, and tokens/s over --steps steps after one warm-up step. Target: <= 24 GB.
// Usage: bench_cuda_train [--device cuda:0] [--layers 32] [--batch 16] [--seq 512] [--rank 64]
//        [--steps 3] [--precision tensor16|fp32] [--out table.md] [--estimate-only 1]
// --estimate-only 1: no device needed; prints the model's estimate of what create() allocates
// (test_emu_cuda_train_memory checks that estimate against the real allocations).
#include "bench_support.h"

#include "backend/device.h"
#include "quant/nf4.h"
#include "quant/quantized_tensor.h"
#include "train/cuda_train_model.h"
#include "train/optimizer.h"

#include <cuda_runtime_api.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <thread>

using namespace lowbit;
using bench::secondsSince;
using Clock = std::chrono::steady_clock;

namespace {

struct Args {
    int device = 0;
    int64_t layers = 32, batch = 16, seq = 512, steps = 3;
    int rank = 64;
    GemmPrecision precision = GemmPrecision::Tensor16;
    std::string out;
    bool estimateOnly = false;
};

Result<Args> parseArgs(int argc, char **argv) {
    Args a;
    for (int i = 1; i < argc; ++i) {
        const std::string k = argv[i];
        if (i + 1 >= argc)
            return makeError(ErrorCode::InvalidArgument,
                             "bench_cuda_train: " + k + " needs a value");
        const std::string v = argv[++i];
        try {
            if (k == "--device") {
                LOWBIT_TRY(DeviceSpec spec, parseDevice(v));
                a.device = spec.index;
            } else if (k == "--layers") {
                a.layers = std::stoll(v);
            } else if (k == "--batch") {
                a.batch = std::stoll(v);
            } else if (k == "--seq") {
                a.seq = std::stoll(v);
            } else if (k == "--rank") {
                a.rank = std::stoi(v);
            } else if (k == "--steps") {
                a.steps = std::stoll(v);
            } else if (k == "--precision" && (v == "tensor16" || v == "fp32")) {
                a.precision = v == "fp32" ? GemmPrecision::Fp32 : GemmPrecision::Tensor16;
            } else if (k == "--out") {
                a.out = v;
            } else if (k == "--estimate-only") {
                a.estimateOnly = v == "1";
            } else {
                return makeError(ErrorCode::InvalidArgument,
                                 "bench_cuda_train: unknown option " + k);
            }
        } catch (const std::exception &) {
            return makeError(ErrorCode::InvalidArgument, "bench_cuda_train: bad value for " + k);
        }
    }
    if (a.layers < 1 || a.layers > 32 || a.batch < 1 || a.seq < 2 || a.rank < 1 || a.steps < 1)
        return makeError(ErrorCode::InvalidArgument, "bench_cuda_train: values out of range");
    return a;
}

// `bytes` random bytes from xorshift64, filled by every hardware thread.
void fillRandom(uint8_t *out, size_t bytes, uint64_t seed) {
    const size_t threads = std::max(1u, std::thread::hardware_concurrency());
    std::vector<std::thread> pool;
    for (size_t t = 0; t < threads; ++t)
        pool.emplace_back([=] {
            uint64_t state = seed * 0x9e3779b97f4a7c15ull + t + 1;
            for (size_t i = bytes * t / threads; i < bytes * (t + 1) / threads; ++i) {
                state ^= state << 13, state ^= state >> 7, state ^= state << 17;
                out[i] = uint8_t(state >> 32);
            }
        });
    for (auto &t : pool)
        t.join();
}

// Uniform bf16 in about [-scale, scale] (random mantissa bits under a fixed exponent range).
Tensor randomBf16(const std::string &name, int64_t rows, int64_t cols, float scale, uint64_t seed) {
    std::vector<std::byte> bytes(size_t(rows * cols) * 2);
    fillRandom(reinterpret_cast<uint8_t *>(bytes.data()), bytes.size(), seed);
    auto *values = reinterpret_cast<uint16_t *>(bytes.data());
    for (size_t i = 0; i < bytes.size() / 2; ++i) // u in [-1, 1) from the low 15 bits
        values[i] = floatToBf16((float(values[i] & 0x7fff) / 16384.0f - 1.0f) * scale);
    return Tensor::fromBytes(name, DType::BF16, {rows, cols}, std::move(bytes));
}

struct RandomModel {
    Checkpoint checkpoint;
    std::map<std::string, QuantizedTensor> packed;
};

// The linears' dense tensors share one placeholder buffer per shape: create() reads only the
// packed tensors for them. Every packed tensor has its own codes and scales.
Result<RandomModel> randomModel(int64_t layers) {
    RandomModel r;
    Checkpoint &c = r.checkpoint;
    c.path = "random-llama3-8b-shape (NF4)";
    ModelConfig &m = c.config;
    m.vocabSize = 128256, m.hiddenSize = 4096, m.intermediateSize = 14336, m.numLayers = layers;
    m.numHeads = 32, m.numKvHeads = 8, m.headDim = 128, m.maxPositions = 8192;
    m.ropeTheta = 500000.0;
    const int64_t h = m.hiddenSize, q = m.numHeads * m.headDim, kv = m.numKvHeads * m.headDim,
                  f = m.intermediateSize;
    c.weights.tokenEmbedding = randomBf16("model.embed_tokens.weight", m.vocabSize, h, 0.02f, 1);
    c.weights.output = randomBf16("lm_head.weight", m.vocabSize, h, 0.02f, 2);
    const std::vector<float> ones(size_t(h), 1.0f);
    c.weights.finalNorm = Tensor::fromFloats("model.norm.weight", {h}, ones.data(), DType::BF16);
    std::map<std::pair<int64_t, int64_t>, Tensor> placeholders;
    uint64_t seed = 3;
    auto linear = [&](const std::string &name, int64_t rows, int64_t cols) -> Result<Tensor> {
        auto &shared = placeholders[{rows, cols}];
        if (shared.empty())
            shared = Tensor::fromBytes("placeholder", DType::BF16, {rows, cols},
                                       std::vector<std::byte>(size_t(rows * cols) * 2));
        LOWBIT_TRY(QuantizedTensor t,
                   QuantizedTensor::create(name, "nf4", rows, cols, 4, 64, true));
        t.codebook.assign(kNf4Levels.begin(), kNf4Levels.end());
        fillRandom(t.packed.data(), t.packed.size(), seed++);
        std::mt19937 rng(uint32_t(seed++));
        std::uniform_real_distribution<float> absmax(0.02f, 0.06f);
        for (float &s : t.scales)
            s = absmax(rng);
        r.packed.emplace(name, std::move(t));
        Tensor view = shared;
        view.name = name;
        return view;
    };
    for (int64_t l = 0; l < layers; ++l) {
        const std::string p = "model.layers." + std::to_string(l) + ".";
        LayerWeights w;
        w.attnNorm =
            Tensor::fromFloats(p + "input_layernorm.weight", {h}, ones.data(), DType::BF16);
        w.ffnNorm = Tensor::fromFloats(p + "post_attention_layernorm.weight", {h}, ones.data(),
                                       DType::BF16);
        LOWBIT_TRY(w.wq, linear(p + "self_attn.q_proj.weight", q, h));
        LOWBIT_TRY(w.wk, linear(p + "self_attn.k_proj.weight", kv, h));
        LOWBIT_TRY(w.wv, linear(p + "self_attn.v_proj.weight", kv, h));
        LOWBIT_TRY(w.wo, linear(p + "self_attn.o_proj.weight", h, q));
        LOWBIT_TRY(w.wGate, linear(p + "mlp.gate_proj.weight", f, h));
        LOWBIT_TRY(w.wUp, linear(p + "mlp.up_proj.weight", f, h));
        LOWBIT_TRY(w.wDown, linear(p + "mlp.down_proj.weight", h, f));
        c.weights.layers.push_back(std::move(w));
    }
    return r;
}

// The device's used memory (total − free), sampled every millisecond; high-water mark.
class MemorySampler {
public:
    explicit MemorySampler(int device) {
        m_thread = std::thread([this, device] {
            cudaSetDevice(device);
            while (!m_stop.load()) {
                size_t freeBytes = 0, total = 0;
                if (cudaMemGetInfo(&freeBytes, &total) == cudaSuccess)
                    m_peak.store(std::max<uint64_t>(m_peak.load(), total - freeBytes));
                std::this_thread::sleep_for(std::chrono::milliseconds(1));
            }
        });
    }
    ~MemorySampler() { stop(); }
    uint64_t stop() {
        m_stop.store(true);
        if (m_thread.joinable())
            m_thread.join();
        return m_peak.load();
    }

private:
    std::atomic<bool> m_stop{false};
    std::atomic<uint64_t> m_peak{0};
    std::thread m_thread;
};

std::vector<train::TrainExample> randomBatch(const Args &a, int64_t vocab) {
    std::mt19937_64 rng(11);
    std::vector<train::TrainExample> batch(size_t(a.batch));
    for (train::TrainExample &ex : batch) {
        for (int64_t t = 0; t <= a.seq; ++t)
            ex.tokens.push_back(int32_t(rng() % uint64_t(vocab)));
        ex.targets.assign(ex.tokens.begin() + 1, ex.tokens.end());
        ex.tokens.pop_back();
    }
    return batch;
}

std::string gib(uint64_t bytes) {
    char text[32];
    std::snprintf(text, sizeof text, "%.2f GiB", double(bytes) / double(uint64_t(1) << 30));
    return text;
}

Status runBench(const Args &a, std::vector<std::string> &rows) {
    size_t freeBytes = 0, totalBytes = 0;
    cudaFree(nullptr); // create the context first, so that "before" includes it
    cudaMemGetInfo(&freeBytes, &totalBytes);
    const uint64_t before = totalBytes - freeBytes;
    auto start = Clock::now();
    LOWBIT_TRY(RandomModel model, randomModel(a.layers));
    const double generateSeconds = secondsSince(start);
    train::LoraOptions lora; // r 64 (--rank), alpha 16, all seven projections
    lora.rank = a.rank;
    train::CudaTrainOptions options;
    options.device = a.device;
    options.precision = a.precision;
    options.packed = &model.packed;
    options.maxBatchTokens = a.batch * a.seq;
    MemorySampler sampler(a.device);
    start = Clock::now();
    LOWBIT_TRY(auto trainee, train::CudaTrainModel::create(model.checkpoint, lora, options));
    const double setupSeconds = secondsSince(start);
    const std::vector<train::TrainExample> batch =
        randomBatch(a, model.checkpoint.config.vocabSize);
    const auto params = trainee->parameters();
    int64_t trainable = 0;
    for (const train::Parameter<float> *p : params)
        trainable += int64_t(p->value.size());
    train::AdamW<float> adam;
    double deviceSeconds = 0, hostSeconds = 0, loss = 0;
    for (int64_t step = 0; step <= a.steps; ++step) { // step 0: warm-up, not timed
        const auto t0 = Clock::now();
        trainee->zeroGrad();
        LOWBIT_TRY(train::LossStats stats, trainee->accumulate(batch));
        const double t1 = secondsSince(t0);
        train::scaleGrads<float>(params, 1.0 / double(stats.scored));
        train::clipGradNorm<float>(params, 0.3);
        LOWBIT_CHECK(adam.step(params, 2e-4));
        trainee->afterStep();
        if (step > 0)
            deviceSeconds += t1, hostSeconds += secondsSince(t0) - t1;
        loss = stats.lossSum / double(stats.scored);
    }
    const uint64_t sampledPeak = sampler.stop();
    const double stepSeconds = (deviceSeconds + hostSeconds) / double(a.steps);
    const double tokens = double(a.batch * a.seq);
    const train::CudaTrainMemory &m = trainee->memoryEstimate();
    auto row = [&](const std::string &what, const std::string &value) {
        rows.push_back("| " + what + " | " + value + " |");
    };
    char text[160];
    row("model", "LLaMA-3-8B shape, " + std::to_string(a.layers) +
                     " layers packed NF4 (block 64), bf16 embedding + head");
    std::snprintf(text, sizeof text, "r %d, alpha 16, 7 projections: %.1fM parameters", a.rank,
                  double(trainable) / 1e6);
    row("LoRA", text);
    row("batch", std::to_string(a.batch) + " x " + std::to_string(a.seq) + " tokens, all scored; " +
                     (a.precision == GemmPrecision::Fp32 ? "fp32 GEMMs" : "bf16 base GEMMs"));
    std::snprintf(text, sizeof text, "%.1f s generate, %.1f s create (upload)", generateSeconds,
                  setupSeconds);
    row("setup", text);
    std::snprintf(text, sizeof text,
                  "%.3f s (device fwd+bwd + transfers %.3f s, host AdamW %.3f s)", stepSeconds,
                  deviceSeconds / double(a.steps), hostSeconds / double(a.steps));
    row("step (mean of " + std::to_string(a.steps) + " after 1 warm-up)", text);
    std::snprintf(text, sizeof text, "%.0f", tokens / stepSeconds);
    row("training tokens/s", text);
    std::snprintf(text, sizeof text, "%.4f (random model: ~ln 128256 = 11.76)", loss);
    row("last step's mean loss", text);
    row("peak device memory used (cudaMemGetInfo, sampled 1 ms)",
        gib(sampledPeak) + " (" + gib(before) + " before the model: CUDA context)" +
            (sampledPeak <= (uint64_t(24) << 30) ? " <= 24 GiB target"
                                                 : " OVER the 24 GiB target"));
    row("model's allocation peak", gib(trainee->allocatedPeakBytes()));
    row("model's estimate", gib(m.total()) + " (weights " + gib(m.weightBytes) + ", adapters " +
                                gib(m.adapterBytes) + ", checkpoints " + gib(m.checkpointBytes) +
                                ", one layer " + gib(m.layerBytes) + ", logit chunk " +
                                gib(m.headBytes) + ")");
    return {};
}

// The model's own accounting, without a device: what create() would ask for.
int printEstimate(const Args &a) {
    auto model = randomModel(a.layers);
    if (!model) {
        std::fprintf(stderr, "bench_cuda_train: %s\n", model.error().message.c_str());
        return 1;
    }
    train::LoraOptions lora;
    lora.rank = a.rank;
    train::CudaTrainOptions options;
    options.precision = a.precision;
    options.packed = &model->packed;
    options.maxBatchTokens = a.batch * a.seq;
    auto m = train::estimateCudaTrainMemory(model->checkpoint, lora, options);
    if (!m) {
        std::fprintf(stderr, "bench_cuda_train: %s\n", m.error().message.c_str());
        return 1;
    }
    std::printf("LLaMA-3-8B shape, %lld layers NF4, r %d, batch %lld x %lld: estimate %s "
                "(weights %s, adapters %s, checkpoints %s, one layer %s, logit chunk %s)\n",
                static_cast<long long>(a.layers), a.rank, static_cast<long long>(a.batch),
                static_cast<long long>(a.seq), gib(m->total()).c_str(), gib(m->weightBytes).c_str(),
                gib(m->adapterBytes).c_str(), gib(m->checkpointBytes).c_str(),
                gib(m->layerBytes).c_str(), gib(m->headBytes).c_str());
    return 0;
}

} // namespace

int main(int argc, char **argv) {
    auto args = parseArgs(argc, argv);
    if (!args.ok()) {
        std::fprintf(stderr, "%s\n", args.error().message.c_str());
        return 2;
    }
    if (args->estimateOnly)
        return printEstimate(*args);
    std::string why;
    if (cudaDeviceCount(&why) == 0) {
        std::fprintf(stderr, "bench_cuda_train: no CUDA device: %s\n", why.c_str());
        return 1;
    }
    cudaSetDevice(args->device);
    cudaDeviceProp prop{};
    cudaGetDeviceProperties(&prop, args->device);
    std::vector<std::string> rows = {std::string("GPU: ") + prop.name + " — one QLoRA step", "",
                                     "| measurement | value |", "|---|---|"};
    const Status status = runBench(*args, rows);
    std::ostringstream table;
    for (const std::string &row : rows)
        table << row << "\n";
    std::printf("%s", table.str().c_str());
    if (!args->out.empty())
        std::ofstream(args->out) << table.str();
    if (!status.ok()) {
        std::fprintf(stderr, "bench_cuda_train: %s\n", status.error().message.c_str());
        return 1;
    }
    return 0;
}
