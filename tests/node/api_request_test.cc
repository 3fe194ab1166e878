// Parsing of generation requests: defaults per dialect, every field's type and range checks, and
// bounds on untrusted sizes.
#include "node/api_request.h"

#include <string>

#include "gtest/gtest.h"

namespace exo::node {
namespace {

absl::StatusOr<GenerationRequest> Chat(const std::string& body) {
  return ParseGenerationRequest(body, ApiDialect::kOpenAiChat);
}

void ExpectError(const absl::StatusOr<GenerationRequest>& r, const std::string& words) {
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(r.status())) << r.status();
  EXPECT_NE(r.status().message().find(words), std::string::npos) << r.status().message();
}

TEST(ApiRequestTest, OpenAiChatWithEveryParameter) {
  auto r = Chat(R"({"model": "m", "messages": [{"role": "system", "content": "be brief"},
      {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
      "stream": true, "max_completion_tokens": 7, "temperature": 0.5, "top_p": 0.9, "top_k": 5,
      "min_p": 0.1, "seed": 3, "stop": ["x", "yy"], "presence_penalty": 1, "frequency_penalty": -1,
      "logprobs": true, "top_logprobs": 4, "stream_options": {"include_usage": true}})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->model, "m");
  EXPECT_EQ(r->messages.size(), 2u);
  EXPECT_EQ(r->messages[1]["content"], "ab");
  EXPECT_TRUE(r->stream);
  EXPECT_EQ(r->max_tokens, 7);
  EXPECT_FLOAT_EQ(r->sampling.temperature, 0.5f);
  EXPECT_FLOAT_EQ(r->sampling.top_p, 0.9f);
  EXPECT_EQ(r->sampling.top_k, 5);
  EXPECT_FLOAT_EQ(r->sampling.min_p, 0.1f);
  EXPECT_EQ(r->sampling.seed, 3u);
  EXPECT_EQ(r->stop, (std::vector<std::string>{"x", "yy"}));
  EXPECT_FLOAT_EQ(r->sampling.presence_penalty, 1.0f);
  EXPECT_FLOAT_EQ(r->sampling.frequency_penalty, -1.0f);
  EXPECT_EQ(r->top_logprobs, 4);
  EXPECT_TRUE(r->include_usage);
}

TEST(ApiRequestTest, OpenAiDefaultsDoNotFilter) {
  auto r = Chat(R"({"model": "m", "messages": [{"role": "user", "content": "hi"}]})");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->stream);
  EXPECT_EQ(r->max_tokens, -1);
  EXPECT_FLOAT_EQ(r->sampling.temperature, 1.0f);
  EXPECT_EQ(r->sampling.top_k, 0);
  EXPECT_FLOAT_EQ(r->sampling.top_p, 1.0f);
  EXPECT_FLOAT_EQ(r->sampling.min_p, 0.0f);
  EXPECT_EQ(r->sampling.seed, 0u);
  EXPECT_EQ(r->top_logprobs, -1);
  // A client's seed 0 is a fixed seed too (the sampler reads 0 as "random").
  auto zero = Chat(R"({"model": "m", "messages": [{"role": "user", "content": "hi"}], "seed": 0})");
  ASSERT_TRUE(zero.ok());
  EXPECT_NE(zero->sampling.seed, 0u);
  // A single stop string is a list of one.
  auto stop =
      Chat(R"({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stop": "\n"})");
  ASSERT_TRUE(stop.ok());
  EXPECT_EQ(stop->stop, (std::vector<std::string>{"\n"}));
}

TEST(ApiRequestTest, MalformedBodiesAreRefused) {
  ExpectError(Chat("{"), "not valid JSON");
  ExpectError(Chat(""), "not valid JSON");
  ExpectError(Chat("[1]"), "JSON object");
  ExpectError(Chat(std::string(100, '[') + std::string(100, ']')), "deeper");
  ExpectError(Chat(R"({"messages": [{"role": "user", "content": "hi"}]})"), "'model' is required");
  ExpectError(Chat(R"({"model": "m"})"), "'messages' is required");
}

