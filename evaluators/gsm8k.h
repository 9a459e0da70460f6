// GSM8K k-shot with greedy generation, as lm-evaluation-harness's `gsm8k` task (version 3):
//   exemplars: random.Random(1234).sample(train, k) drawn anew for each test document in document
//              order (lm-eval's default ContextSampler with fewshot seed 1234), so document i gets
//              the i-th draw whatever subsample is scored;
//   prompt:    for each exemplar "Question: {q}\nAnswer: {full worked answer}\n\n", then
//              "Question: {q}\nAnswer:";
//   generation: greedy, at most 256 new tokens, stop at "Question:", "</s>", "<|eot_id|>" (and an
//              end-of-generation id);
//   filters:   strict-match  = first "#### (-?[0-9.,]+)" group;
//              flexible-extract = last match of "(-?[$0-9.,]{2,})|(-?[0-9]+)";
//   exact_match after removing ",", "$", everything through the last "#### ", a final ".", and
//              lower-casing, on both prediction and reference.
#pragma once

#include "task.h"

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace lowbit {

struct Gsm8kProblem {
    int64_t index = 0;
    std::string question;
    std::string answer; // worked solution ending in "#### N"
};

Result<std::vector<Gsm8kProblem>> readGsm8k(const std::filesystem::path &file);

std::string gsm8kPrompt(std::span<const Gsm8kProblem> shots, const Gsm8kProblem &problem);
// Exemplar indices into the train split for documents 0..documents-1 (k each).
std::vector<std::vector<int64_t>> gsm8kFewshotIndices(int64_t documents, int64_t trainSize, int k,
                                                      uint64_t seed = 1234);

inline constexpr const char *kGsm8kInvalid = "[invalid]";
std::string gsm8kStrictExtract(const std::string &response);
std::string gsm8kFlexibleExtract(const std::string &response);
// lm-eval exact_match normalisation (regexes_to_ignore + ignore_case).
std::string gsm8kNormalize(std::string text);
bool gsm8kExactMatch(const std::string &prediction, const std::string &reference);

std::unique_ptr<Task> makeGsm8kTask(const std::filesystem::path &dataDir);

} // namespace lowbit
