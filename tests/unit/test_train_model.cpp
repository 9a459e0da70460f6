// Issue 8, done-when 1 for the whole model: TrainableModel's gradients against central
// differences in double (LoRA B and IR-QLoRA betas non-zero, masked targets, GQA, tied and
// untied heads, a trainable base), float32 against double, and its forward against independent
// references: the fixtures' float64 NumPy NLL and the inference engine on stories260K.
#include "shared_data.h"

#include "model/checkpoint.h"
#include "runtime/log_prob.h"
#include "runtime/model.h"
#include "train/lora_linear.h"
#include "train/trainable_model.h"

#include <nlohmann/json.hpp>

#include "gradient_check.h"

#include <QtTest>
#include <array>
#include <cmath>
#include <random>

using namespace lowbit;
using namespace lowbit::train;

namespace {

// A random 2-layer GQA model (4 query heads, 2 kv heads, head dim 4) with llama3 rope scaling
// whose band edges fall between its two frequencies.
Checkpoint tinyCheckpoint(bool tied, uint64_t seed) {
    Checkpoint ck;
    ck.path = "in-memory tiny model";
    ModelConfig &c = ck.config;
    c.vocabSize = 11, c.hiddenSize = 16, c.intermediateSize = 24, c.numLayers = 2;
    c.numHeads = 4, c.numKvHeads = 2, c.headDim = 4, c.maxPositions = 80;
    c.ropeScaling = {RopeScaling::Type::Llama3, 8.0, 1.0, 4.0, 16};
    c.tieWordEmbeddings = tied;
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> normal(0.0f, 0.4f);
    auto tensor = [&](const char *name, std::vector<int64_t> shape, float offset = 0.0f) {
        std::vector<float> v(size_t(shape[0] * (shape.size() > 1 ? shape[1] : 1)));
        for (float &x : v)
            x = offset + normal(rng);
        return Tensor::fromFloats(name, std::move(shape), v.data());
    };
    const int64_t h = c.hiddenSize, q = c.numHeads * c.headDim, kv = c.numKvHeads * c.headDim;
    ModelWeights &w = ck.weights;
    w.tokenEmbedding = tensor("embed", {c.vocabSize, h});
    for (int64_t l = 0; l < c.numLayers; ++l)
        w.layers.push_back({tensor("attn_norm", {h}, 1.0f), tensor("q", {q, h}),
                            tensor("k", {kv, h}), tensor("v", {kv, h}), tensor("o", {h, q}),
                            tensor("ffn_norm", {h}, 1.0f), tensor("gate", {c.intermediateSize, h}),
                            tensor("up", {c.intermediateSize, h}),
                            tensor("down", {h, c.intermediateSize})});
    w.finalNorm = tensor("norm", {h}, 1.0f);
    w.output = tied ? w.tokenEmbedding : tensor("head", {c.vocabSize, h});
    return ck;
}

std::vector<TrainExample> tinyBatch() {
    // Masked positions (the "prompt") in both; the second example is shorter.
    return {{{3, 7, 1, 9, 4, 2}, {kIgnoreTarget, kIgnoreTarget, 9, 4, 2, 10}},
            {{5, 0, 8, 6}, {0, kIgnoreTarget, 6, 3}}};
}

// A trainable base exposing its dense weight as a parameter, as DB-LLM's will.
template <typename Real> class ParameterBase final : public LinearBase<Real> {
public:
    ParameterBase(const Tensor &w, std::string name) {
        m_weight.name = std::move(name);
        m_weight.shape = w.shape;
        const std::vector<float> values = tensorToFloats(w);
        m_weight.value.assign(values.begin(), values.end());
        m_weight.grad.assign(values.size(), Real(0));
    }
    int64_t rows() const override { return m_weight.shape[0]; }
    int64_t cols() const override { return m_weight.shape[1]; }
    const Real *weight() const override { return m_weight.value.data(); }
    std::vector<Parameter<Real> *> parameters() override { return {&m_weight}; }
    void backward(const Real *dWeight) override {
        for (size_t i = 0; i < m_weight.grad.size(); ++i)
            m_weight.grad[i] += dWeight[i];
    }

private:
    Parameter<Real> m_weight;
};

// Trainable bases on layer 0's k_proj and layer 1's down_proj.
template <typename Real> LinearBaseFactory<Real> someTrainableBases() {
    return [](int64_t layer, std::string_view proj,
              const Tensor &w) -> Result<std::unique_ptr<LinearBase<Real>>> {
        if ((layer == 0 && proj == "k_proj") || (layer == 1 && proj == "down_proj"))
            return std::unique_ptr<LinearBase<Real>>(new ParameterBase<Real>(
                w, "layer" + std::to_string(layer) + "." + std::string(proj)));
        const std::vector<float> v = tensorToFloats(w);
        return std::unique_ptr<LinearBase<Real>>(
            new DenseLinearBase<Real>(w.rows(), w.cols(), std::vector<Real>(v.begin(), v.end())));
    };
}

} // namespace

