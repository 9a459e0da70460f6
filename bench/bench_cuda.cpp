// bench_cuda: the CUDA backend on a random-weight LLaMA-3-8B-shaped model (hidden 4096, ffn 14336,
// 32/8 heads of 128, vocab 128256, untied head) with --layers decoder layers (default 2: the
// per-layer numbers are those of the 32-layer model; whole-model tokens/s scale by layers):
//   - prefill tokens/s at --ctx (2048) and its GEMM TFLOP/s, beside a plain cuBLAS GEMM of the
//     same seven shapes per layer measured in the same run (target >= 70 %);
//   - decode tokens/s in bf16 and with 4-bit g128 packed linear layers, the bytes each token reads
//     (weights + KV cache) per second beside measured device-to-device copy bandwidth (target >= 60
//     %);
//   - GPTQ of one decoder layer through the quantizer of `quantize --device cuda:N`: Hessians,
//     chol(H^-1) and the column sweep on the GPU (the CPU path beside it unless --no-sweep).
// Usage: bench_cuda [--device cuda:0] [--layers 2] [--ctx 2048] [--decode 32] [--no-sweep] [--out
// table.md]
#include "bench_support.h"
#include "quant/calibration.h"
#include "quant/quant_device.h"
#include "quant/quantized_tensor.h"
#include "quant/quantizer.h"
#include "runtime/cuda_model.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <thread>

using namespace lowbit;
using bench::secondsSince;
using Clock = std::chrono::steady_clock;

namespace {

struct Args {
    int device = 0;
    int64_t layers = 2, ctx = 2048, decode = 32;
    bool sweep = true;
    std::string out;
};

// Uniform bf16 values in about [-scale, scale], filled by every hardware thread (the embedding
// alone is 525M values).
Tensor randomBf16(const std::string &name, std::vector<int64_t> shape, float scale, uint64_t seed) {
    int64_t n = 1;
    for (int64_t d : shape)
        n *= d;
    std::vector<std::byte> bytes(size_t(n) * 2);
    const int threads = int(std::max(1u, std::thread::hardware_concurrency()));
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
        pool.emplace_back([&, t] {
            uint64_t state = seed * 0x9e3779b97f4a7c15ull + uint64_t(t) + 1;
            auto *out = reinterpret_cast<uint16_t *>(bytes.data());
            for (int64_t i = n * t / threads; i < n * (t + 1) / threads; ++i) {
                state ^= state << 13, state ^= state >> 7, state ^= state << 17; // xorshift64
                const float u = float(state >> 40) / float(1 << 24) * 2.0f - 1.0f;
                out[i] = floatToBf16(u * scale);
            }
        });
    for (auto &t : pool)
        t.join();
    return Tensor::fromBytes(name, DType::BF16, std::move(shape), std::move(bytes));
}

std::shared_ptr<const Checkpoint> randomLlama3_8B(int64_t layers) {
    auto c = std::make_shared<Checkpoint>();
    c->path = "random-llama3-8b-shape";
    ModelConfig &m = c->config;
    m.vocabSize = 128256, m.hiddenSize = 4096, m.intermediateSize = 14336, m.numLayers = layers;
    m.numHeads = 32, m.numKvHeads = 8, m.headDim = 128, m.maxPositions = 8192,
    m.ropeTheta = 500000.0;
    const int64_t h = m.hiddenSize, q = m.numHeads * m.headDim, kv = m.numKvHeads * m.headDim,
                  f = m.intermediateSize;
    uint64_t seed = 1;
    auto norm = [&](const std::string &name) {
        std::vector<float> ones(size_t(h), 1.0f);
        return Tensor::fromFloats(name, {h}, ones.data(), DType::BF16);
    };
    c->weights.tokenEmbedding =
        randomBf16("model.embed_tokens.weight", {m.vocabSize, h}, 0.02f, seed++);
    c->weights.output = randomBf16("lm_head.weight", {m.vocabSize, h}, 0.02f, seed++);
    c->weights.finalNorm = norm("model.norm.weight");
    for (int64_t l = 0; l < layers; ++l) {
        const std::string p = "model.layers." + std::to_string(l) + ".";
        LayerWeights w;
        w.attnNorm = norm(p + "input_layernorm.weight");
        w.ffnNorm = norm(p + "post_attention_layernorm.weight");
        w.wq = randomBf16(p + "self_attn.q_proj.weight", {q, h}, 0.02f, seed++);
        w.wk = randomBf16(p + "self_attn.k_proj.weight", {kv, h}, 0.02f, seed++);
        w.wv = randomBf16(p + "self_attn.v_proj.weight", {kv, h}, 0.02f, seed++);
        w.wo = randomBf16(p + "self_attn.o_proj.weight", {h, q}, 0.02f, seed++);
        w.wGate = randomBf16(p + "mlp.gate_proj.weight", {f, h}, 0.02f, seed++);
        w.wUp = randomBf16(p + "mlp.up_proj.weight", {f, h}, 0.02f, seed++);
        w.wDown = randomBf16(p + "mlp.down_proj.weight", {h, f}, 0.01f, seed++);
        c->weights.layers.push_back(std::move(w));
    }
    return c;
}

std::vector<const Tensor *> linears(const LayerWeights &w) {
    return {&w.wq, &w.wk, &w.wv, &w.wo, &w.wGate, &w.wUp, &w.wDown};
}

// 4-bit, group 128, random codes and scales: decode speed does not depend on the values.
std::map<std::string, QuantizedTensor> random4bit(const Checkpoint &c) {
    std::map<std::string, QuantizedTensor> out;
    std::mt19937 rng(7);
    for (const LayerWeights &w : c.weights.layers)
        for (const Tensor *t : linears(w)) {
            auto q = QuantizedTensor::create(t->name, "rtn", t->rows(), t->cols(), 4, 128, false);
            for (uint8_t &b : q->packed)
                b = uint8_t(rng());
            for (float &s : q->scales)
                s = 0.002f;
            for (float &z : q->zeros)
                z = 8.0f;
            out.emplace(t->name, std::move(*q));
        }
    return out;
}

double seconds(const std::function<Status()> &run, int reps, Status &status) {
    const auto start = Clock::now();
    for (int r = 0; r < reps && status.ok(); ++r)
        status = run();
    cudaDeviceSynchronize();
    return secondsSince(start) / reps;
}

std::string format(const char *fmt, double a, double b = 0, double c = 0) {
    char text[256];
    std::snprintf(text, sizeof text, fmt, a, b, c);
    return text;
}

} // namespace

