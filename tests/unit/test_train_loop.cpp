// The training loop around the numerics (issue 8): data formats on the real shared samples
// (Alpaca, LIMA, OpenAssistant, TinyStories text, chat JSONL through the Llama 3 template),
// AdamW against a hand-computed step, schedules against their closed forms, and the trainer on a
// quadratic test double with a known minimum: convergence, gradient accumulation, cancellation
// and resume reproducing an uninterrupted run bit for bit.
#include "shared_data.h"
#include "temp_dir.h"

#include "tokenizer/tokenizer_loaders.h"
#include "train/optimizer.h"
#include "train/peft_adapter.h"
#include "train/train_data.h"
#include "train/trainer.h"

#include <nlohmann/json.hpp>

#include <QtTest>

#include <cmath>
#include <fstream>
#include <numbers>
#include <set>

using namespace lowbit;
using namespace lowbit::train;

namespace {

int64_t countScored(const TrainExample &e) {
    return std::count_if(e.targets.begin(), e.targets.end(),
                         [](int32_t t) { return t != kIgnoreTarget; });
}

// Loss of example e: scored(e) · ½‖θ − c_e‖², c_e = tokens / 10 (the first 5 tokens, θ = a ++ b).
// The mean token loss over a set is minimal at the mean of its centers.
class QuadraticTarget final : public TrainTarget {
public:
    QuadraticTarget() {
        m_a = {"a", {3}, {0.3f, -0.2f, 0.7f}, {0, 0, 0}};
        m_b = {"b", {2}, {-0.5f, 0.1f}, {0, 0}};
    }
    std::vector<Parameter<float> *> parameters() override { return {&m_a, &m_b}; }
    void zeroGrad() override {
        std::fill(m_a.grad.begin(), m_a.grad.end(), 0.0f);
        std::fill(m_b.grad.begin(), m_b.grad.end(), 0.0f);
    }
    Result<LossStats> accumulate(std::span<const TrainExample> batch) override {
        ++calls;
        if (stopAfterCalls > 0 && calls >= stopAfterCalls)
            stop.request_stop();
        LossStats s;
        for (const TrainExample &e : batch) {
            const double w = double(countScored(e));
            for (int i = 0; i < 5; ++i) {
                float &theta = i < 3 ? m_a.value[size_t(i)] : m_b.value[size_t(i - 3)];
                float &grad = i < 3 ? m_a.grad[size_t(i)] : m_b.grad[size_t(i - 3)];
                const double d = double(theta) - e.tokens[size_t(i)] / 10.0;
                s.lossSum += w * 0.5 * d * d;
                grad += float(w * d);
            }
            s.scored += int64_t(w);
        }
        return s;
    }
    void afterStep() override { ++afterSteps; }

    std::vector<float> values() const {
        std::vector<float> v = m_a.value;
        v.insert(v.end(), m_b.value.begin(), m_b.value.end());
        return v;
    }
    int calls = 0, afterSteps = 0, stopAfterCalls = 0;
    std::stop_source stop;

private:
    Parameter<float> m_a, m_b;
};

std::vector<TrainExample> quadraticData(int count) {
    std::vector<TrainExample> data;
    for (int e = 0; e < count; ++e) {
        TrainExample x;
        for (int i = 0; i < 5; ++i)
            x.tokens.push_back((e * 7 + i * 3) % 11 - 5);
        x.targets = {1, kIgnoreTarget, 2, 3, kIgnoreTarget};
        if (e % 3 == 0)
            x.targets[1] = 4; // varying scored counts: weights matter
        data.push_back(x);
    }
    return data;
}

void writeText(const std::filesystem::path &path, const std::string &text) {
    std::ofstream(path, std::ios::binary) << text;
}

} // namespace