namespace {

using test::checkGradient;

template <typename Real> void randomizeAdapters(TrainableModel<Real> &model, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> uniform(-0.3, 0.3);
    for (Parameter<Real> *p : model.parameters())
        if (p->name.find("lora_") != std::string::npos)
            for (Real &v : p->value)
                v = Real(float(uniform(rng))); // float-representable: same values in both types
}

LoraOptions smallLora(bool elastic, int rank = 4) {
    LoraOptions lora;
    lora.rank = rank;
    lora.alpha = 8;
    lora.elasticConnection = elastic;
    lora.seed = 3;
    return lora;
}

} // namespace

class TestTrainModel : public QObject {
    Q_OBJECT
private slots:
    void gradients_data();
    void gradients();
    void floatMatchesDouble();
    void threadCountDoesNotChangeResults();
    void customLossFunction();
    void mergedWeightsGiveSameLoss();
    void badInput();
    void forwardMatchesFixtureNll_data();
    void forwardMatchesFixtureNll();
    void forwardMatchesInferenceEngine();
};

void TestTrainModel::gradients_data() {
    QTest::addColumn<bool>("tied");
    QTest::addColumn<bool>("elastic");
    QTest::addColumn<bool>("trainableBase");
    QTest::addColumn<int>("rank");
    QTest::newRow("LoRA, untied head") << false << false << false << 4;
    QTest::newRow("LoRA + IEC, tied head") << true << true << false << 4;
    QTest::newRow("LoRA + IEC, trainable bases") << false << true << true << 4;
    QTest::newRow("LoRA + IEC, rank 5 divides no width") << false << true << false << 5;
}

void TestTrainModel::gradients() {
    QFETCH(bool, tied);
    QFETCH(bool, elastic);
    QFETCH(bool, trainableBase);
    QFETCH(int, rank);
    const Checkpoint ck = tinyCheckpoint(tied, 11);
    auto made = TrainableModel<double>::create(
        ck, smallLora(elastic, rank), trainableBase ? someTrainableBases<double>() : nullptr);
    QVERIFY2(made.ok(), made.ok() ? "" : made.error().message.c_str());
    TrainableModel<double> &model = **made;
    std::vector<Parameter<double> *> params = model.parameters();
    QCOMPARE(params.size(), size_t(2 * 7 * (elastic ? 4 : 2) + (trainableBase ? 2 : 0)));
    QCOMPARE(params[0]->name,
             std::string("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"));
    QCOMPARE(
        params.back()->name,
        trainableBase
            ? std::string("layer1.down_proj")
            : std::string(elastic
                              ? "base_model.model.model.layers.1.mlp.down_proj.lora_default_B_scale"
                              : "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"));
    randomizeAdapters(model, 12);

    const std::vector<TrainExample> batch = tinyBatch();
    model.zeroGrad();
    auto stats = model.accumulate(batch);
    QVERIFY(stats.ok());
    QCOMPARE(stats->scored, int64_t(7));
    auto loss = [&] { return model.evaluate(batch)->lossSum; };
    QVERIFY(std::abs(loss() - stats->lossSum) < 1e-12);
    for (Parameter<double> *p : params) {
        const QString mismatch = checkGradient(p->name, p->value, p->grad, loss);
        QVERIFY2(mismatch.isEmpty(), qPrintable(mismatch));
    }
    // A second accumulate adds: the grads double.
    const std::vector<double> once = params[1]->grad;
    QVERIFY(model.accumulate(batch).ok());
    for (size_t i = 0; i < once.size(); ++i)
        QVERIFY(std::abs(params[1]->grad[i] - 2 * once[i]) <= 1e-12 * (1 + std::abs(once[i])));
}