namespace {

// The seven GEMMs of one layer at `rows` tokens through plain cuBLAS, called as CudaBackend calls
// it (bf16 x bf16 -> fp32, fp32 compute); seconds per layer.
Result<double> cublasLayerSeconds(const ModelConfig &m, int64_t rows) {
    const int64_t h = m.hiddenSize, q = m.numHeads * m.headDim, kv = m.numKvHeads * m.headDim,
                  f = m.intermediateSize;
    const std::vector<std::pair<int64_t, int64_t>> shapes = {{q, h}, {kv, h}, {kv, h}, {h, q},
                                                             {f, h}, {f, h},  {h, f}};
    void *x = nullptr, *w = nullptr, *y = nullptr;
    const size_t xBytes = size_t(rows * f) * 2, wBytes = size_t(f * h) * 2,
                 yBytes = size_t(rows * f) * 4;
    if (cudaMalloc(&x, xBytes) || cudaMalloc(&w, wBytes) || cudaMalloc(&y, yBytes))
        return makeError(ErrorCode::OutOfMemory,
                         "bench: cudaMalloc for the cuBLAS baseline failed");
    cudaMemset(x, 0x3c, xBytes); // bf16 0x3c3c ~ 0.0115: nonzero operands
    cudaMemset(w, 0x3c, wBytes);
    cublasHandle_t blas = nullptr;
    cublasCreate(&blas);
    const float one = 1.0f, zero = 0.0f;
    Status status;
    auto layer = [&]() -> Status {
        for (auto [out, in] : shapes)
            if (cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, int(out), int(rows), int(in), &one, w,
                             CUDA_R_16BF, int(in), x, CUDA_R_16BF, int(in), &zero, y, CUDA_R_32F,
                             int(out), CUBLAS_COMPUTE_32F,
                             CUBLAS_GEMM_DEFAULT) != CUBLAS_STATUS_SUCCESS)
                return makeError(ErrorCode::Internal, "bench: cublasGemmEx failed");
        return {};
    };
    seconds(layer, 2, status); // warm-up: heuristics, clocks
    const double s = seconds(layer, 10, status);
    cublasDestroy(blas);
    cudaFree(x), cudaFree(w), cudaFree(y);
    LOWBIT_CHECK(status);
    return s;
}

