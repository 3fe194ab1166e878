// Chat templates: byte-identical output to Python jinja2 (golden files written by
// tests/runtime/gen_chat_goldens.py), plus unit tests for expressions, syntax errors, limits on
// hostile templates, the built-in templates and the choice of template for a GGUF file.
#include "runtime/chat_template.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/gguf.h"

namespace exo::runtime {
namespace {

using nlohmann::json;

std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

const std::filesystem::path& GoldenDir() {
  static const std::filesystem::path dir =
      std::filesystem::path(EXO_SOURCE_DIR) / "tests" / "runtime" / "data" / "chat";
  return dir;
}

std::vector<std::string> GoldenFiles() {
  std::vector<std::string> files;
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(GoldenDir(), error)) {
    if (entry.path().extension() == ".json") files.push_back(entry.path().filename().string());
  }
  std::sort(files.begin(), files.end());
  return files;
}

// Resolves a golden file's "template" reference to the template text.
std::string TemplateSource(const std::string& ref) {
  if (ref.starts_with("testdata:")) {
    return ReadFile(std::filesystem::path(EXO_TESTDATA_DIR) / ref.substr(9));
  }
  if (ref.starts_with("builtin:")) {
    std::optional<std::string_view> source = BuiltinChatTemplate(ref.substr(8));
    return source ? std::string(*source) : std::string();
  }
  if (ref.starts_with("source:")) {
    return ReadFile(std::filesystem::path(EXO_SOURCE_DIR) / ref.substr(7));
  }
  return "";
}

class ChatTemplateGolden : public testing::TestWithParam<std::string> {};

TEST_P(ChatTemplateGolden, MatchesJinja2ByteForByte) {
  const json golden = json::parse(ReadFile(GoldenDir() / GetParam()));
  const std::string source = TemplateSource(golden.at("template").get<std::string>());
  ASSERT_FALSE(source.empty()) << "cannot load template " << golden.at("template");
  absl::StatusOr<ChatTemplate> tmpl = ChatTemplate::Parse(source);
  ASSERT_TRUE(tmpl.ok()) << tmpl.status();
  ASSERT_FALSE(golden.at("cases").empty());
  for (const json& test_case : golden.at("cases")) {
    SCOPED_TRACE(test_case.at("name").get<std::string>());
    absl::StatusOr<std::string> rendered =
        tmpl->Render(test_case.at("messages"), test_case.at("add_generation_prompt").get<bool>(),
                     test_case.at("bos_token").get<std::string>(),
                     test_case.at("eos_token").get<std::string>(), test_case.at("extra"));
    if (test_case.contains("expected")) {
      ASSERT_TRUE(rendered.ok()) << rendered.status();
      EXPECT_EQ(*rendered, test_case.at("expected").get<std::string>());
    } else {
      const std::string error = test_case.at("error").get<std::string>();
      ASSERT_FALSE(rendered.ok()) << "jinja2 failed with: " << error << "\nbut we rendered:\n"
                                  << *rendered;
      EXPECT_EQ(rendered.status().code(), absl::StatusCode::kInvalidArgument);
      if (test_case.at("raised").get<bool>()) {
        // raise_exception(msg) gives exactly msg.
        EXPECT_EQ(rendered.status().message(), error);
      }
    }
  }
}

std::string GoldenTestName(const testing::TestParamInfo<std::string>& info) {
  std::string name = info.param.substr(0, info.param.size() - 5);  // drop ".json"
  for (char& c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return name;
}

INSTANTIATE_TEST_SUITE_P(ChatTemplate, ChatTemplateGolden, testing::ValuesIn(GoldenFiles()),
                         GoldenTestName);

TEST(ChatTemplateGoldens, CoverEveryTemplate) {
  // One golden file per shared template, built-in template and feature template.
  std::vector<std::string> files = GoldenFiles();
  size_t shared = 0;
  for (const auto& entry : std::filesystem::directory_iterator(
           std::filesystem::path(EXO_TESTDATA_DIR) / "chat-templates")) {
    if (entry.path().extension() != ".jinja") continue;
    ++shared;
    std::string golden = "shared-" + entry.path().stem().string() + ".json";
    EXPECT_NE(std::find(files.begin(), files.end(), golden), files.end()) << golden;
  }
  EXPECT_EQ(shared, 6u);
  for (const char* name : {"gemma", "chatml", "llama3", "llama2"}) {
    std::string golden = absl::StrCat("builtin-", name, ".json");
    EXPECT_NE(std::find(files.begin(), files.end(), golden), files.end()) << golden;
  }
}

// ---- Helpers for unit tests ----

json Conversation() {
  return json::array(
      {{{"role", "system"}, {"content", "Be brief."}}, {{"role", "user"}, {"content", "Hi"}}});
}

absl::StatusOr<std::string> RenderSource(std::string_view source,
                                         const json& extra = json::object()) {
  absl::StatusOr<ChatTemplate> tmpl = ChatTemplate::Parse(source);
  if (!tmpl.ok()) return tmpl.status();
  return tmpl->Render(Conversation(), true, "<s>", "</s>", extra);
}

std::string RenderOrDie(std::string_view source, const json& extra = json::object()) {
  absl::StatusOr<std::string> out = RenderSource(source, extra);
  EXPECT_TRUE(out.ok()) << source << ": " << out.status();
  return out.ok() ? *out : "<error>";
}

// ---- Expression evaluator ----

TEST(JinjaExpressions, EvaluateLikePython) {
  struct Case {
    const char* expression;
    const char* expected;
  };
  const Case cases[] = {
      {"1 + 2 * 3", "7"},
      {"(1 + 2) * 3", "9"},
      {"7 // 2", "3"},
      {"-7 // 2", "-4"},
      {"-7 % 3", "2"},
      {"7 / 2", "3.5"},
      {"4 / 2", "2.0"},
      {"2 ** 10", "1024"},
      {"0.1 + 0.2", "0.30000000000000004"},
      {"1e16", "1e+16"},
      {"1e-5", "1e-05"},
      {"'a' ~ 1 ~ none", "a1None"},
      {"'ab' * 2", "abab"},
      {"[1, 'x', none, true]", "[1, 'x', None, True]"},
      {"{'k': 'it\\'s'}", "{'k': \"it's\"}"},
      {"(1, 2)", "(1, 2)"},
      {"('a',)", "('a',)"},
      {"1 < 2 < 3", "True"},
      {"1 == 1.0", "True"},
      {"[1, 2] == (1, 2)", "False"},
      {"'ell' in 'hello'", "True"},
      {"3 not in [1, 2]", "True"},
      {"'x' if false else 'y'", "y"},
      {"0 or 'default'", "default"},
      {"not none", "True"},
      {"messages[1:] | length", "1"},
      {"messages[-1].content", "Hi"},
      {"messages[0]['role']", "system"},
      {"'  pad  ' | trim", "pad"},
      {"'a b'.split()", "['a', 'b']"},
      {"'héllo'[1:3]", "él"},
      {"'héllo' | length", "5"},
      {"'abc'[::-1]", "cba"},
      {"'Hello' is string", "True"},
      {"undefined_name is defined", "False"},
      {"messages | map(attribute='role') | join(',')", "system,user"},
      {"messages | selectattr('role', 'equalto', 'user') | list | length", "1"},
      {"{'b': 1, 'a': [1, 2]} | tojson", "{\"b\": 1, \"a\": [1, 2]}"},
      {"'ü\"' | tojson", "\"ü\\\"\""},
      {"range(3) | list", "[0, 1, 2]"},
      {"'x' | default('d')", "x"},
      {"nothing | default('d')", "d"},
      {"nothing", ""},
      {"'%s-%d' | format('a', 2)", "a-2"},
      {"{'a': 1}.get('b', 2)", "2"},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(RenderOrDie(absl::StrCat("{{ ", c.expression, " }}")), c.expected) << c.expression;
  }
}

TEST(JinjaExpressions, UndefinedBehavesLikeJinja2) {
  EXPECT_EQ(RenderOrDie("[{{ missing }}]"), "[]");
  EXPECT_EQ(RenderOrDie("{% if missing %}yes{% else %}no{% endif %}"), "no");
  EXPECT_EQ(RenderOrDie("{% for x in missing %}x{% endfor %}done"), "done");
  EXPECT_EQ(RenderOrDie("{{ messages[0].missing is defined }}"), "False");
  absl::StatusOr<std::string> chained = RenderSource("{{ missing.attribute }}");
  ASSERT_FALSE(chained.ok());
  EXPECT_EQ(chained.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(chained.status().message().find("'missing' is undefined"), std::string::npos)
      << chained.status();
  absl::StatusOr<std::string> deeper = RenderSource("{{ messages[0].a.b }}");
  ASSERT_FALSE(deeper.ok());
  EXPECT_NE(deeper.status().message().find("'dict object' has no attribute 'a'"), std::string::npos)
      << deeper.status();
  EXPECT_FALSE(RenderSource("{{ missing + 1 }}").ok());
}

TEST(JinjaExpressions, TypeErrorsAreErrorsNotCrashes) {
  for (const char* source : {"{{ 'a' + 1 }}", "{{ 1 / 0 }}", "{{ 1 // 0 }}", "{{ 'a' < 1 }}",
                             "{% for x in 5 %}{% endfor %}", "{{ none() }}", "{{ 'x'.nope() }}",
                             "{{ 9223372036854775807 + 1 }}", "{{ [1] | join(1) | int(1, 99) }}",
                             "{% set a, b = [1] %}", "{{ 1 in none }}"}) {
    absl::StatusOr<std::string> out = RenderSource(source);
    EXPECT_FALSE(out.ok()) << source << " rendered " << *out;
    if (!out.ok()) EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument) << source;
  }
}

TEST(JinjaStatements, ScopingFollowsJinja2) {
  // set inside a loop does not leak; set inside if does; namespaces carry state out of loops.
  EXPECT_EQ(RenderOrDie("{% set c = 0 %}{% for i in [1, 2] %}{% set c = c + 1 %}{{ c }}"
                        "{% endfor %}{{ c }}"),
            "110");
  EXPECT_EQ(RenderOrDie("{% if true %}{% set v = 'x' %}{% endif %}{{ v }}"), "x");
  EXPECT_EQ(RenderOrDie("{% set ns = namespace(n=0) %}{% for i in range(4) %}"
                        "{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}"),
            "6");
  EXPECT_FALSE(RenderSource("{% set d = {} %}{% set d.x = 1 %}").ok());
}

TEST(JinjaStatements, LoopControlMacrosAndBlocks) {
  EXPECT_EQ(RenderOrDie("{% for i in range(9) %}{% if i == 1 %}{% continue %}{% endif %}"
                        "{% if i == 4 %}{% break %}{% endif %}{{ i }}{% endfor %}"),
            "023");
  EXPECT_EQ(RenderOrDie("{% for m in messages if m.role == 'user' %}{{ loop.index }}/"
                        "{{ loop.length }}:{{ m.content }}{% endfor %}"),
            "1/1:Hi");
  EXPECT_EQ(RenderOrDie("{% macro tag(name, v='1') %}<{{ name }}={{ v }}>{% endmacro %}"
                        "{{ tag('a') }}{{ tag('b', v='2') }}"),
            "<a=1><b=2>");
  EXPECT_EQ(RenderOrDie("{% set block %}in {{ 'block' }}{% endset %}[{{ block }}]"), "[in block]");
  EXPECT_EQ(RenderOrDie("{% generation %}kept{% endgeneration %}"), "kept");
  EXPECT_EQ(RenderOrDie("{% for x in [] %}a{% else %}empty{% endfor %}"), "empty");
}

TEST(JinjaWhitespace, TrimAndLstripBlocks) {
  EXPECT_EQ(RenderOrDie("a\n  {% if true %}\n  b\n  {% endif %}\nc"), "a\n  b\nc");
  EXPECT_EQ(RenderOrDie("a  {{- 'b' -}}  c"), "abc");
  EXPECT_EQ(RenderOrDie("a\n  {#- comment -#}\n  b"), "ab");
  EXPECT_EQ(RenderOrDie("  {%+ if true %}x{% endif +%}\ny"), "  x\ny");
  // One trailing newline is dropped, as jinja2 does with keep_trailing_newline=False.
  EXPECT_EQ(RenderOrDie("text\n"), "text");
  EXPECT_EQ(RenderOrDie("text\n\n"), "text\n");
  EXPECT_EQ(RenderOrDie("a\r\nb"), "a\nb");
}

TEST(JinjaRaiseException, GivesExactlyTheMessage) {
  absl::StatusOr<std::string> out =
      RenderSource("{{ raise_exception('Only user and assistant roles are supported!') }}");
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(out.status().message(), "Only user and assistant roles are supported!");
}

// ---- Syntax errors ----

void ExpectSyntaxError(std::string_view source, std::string_view fragment) {
  absl::StatusOr<ChatTemplate> tmpl = ChatTemplate::Parse(source);
  ASSERT_FALSE(tmpl.ok()) << source;
  EXPECT_EQ(tmpl.status().code(), absl::StatusCode::kInvalidArgument) << source;
  EXPECT_NE(tmpl.status().message().find(std::string(fragment)), std::string::npos)
      << source << " -> " << tmpl.status();
}

TEST(ChatTemplateSyntax, ErrorsNameTheProblemAndPosition) {
  ExpectSyntaxError("{% if x %}never closed", "expected 'elif' or 'else' or 'endif'");
  ExpectSyntaxError("{% for x in y %}", "expected 'endfor' or 'else'");
  ExpectSyntaxError("hello {{ name", "unclosed expression");
  ExpectSyntaxError("{% if x", "unclosed block tag");
  ExpectSyntaxError("{# no end", "missing end of comment");
  ExpectSyntaxError("line1\n  {{ x | nope }}", "line 2, column 10: no filter named 'nope'");
  ExpectSyntaxError("{{ x is nope }}", "no test named 'nope'");
  ExpectSyntaxError("{% include 'other.jinja' %}", "unsupported tag 'include'");
  ExpectSyntaxError("{% endif %}", "unexpected 'endif'");
  ExpectSyntaxError("{{ 'unterminated }}", "unterminated string");
  ExpectSyntaxError("{{ 1 + }}", "expected an expression");
  ExpectSyntaxError("{{ (1 }}", "unexpected '}'");
  ExpectSyntaxError("{{ a ] }}", "unexpected ']'");
  ExpectSyntaxError("{% break %}", "outside of a for loop");
  ExpectSyntaxError("{{ x $ y }}", "unexpected character '$'");
  ExpectSyntaxError("{% set %}", "expected a name");
}

TEST(ChatTemplateSyntax, DeepNestingIsAnErrorNotACrash) {
  const int kDepth = 100000;
  ExpectSyntaxError(
      absl::StrCat("{{ ", std::string(kDepth, '('), "1", std::string(kDepth, ')'), " }}"),
      "nested too deeply");
  ExpectSyntaxError(absl::StrCat("{{ ", std::string(kDepth, '['), std::string(kDepth, ']'), " }}"),
                    "nested too deeply");
  std::string nots;
  for (int i = 0; i < kDepth; ++i) nots += "not ";
  ExpectSyntaxError(absl::StrCat("{{ ", nots, "x }}"), "nested too deeply");
  std::string sum = "1";
  for (int i = 0; i < kDepth; ++i) sum += "+1";
  ExpectSyntaxError(absl::StrCat("{{ ", sum, " }}"), "nested too deeply");
  std::string ifs;
  for (int i = 0; i < kDepth; ++i) ifs += "{% if x %}";
  ExpectSyntaxError(ifs, "nested too deeply");
  std::string filters = "{{ x";
  for (int i = 0; i < kDepth; ++i) filters += "|trim";
  ExpectSyntaxError(filters + " }}", "nested too deeply");
}

// ---- Limits on hostile templates ----

void ExpectResourceExhausted(std::string_view source) {
  absl::StatusOr<ChatTemplate> tmpl = ChatTemplate::Parse(source);
  ASSERT_TRUE(tmpl.ok()) << tmpl.status();
  ChatTemplateLimits limits;
  limits.max_steps = 2'000'000;
  limits.max_output_bytes = 1 << 20;
  limits.max_value_size = 1 << 20;
  tmpl->set_limits(limits);
  absl::StatusOr<std::string> out = tmpl->Render(Conversation(), true, "<s>", "</s>");
  ASSERT_FALSE(out.ok()) << source;
  EXPECT_EQ(out.status().code(), absl::StatusCode::kResourceExhausted)
      << source << " -> " << out.status();
}

TEST(ChatTemplateLimits, HostileTemplatesStopWithAnError) {
  // Too many steps.
  ExpectResourceExhausted(
      "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}");
  // Too much output.
  ExpectResourceExhausted("{% for i in range(1000000) %}xxxxxxxxxxxxxxxx{% endfor %}");
  // A string that doubles each iteration.
  ExpectResourceExhausted(
      "{% set ns = namespace(s='ab') %}{% for i in range(64) %}"
      "{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s | length }}");
  ExpectResourceExhausted("{{ 'x' * 1000000000000 }}");
  // Repeating an empty sequence many times is cheap and stays empty (found by fuzzing).
  EXPECT_EQ(RenderOrDie("[{{ '' * 4294967296 }}{{ ([] * 4294967296) | length }}]"), "[0]");
  ExpectResourceExhausted("{{ range(1000000000000) | length }}");
  // Cheap-looking operations repeated on a large value: each one walks the whole list.
  ExpectResourceExhausted(
      "{% set l = range(100000) | list %}{% for i in range(100000) %}"
      "{% if -1 in l or l == l %}{% endif %}{{ l | length }}{% endfor %}");
  // Unbounded recursion.
  ExpectResourceExhausted("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}");
  // Exponential recursion: each call makes two.
  ExpectResourceExhausted(
      "{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}"
      "{{ f(30) }}");
}

TEST(ChatTemplateLimits, NestedValuesAreBounded) {
  absl::StatusOr<std::string> out = RenderSource(
      "{% set ns = namespace(v=[]) %}{% for i in range(10000) %}"
      "{% set ns.v = [ns.v] %}{% endfor %}{{ ns.v | tojson }}");
  EXPECT_FALSE(out.ok());
  json deep = json::array();
  for (int i = 0; i < 300; ++i) deep = json::array({deep});
  absl::StatusOr<ChatTemplate> tmpl = ChatTemplate::Parse("{{ messages }}");
  ASSERT_TRUE(tmpl.ok());
  EXPECT_FALSE(tmpl->Render(deep, false, "", "").ok());
}

// ---- Built-in templates ----

TEST(ChatTemplateBuiltins, MatchTemplateFiles) {
  for (const char* name : {"gemma", "chatml", "llama3", "llama2"}) {
    std::optional<std::string_view> builtin = BuiltinChatTemplate(name);
    ASSERT_TRUE(builtin.has_value()) << name;
    std::string file = ReadFile(std::filesystem::path(EXO_SOURCE_DIR) / "runtime" / "templates" /
                                absl::StrCat(name, ".jinja"));
    EXPECT_EQ(*builtin, file) << name << ": chat_template.cc and runtime/templates disagree";
  }
  EXPECT_FALSE(BuiltinChatTemplate("nonexistent").has_value());
}

TEST(ChatTemplateBuiltins, GemmaFoldsSystemIntoFirstUserTurn) {
  absl::StatusOr<ChatTemplate> tmpl = ChatTemplate::Parse(*BuiltinChatTemplate("gemma"));
  ASSERT_TRUE(tmpl.ok()) << tmpl.status();
  absl::StatusOr<std::string> out = tmpl->Render(Conversation(), true, "<bos>", "<eos>");
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n");
  // Gemma 3 style content parts.
  json parts = json::array(
      {{{"role", "user"}, {"content", json::array({{{"type", "text"}, {"text", "Look"}}})}}});
  out = tmpl->Render(parts, false, "<bos>", "<eos>");
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, "<bos><start_of_turn>user\nLook<end_of_turn>\n");
}

// ---- Template choice for a GGUF file ----

absl::StatusOr<std::string> SourceForMetadata(
    const std::vector<std::pair<std::string, GgufValue>>& metadata) {
  GgufWriter writer;
  for (const auto& [key, value] : metadata) writer.SetValue(key, value);
  std::vector<uint8_t> bytes = writer.Serialize();
  absl::StatusOr<std::unique_ptr<GgufFile>> file = GgufFile::FromBuffer(bytes.data(), bytes.size());
  if (!file.ok()) return file.status();
  return ChatTemplateSourceFor(**file);
}

TEST(ChatTemplateSourceFor, PrefersTheFilesTemplate) {
  absl::StatusOr<std::string> source =
      SourceForMetadata({{"general.architecture", GgufValue::String("llama")},
                         {"tokenizer.chat_template", GgufValue::String("{{ 'mine' }}")}});
  ASSERT_TRUE(source.ok()) << source.status();
  EXPECT_EQ(*source, "{{ 'mine' }}");
}

TEST(ChatTemplateSourceFor, FallsBackByArchitecture) {
  struct Case {
    const char* architecture;
    std::vector<std::string> tokens;
    const char* builtin;
  };
  const Case cases[] = {
      {"gemma3", {"<bos>"}, "gemma"},
      {"gemma2", {}, "gemma"},
      {"gemma", {}, "gemma"},
      {"qwen2", {"<|im_start|>"}, "chatml"},
      {"llama", {"<s>", "<|start_header_id|>", "<|end_header_id|>"}, "llama3"},
      {"llama", {"<s>", "</s>", "[INST]"}, "llama2"},
  };
  for (const Case& c : cases) {
    std::vector<std::pair<std::string, GgufValue>> metadata = {
        {"general.architecture", GgufValue::String(c.architecture)}};
    if (!c.tokens.empty()) {
      metadata.emplace_back("tokenizer.ggml.tokens", GgufValue::StringArray(c.tokens));
    }
    absl::StatusOr<std::string> source = SourceForMetadata(metadata);
    ASSERT_TRUE(source.ok()) << c.architecture << ": " << source.status();
    EXPECT_EQ(*source, *BuiltinChatTemplate(c.builtin)) << c.architecture;
  }
}

TEST(ChatTemplateSourceFor, NotFoundWhenNothingFits) {
  absl::StatusOr<std::string> source =
      SourceForMetadata({{"general.architecture", GgufValue::String("mamba")}});
  ASSERT_FALSE(source.ok());
  EXPECT_EQ(source.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(source.status().message().find("mamba"), std::string::npos);
  source = SourceForMetadata({});
  EXPECT_EQ(source.status().code(), absl::StatusCode::kNotFound);
  // Present but not a string: the file is malformed.
  source = SourceForMetadata({{"tokenizer.chat_template", GgufValue::U32(7)}});
  EXPECT_EQ(source.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace exo::runtime
