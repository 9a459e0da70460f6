// Done-when 3: stories260K teacher-forced NLL on the first 50 TinyStories validation stories,
// protocol of stories260K.tinystories_val_ppl_reference.json (BOS + run.c encoding, truncated to
// seq_len 512, tokens 1..n-1 predicted): mean 1.2882 +/- 0.0005 nats/token, and every story's token
// count as the reference's.
#include "shared_data.h"

#include "model/checkpoint.h"
#include "runtime/log_prob.h"
#include "runtime/model.h"

#include <nlohmann/json.hpp>

#include <QtTest>

using namespace lowbit;

class TestTinyStoriesNll : public QObject {
    Q_OBJECT
private slots:
    void meanNll();
};

void TestTinyStoriesNll::meanNll() {
    LOWBIT_REQUIRE_SHARED_FILE(modelPath, "data/llama2c/stories260K.bin");
    LOWBIT_REQUIRE_SHARED_FILE(tokPath, "data/llama2c/tok512.bin");
    LOWBIT_REQUIRE_SHARED_FILE(textPath, "data/tinystories/tinystories_val_first1000.txt");
    LOWBIT_REQUIRE_SHARED_FILE(refPath, "data/llama2c/stories260K.tinystories_val_ppl_reference.json");
    const auto ref = nlohmann::json::parse(test::readFile(refPath));
    auto checkpoint = loadCheckpoint(modelPath, {tokPath});
    QVERIFY(checkpoint.ok());
    auto model = Model::create(std::make_shared<const Checkpoint>(std::move(*checkpoint)), {2});
    QVERIFY(model.ok());
    const Tokenizer &tokenizer = *(*model)->tokenizer();

    const std::string text = test::readFile(textPath);
    const std::string separator = "<|endoftext|>";
    const int stories = ref["stories"].get<int>();
    double sumNll = 0;
    int64_t predicted = 0;
    size_t pos = 0;
    KvCache cache = (*model)->makeCache(1, 512);
    for (int s = 0; s < stories; ++s) {
        const size_t end = text.find(separator, pos);
        QVERIFY(end != std::string::npos);
        std::string story = text.substr(pos, end - pos);
        pos = end + separator.size();
        const size_t first = story.find_first_not_of('\n'), last = story.find_last_not_of('\n');
        story = story.substr(first, last - first + 1);
        std::vector<int32_t> ids = tokenizer.encode(story, {true, false});
        if (ids.size() > 512)
            ids.resize(512);
        QCOMPARE(int64_t(ids.size()), ref["per_story"][size_t(s)]["n_tokens"].get<int64_t>());
        cache.clear(0);
        SequenceInput input{0, ids, LogitsWanted::All};
        auto logits = (*model)->forward(cache, {&input, 1});
        QVERIFY(logits.ok());
        for (size_t t = 0; t + 1 < ids.size(); ++t)
            sumNll -= logProbability(logits->row(int64_t(t)), logits->vocab, ids[t + 1]);
        predicted += int64_t(ids.size()) - 1;
    }
    QCOMPARE(predicted, ref["predicted_tokens"].get<int64_t>());
    const double mean = sumNll / double(predicted);
    QVERIFY2(std::abs(mean - 1.2882) <= 0.0005, qPrintable(QString("mean NLL %1").arg(mean, 0, 'f', 6)));
    QVERIFY2(std::abs(mean - ref["mean_nll"].get<double>()) <= 1e-4,
             qPrintable(QString("mean NLL %1 vs reference %2").arg(mean, 0, 'f', 6).arg(ref["mean_nll"].get<double>())));
}

QTEST_APPLESS_MAIN(TestTinyStoriesNll)
#include "test_tinystories_nll.moc"