// Device-to-device copy of 1 GiB; bytes read + written per second.
double copyBandwidth() {
    const size_t bytes = size_t(1) << 30;
    void *a = nullptr, *b = nullptr;
    if (cudaMalloc(&a, bytes) || cudaMalloc(&b, bytes))
        return 0;
    Status status;
    auto copy = [&]() -> Status {
        cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice);
        return {};
    };
    seconds(copy, 2, status);
    const double s = seconds(copy, 10, status);
    cudaFree(a), cudaFree(b);
    return 2.0 * double(bytes) / s;
}

struct RunResult {
    double prefillSeconds = 0, decodeSeconds = 0, bytesPerToken = 0;
};

Result<RunResult> prefillAndDecode(const Args &args, std::shared_ptr<const Checkpoint> checkpoint,
                                   const std::map<std::string, QuantizedTensor> *quantized,
                                   bool prefill) {
    CudaModelOptions o;
    o.backend = {args.device, GemmPrecision::Tensor16};
    o.maxBatchTokens = args.ctx;
    o.quantized = quantized;
    LOWBIT_TRY(auto model, CudaModel::create(checkpoint, o));
    LOWBIT_TRY(auto cache, model->allocateCache(1, args.ctx + args.decode + 4));
    const ModelConfig &m = checkpoint->config;
    std::vector<int32_t> prompt(size_t(args.ctx));
    std::mt19937 rng(3);
    for (int32_t &t : prompt)
        t = int32_t(rng() % uint32_t(m.vocabSize));
    RunResult r;
    SequenceInput in{0, prompt, LogitsWanted::Last};
    Status status;
    auto runPrefill = [&]() -> Status {
        cache->clear(0);
        auto logits = model->forward(*cache, {&in, 1});
        return logits.ok() ? Status{} : Status(logits.error());
    };
    seconds(runPrefill, 1, status);
    if (prefill)
        r.prefillSeconds = seconds(runPrefill, 3, status);
    LOWBIT_CHECK(status);
    int32_t token = prompt.back();
    auto step = [&]() -> Status {
        auto top = model->next(*cache, 0, {&token, 1}, 1);
        if (top.ok())
            token = top->ids[0];
        return top.ok() ? Status{} : Status(top.error());
    };
    seconds(step, 2, status);
    const int64_t firstDecode = cache->length(0);
    r.decodeSeconds = seconds(step, int(args.decode), status);
    LOWBIT_CHECK(status);
    const double kvDim = double(m.numKvHeads * m.headDim);
    const double meanPosition = double(firstDecode) + double(args.decode) / 2;
    r.bytesPerToken = double(model->backend().weightBytes()) -
                      double(checkpoint->weights.tokenEmbedding.bytes()) +
                      2.0 * double(m.numLayers) * meanPosition * kvDim * 4;
    return r;
}