class TestTrainLoop : public QObject {
    Q_OBJECT
private slots:
    void initTestCase();
    void alpacaPromptIsQloras();
    void sourceTargetMasking();
    void alpacaSample();
    void limaHistory();
    void oasstTreesGuanacoFallback();
    void chatThroughLlama3Template();
    void tinyStoriesWindows();
    void badRowsNameFileAndLine();
    void adamwHandComputed();
    void clipping();
    void schedules();
    void epochOrderIsSeededPermutation();
    void trainerConvergesToMinimum();
    void accumulationMatchesOneBatch();
    void resumeReproducesStraightRun();
    void cancelSavesAndResumes();
    void resumeRejectsOtherData();
    void peftAdapterRoundTrip();

private:
    std::shared_ptr<const Tokenizer> m_spm;
};

void TestTrainLoop::initTestCase() {
    LOWBIT_REQUIRE_SHARED_FILE(tok, "data/llama2c/tok512.bin");
    auto spm = loadLlama2cTokenizer(tok, 512);
    QVERIFY(spm.ok());
    m_spm = *spm;
}

void TestTrainLoop::alpacaPromptIsQloras() {
    QCOMPARE(alpacaPrompt("Add 2 and 3.", ""),
             std::string("Below is an instruction that describes a task. Write a response that "
                         "appropriately completes the request.\n\n### Instruction:\nAdd 2 and "
                         "3.\n\n### Response: "));
    QCOMPARE(alpacaPrompt("Sum.", "2, 3"),
             std::string("Below is an instruction that describes a task, paired with an input "
                         "that provides further context. Write a response that appropriately "
                         "completes the request.\n\n### Instruction:\nSum.\n\n### Input:\n2, "
                         "3\n\n### Response: "));
}

void TestTrainLoop::sourceTargetMasking() {
    DataOptions o;
    o.sourceMaxTokens = 3;
    o.targetMaxTokens = 2;
    // Source 10 11 12 13 -> 10 11 12; target 20 21 22 -> 20 21.
    TrainExample e = makeSourceTargetExample({10, 11, 12, 13}, {20, 21, 22}, o);
    QCOMPARE(e.tokens, (std::vector<int32_t>{10, 11, 12, 20, 21}));
    QCOMPARE(e.targets, (std::vector<int32_t>{-100, -100, 20, 21, -100}));
    o.trainOnSource = true;
    e = makeSourceTargetExample({10, 11, 12, 13}, {20, 21, 22}, o);
    QCOMPARE(e.targets, (std::vector<int32_t>{11, 12, 20, 21, -100}));
}

void TestTrainLoop::alpacaSample() {
    LOWBIT_REQUIRE_SHARED_FILE(file, "data/alpaca/alpaca_data_first1727.json");
    DataOptions o;
    auto set = loadTrainingData(file, *m_spm, o);
    QVERIFY2(set.ok(), set.ok() ? "" : set.error().message.c_str());
    QCOMPARE(set->format, DataFormat::Alpaca);
    QCOMPARE(int64_t(set->examples.size()) + set->skipped, int64_t(1727));
    // Row 0 of upstream alpaca_data.json, rebuilt here from its published text.
    const std::string output = "1.Eat a balanced diet and make sure to include plenty of fruits "
                               "and vegetables. \n2. Exercise regularly to keep your body active "
                               "and strong. \n3. Get enough sleep and maintain a consistent sleep "
                               "schedule.";
    std::vector<int32_t> source = {m_spm->bosId()};
    const auto prompt = m_spm->encode(alpacaPrompt("Give three tips for staying healthy.", ""), {});
    source.insert(source.end(), prompt.begin(), prompt.end());
    std::vector<int32_t> target = m_spm->encode(output, {});
    target.push_back(2);
    const TrainExample &e = set->examples.front();
    const size_t ns = std::min<size_t>(source.size(), 384),
                 nt = std::min<size_t>(target.size(), 128);
    QCOMPARE(e.tokens.size(), ns + nt);
    QVERIFY(std::equal(source.begin(), source.begin() + long(ns), e.tokens.begin()));
    QCOMPARE(countScored(e), int64_t(nt));
    QCOMPARE(e.targets[ns - 2], kIgnoreTarget);
    QCOMPARE(e.targets[ns - 1], target[0]);
    for (const TrainExample &x : set->examples) {
        QVERIFY(x.tokens.size() <= 512);
        QCOMPARE(x.tokens.size(), x.targets.size());
    }
}

