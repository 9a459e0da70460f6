// Llama 3 / 3.1 / 3.2 chat templates: recognised from the original Jinja sources and rendered
// byte for byte as transformers renders them. References: the shared rendered examples, and the
// strings below, produced with jinja2 3.1.6 (trim_blocks, lstrip_blocks, transformers' tojson =
// json.dumps(ensure_ascii=False)) from the shared .jinja files.
#include "shared_data.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer_loaders.h"

#include <QtTest>

#include <nlohmann/json.hpp>

using namespace lowbit;

namespace {

const std::vector<ChatMessage> kExample = {{"system", "You are a helpful assistant."},
                                           {"user", "What is 2+2?"}};

// Leading/trailing Python whitespace (NBSP, U+001C, U+3000, EM SPACE) and a tool message with
// quotes, a backslash, a newline and a non-ASCII letter.
const std::vector<ChatMessage> kAwkward = {{"system", "  \xC2\xA0"
                                                      "Be brief.\x1C\n"},
                                           {"user", "\tHi\xE3\x80\x80there \xE2\x80\x83"},
                                           {"assistant", "Hello!"},
                                           {"tool", "{\"t\": 21}\n\"q\"\\ \xC3\xA9"},
                                           {"user", "Thanks"}};

const char *const kAwkwardLlama3 =
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nHi\xE3\x80\x80there<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
    "<|start_header_id|>tool<|end_header_id|>\n\n{\"t\": 21}\n\"q\"\\ \xC3\xA9<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nThanks<|eot_id|>";
const char *const kAwkwardLlama31 =
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: "
    "December 2023\nToday Date: 26 Jul 2024\n\nBe brief.<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nHi\xE3\x80\x80there<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
    "<|start_header_id|>ipython<|end_header_id|>\n\n\"{\\\"t\\\": 21}\\n\\\"q\\\"\\\\ "
    "\xC3\xA9\"<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nThanks<|eot_id|>";
const char *const kGenerationPrompt = "<|start_header_id|>assistant<|end_header_id|>\n\n";

Result<ChatTemplate> templateFrom(const std::string &file) {
    return ChatTemplate::fromJinja(test::readFile(test::sharedPath("data/chat_templates/" + file)));
}

std::string render(const ChatTemplate &t, const std::vector<ChatMessage> &messages,
                   bool generation = true) {
    ChatRenderOptions options;
    options.addGenerationPrompt = generation;
    auto rendered = t.render(messages, options);
    return rendered.ok() ? *rendered : "<error: " + rendered.error().message + ">";
}

} // namespace

class TestChatTemplate : public QObject {
    Q_OBJECT

private slots:
    void recognisesTemplates();
    void rejectsOtherTemplates();
    void llama3RendersExample();
    void llama31RendersExample();
    void llama32MatchesLlama31WithTheSameDate();
    void awkwardConversations();
    void emptyConversation();
    void renderedExampleTokenizesToHeaders();
};

void TestChatTemplate::recognisesTemplates() {
    LOWBIT_REQUIRE_SHARED_FILE(dir,
                               "data/chat_templates/Meta-Llama-3-8B-Instruct.chat_template.jinja");
    auto llama3 = templateFrom("Meta-Llama-3-8B-Instruct.chat_template.jinja");
    auto llama31 = templateFrom("Llama-3.1-8B-Instruct.chat_template.jinja");
    auto llama32 = templateFrom("Llama-3.2-3B-Instruct.chat_template.jinja");
    QVERIFY(llama3.ok() && llama31.ok() && llama32.ok());
    QCOMPARE(llama3->kind(), ChatTemplateKind::Llama3);
    QCOMPARE(llama31->kind(), ChatTemplateKind::Llama31);
    QCOMPARE(llama32->kind(), ChatTemplateKind::Llama32);
    QCOMPARE(llama31->name(), std::string_view("llama3.1"));
}

void TestChatTemplate::rejectsOtherTemplates() {
    LOWBIT_REQUIRE_SHARED_FILE(guard, "data/llama_guard3/Llama-Guard-3-8B.chat_template.jinja");
    for (const char *file : {"data/llama_guard3/Llama-Guard-3-8B.chat_template.jinja",
                             "data/llama_guard3/Llama-Guard-3-1B.chat_template.jinja"}) {
        auto result = ChatTemplate::fromJinja(test::readFile(test::sharedPath(file)));
        QVERIFY2(!result.ok(), file);
        QCOMPARE(result.error().code, ErrorCode::Unsupported);
    }
    QVERIFY(
        !ChatTemplate::fromJinja("{% for message in messages %}{{ message.content }}{% endfor %}")
             .ok());
    QVERIFY(!ChatTemplate::fromJinja("").ok());
}