void TestTrainModel::floatMatchesDouble() {
    const Checkpoint ck = tinyCheckpoint(true, 21);
    auto d = TrainableModel<double>::create(ck, smallLora(true));
    auto f = TrainableModel<float>::create(ck, smallLora(true));
    QVERIFY(d.ok() && f.ok());
    randomizeAdapters(**d, 5);
    randomizeAdapters(**f, 5);
    const std::vector<TrainExample> batch = tinyBatch();
    auto ld = (*d)->accumulate(batch);
    auto lf = (*f)->accumulate(batch);
    QVERIFY(ld.ok() && lf.ok());
    QVERIFY(std::abs(ld->lossSum - lf->lossSum) < 1e-5 * std::abs(ld->lossSum));
    // float32 rounds each op to 6e-8 relative. A gradient element is a sum over positions and
    // features whose terms partly cancel (the IEC betas sum n·out terms to a small total), so its
    // float error scales with the largest gradients of the model, not with its own size:
    // measured ~1e-6 of the model's largest gradient.
    // Tolerance: 1e-4 of the tensor's largest gradient + 1e-5 of the model's; a wrong term in
    // the backward is O(1) of the tensor's scale and fails it.
    const auto pd = (*d)->parameters();
    const auto pf = (*f)->parameters();
    double global = 0;
    for (Parameter<double> *p : pd)
        for (double g : p->grad)
            global = std::max(global, std::abs(g));
    double worst = 0;
    for (size_t t = 0; t < pd.size(); ++t) {
        double scale = 0;
        for (double g : pd[t]->grad)
            scale = std::max(scale, std::abs(g));
        QVERIFY(scale > 0);
        for (size_t i = 0; i < pd[t]->grad.size(); ++i) {
            const double error = std::abs(double(pf[t]->grad[i]) - pd[t]->grad[i]);
            worst = std::max(worst, error / global);
            QVERIFY2(error < 1e-4 * scale + 1e-5 * global, pd[t]->name.c_str());
        }
    }
    qInfo("float32 vs float64 gradients: worst error %.3g of the largest gradient", worst);
}

// The pool splits GEMM outputs and attention heads, never a sum: 1 and 3 threads agree to
// rounding. One sequence is longer than the attention's 64-row query block.
void TestTrainModel::threadCountDoesNotChangeResults() {
    const Checkpoint ck = tinyCheckpoint(false, 61);
    auto one = TrainableModel<double>::create(ck, smallLora(true), {}, 1);
    auto three = TrainableModel<double>::create(ck, smallLora(true), {}, 3);
    QVERIFY(one.ok() && three.ok());
    randomizeAdapters(**one, 9);
    randomizeAdapters(**three, 9);
    std::vector<TrainExample> batch = tinyBatch();
    std::mt19937_64 rng(62);
    TrainExample longer;
    for (int t = 0; t < 70; ++t) {
        longer.tokens.push_back(int32_t(rng() % 11));
        longer.targets.push_back(t < 5 ? kIgnoreTarget : int32_t(rng() % 11));
    }
    batch.push_back(longer);
    auto a = (*one)->accumulate(batch);
    auto b = (*three)->accumulate(batch);
    QVERIFY(a.ok() && b.ok());
    QVERIFY(std::abs(a->lossSum - b->lossSum) < 1e-12 * a->lossSum);
    const auto pa = (*one)->parameters(), pb = (*three)->parameters();
    for (size_t t = 0; t < pa.size(); ++t)
        for (size_t i = 0; i < pa[t]->grad.size(); ++i)
            QVERIFY2(std::abs(pa[t]->grad[i] - pb[t]->grad[i]) <=
                         1e-12 * (1 + std::abs(pa[t]->grad[i])),
                     pa[t]->name.c_str());
}

namespace {

// A loss that is not cross-entropy: ½·Σ_j (z_j − c·target)² over the logits, recording which
// (example, position, target) it was asked about.
class SquaredLogits final : public LossFunction<double> {
public:
    std::vector<std::array<int64_t, 3>> seen;
    double score(int64_t example, int64_t position, int32_t target, std::span<const double> logits,
                 std::span<double> dLogits) override {
        seen.push_back({example, position, target});
        double loss = 0;
        for (size_t j = 0; j < logits.size(); ++j) {
            const double d = logits[j] - 0.1 * double(target);
            loss += 0.5 * d * d;
            dLogits[j] = d;
        }
        return loss;
    }
};

} // namespace