// GPTQ of layer 0, 4-bit g128, through the quantizer a user gets with `quantize --device cuda:N`
// (QuantDevice, StatsHook, makeQuantizer("gptq"), one LinearJob per linear): the four calibration
// Hessians of --ctx random input rows, handed to the hook in batches of 2048 rows as the
// calibration forward does and summed on the GPU; then the seven linears, chol(H^-1) (q/k/v and
// gate/up share one) and the sweep on the GPU. The calibration forward itself (CPU) is left out.
// Unless --no-sweep, the same quantizer without a device (LAPACK, CPU sweep) on the same Hessians.
Status gptqLayer(const Args &args, const Checkpoint &c, std::vector<std::string> &rows) {
    LOWBIT_TRY(auto device, QuantDevice::open({DeviceSpec::Kind::Cuda, args.device}));
    const ModelConfig &m = c.config;
    const LayerWeights &layer = c.weights.layers[0];
    const int threads = int(std::thread::hardware_concurrency());
    const std::map<LinearInput, int64_t> widths = {{LinearInput::Attention, m.hiddenSize},
                                                   {LinearInput::AttentionOutput,
                                                    m.numHeads * m.headDim},
                                                   {LinearInput::Mlp, m.hiddenSize},
                                                   {LinearInput::MlpDown, m.intermediateSize}};
    std::set<LinearInput> inputs;
    for (const auto &[input, cols] : widths)
        inputs.insert(input);
    StatsHook hook(inputs, {true, false, false}, HessianPrecision::BlockedFloat32, threads, 0,
                   device.get());
    const int64_t batch = std::min<int64_t>(args.ctx, 2048);
    double hessianSeconds = 0;
    for (const auto &[input, cols] : widths) {
        std::vector<float> x(size_t(batch * cols));
        std::mt19937 rng(static_cast<uint32_t>(cols) + uint32_t(input));
        std::normal_distribution<float> normal;
        for (float &v : x)
            v = normal(rng);
        const auto start = Clock::now();
        for (int64_t r0 = 0; r0 < args.ctx; r0 += batch)
            hook.onLinearInput(0, input, x.data(), std::min(batch, args.ctx - r0), cols);
        LOWBIT_CHECK(hook.status());
        hessianSeconds += secondsSince(start);
    }
    auto start = Clock::now();
    const LayerStatistics stats = hook.finish(); // downloads the four sums
    LOWBIT_CHECK(hook.status());
    hessianSeconds += secondsSince(start);
    rows.push_back(format("| GPTQ layer: 4 calibration Hessians of %.0f tokens on GPU (StatsHook, "
                          "cuBLAS SYRK) | %.3f s | |",
                          double(args.ctx), hessianSeconds));
    std::vector<std::vector<float>> weights;
    for (LinearKind kind : kAllLinearKinds)
        weights.push_back(tensorToFloats(linearWeight(layer, kind)));
    QuantizeOptions options;
    options.method = "gptq";
    options.bits = 4;
    options.groupSize = 128;
    options.threads = threads;
    auto quantizeAll = [&](QuantDevice *on) -> Result<double> {
        LOWBIT_TRY(auto quantizer, makeQuantizer(options));
        const auto begin = Clock::now();
        for (size_t k = 0; k < kAllLinearKinds.size(); ++k) {
            const LinearKind kind = kAllLinearKinds[k];
            const Tensor &t = linearWeight(layer, kind);
            nlohmann::json notes;
            const LinearJob job{0,      kind,  t.name, t.rows(), t.cols(), weights[k],
                                &stats.at(linearInputOf(kind)), &notes, {}, on};
            LOWBIT_TRY(QuantizedTensor q, quantizer->quantize(job));
        }
        return secondsSince(begin);
    };
    LOWBIT_TRY(double gpuSeconds, quantizeAll(device.get()));
    rows.push_back(format("| GPTQ layer: 7 linears on GPU (cuSOLVER chol(H^-1) + sweep), 4-bit "
                          "g128 | %.2f s | ",
                          gpuSeconds) +
                   device->summary("gptq") + " |");
    if (args.sweep) {
        LOWBIT_TRY(double cpuSeconds, quantizeAll(nullptr));
        rows.push_back(format("| GPTQ layer: the same 7 linears on the CPU (LAPACK + sweep), %.0f "
                              "threads | %.2f s | |",
                              double(threads), cpuSeconds));
    }
    return {};
}

Result<Args> parseArgs(int argc, char **argv) {
    Args a;
    for (int i = 1; i < argc; ++i) {
        const std::string k = argv[i];
        const bool hasValue = i + 1 < argc;
        if (k == "--device" && hasValue) {
            LOWBIT_TRY(DeviceSpec d, parseDevice(argv[++i]));
            if (!d.isCuda())
                return makeError(ErrorCode::InvalidArgument, "bench_cuda: --device must be cuda:N");
            a.device = d.index;
        } else if (k == "--layers" && hasValue) {
            a.layers = std::atoll(argv[++i]);
        } else if (k == "--ctx" && hasValue) {
            a.ctx = std::atoll(argv[++i]);
        } else if (k == "--decode" && hasValue) {
            a.decode = std::atoll(argv[++i]);
        } else if (k == "--no-sweep") {
            a.sweep = false;
        } else if (k == "--out" && hasValue) {
            a.out = argv[++i];
        } else {
            return makeError(ErrorCode::InvalidArgument, "bench_cuda: unknown argument " + k);
        }
    }
    if (a.layers < 1 || a.ctx < 16 || a.decode < 1)
        return makeError(ErrorCode::InvalidArgument,
                         "bench_cuda: --layers >= 1, --ctx >= 16, --decode >= 1");
    return a;
}

