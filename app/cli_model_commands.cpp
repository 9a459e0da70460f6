// lowbit info / tokenize / logits / generate / ppl (the last three on --device cpu|cuda:N).
#include "cli_commands.h"
#include "cli_support.h"

#include "perplexity.h"
#include "runtime/generator.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer_loaders.h"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <set>

namespace lowbit::cli {

using nlohmann::json;

namespace {

const std::set<std::string> kCommonValues = {"model", "tokenizer", "threads"};

std::set<std::string> withCommon(std::set<std::string> extra) {
    extra.insert(kCommonValues.begin(), kCommonValues.end());
    return extra;
}

void printJson(const json &value) { std::printf("%s\n", value.dump().c_str()); }

// Bytes the weights occupy once loaded (tied tensors counted once).
uint64_t weightBytes(const ModelWeights &w) {
    std::set<const std::byte *> seen;
    uint64_t total = 0;
    auto count = [&](const Tensor &t) {
        if (!t.empty() && seen.insert(t.data).second)
            total += t.bytes();
    };
    count(w.tokenEmbedding);
    count(w.finalNorm);
    count(w.output);
    for (const LayerWeights &l : w.layers)
        for (const Tensor *t : {&l.attnNorm, &l.wq, &l.wk, &l.wv, &l.wo, &l.ffnNorm, &l.wGate, &l.wUp, &l.wDown})
            count(*t);
    return total;
}

json configJson(const ModelConfig &c) {
    const char *rope = c.ropeScaling.type == RopeScaling::Type::Llama3   ? "llama3"
                       : c.ropeScaling.type == RopeScaling::Type::Linear ? "linear"
                                                                         : "none";
    return {{"vocab_size", c.vocabSize}, {"hidden_size", c.hiddenSize},
            {"intermediate_size", c.intermediateSize}, {"num_hidden_layers", c.numLayers},
            {"num_attention_heads", c.numHeads}, {"num_key_value_heads", c.numKvHeads},
            {"head_dim", c.headDim}, {"max_position_embeddings", c.maxPositions},
            {"rms_norm_eps", c.rmsNormEps}, {"rope_theta", c.ropeTheta},
            {"rope_scaling", {{"type", rope}, {"factor", c.ropeScaling.factor}}},
            {"tie_word_embeddings", c.tieWordEmbeddings}, {"bos_token_id", c.bosId},
            {"eos_token_ids", c.eosIds}};
}


Result<std::vector<int32_t>> parseIdList(const std::string &text) {
    std::vector<int32_t> ids;
    size_t pos = 0;
    while (pos < text.size()) {
        size_t end = text.find(',', pos);
        if (end == std::string::npos)
            end = text.size();
        const std::string item = text.substr(pos, end - pos);
        char *stop = nullptr;
        const long long v = std::strtoll(item.c_str(), &stop, 10);
        if (item.empty() || *stop != '\0' || v < 0 || v > INT32_MAX)
            return makeError(ErrorCode::InvalidArgument, "--tokens: not a token id: '" + item + "'");
        ids.push_back(int32_t(v));
        pos = end + 1;
    }
    if (ids.empty())
        return makeError(ErrorCode::InvalidArgument, "--tokens: no ids given");
    return ids;
}

} // namespace

int runInfo(const std::vector<std::string> &argv) {
    auto args = Args::parse(argv, withCommon({}), {"json"});
    if (!args) return fail(args.error());
    auto checkpoint = loadModelArg(*args);
    if (!checkpoint) return fail(checkpoint.error());
    const Checkpoint &cp = **checkpoint;
    const ModelConfig &c = cp.config;
    const uint64_t weights = weightBytes(cp.weights);
    const uint64_t kvPerToken = uint64_t(2 * c.numLayers * c.numKvHeads * c.headDim) * sizeof(float);
    json out = {{"path", cp.path.string()},
                {"format", checkpointFormatName(cp.format)},
                {"config", configJson(c)},
                {"parameters", c.parameterCount()},
                {"bytes_by_stored_dtype", cp.bytesByStoredType},
                {"weight_bytes_in_memory", weights},
                {"kv_cache_bytes_per_token", kvPerToken},
                {"memory_bytes_at_context_2048", weights + 2048 * kvPerToken},
                {"chat_template", !cp.chatTemplate.empty()},
                {"metadata", cp.metadata}};
    if (cp.tokenizer)
        out["tokenizer"] = {{"kind", cp.tokenizer->kind()}, {"vocab_size", cp.tokenizer->vocabSize()},
                            {"bos_id", cp.tokenizer->bosId()}, {"eos_ids", cp.tokenizer->eosIds()}};
    else
        out["tokenizer"] = nullptr;
    if (args->has("json")) {
        printJson(out);
    } else {
        std::printf("%s\n", out.dump(2).c_str());
    }
    return 0;
}

int runTokenize(const std::vector<std::string> &argv) {
    auto args = Args::parse(argv, withCommon({"text"}), {"json", "bos", "special"});
    if (!args) return fail(args.error());
    const auto text = args->value("text");
    if (!text) return fail("tokenize: --text is required");
    std::shared_ptr<const Tokenizer> tokenizer;
    if (args->value("model") || !args->positionals().empty()) {
        auto checkpoint = loadModelArg(*args);
        if (!checkpoint) return fail(checkpoint.error());
        tokenizer = (*checkpoint)->tokenizer;
    } else if (auto file = args->value("tokenizer")) {
        const std::filesystem::path path(*file);
        auto loaded = path.extension() == ".bin" ? loadLlama2cTokenizer(path, 0) : loadHfTokenizer(path);
        if (!loaded) return fail(loaded.error());
        tokenizer = *loaded;
    } else {
        return fail("tokenize: give --model MODEL or --tokenizer FILE");
    }
    if (!tokenizer) return fail("tokenize: the model has no tokenizer (give --tokenizer FILE)");
    const std::vector<int32_t> ids = tokenizer->encode(*text, {args->has("bos"), args->has("special")});
    if (args->has("json")) {
        printJson({{"ids", ids}});
    } else {
        for (int32_t id : ids)
            std::printf("%d\t%s\n", id, std::string(tokenizer->piece(id)).c_str());
    }
    return 0;
}

int runLogits(const std::vector<std::string> &argv) {
    auto args = Args::parse(argv, withCommon({"tokens", "device"}), {"json"});
    if (!args) return fail(args.error());
    const auto tokenText = args->value("tokens");
    if (!tokenText) return fail("logits: --tokens 1,2,3 is required");
    auto ids = parseIdList(*tokenText);
    if (!ids) return fail(ids.error());
    auto device = deviceArg(*args);
    if (!device) return fail(device.error());
    auto checkpoint = loadModelArg(*args);
    if (!checkpoint) return fail(checkpoint.error());
    auto model = openModelArg(*args, *checkpoint, *device);
    if (!model) return fail(model.error());
    auto cache = (*model)->allocateCache(1, int64_t(ids->size()));
    if (!cache) return fail(cache.error());
    SequenceInput input{0, *ids, LogitsWanted::All};
    auto logits = (*model)->forward(**cache, {&input, 1});
    if (!logits) return fail(logits.error());
    json rows = json::array();
    for (int64_t r = 0; r < logits->rows; ++r)
        rows.push_back(std::vector<float>(logits->row(r), logits->row(r) + logits->vocab));
    if (args->has("json")) {
        printJson({{"logits", rows}});
    } else {
        for (const json &row : rows)
            std::printf("%s\n", row.dump().c_str());
    }
    return 0;
}

namespace {

// The prompt ids: plain text with BOS, or (--chat) the checkpoint's chat template around a user
// message (and --system), whose special tokens are parsed.
Result<std::vector<int32_t>> promptIds(const Args &args, const Checkpoint &checkpoint) {
    const std::string prompt = args.value("prompt").value_or("");
    if (!args.has("chat"))
        return checkpoint.tokenizer->encode(prompt, {!args.has("no-bos"), false});
    if (checkpoint.chatTemplate.empty())
        return makeError(ErrorCode::InvalidArgument, "generate --chat: the model has no chat template");
    LOWBIT_TRY(ChatTemplate chat, ChatTemplate::fromJinja(checkpoint.chatTemplate));
    std::vector<ChatMessage> messages;
    if (auto system = args.value("system"))
        messages.push_back({"system", *system});
    messages.push_back({"user", prompt});
    LOWBIT_TRY(std::string text, chat.render(messages, {}));
    return checkpoint.tokenizer->encode(text, {false, true});
}

Result<GenerateOptions> generateOptions(const Args &args) {
    GenerateOptions options;
    LOWBIT_TRY(int64_t n, args.integer("n", 128));
    LOWBIT_TRY(double temperature, args.number("temp", 0.0));
    LOWBIT_TRY(int64_t topK, args.integer("top-k", 0));
    LOWBIT_TRY(double topP, args.number("top-p", 1.0));
    LOWBIT_TRY(int64_t seed, args.integer("seed", 0));
    if (n < 0 || temperature < 0 || topK < 0 || !(topP > 0 && topP <= 1))
        return makeError(ErrorCode::InvalidArgument,
                         "generate: need -n >= 0, --temp >= 0, --top-k >= 0, 0 < --top-p <= 1");
    options.maxTokens = int(n);
    options.sampling = {temperature, int(topK), topP, uint64_t(seed)};
    options.stopStrings = args.values("stop");
    return options;
}

} // namespace

int runGenerate(const std::vector<std::string> &argv) {
    auto args = Args::parse(argv, withCommon({"prompt", "n", "temp", "top-k", "top-p", "seed", "stop", "system", "device"}),
                            {"json", "no-bos", "chat"}, {{"p", "prompt"}, {"t", "threads"}});
    if (!args) return fail(args.error());
    auto options = generateOptions(*args);
    if (!options) return fail(options.error());
    auto device = deviceArg(*args);
    if (!device) return fail(device.error());
    auto checkpoint = loadModelArg(*args);
    if (!checkpoint) return fail(checkpoint.error());
    if (!(*checkpoint)->tokenizer) return fail("generate: the model has no tokenizer (give --tokenizer FILE)");
    auto prompt = promptIds(*args, **checkpoint);
    if (!prompt) return fail(prompt.error());
    auto model = openModelArg(*args, *checkpoint, *device);
    if (!model) return fail(model.error());
    const bool json = args->has("json");
    size_t printed = 0;
    auto result = generate(**model, *prompt, *options, {}, [&](int32_t, const std::string &text) {
        if (!json && text.size() > printed) { // stream as it comes (a stop string is cut later)
            std::fwrite(text.data() + printed, 1, text.size() - printed, stdout);
            std::fflush(stdout);
            printed = text.size();
        }
        return true;
    });
    if (!result) return fail(result.error());
    if (json)
        printJson({{"prompt_ids", *prompt}, {"ids", result->tokens}, {"text", result->text},
                   {"stop_reason", result->stopReason}, {"tokens_per_second", result->tokensPerSecond}});
    else
        std::printf("\n");
    return 0;
}

int runPerplexity(const std::vector<std::string> &argv) {
    auto args = Args::parse(argv, withCommon({"text", "ctx", "mode", "chunks", "batch", "device"}), {"json"});
    if (!args) return fail(args.error());
    const auto textPath = args->value("text");
    if (!textPath) return fail("ppl: --text FILE is required");
    PerplexityOptions options;
    const std::string mode = args->value("mode").value_or("paper");
    if (mode != "paper" && mode != "llamacpp") return fail("ppl: --mode must be paper or llamacpp");
    options.protocol = mode == "paper" ? PerplexityProtocol::Paper : PerplexityProtocol::LlamaCpp;
    auto ctx = args->integer("ctx", 2048);
    auto chunks = args->integer("chunks", 0);
    auto batch = args->integer("batch", 2048);
    if (!ctx) return fail(ctx.error());
    if (!chunks) return fail(chunks.error());
    if (!batch) return fail(batch.error());
    options.contextTokens = *ctx;
    options.maxChunks = *chunks;
    options.batchTokens = *batch;
    auto text = readTextFile(*textPath);
    if (!text) return fail(text.error());
    auto device = deviceArg(*args);
    if (!device) return fail(device.error());
    auto checkpoint = loadModelArg(*args);
    if (!checkpoint) return fail(checkpoint.error());
    const Tokenizer *tokenizer = (*checkpoint)->tokenizer.get();
    if (!tokenizer) return fail("ppl: the model has no tokenizer (give --tokenizer FILE)");
    auto model = openModelArg(*args, *checkpoint, *device);
    if (!model) return fail(model.error());
    const std::vector<int32_t> tokens = tokenizer->encode(*text, {true, false});
    StderrProgress progress;
    auto report = evaluatePerplexity(**model, tokens, options, progress);
    progress.finish();
    if (!report) return fail(report.error());
    const json out = {{"ppl", report->perplexity}, {"nll", report->meanNll},
                      {"nll_stderr", report->nllStandardError}, {"tokens", report->predictedTokens},
                      {"chunks", report->chunks}, {"ctx", options.contextTokens}, {"mode", mode},
                      {"text_tokens", tokens.size()}, {"seconds", report->seconds},
                      {"tokens_per_second", report->tokensPerSecond}, {"threads", (*model)->threads()},
                      {"device", (*model)->device().toString()}};
    if (args->has("json"))
        printJson(out);
    else
        std::printf("PPL %.4f  (mean NLL %.6f +/- %.6f nats over %lld predicted tokens, %lld chunks of %lld; %.1f tok/s)\n",
                    report->perplexity, report->meanNll, report->nllStandardError,
                    static_cast<long long>(report->predictedTokens), static_cast<long long>(report->chunks),
                    static_cast<long long>(options.contextTokens), report->tokensPerSecond);
    return 0;
}

} // namespace lowbit::cli