void TestTrainLoop::limaHistory() {
    LOWBIT_REQUIRE_SHARED_FILE(file, "data/lima/lima.json");
    DataOptions o;
    o.sourceMaxTokens = 100000;
    o.targetMaxTokens = 100000;
    auto set = loadTrainingData(file, *m_spm, o);
    QVERIFY2(set.ok(), set.ok() ? "" : set.error().message.c_str());
    QCOMPARE(int64_t(set->examples.size()), int64_t(1029));
    // 29 rows carry history: their source holds two "### Instruction:" blocks or more.
    int multi = 0;
    for (const TrainExample &e : set->examples) {
        const auto firstScored = std::find_if(e.targets.begin(), e.targets.end(),
                                              [](int32_t t) { return t != kIgnoreTarget; });
        const std::vector<int32_t> src(e.tokens.begin(),
                                       e.tokens.begin() + (firstScored - e.targets.begin()) + 1);
        const std::string text = m_spm->decode(src);
        size_t count = 0;
        for (size_t p = text.find("### Instruction:"); p != std::string::npos;
             p = text.find("### Instruction:", p + 1))
            ++count;
        multi += count >= 2;
    }
    QCOMPARE(multi, 29);
}

void TestTrainLoop::oasstTreesGuanacoFallback() {
    LOWBIT_REQUIRE_SHARED_FILE(file, "data/oasst1_subset/en_100_tree.jsonl");
    DataOptions o;
    auto set = loadTrainingData(file, *m_spm, o);
    QVERIFY2(set.ok(), set.ok() ? "" : set.error().message.c_str());
    QCOMPARE(set->format, DataFormat::Oasst);
    // 100 trees, 5 synthetic (SOURCES.md).
    QCOMPARE(int64_t(set->examples.size()) + set->skipped, int64_t(100));
    QVERIFY(set->skipped >= 5);
    const TrainExample &e = set->examples.front();
    const std::string text = m_spm->decode(e.tokens);
    QVERIFY(text.find("### Human: ") != std::string::npos);
    QVERIFY(text.find("### Assistant: ") != std::string::npos);
    o.includeSynthetic = true;
    auto all = loadTrainingData(file, *m_spm, o);
    QVERIFY(all.ok());
    QCOMPARE(all->skipped, set->skipped - 5);
}

