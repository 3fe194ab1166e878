// libFuzzer target: parses arbitrary bytes as a chat template and renders it with a fixed
// conversation (system, user, assistant with a tool call, tool result, user; tools in `extra`).
// Any input must give a template or an error, and a rendering or an error: never a crash, a
// hang, unbounded memory or a sanitizer report. Limits are lowered so that slow inputs stop
// quickly.
//
// Seed corpus: the templates in shared/testdata/chat-templates/ and runtime/templates/.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "nlohmann/json.hpp"
#include "runtime/chat_template.h"

namespace {

const nlohmann::json& Messages() {
  static const nlohmann::json* const messages = new nlohmann::json(nlohmann::json::parse(R"json([
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "  Héllo 👋 \n"},
    {"role": "assistant", "content": null, "tool_calls": [
      {"id": "call12345", "type": "function",
       "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
    {"role": "tool", "content": "{\"temperature\": 21}", "tool_call_id": "call12345"},
    {"role": "user", "content": [{"type": "text", "text": "Thanks"}]}
  ])json"));
  return *messages;
}

const nlohmann::json& Extra() {
  static const nlohmann::json* const extra = new nlohmann::json(nlohmann::json::parse(R"json({
    "tools": [{"type": "function", "function": {"name": "get_weather",
               "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
    "date_string": "01 Jan 2025"
  })json"));
  return *extra;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view source(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<exo::runtime::ChatTemplate> tmpl = exo::runtime::ChatTemplate::Parse(source);
  if (!tmpl.ok()) return 0;
  exo::runtime::ChatTemplateLimits limits;
  limits.max_steps = 200'000;
  limits.max_output_bytes = 1 << 16;
  limits.max_value_size = 1 << 16;
  limits.max_call_depth = 16;
  tmpl->set_limits(limits);
  (void)tmpl->Render(Messages(), true, "<s>", "</s>", Extra());
  (void)tmpl->Render(nlohmann::json::array(), false, "", "");
  return 0;
}