TEST(ApiRequestTest, WrongTypesAndRangesNameTheField) {
  const std::string head = R"({"model": "m", "messages": [{"role": "user", "content": "hi"}], )";
  ExpectError(Chat(head + R"("temperature": "hot"})"), "'temperature' must be a number");
  ExpectError(Chat(head + R"("temperature": 3})"), "'temperature' must be between 0 and 2");
  ExpectError(Chat(head + R"("max_tokens": 1.5})"), "'max_tokens' must be an integer");
  ExpectError(Chat(head + R"("max_tokens": 0})"), "'max_tokens' must be between");
  ExpectError(Chat(head + R"("stream": 1})"), "'stream' must be a boolean");
  ExpectError(Chat(head + R"("stop": 5})"), "'stop' must be a string or an array");
  ExpectError(Chat(head + R"("stop": ["a", "b", "c", "d", "e"]})"), "at most 4");
  ExpectError(Chat(head + R"("n": 2})"), "'n' must be 1");
  ExpectError(Chat(head + R"("top_logprobs": 2})"), "needs 'logprobs'");
  ExpectError(Chat(head + R"("logprobs": true, "top_logprobs": 21})"), "between 0 and 20");
  ExpectError(Chat(head + R"("seed": "x"})"), "'seed' must be an integer");
  ExpectError(Chat(head + R"("stream_options": 1})"), "'stream_options' must be an object");
  ExpectError(Chat(head + R"("presence_penalty": -3})"), "presence_penalty");
  ExpectError(Chat(R"({"model": 5, "messages": []})"), "'model' must be a string");
  ExpectError(Chat(R"({"model": "m", "messages": []})"), "at least one message");
  ExpectError(Chat(R"({"model": "m", "messages": ["hi"]})"), "'messages[0]' must be an object");
  ExpectError(Chat(R"({"model": "m", "messages": [{"role": "king", "content": "x"}]})"),
              "'messages[0].role' must be");
  ExpectError(Chat(R"({"model": "m", "messages": [{"role": "user", "content": 5}]})"),
              "'messages[0].content' must be a string");
  ExpectError(
      Chat(R"({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]})"),
      "parts must be of type");
}

TEST(ApiRequestTest, SizesAreBounded) {
  RequestLimits limits;
  limits.max_messages = 2;
  limits.max_text_bytes = 10;
  auto r = ParseGenerationRequest(
      R"({"model": "m", "messages": [{"role": "user", "content": "0123456789x"}]})",
      ApiDialect::kOpenAiChat, limits);
  ExpectError(r, "longer than 10 bytes");
  r = ParseGenerationRequest(R"({"model": "m", "messages": [{"role": "user"}, {"role": "user"},
      {"role": "user"}]})",
                             ApiDialect::kOpenAiChat, limits);
  ExpectError(r, "at most 2 messages");
}

TEST(ApiRequestTest, Completions) {
  auto r = ParseGenerationRequest(R"({"model": "m", "prompt": ["once"], "logprobs": 2,
      "max_tokens": 3})",
                                  ApiDialect::kOpenAiCompletion);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->prompt, "once");
  EXPECT_EQ(r->top_logprobs, 2);
  ExpectError(
      ParseGenerationRequest(R"({"model": "m", "prompt": 3})", ApiDialect::kOpenAiCompletion),
      "'prompt' must be a string");
  ExpectError(ParseGenerationRequest(R"({"model": "m", "prompt": "x", "logprobs": 6})",
                                     ApiDialect::kOpenAiCompletion),
              "'logprobs' must be between 0 and 5");
}

TEST(ApiRequestTest, OllamaDefaultsAndOptions) {
  auto r = ParseGenerationRequest(R"({"messages": [{"role": "user", "content": "hi"}]})",
                                  ApiDialect::kOllamaChat);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->stream);  // Ollama streams by default
  EXPECT_EQ(r->model, "");
  EXPECT_FLOAT_EQ(r->sampling.temperature, 0.8f);
  EXPECT_EQ(r->sampling.top_k, 40);
  r = ParseGenerationRequest(R"({"model": "m", "prompt": "p", "system": "s", "raw": true,
      "stream": false, "options": {"temperature": 0, "num_predict": 9, "stop": ["a"], "seed": 4,
      "repeat_penalty": 1.3, "repeat_last_n": 16, "top_k": 2}})",
                             ApiDialect::kOllamaGenerate);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->stream);
  EXPECT_TRUE(r->raw);
  EXPECT_EQ(r->system, "s");
  EXPECT_EQ(r->max_tokens, 9);
  EXPECT_EQ(r->stop, (std::vector<std::string>{"a"}));
  EXPECT_FLOAT_EQ(r->sampling.repetition_penalty, 1.3f);
  EXPECT_EQ(r->sampling.penalty_last_n, 16);
  EXPECT_EQ(r->sampling.top_k, 2);
  ExpectError(
      ParseGenerationRequest(R"({"prompt": "p", "options": []})", ApiDialect::kOllamaGenerate),
      "'options' must be an object");
  ExpectError(ParseGenerationRequest(R"({"prompt": "p", "options": {"temperature": "x"}})",
                                     ApiDialect::kOllamaGenerate),
              "'options.temperature' must be a number");
}

}  // namespace
}  // namespace exo::node