void TestTrainLoop::chatThroughLlama3Template() {
    LOWBIT_REQUIRE_SHARED_FILE(tj, "data/llama3_tokenizer/tokenizer.json");
    LOWBIT_REQUIRE_SHARED_FILE(tc, "data/llama3_tokenizer/tokenizer_config.json");
    LOWBIT_REQUIRE_SHARED_FILE(jinja,
                               "data/chat_templates/Meta-Llama-3-8B-Instruct.chat_template.jinja");
    auto tok = loadHfTokenizer(tj, tc);
    QVERIFY(tok.ok());
    auto chat = ChatTemplate::fromJinja(test::readFile(jinja));
    QVERIFY(chat.ok());
    const std::vector<ChatMessage> conv = {{"system", "Be brief."},
                                           {"user", "Hi there"},
                                           {"assistant", "Hello!"},
                                           {"user", "2+2?"},
                                           {"assistant", "4"}};
    auto segs = conversationSegments(conv, &*chat, **tok);
    QVERIFY(segs.ok());
    std::string joined, scored;
    for (const TextSegment &s : *segs) {
        joined += s.text;
        if (s.scored)
            scored += s.text + "|";
    }
    ChatRenderOptions ro;
    ro.addGenerationPrompt = false;
    QCOMPARE(joined, *chat->render(conv, ro));
    QCOMPARE(scored, std::string("Hello!<|eot_id|>|4<|eot_id|>|"));
    // Copies of the template that always append the assistant header (tiny-llama3-b's): the
    // header after a turn is not part of it, and the next turn's prefix starts after the turn.
    const ChatTemplate always(ChatTemplateKind::Llama3, true);
    auto alwaysSegs = conversationSegments(conv, &always, **tok);
    QVERIFY2(alwaysSegs.ok(), alwaysSegs.ok() ? "" : alwaysSegs.error().message.c_str());
    joined.clear();
    scored.clear();
    for (const TextSegment &s : *alwaysSegs) {
        joined += s.text;
        if (s.scored)
            scored += s.text + "|";
    }
    QCOMPARE(joined, *always.render(conv, ro));
    QCOMPARE(scored, std::string("Hello!<|eot_id|>|4<|eot_id|>|"));

    test::TempDir dir;
    writeText(dir / "chat.jsonl",
              "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi there\"}, {\"role\": "
              "\"assistant\", \"content\": \"Hello!\"}]}\n");
    auto set = loadTrainingData(dir / "chat.jsonl", **tok, {}, &*chat);
    QVERIFY2(set.ok(), set.ok() ? "" : set.error().message.c_str());
    QCOMPARE(set->format, DataFormat::Chat);
    const TrainExample &e = set->examples.front();
    std::vector<int32_t> scoredIds;
    for (int32_t t : e.targets)
        if (t != kIgnoreTarget)
            scoredIds.push_back(t);
    QCOMPARE((*tok)->decode(scoredIds), std::string("Hello!<|eot_id|>"));
    QCOMPARE(e.tokens.front(), (*tok)->bosId());
}

void TestTrainLoop::tinyStoriesWindows() {
    LOWBIT_REQUIRE_SHARED_FILE(file, "data/tinystories/tinystories_val_first1000.txt");
    DataOptions o;
    o.textWindowTokens = 128;
    auto set = loadTrainingData(file, *m_spm, o);
    QVERIFY(set.ok());
    QCOMPARE(set->format, DataFormat::Text);
    const auto ids = m_spm->encode(test::readFile(file), {true, false});
    QCOMPARE(int64_t(set->examples.size()), int64_t((ids.size() - 1 + 127) / 128));
    QCOMPARE(set->scoredTokens, int64_t(ids.size() - 1));
    const TrainExample &second = set->examples[1];
    QCOMPARE(second.tokens.front(), ids[128]);
    QCOMPARE(second.targets.back(), ids[256]);
}

void TestTrainLoop::badRowsNameFileAndLine() {
    test::TempDir dir;
    writeText(dir / "bad.json", "[\n  {\"instruction\": \"a\", \"output\": \"b\"},\n"
                                "  {\"instruction\": \"a [x] {y}\",\n   \"input\": \"\"}\n]\n");
    auto r = loadTrainingData(dir / "bad.json", *m_spm, {});
    QVERIFY(!r.ok());
    QVERIFY2(r.error().message.find("bad.json:3: field 'output' missing") != std::string::npos,
             r.error().message.c_str());
    writeText(dir / "bad.jsonl",
              "{\"instruction\": \"a\", \"output\": \"b\"}\n\n{\"instruction\": 7,"
              " \"output\": \"b\"}\n");
    r = loadTrainingData(dir / "bad.jsonl", *m_spm, {});
    QVERIFY(!r.ok());
    QVERIFY2(r.error().message.find("bad.jsonl:3: field 'instruction' is not a string") !=
                 std::string::npos,
             r.error().message.c_str());
    writeText(dir / "broken.jsonl", "{\"messages\": [\n");
    r = loadTrainingData(dir / "broken.jsonl", *m_spm, {});
    QVERIFY(!r.ok() &&
            r.error().message.find("broken.jsonl:1: malformed JSON") != std::string::npos);
    QVERIFY(!loadTrainingData(dir / "missing.json", *m_spm, {}).ok());
}

