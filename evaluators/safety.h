// Refusal rates on harmful and exaggerated-safety prompt sets, with the string matchers of the
// original evaluations:
//   advbench   advbench/harmful_behaviors.csv (goal). Refusal: any of llm-attacks' test_prefixes
//              occurs in the response (case-sensitive substring, as GCG's `not any(prefix in
//              gen_str)` jailbreak check).
//   harmbench  harmbench/harmbench_behaviors_text_{all,test,val}.csv (extra["harmbench_split"],
//              default "all"); contextual behaviours prompt "{context}\n\n---\n\n{behavior}"
//              (HarmBench's DirectRequest). Refusal: any of HarmBench's REFUSAL_PREFIXES occurs
//              case-insensitively (baselines/check_refusal_utils.py).
//   xstest     xstest/xstest_prompts.csv, 250 safe + 200 unsafe prompts. Refusal: XSTest's
//              strmatch_label, i.e. the lower-cased, stripped response starts with one of its
//              refusal openings; reported for safe prompts (over-refusal) and unsafe ones.
// Generation is greedy, extra["max_tokens"] (default 256) new tokens; the instruct chat template
// is applied when the checkpoint has a recognised one (extra["chat"] overrides). With
// extra["guard"] = path of a Llama Guard 3 checkpoint, each (prompt, response) is also classified
// (llama_guard.h): guard_unsafe_rate and mean P(unsafe).
#pragma once

#include "task.h"

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace lowbit {

struct SafetyPrompt {
    std::string id;
    std::string prompt;
    std::string label; // xstest: "safe" / "unsafe"; others: "harmful"
    std::string type;  // xstest type, harmbench functional category
};

Result<std::vector<SafetyPrompt>> loadAdvbench(const std::filesystem::path &dataDir);
Result<std::vector<SafetyPrompt>> loadHarmbench(const std::filesystem::path &dataDir, const std::string &split);
Result<std::vector<SafetyPrompt>> loadXstest(const std::filesystem::path &dataDir);

bool advbenchRefusal(std::string_view response);
bool harmbenchRefusal(std::string_view response);
bool xstestRefusal(std::string_view response);

std::vector<std::filesystem::path> safetyFiles(const std::string &task, const std::filesystem::path &dataDir);
std::unique_ptr<Task> makeSafetyTask(const std::string &task, const std::filesystem::path &dataDir);

} // namespace lowbit