void TestChatTemplate::llama3RendersExample() {
    LOWBIT_REQUIRE_SHARED_FILE(expected, "data/chat_templates/rendered_example_llama3.txt");
    auto t = templateFrom("Meta-Llama-3-8B-Instruct.chat_template.jinja");
    QVERIFY(t.ok());
    QCOMPARE(render(*t, kExample), test::readFile(expected));
    // The copy inside the shared tokenizer_config.json appends the assistant header always.
    LOWBIT_REQUIRE_SHARED_FILE(config, "data/llama3_tokenizer/tokenizer_config.json");
    const auto json = nlohmann::json::parse(test::readFile(config));
    auto fromConfig = ChatTemplate::fromJinja(json["chat_template"].get<std::string>());
    QVERIFY(fromConfig.ok());
    QCOMPARE(fromConfig->kind(), ChatTemplateKind::Llama3);
    QCOMPARE(render(*fromConfig, kExample, false), test::readFile(expected));
    QCOMPARE(render(*t, kExample, false) + kGenerationPrompt, test::readFile(expected));
}

void TestChatTemplate::llama31RendersExample() {
    LOWBIT_REQUIRE_SHARED_FILE(expected, "data/chat_templates/rendered_example_llama3.1.txt");
    auto t = templateFrom("Llama-3.1-8B-Instruct.chat_template.jinja");
    QVERIFY(t.ok());
    QCOMPARE(render(*t, kExample), test::readFile(expected));
}

void TestChatTemplate::llama32MatchesLlama31WithTheSameDate() {
    LOWBIT_REQUIRE_SHARED_FILE(expected, "data/chat_templates/rendered_example_llama3.1.txt");
    auto t = templateFrom("Llama-3.2-3B-Instruct.chat_template.jinja");
    QVERIFY(t.ok());
    ChatRenderOptions options;
    options.dateString = "26 Jul 2024";
    auto rendered = t->render(kExample, options);
    QVERIFY(rendered.ok());
    QCOMPARE(*rendered, test::readFile(expected));
}

void TestChatTemplate::awkwardConversations() {
    LOWBIT_REQUIRE_SHARED_FILE(dir,
                               "data/chat_templates/Llama-3.1-8B-Instruct.chat_template.jinja");
    auto llama3 = templateFrom("Meta-Llama-3-8B-Instruct.chat_template.jinja");
    auto llama31 = templateFrom("Llama-3.1-8B-Instruct.chat_template.jinja");
    QVERIFY(llama3.ok() && llama31.ok());
    QCOMPARE(render(*llama3, kAwkward, false), std::string(kAwkwardLlama3));
    QCOMPARE(render(*llama3, kAwkward, true), std::string(kAwkwardLlama3) + kGenerationPrompt);
    QCOMPARE(render(*llama31, kAwkward, false), std::string(kAwkwardLlama31));
    QCOMPARE(render(*llama31, kAwkward, true), std::string(kAwkwardLlama31) + kGenerationPrompt);
    // No system message: 3.1 still emits its system block, with an empty message.
    QCOMPARE(
        render(*llama31, {kAwkward[1]}),
        std::string("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting "
                    "Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>"
                    "<|start_header_id|>user<|end_header_id|>\n\nHi\xE3\x80\x80there<|eot_id|>") +
            kGenerationPrompt);
}

void TestChatTemplate::emptyConversation() {
    // Llama 3 puts BOS on the first message, so no message means no BOS; 3.1 indexes messages[0]
    // and fails in jinja ("list object has no element 0").
    QCOMPARE(render(ChatTemplate(ChatTemplateKind::Llama3), {}), std::string(kGenerationPrompt));
    auto failed = ChatTemplate(ChatTemplateKind::Llama31).render({}, {});
    QVERIFY(!failed.ok());
    QCOMPARE(failed.error().code, ErrorCode::InvalidArgument);
}

void TestChatTemplate::renderedExampleTokenizesToHeaders() {
    LOWBIT_REQUIRE_SHARED_FILE(json, "data/llama3_tokenizer/tokenizer.json");
    LOWBIT_REQUIRE_SHARED_FILE(expected, "data/chat_templates/rendered_example_llama3.1.txt");
    auto tok = loadHfTokenizer(json);
    QVERIFY(tok.ok());
    const std::string text = test::readFile(expected);
    const auto ids = (*tok)->encode(text, {.addBos = false, .parseSpecial = true});
    QCOMPARE(ids.front(), 128000); // <|begin_of_text|> comes from the text itself
    QCOMPARE(std::count(ids.begin(), ids.end(), 128000), 1);
    QCOMPARE(std::count(ids.begin(), ids.end(), 128006), 3); // system, user, assistant
    QCOMPARE(std::count(ids.begin(), ids.end(), 128007), 3);
    QCOMPARE(std::count(ids.begin(), ids.end(), 128009), 2);
    // Ends with "<|end_header_id|>" "\n\n" (271), ready for the reply.
    QCOMPARE(std::vector<int32_t>(ids.end() - 2, ids.end()), (std::vector<int32_t>{128007, 271}));
    // Header: <|start_header_id|> "system" (9125) <|end_header_id|>.
    QCOMPARE(std::vector<int32_t>(ids.begin() + 1, ids.begin() + 4),
             (std::vector<int32_t>{128006, 9125, 128007}));
    QCOMPARE((*tok)->decode(ids), text);
}

QTEST_APPLESS_MAIN(TestChatTemplate)
#include "test_chat_template.moc"
