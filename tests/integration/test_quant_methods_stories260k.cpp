// AWQ, SmoothQuant and QuIP end to end on stories260K: calibrated on 16 WikiText-2 train windows
// of 512 tokens, scored on the first 32 TinyStories validation chunks of 512 in the paper protocol
// (PPL, and KL(P_fp || Q) per predicted token over the full vocabulary in float64), groups of 32.
//   - AWQ 3-bit below RTN 3-bit (PPL and KL);
//   - QuIP 3-bit: the study's ordering (below RTN) does not hold for this model with the
//     reference's incoherence processing, neither in groups of 32 nor with the reference's own
//     per-tensor grid (documented as an expected failure: the output-side rotation spreads error
//     evenly over q/k_proj rows whose norms differ 9x; docs/BENCHMARKS.md lists what was checked
//     against the reference); with the input-side rotation only it is below RTN;
//   - SmoothQuant W8A8 within 3% of FP PPL;
//   - each method's checkpoint directory reloads to the same logits: QuIP and AWQ rebuilt from
//     their packed codes (loadQuantizedCheckpoint), SmoothQuant with its activation quantization
//     installed from quantization_config.json.
#include "shared_data.h"

#include "model/checkpoint.h"
#include "perplexity_tasks.h"
#include "quant/activation_quant.h"
#include "quant/quantize.h"
#include "quant/quantized_checkpoint.h"
#include "runtime/model.h"

#include <QTemporaryDir>
#include <QtTest>

#include <cmath>

using namespace lowbit;

namespace {

struct Scores {
    double ppl = 0, kl = 0;
};

void logSoftmax(const float *logits, int64_t vocab, std::vector<double> &out) {
    out.resize(size_t(vocab));
    double m = -1e300, sum = 0;
    for (int64_t i = 0; i < vocab; ++i)
        m = std::max(m, double(logits[i]));
    for (int64_t i = 0; i < vocab; ++i)
        sum += std::exp(double(logits[i]) - m);
    for (int64_t i = 0; i < vocab; ++i)
        out[size_t(i)] = double(logits[i]) - m - std::log(sum);
}

Logits logitsOf(Model &model, const std::vector<int32_t> &tokens) {
    KvCache cache = model.makeCache(1, int64_t(tokens.size()));
    SequenceInput in{0, tokens, LogitsWanted::All};
    auto logits = model.forward(cache, {&in, 1});
    return logits ? std::move(*logits) : Logits{};
}

} // namespace

class TestQuantMethodsStories260k : public QObject {
    Q_OBJECT
private slots:
    void initTestCase();
    void awqBeatsRtnAt3Bits();
    void quipAt3Bits();
    void smoothQuantW8A8NearFp();
    void checkpointsReload();

private:
    Result<QuantizedModel> quantize(const std::string &method, int bits, int64_t group,
                                    nlohmann::json methodOptions = nlohmann::json::object());
    Scores score(Model &model);
    Scores scoreQuantized(const QuantizedModel &q, int activationBits = 0);

    std::shared_ptr<const Checkpoint> m_source;
    std::unique_ptr<Model> m_fp;
    std::vector<std::vector<int32_t>> m_chunks;
    std::filesystem::path m_calibText;
    Scores m_rtn3;
};