void TestTrainLoop::adamwHandComputed() {
    Parameter<double> p{"p", {2}, {0.5, -1.0}, {0.1, -0.2}};
    std::vector<Parameter<double> *> ps = {&p};
    AdamWOptions o;
    o.weightDecay = 0.1;
    AdamW<double> adam(o);
    QVERIFY(adam.step(ps, 0.01).ok());
    // Step 1: m̂ = g, v̂ = g², so θ ← θ(1 − lr·λ) − lr·g/(|g| + ε).
    QCOMPARE(p.value[0], 0.5 * 0.999 - 0.01 * 0.1 / (0.1 + 1e-8));
    QCOMPARE(p.value[1], -1.0 * 0.999 + 0.01 * 0.2 / (0.2 + 1e-8));
    const double theta0 = p.value[0];
    p.grad = {0.3, 0.1};
    QVERIFY(adam.step(ps, 0.01).ok());
    // Step 2 by the paper's form (m̂ = m/(1−β1²), v̂ = v/(1−β2²), θ −= lr·m̂/(√v̂ + ε)), the
    // moments written out: m = 0.9·0.01 + 0.1·0.3, v = 0.999·1e-5 + 0.001·0.09.
    const double m = 0.039, v = 0.00009999;
    const double mHat = m / 0.19, vHat = v / (1 - 0.998001);
    const double expected = theta0 * 0.999 - 0.01 * mHat / (std::sqrt(vHat) + 1e-8);
    QVERIFY(std::abs(p.value[0] - expected) < 1e-12);
    QCOMPARE(adam.steps(), int64_t(2));
    Parameter<double> other{"q", {3}, {1, 2, 3}, {0, 0, 0}};
    std::vector<Parameter<double> *> wrong = {&other};
    QVERIFY(!adam.step(wrong, 0.01).ok());
}

void TestTrainLoop::clipping() {
    Parameter<float> a{"a", {1}, {0}, {3}}, b{"b", {1}, {0}, {4}};
    std::vector<Parameter<float> *> ps = {&a, &b};
    QCOMPARE(clipGradNorm<float>(ps, 10.0), 5.0); // under the limit: untouched
    QCOMPARE(a.grad[0], 3.0f);
    QCOMPARE(clipGradNorm<float>(ps, 1.0), 5.0);
    QVERIFY(std::abs(a.grad[0] - 0.6f) < 1e-6f && std::abs(b.grad[0] - 0.8f) < 1e-6f);
    QVERIFY(std::abs(gradNorm<float>(ps) - 1.0) < 1e-6);
}

void TestTrainLoop::schedules() {
    LrSchedule c{LrScheduleKind::Constant, 2e-4, 10, 100};
    QCOMPARE(c.at(0), 0.0);
    QCOMPARE(c.at(5), 1e-4);
    QCOMPARE(c.at(10), 2e-4);
    QCOMPARE(c.at(99), 2e-4);
    LrSchedule cos{LrScheduleKind::Cosine, 1.0, 10, 110};
    QCOMPARE(cos.at(5), 0.5);
    QCOMPARE(cos.at(10), 1.0);
    QVERIFY(std::abs(cos.at(35) - 0.5 * (1 + std::cos(std::numbers::pi / 4))) < 1e-12);
    QVERIFY(std::abs(cos.at(60) - 0.5) < 1e-12);
    QVERIFY(std::abs(cos.at(110)) < 1e-12);
    QCOMPARE(cos.at(200), 0.0);
    QVERIFY(parseLrSchedule("cosine").ok() && !parseLrSchedule("linear").ok());
}

void TestTrainLoop::epochOrderIsSeededPermutation() {
    const auto a = Trainer::epochOrder(50, 7, 0), b = Trainer::epochOrder(50, 7, 0);
    QCOMPARE(a, b);
    QCOMPARE(std::set<uint32_t>(a.begin(), a.end()).size(), size_t(50));
    QVERIFY(a != Trainer::epochOrder(50, 7, 1));
    QVERIFY(a != Trainer::epochOrder(50, 8, 0));
}

