// DB-LLM end to end on the real stories260K: FDB bases initialized from RTN 2-bit g64 (the
// untrained student must have exactly the RTN 2-bit model's perplexity), trained by
// deviation-aware distillation on text the FP model wrote itself (no TinyStories text seen), then
// TinyStories validation perplexity (first 300 stories, ctx 512) below RTN 2-bit and GPTQ 2-bit.
#include "paper_perplexity.h"
#include "shared_data.h"

#include "perplexity.h"
#include "quant/quantize.h"
#include "runtime/model.h"
#include "train/dbllm_target.h"

#include <QtTest>

#include <cmath>

using namespace lowbit;
using namespace lowbit::train;

namespace {

constexpr int64_t kContext = 512;
constexpr int64_t kPplChunks = 40;
constexpr size_t kEvalStories = 300;

} // namespace

class TestDbLlmStories260K : public QObject {
    Q_OBJECT
private slots:
    void initTestCase();
    void untrainedStudentIsRtn2Bit();
    void distillationBeatsRtnAndGptq2Bit();

private:
    double ppl(std::shared_ptr<const Checkpoint> checkpoint);
    std::shared_ptr<const Checkpoint> studentCheckpoint(DbLlmTarget &target);
    std::shared_ptr<const Checkpoint> quantized(const std::string &method);

    std::shared_ptr<const Checkpoint> m_fp;
    std::vector<int32_t> m_evalTokens;
    std::string m_calibText; // GPTQ's calibration: the WikiText-2 train prefix, as the study
    double m_rtnPpl = 0;
};

void TestDbLlmStories260K::initTestCase() {
    LOWBIT_REQUIRE_SHARED_FILE(model, "data/llama2c/stories260K.bin");
    LOWBIT_REQUIRE_SHARED_FILE(tok, "data/llama2c/tok512.bin");
    LOWBIT_REQUIRE_SHARED_FILE(text, "data/tinystories/tinystories_val_first1000.txt");
    LOWBIT_REQUIRE_SHARED_FILE(calib, "data/wikitext2/wiki.train.raw.prefix");
    m_calibText = calib.string();
    auto fp = loadCheckpoint(model, {tok});
    QVERIFY(fp.ok());
    m_fp = std::make_shared<const Checkpoint>(std::move(*fp));
    const std::string all = test::readFile(text);
    const std::string sep = "<|endoftext|>\n";
    size_t cut = 0;
    for (size_t s = 0; s < kEvalStories; ++s)
        cut = all.find(sep, cut) + sep.size();
    m_evalTokens = m_fp->tokenizer->encode(all.substr(0, cut), {true, false});
    QVERIFY(int64_t(m_evalTokens.size()) > kPplChunks * kContext);
}

double TestDbLlmStories260K::ppl(std::shared_ptr<const Checkpoint> checkpoint) {
    return test::paperPerplexity(std::move(checkpoint), m_evalTokens, kContext, kPplChunks);
}

std::shared_ptr<const Checkpoint> TestDbLlmStories260K::studentCheckpoint(DbLlmTarget &target) {
    auto c = std::make_shared<Checkpoint>(*m_fp);
    for (int64_t l = 0; l < int64_t(c->weights.layers.size()); ++l)
        for (LinearKind kind : kAllLinearKinds) {
            Tensor &w = linearWeight(c->weights.layers[size_t(l)], kind);
            auto values = target.student().mergedWeight(l, linearKindName(kind));
            if (!values.ok())
                return nullptr;
            w = Tensor::fromFloats(w.name, {w.rows(), w.cols()}, values->data(), DType::F32);
        }
    return c;
}

std::shared_ptr<const Checkpoint> TestDbLlmStories260K::quantized(const std::string &method) {
    QuantizeOptions q;
    q.method = method;
    q.bits = 2;
    q.groupSize = 64;
    q.threads = 2;
    q.calibration.samples = 32;
    q.calibration.tokens = 256;
    q.calibration.textPath = m_calibText;
    NullProgress progress;
    auto model = quantizeModel(*m_fp, q, progress);
    if (!model.ok()) {
        qWarning("%s 2-bit: %s", method.c_str(), model.error().message.c_str());
        return nullptr;
    }
    return model->checkpoint;
}

void TestDbLlmStories260K::untrainedStudentIsRtn2Bit() {
    auto target = DbLlmTarget::create(m_fp, {}, {}, 2);
    QVERIFY2(target.ok(), target.ok() ? "" : target.error().message.c_str());
    auto student = studentCheckpoint(**target);
    auto rtn = quantized("rtn");
    QVERIFY(student && rtn);
    const double s = ppl(student);
    m_rtnPpl = ppl(rtn);
    qInfo("stories260K PPL: FDB init %.6f, RTN 2-bit g64 %.6f", s, m_rtnPpl);
    QVERIFY(m_rtnPpl > 0);
    QVERIFY(std::abs(s - m_rtnPpl) <= 1e-4 * m_rtnPpl);
}

void TestDbLlmStories260K::distillationBeatsRtnAndGptq2Bit() {
    DistillationOptions distill;
    auto target = DbLlmTarget::create(m_fp, {}, distill, 2);
    QVERIFY(target.ok());
    DistillDataOptions d;
    d.sequences = 128;
    d.tokensPerSequence = 256;
    d.greedyPrefixTokens = 2;
    d.sampling.seed = 1;
    auto data = generateDistillationData((*target)->teacher(), d);
    QVERIFY2(data.ok(), data.ok() ? "" : data.error().message.c_str());
    TrainerOptions o;
    o.steps = 150;
    o.batchSize = 8;
    o.schedule.peak = 1e-3;
    o.maxGradNorm = 1.0;
    Trainer trainer(**target, *data, o);
    NullProgress progress;
    auto report = trainer.run(progress);
    QVERIFY2(report.ok(), report.ok() ? "" : report.error().message.c_str());
    const auto &h = report->history;
    const double fp = ppl(m_fp), trained = ppl(studentCheckpoint(**target)),
                 gptq = ppl(quantized("gptq"));
    const double rtn = m_rtnPpl > 0 ? m_rtnPpl : ppl(quantized("rtn"));
    qInfo("stories260K PPL (ctx %lld, %lld chunks): FP %.4f  RTN 2-bit g64 %.4f  GPTQ 2-bit g64 "
          "%.4f  DB-LLM (FDB+DAD, %lld steps x %lld seqs) %.4f; distillation loss %.4f -> %.4f, "
          "%.0f tok/s",
          static_cast<long long>(kContext), static_cast<long long>(kPplChunks), fp, rtn, gptq,
          static_cast<long long>(o.steps), static_cast<long long>(o.batchSize), trained,
          h.front().loss, h.back().loss, report->tokensPerSecond);
    QVERIFY(h.back().loss < h.front().loss);
    QVERIFY2(trained > 0 && trained < rtn,
             qPrintable(QString("%1 vs RTN %2").arg(trained).arg(rtn)));
    QVERIFY2(trained < gptq, qPrintable(QString("%1 vs GPTQ %2").arg(trained).arg(gptq)));
}

QTEST_APPLESS_MAIN(TestDbLlmStories260K)
#include "test_dbllm_stories260k.moc"
