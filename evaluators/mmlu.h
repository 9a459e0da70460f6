// MMLU (Hendrycks et al.) k-shot, as lm-evaluation-harness's `mmlu` group scores it:
//   prompt = "The following are multiple choice questions (with answers) about {subject}.\n\n"
//            + k exemplars (the first k rows of {subject}_dev.csv), each
//              "{question.strip()}\nA. {A}\nB. {B}\nC. {C}\nD. {D}\nAnswer: {letter}\n\n"
//            + "{question.strip()}\nA. {A}\nB. {B}\nC. {C}\nD. {D}\nAnswer:"
//   choices " A", " B", " C", " D"; acc = argmax log-likelihood == answer.
// ({subject} with underscores as spaces.) Results per subject, per category of
// data/mmlu/categories.py (STEM, humanities, social sciences, other), and overall weighted by
// subject size (the mean over all questions). The k-shot header is shared by every question of a
// subject, so the engine keeps it in the cache: a question costs little more than its own tokens.
// limit N: a seeded subsample of N questions per subject (lm-eval applies --limit per subtask).
#pragma once

#include "task.h"

#include <array>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace lowbit {

struct MmluQuestion {
    std::string subject;
    int64_t index = 0; // row in its file
    int64_t line = 0;
    std::string question;
    std::array<std::string, 4> choices;
    int answer = -1;   // 0..3
};

// A {subject}_{split}.csv file: no header, question,A,B,C,D,answer-letter per record.
Result<std::vector<MmluQuestion>> readMmluCsv(const std::filesystem::path &file, const std::string &subject);

std::string mmluDescription(const std::string &subject);
std::string mmluQuestionText(const MmluQuestion &question);
// The description and the k exemplars, each followed by "\n\n": what every prompt of the subject
// starts with (the engine's shared prefix).
std::string mmluHeader(const std::string &subject, std::span<const MmluQuestion> shots);
// The full k-shot context (ends with "Answer:"), exactly as lm-eval builds it.
std::string mmluPrompt(const std::string &subject, std::span<const MmluQuestion> shots,
                       const MmluQuestion &question);

// categories.py: subject -> category key ("stem", "humanities", "social_sciences", "other").
Result<std::map<std::string, std::string>> parseMmluCategories(std::string_view text,
                                                              const std::filesystem::path &source);
// Subjects with a test file under data/mmlu/data/test, sorted.
std::vector<std::string> mmluSubjects(const std::filesystem::path &dataDir);

std::unique_ptr<Task> makeMmluTask(const std::filesystem::path &dataDir);

} // namespace lowbit