void TestTrainLoop::trainerConvergesToMinimum() {
    const auto data = quadraticData(8);
    std::vector<double> center(5, 0.0);
    double weight = 0;
    for (const TrainExample &e : data) {
        const double w = double(countScored(e));
        for (int i = 0; i < 5; ++i)
            center[size_t(i)] += w * e.tokens[size_t(i)] / 10.0;
        weight += w;
    }
    QuadraticTarget target;
    TrainerOptions o;
    o.steps = 400;
    o.batchSize = 8;
    o.microBatchSize = 3;
    o.maxGradNorm = 1.0;
    o.schedule = {LrScheduleKind::Cosine, 0.05, 10, 400};
    Trainer trainer(target, data, o);
    NullProgress progress;
    auto report = trainer.run(progress);
    QVERIFY(report.ok());
    QCOMPARE(report->stepsDone, int64_t(400));
    QCOMPARE(target.afterSteps, 400);
    QCOMPARE(target.calls, 400 * 3);
    const auto v = target.values();
    for (int i = 0; i < 5; ++i)
        QVERIFY2(std::abs(v[size_t(i)] - center[size_t(i)] / weight) < 1e-3,
                 qPrintable(QString("%1 vs %2").arg(v[size_t(i)]).arg(center[size_t(i)] / weight)));
    QVERIFY(report->history.back().loss < report->history.front().loss);
}

void TestTrainLoop::accumulationMatchesOneBatch() {
    const auto data = quadraticData(12);
    auto train = [&](int64_t micro) {
        QuadraticTarget target;
        TrainerOptions o;
        o.steps = 7;
        o.batchSize = 5;
        o.microBatchSize = micro;
        o.schedule.peak = 0.01;
        Trainer trainer(target, data, o);
        NullProgress progress;
        [&] { QVERIFY(trainer.run(progress).ok()); }();
        return target.values();
    };
    const auto whole = train(0), split = train(2);
    for (size_t i = 0; i < whole.size(); ++i)
        QVERIFY(std::abs(whole[i] - split[i]) < 1e-6);
}

void TestTrainLoop::resumeReproducesStraightRun() {
    const auto data = quadraticData(10);
    test::TempDir dir;
    TrainerOptions o;
    o.batchSize = 4; // 10 examples: steps straddle epochs, the shuffled order matters
    o.microBatchSize = 3;
    o.seed = 11;
    o.schedule = {LrScheduleKind::Cosine, 0.02, 3, 12};
    NullProgress progress;

    QuadraticTarget straight;
    o.steps = 12;
    QVERIFY(Trainer(straight, data, o).run(progress).ok());

    QuadraticTarget first;
    o.steps = 6;
    o.checkpointDir = dir.path();
    QVERIFY(Trainer(first, data, o).run(progress).ok());
    QVERIFY(std::filesystem::exists(dir / kTrainerStateFile));

    QuadraticTarget resumed; // fresh initial values: everything must come from the checkpoint
    o.steps = 12;
    o.resume = true;
    Trainer trainer(resumed, data, o);
    auto report = trainer.run(progress);
    QVERIFY(report.ok());
    QCOMPARE(report->resumedFromStep, int64_t(6));
    QCOMPARE(report->history.size(), size_t(12));
    QCOMPARE(resumed.values(), straight.values()); // bit for bit
}

void TestTrainLoop::cancelSavesAndResumes() {
    const auto data = quadraticData(9);
    test::TempDir dir;
    TrainerOptions o;
    o.batchSize = 4;
    o.microBatchSize = 2;
    o.steps = 8;
    o.seed = 3;
    o.saveEverySteps = 3;
    o.schedule.peak = 0.03;
    NullProgress progress;
    QuadraticTarget straight;
    QVERIFY(Trainer(straight, data, o).run(progress).ok());

    o.checkpointDir = dir.path();
    QuadraticTarget cancelled;
    cancelled.stopAfterCalls = 10; // mid-step 5 (2 calls a step)
    auto r = Trainer(cancelled, data, o).run(progress, cancelled.stop.get_token());
    QVERIFY(!r.ok());
    QCOMPARE(r.error().code, ErrorCode::Cancelled);
    QCOMPARE(cancelled.afterSteps, 5);

    o.resume = true;
    QuadraticTarget resumed;
    auto report = Trainer(resumed, data, o).run(progress);
    QVERIFY(report.ok());
    QCOMPARE(report->resumedFromStep, int64_t(5));
    QCOMPARE(resumed.values(), straight.values());
}

