// makeTask / listTasks / defaultDataDir (task.h): the names the CLI, job specs and the store use.
#include "gsm8k.h"
#include "kl_divergence.h"
#include "mmlu.h"
#include "multiple_choice.h"
#include "perplexity_tasks.h"
#include "safety.h"
#include "task.h"

#include <cstdlib>

namespace lowbit {

std::filesystem::path defaultDataDir() {
    if (const char *env = std::getenv("LOWBIT_DATA_DIR"); env && *env)
        return env;
    if (const char *env = std::getenv("LOWBIT_SHARED_DIR"); env && *env)
        return std::filesystem::path(env) / "data";
#ifdef LOWBIT_SOURCE_DIR
    return std::filesystem::path(LOWBIT_SOURCE_DIR).parent_path() / "shared" / "data";
#else
    return std::filesystem::path("..") / "shared" / "data";
#endif
}

Result<std::unique_ptr<Task>> makeTask(const std::string &name, const std::filesystem::path &dataDir) {
    if (name == "wikitext2" || name == "c4" || name == "ptb" || name == "tinystories" || name.rfind("text:", 0) == 0) {
        LOWBIT_TRY(CorpusSpec spec, corpusSpec(name, dataDir));
        return makePerplexityTask(spec);
    }
    if (name == "kld" || name.rfind("kld:", 0) == 0) {
        if (auto task = makeKldTask(name, dataDir))
            return task;
        return makeError(ErrorCode::NotFound, "task '" + name + "': kld:CORPUS needs a perplexity corpus name");
    }
    if (name == "mmlu")
        return makeMmluTask(dataDir);
    if (name == "gsm8k")
        return makeGsm8kTask(dataDir);
    if (auto task = makeMultipleChoiceTask(name, dataDir))
        return task;
    if (auto task = makeSafetyTask(name, dataDir))
        return task;
    return makeError(ErrorCode::NotFound, "unknown task '" + name + "' (see `lowbit tasks`)");
}

std::vector<TaskInfo> listTasks(const std::filesystem::path &dataDir) {
    std::vector<TaskInfo> tasks;
    auto add = [&](std::string name, std::string description, std::vector<std::filesystem::path> files) {
        TaskInfo info{std::move(name), std::move(description), std::move(files), true};
        for (const auto &file : info.dataFiles)
            info.dataFound = info.dataFound && std::filesystem::exists(file);
        tasks.push_back(std::move(info));
    };
    for (const char *corpus : {"wikitext2", "c4", "ptb", "tinystories"}) {
        auto spec = corpusSpec(corpus, dataDir);
        add(corpus, "perplexity (paper or llama.cpp protocol)", {spec->file});
    }
    add("text:PATH", "perplexity of any text file", {});
    add("kld", "KL-divergence vs a base run on WikiText-2 (kld:CORPUS for another corpus)",
        {corpusSpec("wikitext2", dataDir)->file});
    for (const char *mc : {"piqa", "arc_easy", "arc_challenge", "hellaswag", "winogrande"})
        add(mc, "zero-shot multiple choice (acc, acc_norm)", multipleChoiceFiles(mc, dataDir));
    add("mmlu", "MMLU 5-shot (57 subjects, 4 categories)",
        {dataDir / "mmlu" / "data" / "test", dataDir / "mmlu" / "data" / "dev", dataDir / "mmlu" / "categories.py"});
    add("gsm8k", "GSM8K 5-shot greedy (strict and flexible exact match)",
        {dataDir / "gsm8k" / "test.jsonl", dataDir / "gsm8k" / "train.jsonl"});
    add("advbench", "AdvBench harmful behaviours: refusal rate", safetyFiles("advbench", dataDir));
    add("harmbench", "HarmBench text behaviours: refusal rate", safetyFiles("harmbench", dataDir));
    add("xstest", "XSTest safe/unsafe prompts: refusal rates", safetyFiles("xstest", dataDir));
    return tasks;
}

} // namespace lowbit