void TestQuantMethodsStories260k::initTestCase() {
    LOWBIT_REQUIRE_SHARED_FILE(modelPath, "data/llama2c/stories260K.bin");
    LOWBIT_REQUIRE_SHARED_FILE(tokPath, "data/llama2c/tok512.bin");
    LOWBIT_REQUIRE_SHARED_FILE(calibPath, "data/wikitext2/wiki.train.raw.prefix");
    LOWBIT_REQUIRE_SHARED_FILE(storiesPath, "data/tinystories/tinystories_val_first1000.txt");
    m_calibText = calibPath;
    auto loaded = loadCheckpoint(modelPath, {tokPath});
    QVERIFY(loaded.ok());
    m_source = std::make_shared<const Checkpoint>(std::move(*loaded));
    auto fp = Model::create(m_source, {2});
    QVERIFY(fp.ok());
    m_fp = std::move(*fp);
    auto spec = corpusSpec("tinystories", test::sharedPath("data"));
    QVERIFY(spec.ok());
    TaskOptions options;
    options.contextTokens = 512;
    auto corpus = loadCorpusChunks(*spec, *m_source->tokenizer, 512, options);
    QVERIFY(corpus.ok());
    QVERIFY(corpus->chunks.size() >= 32);
    m_chunks.assign(corpus->chunks.begin(), corpus->chunks.begin() + 32);
    auto rtn = quantize("rtn", 3, 32);
    QVERIFY(rtn.ok());
    m_rtn3 = scoreQuantized(*rtn);
    qInfo("FP PPL %.4f; RTN W3 g32 PPL %.4f KL %.4f", score(*m_fp).ppl, m_rtn3.ppl, m_rtn3.kl);
}

Result<QuantizedModel> TestQuantMethodsStories260k::quantize(const std::string &method, int bits,
                                                             int64_t group,
                                                             nlohmann::json methodOptions) {
    QuantizeOptions o;
    o.method = method;
    o.bits = bits;
    o.groupSize = group;
    o.threads = 2;
    o.methodOptions = std::move(methodOptions);
    o.calibration.textPath = m_calibText;
    o.calibration.samples = 16;
    o.calibration.tokens = 512;
    NullProgress progress;
    return quantizeModel(*m_source, o, progress);
}

Scores TestQuantMethodsStories260k::score(Model &model) {
    double nll = 0, kl = 0;
    int64_t n = 0;
    std::vector<double> p, q;
    for (const auto &chunk : m_chunks) {
        const Logits a = logitsOf(*m_fp, chunk), b = logitsOf(model, chunk);
        for (size_t t = 0; t + 1 < chunk.size(); ++t) {
            logSoftmax(a.row(int64_t(t)), a.vocab, p);
            logSoftmax(b.row(int64_t(t)), b.vocab, q);
            nll -= q[size_t(chunk[t + 1])];
            for (int64_t v = 0; v < a.vocab; ++v)
                kl += std::exp(p[size_t(v)]) * (p[size_t(v)] - q[size_t(v)]);
            ++n;
        }
    }
    return {std::exp(nll / double(n)), kl / double(n)};
}

Scores TestQuantMethodsStories260k::scoreQuantized(const QuantizedModel &q, int activationBits) {
    auto model = Model::create(q.checkpoint, {2});
    if (!model)
        return {1e300, 1e300};
    if (activationBits)
        (*model)->setLinearHook(activationQuantHook(activationBits));
    return score(**model);
}

void TestQuantMethodsStories260k::awqBeatsRtnAt3Bits() {
    auto awq = quantize("awq", 3, 32);
    QVERIFY2(awq.ok(), awq.ok() ? "" : awq.error().message.c_str());
    const Scores s = scoreQuantized(*awq);
    qInfo("AWQ W3 g32: PPL %.4f KL %.4f (RTN %.4f / %.4f)", s.ppl, s.kl, m_rtn3.ppl, m_rtn3.kl);
    QVERIFY(s.ppl < m_rtn3.ppl);
    QVERIFY(s.kl < m_rtn3.kl);
}

void TestQuantMethodsStories260k::quipAt3Bits() {
    auto quip = quantize("quip", 3, 32);
    QVERIFY2(quip.ok(), quip.ok() ? "" : quip.error().message.c_str());
    const Scores s = scoreQuantized(*quip);
    auto vOnly = quantize("quip", 3, 32, {{"rotate_rows", false}});
    QVERIFY(vOnly.ok());
    const Scores v = scoreQuantized(*vOnly);
    qInfo("QuIP W3 g32: PPL %.4f KL %.4f; V-only %.4f / %.4f (RTN %.4f / %.4f)", s.ppl, s.kl, v.ppl,
          v.kl, m_rtn3.ppl, m_rtn3.kl);
    QVERIFY(v.ppl < m_rtn3.ppl);
    QVERIFY(s.ppl < 2 * m_rtn3.ppl); // degraded, not broken
    QEXPECT_FAIL("",
                 "stories260K: QuIP's output-side rotation equalizes the error over q/k_proj rows "
                 "whose norms differ 9x (RoPE low-frequency rows); the reference's method does "
                 "not beat RTN here either, see docs/BENCHMARKS.md",
                 Continue);
    QVERIFY(s.ppl < m_rtn3.ppl);
}