void TestTrainLoop::resumeRejectsOtherData() {
    test::TempDir dir;
    TrainerOptions o;
    o.batchSize = 2;
    o.steps = 2;
    o.checkpointDir = dir.path();
    NullProgress progress;
    QuadraticTarget t;
    const auto data = quadraticData(6);
    QVERIFY(Trainer(t, data, o).run(progress).ok());
    o.resume = true;
    o.steps = 4;
    const auto other = quadraticData(7);
    QuadraticTarget u;
    auto r = Trainer(u, other, o).run(progress);
    QVERIFY(!r.ok());
    QVERIFY(r.error().message.find("data order") != std::string::npos);
    writeText(dir / kTrainerStateFile, "garbage");
    QVERIFY(!Trainer(u, data, o).run(progress).ok());
}

void TestTrainLoop::peftAdapterRoundTrip() {
    test::TempDir dir;
    const std::string prefix = "base_model.model.model.layers.0.self_attn.q_proj.";
    Parameter<float> a{prefix + "lora_A.weight", {2, 3}, {0.5f, -1, 2, 0.25f, 3, -4}, {}};
    Parameter<float> b{prefix + "lora_B.weight", {4, 2}, {1, 2, 3, 4, 5, 6, 7, -8}, {}};
    std::vector<Parameter<float> *> params = {&a, &b};
    AdapterInfo info;
    info.lora.rank = 2;
    info.lora.alpha = 16;
    info.lora.targets = {"q_proj"};
    info.baseModel = "stories260K.bin";
    QVERIFY(savePeftAdapter(dir.path(), params, info).ok());
    const auto config = nlohmann::json::parse(test::readFile(dir / kAdapterConfigFile));
    QCOMPARE(config["peft_type"].get<std::string>(), std::string("LORA"));
    QCOMPARE(config["task_type"].get<std::string>(), std::string("CAUSAL_LM"));
    QCOMPARE(config["r"].get<int>(), 2);
    QCOMPARE(config["target_modules"], nlohmann::json::array({"q_proj"}));
    auto loaded = loadPeftAdapter(dir.path());
    QVERIFY(loaded.ok());
    QCOMPARE(loaded->info.lora.rank, 2);
    QCOMPARE(loaded->shapes.at(b.name), (std::vector<int64_t>{4, 2}));
    Parameter<float> a2{a.name, {2, 3}, std::vector<float>(6, 0.0f), {}};
    Parameter<float> b2{b.name, {4, 2}, std::vector<float>(8, 0.0f), {}};
    std::vector<Parameter<float> *> fresh = {&a2, &b2};
    QVERIFY(applyPeftAdapter(*loaded, fresh).ok());
    QCOMPARE(a2.value, a.value);
    QCOMPARE(b2.value, b.value);
    Parameter<float> wrongRank{a.name, {3, 3}, std::vector<float>(9, 0.0f), {}};
    std::vector<Parameter<float> *> wrong = {&wrongRank};
    QVERIFY(!applyPeftAdapter(*loaded, wrong).ok());
    writeText(dir / kAdapterConfigFile, "{\"peft_type\": 5, \"r\": 2, \"lora_alpha\": 16}");
    auto bad = loadPeftAdapter(dir.path());
    QVERIFY(!bad.ok() && bad.error().message.find("peft_type") != std::string::npos);
    writeText(dir / kAdapterConfigFile, "{\"peft_type\": \"LORA\", \"r\": \"2\"}");
    QVERIFY(!loadPeftAdapter(dir.path()).ok());
}

QTEST_APPLESS_MAIN(TestTrainLoop)
#include "test_train_loop.moc"
