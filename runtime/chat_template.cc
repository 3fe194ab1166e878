#include "runtime/chat_template.h"

#include <algorithm>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "runtime/internal/jinja_interpreter.h"
#include "runtime/internal/jinja_parser.h"
#include "runtime/internal/jinja_value.h"

namespace exo::runtime {
namespace {

// Built-in fallback templates, used when a GGUF file has no tokenizer.chat_template. Each is a
// verbatim copy of runtime/templates/<name>.jinja (ChatTemplate.BuiltinsMatchTemplateFiles
// checks this).
// runtime/templates/gemma.jinja
constexpr std::string_view kTemplate_gemma =
    R"jinja({#- Gemma turn format. Gemma has no system role: a system message is folded into the first
    user turn. Content may be a string or a list of {"type": "text", "text": ...} parts. -#}
{%- macro text_of(content) -%}
  {%- if content is string -%}
    {{- content -}}
  {%- elif content is iterable -%}
    {%- for part in content if part.type == 'text' -%}
      {{- '\n' if not loop.first -}}{{- part.text -}}
    {%- endfor -%}
  {%- endif -%}
{%- endmacro -%}
{{- bos_token -}}
{%- if messages and messages[0].role == 'system' -%}
  {%- set system_prefix = text_of(messages[0].content) | trim ~ '\n\n' -%}
  {%- set turns = messages[1:] -%}
{%- else -%}
  {%- set system_prefix = '' -%}
  {%- set turns = messages -%}
{%- endif -%}
{%- for message in turns -%}
  {%- if (message.role == 'user') != (loop.index0 % 2 == 0) -%}
    {{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') -}}
  {%- endif -%}
  {{- '<start_of_turn>' ~ ('model' if message.role == 'assistant' else message.role) ~ '\n' -}}
  {%- if loop.first -%}
    {{- system_prefix -}}
  {%- endif -%}
  {{- text_of(message.content) | trim -}}
  {{- '<end_of_turn>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
  {{- '<start_of_turn>model\n' -}}
{%- endif -%}
)jinja";

// runtime/templates/chatml.jinja
constexpr std::string_view kTemplate_chatml =
    R"jinja({#- ChatML, as used by Qwen: <|im_start|>role\ncontent<|im_end|>\n per message. -#}
{%- macro text_of(content) -%}
  {%- if content is string -%}
    {{- content -}}
  {%- elif content is iterable -%}
    {%- for part in content if part.type == 'text' -%}
      {{- '\n' if not loop.first -}}{{- part.text -}}
    {%- endfor -%}
  {%- endif -%}
{%- endmacro -%}
{%- for message in messages -%}
  {{- '<|im_start|>' ~ message.role ~ '\n' ~ text_of(message.content) ~ '<|im_end|>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
  {{- '<|im_start|>assistant\n' -}}
{%- endif -%}
)jinja";

// runtime/templates/llama3.jinja
constexpr std::string_view kTemplate_llama3 =
    R"jinja({#- Llama 3 header format: <|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>. -#}
{%- macro text_of(content) -%}
  {%- if content is string -%}
    {{- content -}}
  {%- elif content is iterable -%}
    {%- for part in content if part.type == 'text' -%}
      {{- '\n' if not loop.first -}}{{- part.text -}}
    {%- endfor -%}
  {%- endif -%}
{%- endmacro -%}
{{- bos_token -}}
{%- for message in messages -%}
  {{- '<|start_header_id|>' ~ message.role ~ '<|end_header_id|>\n\n' -}}
  {{- text_of(message.content) | trim -}}
  {{- '<|eot_id|>' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
  {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
{%- endif -%}
)jinja";

// runtime/templates/llama2.jinja
constexpr std::string_view kTemplate_llama2 =
    R"jinja({#- Llama 2 [INST] format. The system prompt goes inside the first [INST] between <<SYS>>
    markers; each user turn starts with bos_token and each answer ends with eos_token. The
    prompt already ends in [/INST], so there is no separate generation prompt. -#}
{%- macro text_of(content) -%}
  {%- if content is string -%}
    {{- content -}}
  {%- elif content is iterable -%}
    {%- for part in content if part.type == 'text' -%}
      {{- '\n' if not loop.first -}}{{- part.text -}}
    {%- endfor -%}
  {%- endif -%}
{%- endmacro -%}
{%- if messages and messages[0].role == 'system' -%}
  {%- set system_text = text_of(messages[0].content) | trim -%}
  {%- set turns = messages[1:] -%}
{%- else -%}
  {%- set system_text = '' -%}
  {%- set turns = messages -%}
{%- endif -%}
{%- for message in turns -%}
  {%- if (message.role == 'user') != (loop.index0 % 2 == 0) -%}
    {{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') -}}
  {%- endif -%}
  {%- set text = text_of(message.content) | trim -%}
  {%- if message.role == 'user' -%}
    {%- if loop.first and system_text -%}
      {%- set text = '<<SYS>>\n' ~ system_text ~ '\n<</SYS>>\n\n' ~ text -%}
    {%- endif -%}
    {{- bos_token ~ '[INST] ' ~ text ~ ' [/INST]' -}}
  {%- else -%}
    {{- ' ' ~ text ~ ' ' ~ eos_token -}}
  {%- endif -%}
{%- endfor -%}
)jinja";

}  // namespace

absl::StatusOr<ChatTemplate> ChatTemplate::Parse(std::string_view source) {
  ASSIGN_OR_RETURN(std::shared_ptr<const jinja::ParsedTemplate> parsed,
                   jinja::ParseTemplate(source));
  return ChatTemplate(std::move(parsed));
}

absl::StatusOr<std::string> ChatTemplate::Render(const nlohmann::json& messages,
                                                 bool add_generation_prompt,
                                                 std::string_view bos_token,
                                                 std::string_view eos_token,
                                                 const nlohmann::json& extra) const {
  if (!extra.is_object() && !extra.is_null()) {
    return absl::InvalidArgumentError("chat template extra variables must be a JSON object");
  }
  std::vector<std::pair<std::string, jinja::Value>> variables;
  if (extra.is_object()) {
    for (auto it = extra.begin(); it != extra.end(); ++it) {
      ASSIGN_OR_RETURN(jinja::Value value, jinja::Value::FromJson(it.value()));
      variables.emplace_back(it.key(), std::move(value));
    }
  }
  auto set = [&](std::string name, jinja::Value value) {
    for (auto& [key, existing] : variables) {
      if (key == name) {
        existing = std::move(value);
        return;
      }
    }
    variables.emplace_back(std::move(name), std::move(value));
  };
  ASSIGN_OR_RETURN(jinja::Value messages_value, jinja::Value::FromJson(messages));
  set("messages", std::move(messages_value));
  set("add_generation_prompt", jinja::Value::Bool(add_generation_prompt));
  set("bos_token", jinja::Value::String(std::string(bos_token)));
  set("eos_token", jinja::Value::String(std::string(eos_token)));

  jinja::RenderLimits limits;
  limits.max_output_bytes = limits_.max_output_bytes;
  limits.max_value_size = limits_.max_value_size;
  limits.max_steps = limits_.max_steps;
  limits.max_call_depth = limits_.max_call_depth;
  limits.max_bytes_built =
      static_cast<int64_t>(std::min<size_t>(limits_.max_value_size, size_t{1} << 40)) * 32;
  jinja::Interpreter interpreter(*parsed_, limits);
  return interpreter.Render(std::move(variables));
}

std::optional<std::string_view> BuiltinChatTemplate(std::string_view name) {
  if (name == "gemma") return kTemplate_gemma;
  if (name == "chatml") return kTemplate_chatml;
  if (name == "llama3") return kTemplate_llama3;
  if (name == "llama2") return kTemplate_llama2;
  return std::nullopt;
}

namespace {

bool VocabularyHasToken(const GgufFile& file, std::string_view token) {
  const GgufValue* tokens = file.Find("tokenizer.ggml.tokens");
  if (tokens == nullptr) return false;
  const auto* array = std::get_if<GgufValue::Array>(&tokens->data);
  if (array == nullptr) return false;
  bool found = false;
  // Visits the texts in place: a vocabulary is usually kept encoded, and copying 100k+ strings to
  // look for one would be wasteful.
  if (array->ForEachString([&](size_t, std::string_view text) { found |= text == token; })) {
    return found;
  }
  array->ForEach([&](size_t, const GgufValue& element) {
    const auto* text = std::get_if<std::string>(&element.data);
    found = text != nullptr && *text == token;
    return !found;
  });
  return found;
}

}  // namespace

absl::StatusOr<std::string> ChatTemplateSourceFor(const GgufFile& file) {
  if (file.Find("tokenizer.chat_template") != nullptr) {
    return file.GetString("tokenizer.chat_template");
  }
  if (file.Find("general.architecture") == nullptr) {
    return absl::NotFoundError(
        "the model has no tokenizer.chat_template and no general.architecture to pick a "
        "built-in chat template by");
  }
  ASSIGN_OR_RETURN(std::string architecture, file.GetString("general.architecture"));
  std::string_view name;
  if (architecture == "gemma" || architecture == "gemma2" || architecture == "gemma3") {
    name = "gemma";
  } else if (architecture == "qwen2" || architecture == "qwen2moe" || architecture == "qwen3" ||
             architecture == "qwen3moe") {
    name = "chatml";
  } else if (architecture == "llama") {
    name = VocabularyHasToken(file, "<|start_header_id|>") ? "llama3" : "llama2";
  } else {
    return absl::NotFoundError(absl::StrCat(
        "the model has no tokenizer.chat_template and there is no built-in chat template for "
        "architecture '",
        architecture, "'; supply a template"));
  }
  return std::string(*BuiltinChatTemplate(name));
}

}  // namespace exo::runtime