void TestQuantMethodsStories260k::smoothQuantW8A8NearFp() {
    auto sq = quantize("smoothquant", 8, 0);
    QVERIFY(sq.ok());
    const Scores fp = score(*m_fp), s = scoreQuantized(*sq, 8);
    qInfo("SmoothQuant W8A8: PPL %.4f KL %.5f (FP %.4f)", s.ppl, s.kl, fp.ppl);
    QVERIFY(std::abs(s.ppl - fp.ppl) < 0.03 * fp.ppl);
    QVERIFY(s.kl < 0.01);
    // W4A4 is much worse: the activation quantization is really applied.
    auto w4 = quantize("smoothquant", 4, 0);
    QVERIFY(w4.ok());
    QVERIFY(scoreQuantized(*w4, 4).ppl > 1.2 * fp.ppl);
}

void TestQuantMethodsStories260k::checkpointsReload() {
    QTemporaryDir tmp;
    QVERIFY(tmp.isValid());
    const std::vector<int32_t> &tokens = m_chunks.front();
    for (const char *method : {"quip", "awq", "smoothquant"}) {
        const std::filesystem::path dir = std::filesystem::path(tmp.path().toStdString()) / method;
        const bool sq = std::string(method) == "smoothquant";
        QuantizeOptions o;
        o.method = method;
        o.bits = sq ? 8 : 3;
        o.groupSize = sq ? 0 : 32;
        o.threads = 2;
        o.calibration.textPath = m_calibText;
        o.calibration.samples = 4;
        o.calibration.tokens = 512;
        NullProgress progress;
        auto inMemory = quantizeModel(*m_source, o, progress);
        QVERIFY(inMemory.ok());
        QVERIFY(writeQuantizedCheckpoint(dir, *m_source, *inMemory->checkpoint, inMemory->tensors,
                                         inMemory->report)
                    .ok());
        auto expectedModel = Model::create(inMemory->checkpoint, {2});
        QVERIFY(expectedModel.ok());
        if (sq)
            (*expectedModel)->setLinearHook(activationQuantHook(8));
        const Logits expected = logitsOf(**expectedModel, tokens);
        // Rebuilt from the packed codes alone (the QuIP rotations from the stored seeds), and as a
        // plain HF directory with the recorded activation quantization installed.
        auto rebuilt = sq ? loadCheckpoint(dir) : loadQuantizedCheckpoint(dir);
        QVERIFY2(rebuilt.ok(), rebuilt.ok() ? "" : rebuilt.error().message.c_str());
        auto model = Model::create(std::make_shared<const Checkpoint>(std::move(*rebuilt)), {2});
        QVERIFY(model.ok());
        auto bits = installActivationQuant(**model);
        QVERIFY(bits.ok());
        QCOMPARE(*bits, sq ? 8 : kNoActivationQuant);
        const Logits got = logitsOf(**model, tokens);
        QCOMPARE(got.values.size(), expected.values.size());
        double worst = 0;
        for (size_t i = 0; i < got.values.size(); ++i)
            worst = std::max(worst, double(std::abs(got.values[i] - expected.values[i])));
        QVERIFY2(worst < 1e-3,
                 qPrintable(QString("%1: logits differ by %2").arg(method).arg(worst)));
    }
}

QTEST_APPLESS_MAIN(TestQuantMethodsStories260k)
#include "test_quant_methods_stories260k.moc"