Status runAll(const Args &args, std::vector<std::string> &rows) {
    std::printf("building a random LLaMA-3-8B-shaped model with %lld layers...\n",
                (long long)args.layers);
    auto checkpoint = randomLlama3_8B(args.layers);
    const ModelConfig &m = checkpoint->config;
    const int64_t h = m.hiddenSize, q = m.numHeads * m.headDim, kv = m.numKvHeads * m.headDim,
                  f = m.intermediateSize;
    const double layerGemmFlops =
        2.0 * double(args.ctx) * double(2 * q * h + 2 * kv * h + 3 * f * h);
    LOWBIT_TRY(double gemm, cublasLayerSeconds(m, args.ctx));
    const double bandwidth = copyBandwidth();
    LOWBIT_TRY(RunResult dense, prefillAndDecode(args, checkpoint, nullptr, true));
    const auto packed = random4bit(*checkpoint);
    LOWBIT_TRY(RunResult quant, prefillAndDecode(args, checkpoint, &packed, false));

    const double prefillTflops = layerGemmFlops * double(args.layers) / dense.prefillSeconds / 1e12;
    const double gemmTflops = layerGemmFlops / gemm / 1e12;
    rows.push_back(format("| cuBLAS GEMM, the 7 shapes of a layer at %.0f tokens (bf16 in, fp32 "
                          "out) | %.1f TFLOP/s | |",
                          double(args.ctx), gemmTflops));
    rows.push_back(format("| prefill %.0f tokens, %.0f layers: tokens/s | %.0f tok/s | |",
                          double(args.ctx), double(args.layers),
                          double(args.ctx) / dense.prefillSeconds));
    rows.push_back(format(
        "| prefill GEMM TFLOP/s (attention time included) | %.1f TFLOP/s | %.0f %% of cuBLAS |",
        prefillTflops, 100.0 * prefillTflops / gemmTflops));
    rows.push_back(
        format("| device-to-device copy (read + write) | %.0f GB/s | |", bandwidth / 1e9));
    for (auto [name, r] : {std::pair{"bf16", dense}, std::pair{"4-bit g128", quant}}) {
        const double bytesPerSecond = r.bytesPerToken / r.decodeSeconds;
        rows.push_back("| decode " + std::string(name) +
                       format(": tokens/s (%.0f layers) | %.1f tok/s | |", double(args.layers),
                              1.0 / r.decodeSeconds));
        rows.push_back(
            format("| decode achieved bytes/s (weights + KV) | %.0f GB/s | %.0f %% of copy |",
                   bytesPerSecond / 1e9, 100.0 * bytesPerSecond / bandwidth));
    }
    return gptqLayer(args, *checkpoint, rows);
}

} // namespace

int main(int argc, char **argv) {
    auto args = parseArgs(argc, argv);
    if (!args.ok()) {
        std::fprintf(stderr, "%s\n", args.error().message.c_str());
        return 2;
    }
    std::string why;
    if (cudaDeviceCount(&why) == 0) {
        std::fprintf(stderr, "bench_cuda: no CUDA device: %s\n", why.c_str());
        return 1;
    }
    cudaSetDevice(args->device);
    cudaDeviceProp prop{};
    cudaGetDeviceProperties(&prop, args->device);
    std::vector<std::string> rows = {std::string("GPU: ") + prop.name, "",
                                     "| measurement | value | vs reference |", "|---|---|---|"};
    const Status status = runAll(*args, rows);
    std::ostringstream table;
    for (const std::string &row : rows)
        table << row << "\n";
    std::printf("%s", table.str().c_str());
    if (!args->out.empty())
        std::ofstream(args->out) << table.str();
    if (!status.ok()) {
        std::fprintf(stderr, "bench_cuda: %s\n", status.error().message.c_str());
        return 1;
    }
    return 0;
}
