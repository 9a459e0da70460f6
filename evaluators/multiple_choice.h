// Zero-shot multiple choice with lm-evaluation-harness semantics (output_type: multiple_choice):
// each choice is a (context, " " + choice) log-likelihood request; `acc` picks the choice with the
// highest log-likelihood, `acc_norm` the highest log-likelihood per character of the choice
// (Python len, i.e. code points), ties to the first (numpy argmax).
// WinoGrande is scored by partial evaluation: each option is substituted into the sentence before
// the blank, giving one context per option, and the shared rest of the sentence is the scored
// continuation (lm-eval's preprocess_winogrande); only `acc` is reported, as lm-eval does.
//
// Datasets (original files in the data directory, see each SOURCES.md):
//   piqa          piqa/dev.jsonl + dev-labels.lst     "Question: {goal}\nAnswer:"  [sol1, sol2]
//   arc_easy      arc/ARC-Easy/ARC-Easy-Test.jsonl     "Question: {stem}\nAnswer:"  choices.text
//   arc_challenge arc/ARC-Challenge/ARC-Challenge-Test.jsonl
//   hellaswag     hellaswag/hellaswag_val_full.txt.bz2 (llama.cpp's 6-line format) with lm-eval's
//                 preprocess; see hellaswagQuery for what the text format cannot restore
//   winogrande    winogrande/dev.jsonl                 partial evaluation
#pragma once

#include "loglikelihood.h"
#include "task.h"

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace lowbit {

struct MultipleChoiceDoc {
    std::string id;
    std::string context;              // shared context (empty for partial evaluation)
    std::vector<std::string> choices; // as lm-eval's doc_to_choice (no target delimiter)
    int gold = -1;
    // Partial evaluation (WinoGrande): one context per choice, one shared continuation.
    std::vector<std::string> contexts;
    std::string continuation;
    bool partial() const { return !contexts.empty(); }
};

// The doc's requests in choice order, all in group `group` (their shared prefix runs once).
std::vector<LoglikelihoodRequest> multipleChoiceRequests(const MultipleChoiceDoc &doc, int64_t group);

struct MultipleChoiceScore {
    int pick = -1;     // argmax of log-likelihoods
    int pickNorm = -1; // argmax of log-likelihood / len(choice)
};
MultipleChoiceScore scoreMultipleChoice(const MultipleChoiceDoc &doc, std::span<const double> logLikelihoods);

// lm-eval's hellaswag preprocess(): strip, " [title]" -> ". ", drop "[...]", "  " -> " ".
std::string hellaswagPreprocess(std::string_view text);
// The query for a line "activity_label: ctx" of llama.cpp's format. lm-eval builds it from
// ctx_a + " " + ctx_b.capitalize(); the text format has lost the split, so the trailing fragment
// after the last sentence end is taken as ctx_b when it starts with a lower-case letter.
std::string hellaswagQuery(std::string_view line);

Result<std::vector<MultipleChoiceDoc>> loadPiqa(const std::filesystem::path &dataDir);
Result<std::vector<MultipleChoiceDoc>> loadArc(const std::filesystem::path &dataDir, bool challenge);
Result<std::vector<MultipleChoiceDoc>> loadHellaswag(const std::filesystem::path &dataDir);
Result<std::vector<MultipleChoiceDoc>> loadWinogrande(const std::filesystem::path &dataDir);
Result<std::vector<MultipleChoiceDoc>> parseHellaswag(std::string_view text, const std::filesystem::path &source);
Result<MultipleChoiceDoc> winograndeDoc(const nlohmann::json &row, const std::filesystem::path &source, int64_t line);

// The data files of a multiple-choice task ("piqa", "arc_easy", ...); empty for another name.
std::vector<std::filesystem::path> multipleChoiceFiles(const std::string &task, const std::filesystem::path &dataDir);
std::unique_ptr<Task> makeMultipleChoiceTask(const std::string &task, const std::filesystem::path &dataDir);

} // namespace lowbit
