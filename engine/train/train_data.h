// Training data: files -> tokenized TrainExamples (train_types.h).
//
// Formats (DataFormat::Auto picks by extension and content):
//   Alpaca   JSON array (or JSONL) of {instruction, input, output}; LIMA's LLaMA-Factory copy adds
//            `history` = earlier [user, assistant] pairs. Source and target follow QLoRA's
//            DataCollatorForCausalLM (artidoro/qlora, qlora.py): source = BOS + the
//            ALPACA_PROMPT_DICT prompt ("Below is an instruction ... ###
//            Instruction:\n{instruction}
//            [\n\n### Input:\n{input}]\n\n### Response: "), target = output + EOS, each tokenized
//            separately (no special tokens added) and truncated to sourceMaxTokens /
//            targetMaxTokens (first tokens kept); the loss covers the target only unless
//            trainOnSource. History turns precede the instruction as "### Instruction:" /
//            "### Response: " blocks of the source.
//   Chat     JSONL of {"messages"|"conversations": [{role|from, content|value}]}: rendered through
//            the checkpoint's chat template (engine/tokenizer/chat_template.h) with the loss on
//            assistant turns; without a template, in the Guanaco format QLoRA trained OASST1 on
//            ("### Human: {user}### Assistant: {assistant}", timdettmers/openassistant-guanaco).
//   Oasst    OpenAssistant trees JSONL ({message_tree_id, prompt: {text, role, replies}}): each
//            tree becomes one conversation by following the best-ranked reply (rank 0, else the
//            first) at every level, as openassistant-guanaco did; synthetic trees are skipped
//            unless includeSynthetic. Then as Chat.
//   Text     plain text (or JSONL of strings): BOS + the whole text tokenized once, cut into
//            non-overlapping windows of textWindowTokens predicting their next tokens (language
//            modelling, e.g. TinyStories).
// Errors name the file and the line (JSONL line, or the line where a JSON array row starts).
#pragma once

#include "core/result.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"
#include "train/train_types.h"

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace lowbit::train {

enum class DataFormat { Auto, Alpaca, Chat, Oasst, Text };
Result<DataFormat> parseDataFormat(std::string_view name); // "auto", "alpaca", "chat", ...
const char *dataFormatName(DataFormat format);

struct DataOptions {
    DataFormat format = DataFormat::Auto;
    int64_t sourceMaxTokens = 384; // QLoRA --source_max_len
    int64_t targetMaxTokens = 128; // QLoRA --target_max_len
    bool trainOnSource = false;
    int64_t textWindowTokens = 256;
    bool includeSynthetic = false; // OASST trees written by a model
    int64_t maxExamples = 0;       // 0: all
};

struct DataSet {
    DataFormat format = DataFormat::Auto; // the format actually read
    std::vector<TrainExample> examples;
    int64_t skipped = 0;      // rows without any scored token after truncation, synthetic trees
    int64_t scoredTokens = 0; // over all examples
};

// Reads `path`. `chat` is the checkpoint's chat template (nullptr: none, Guanaco fallback).
Result<DataSet> loadTrainingData(const std::filesystem::path &path, const Tokenizer &tokenizer,
                                 const DataOptions &options, const ChatTemplate *chat = nullptr);

// The QLoRA / Alpaca prompt of one row (qlora.py ALPACA_PROMPT_DICT; input empty: no-input form).
std::string alpacaPrompt(std::string_view instruction, std::string_view input);

// One source/target example: tokens = source ++ target, targets shifted by one, the source's
// predictions masked unless trainOnSource. Both parts are truncated to their maxima first.
TrainExample makeSourceTargetExample(std::vector<int32_t> source, std::vector<int32_t> target,
                                     const DataOptions &options);

// A conversation as text segments: each segment's tokens are scored (assistant content and its
// end-of-turn) or not. Consecutive segments concatenate to the rendered conversation.
struct TextSegment {
    std::string text;
    bool scored = false;
};
Result<std::vector<TextSegment>> conversationSegments(std::span<const ChatMessage> messages,
                                                      const ChatTemplate *chat,
                                                      const Tokenizer &tokenizer);

} // namespace lowbit::train