void TestTrainModel::customLossFunction() {
    const Checkpoint ck = tinyCheckpoint(true, 71);
    auto made = TrainableModel<double>::create(ck, smallLora(true));
    QVERIFY(made.ok());
    TrainableModel<double> &model = **made;
    randomizeAdapters(model, 72);
    const std::vector<TrainExample> batch = tinyBatch();
    SquaredLogits loss;
    QVERIFY(model.accumulate(batch, &loss).ok());
    const std::vector<std::array<int64_t, 3>> expected = {
        {0, 2, 9}, {0, 3, 4}, {0, 4, 2}, {0, 5, 10}, {1, 0, 0}, {1, 2, 6}, {1, 3, 3}};
    QCOMPARE(loss.seen, expected);
    auto value = [&] { return model.evaluate(batch, &loss)->lossSum; };
    for (Parameter<double> *p : model.parameters()) {
        const QString mismatch = checkGradient(p->name, p->value, p->grad, value);
        QVERIFY2(mismatch.isEmpty(), qPrintable(mismatch));
    }
}

void TestTrainModel::mergedWeightsGiveSameLoss() {
    const Checkpoint ck = tinyCheckpoint(false, 31);
    auto adapted = TrainableModel<double>::create(ck, smallLora(true));
    QVERIFY(adapted.ok());
    randomizeAdapters(**adapted, 7);
    TrainableModel<double> &withLora = **adapted;
    // The same model with each linear's base replaced by mergedWeight and no adapters.
    LoraOptions none;
    none.rank = 0;
    auto merged = TrainableModel<double>::create(
        ck, none,
        [&](int64_t layer, std::string_view proj,
            const Tensor &w) -> Result<std::unique_ptr<LinearBase<double>>> {
            LOWBIT_TRY(std::vector<double> m, withLora.mergedWeight(layer, proj));
            return std::unique_ptr<LinearBase<double>>(
                new DenseLinearBase<double>(w.rows(), w.cols(), std::move(m)));
        });
    QVERIFY(merged.ok());
    QVERIFY((*merged)->parameters().empty());
    const std::vector<TrainExample> batch = tinyBatch();
    const double a = withLora.evaluate(batch)->lossSum, b = (*merged)->evaluate(batch)->lossSum;
    QVERIFY2(std::abs(a - b) < 1e-10, qPrintable(QString("%1 vs %2").arg(a).arg(b)));
    QVERIFY(!withLora.mergedWeight(2, "q_proj").ok());
    QVERIFY(!withLora.mergedWeight(0, "qkv_proj").ok());
}

void TestTrainModel::badInput() {
    const Checkpoint ck = tinyCheckpoint(false, 41);
    auto made = TrainableModel<float>::create(ck, smallLora(false));
    QVERIFY(made.ok());
    TrainableModel<float> &model = **made;
    auto fails = [&](std::vector<TrainExample> batch, const char *needle) {
        auto r = model.accumulate(batch);
        return !r.ok() && r.error().message.find(needle) != std::string::npos;
    };
    QVERIFY(fails({{{1, 2, 3}, {2, 3}}}, "targets"));
    QVERIFY(fails({{{1, 2, 3}, {2, 3, 11}}}, "target 11 out of range"));
    QVERIFY(fails({{{1, -1, 3}, {2, 3, 4}}}, "token -1 out of range"));
    QVERIFY(fails({{std::vector<int32_t>(81, 1), std::vector<int32_t>(81, 1)}}, "context"));
    // An empty example changes nothing.
    const std::vector<TrainExample> one = {tinyBatch()[1]};
    const std::vector<TrainExample> withEmpty = {TrainExample{}, tinyBatch()[1], TrainExample{}};
    auto plain = model.evaluate(one), padded = model.evaluate(withEmpty);
    QVERIFY(plain.ok() && padded.ok());
    QCOMPARE(padded->scored, plain->scored);
    QCOMPARE(padded->lossSum, plain->lossSum);
    // Nothing scored: no loss, no gradient.
    model.zeroGrad();
    auto r = model.accumulate(std::vector<TrainExample>{{{1, 2}, {kIgnoreTarget, kIgnoreTarget}}});
    QVERIFY(r.ok());
    QCOMPARE(r->scored, int64_t(0));
    for (Parameter<float> *p : model.parameters())
        for (float g : p->grad)
            QCOMPARE(g, 0.0f);

    LoraOptions lora = smallLora(false);
    lora.targets = {"q_proj", "qkv"};
    auto unknown = TrainableModel<float>::create(ck, lora);
    QVERIFY(!unknown.ok() && unknown.error().message.find("qkv") != std::string::npos);
}

void TestTrainModel::forwardMatchesFixtureNll_data() {
    QTest::addColumn<QString>("fixture");
    QTest::newRow("tiny-llama3-a: BF16, GQA 4/2, untied") << "fixtures/tiny-llama3-a";
    QTest::newRow("tiny-llama3-b: F16, GQA 4/1, tied") << "fixtures/tiny-llama3-b";
}

void TestTrainModel::forwardMatchesFixtureNll() {
    QFETCH(QString, fixture);
    LOWBIT_REQUIRE_SHARED_FILE(dir, fixture.toStdString());
    auto ck = loadCheckpoint(dir);
    QVERIFY2(ck.ok(), ck.ok() ? "" : ck.error().message.c_str());
    LoraOptions lora; // QLoRA defaults; B = 0 leaves the forward unchanged
    lora.rank = 8;
    auto made = TrainableModel<double>::create(*ck, lora);
    QVERIFY(made.ok());
    const auto ref = nlohmann::json::parse(test::readFile(dir / "reference_logits.json"));
    int checked = 0;
    for (size_t s = 0; s < ref["sequences"].size(); ++s) {
        if (ref["nll"][s].is_null())
            continue;
        TrainExample ex;
        ex.tokens = ref["sequences"][s].get<std::vector<int32_t>>();
        for (size_t t = 0; t < ex.tokens.size(); ++t)
            ex.targets.push_back(t + 1 < ex.tokens.size() ? ex.tokens[t + 1] : kIgnoreTarget);
        auto stats = (*made)->evaluate({&ex, 1});
        QVERIFY(stats.ok());
        const double nll = stats->lossSum / double(stats->scored);
        const double expected = ref["nll"][s].get<double>();
        // Both float64 from the same stored weights: only summation order differs.
        QVERIFY2(std::abs(nll - expected) < 1e-9, qPrintable(QString("sequence %1: %2 vs NumPy %3")
                                                                 .arg(s)
                                                                 .arg(nll, 0, 'g', 15)
                                                                 .arg(expected, 0, 'g', 15)));
        ++checked;
    }
    QVERIFY(checked > 0);
}

void TestTrainModel::forwardMatchesInferenceEngine() {
    LOWBIT_REQUIRE_SHARED_FILE(path, "data/llama2c/stories260K.bin");
    auto ck = loadCheckpoint(path);
    QVERIFY2(ck.ok(), ck.ok() ? "" : ck.error().message.c_str());
    auto shared = std::make_shared<const Checkpoint>(std::move(*ck));
    auto engine = Model::create(shared, {1});
    QVERIFY(engine.ok());
    std::mt19937_64 rng(51);
    std::uniform_int_distribution<int32_t> token(0, int32_t(shared->config.vocabSize) - 1);
    std::vector<int32_t> ids(48);
    for (int32_t &id : ids)
        id = token(rng);
    KvCache cache = (*engine)->makeCache(1, int64_t(ids.size()));
    SequenceInput in{.slot = 0, .tokens = ids, .logits = LogitsWanted::All};
    auto logits = (*engine)->forward(cache, {&in, 1});
    QVERIFY(logits.ok());
    double engineLoss = 0;
    for (size_t t = 0; t + 1 < ids.size(); ++t)
        engineLoss -= logProbability(logits->row(int64_t(t)), logits->vocab, ids[t + 1]);
    TrainExample ex{ids, {}};
    for (size_t t = 0; t < ids.size(); ++t)
        ex.targets.push_back(t + 1 < ids.size() ? ids[t + 1] : kIgnoreTarget);
    auto d = TrainableModel<double>::create(*shared, LoraOptions{});
    auto f = TrainableModel<float>::create(*shared, LoraOptions{});
    QVERIFY(d.ok() && f.ok());
    const double lossD = (*d)->evaluate({&ex, 1})->lossSum;
    const double lossF = (*f)->evaluate({&ex, 1})->lossSum;
    // The engine computes in float32: agreement to its rounding, ~1e-6 relative per op.
    QVERIFY2(
        std::abs(lossD - engineLoss) < 1e-4 * engineLoss,
        qPrintable(
            QString("double %1 vs engine %2").arg(lossD, 0, 'g', 10).arg(engineLoss, 0, 'g', 10)));
    QVERIFY2(
        std::abs(lossF - engineLoss) < 1e-4 * engineLoss,
        qPrintable(
            QString("float %1 vs engine %2").arg(lossF, 0, 'g', 10).arg(engineLoss, 0, 'g', 10)));
}

QTEST_APPLESS_MAIN(TestTrainModel)
#include "test_train_model.moc"
