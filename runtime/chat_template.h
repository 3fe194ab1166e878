// Chat templates: renders a conversation into the prompt text a model was trained on.
//
// A template is Jinja source, as shipped in a model's tokenizer_config.json and in GGUF files
// under `tokenizer.chat_template`. ChatTemplate implements the subset of Jinja that chat templates
// use, with the semantics of Python's jinja2 under Hugging Face's settings (trim_blocks=True,
// lstrip_blocks=True, a raise_exception(msg) global, tojson as json.dumps(ensure_ascii=False)),
// so a template renders byte-identically to transformers' apply_chat_template. See
// runtime/internal/jinja_parser.h for the supported syntax.
//
// Templates come from model files and are untrusted: parsing bounds nesting depth, rendering
// bounds output size, work and macro recursion; a hostile template yields an error, never a
// crash or a hang.
#ifndef EXO_RUNTIME_CHAT_TEMPLATE_H_
#define EXO_RUNTIME_CHAT_TEMPLATE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "runtime/gguf.h"

namespace exo::runtime {

namespace jinja {
struct ParsedTemplate;
}  // namespace jinja

// Resource bounds for one Render call; exceeding one is a ResourceExhausted error.
struct ChatTemplateLimits {
  size_t max_output_bytes = size_t{8} << 20;  // rendered prompt
  size_t max_value_size = size_t{8} << 20;    // bytes of one string / items of one list
  int64_t max_steps = 20'000'000;             // evaluation steps (bounds CPU time)
  int max_call_depth = 32;                    // nested macro calls
};

class ChatTemplate {
 public:
  // Parses `source`. Syntax errors (unclosed tags, unknown filters or tests, unsupported tags,
  // nesting too deep) are InvalidArgument naming the line and column.
  static absl::StatusOr<ChatTemplate> Parse(std::string_view source);

  // Renders with the variables `messages` (an array of {role, content, ...} objects; content may
  // be a string or a list of {type, text} parts), `add_generation_prompt`, `bos_token`,
  // `eos_token`, plus every key of the `extra` object (e.g. tools, date_string).
  // raise_exception(msg) in the template gives InvalidArgument(msg) with exactly that message;
  // other runtime errors (undefined attribute access, type errors) are InvalidArgument with the
  // line and column; exceeded limits are ResourceExhausted.
  absl::StatusOr<std::string> Render(const nlohmann::json& messages, bool add_generation_prompt,
                                     std::string_view bos_token, std::string_view eos_token,
                                     const nlohmann::json& extra = nlohmann::json::object()) const;

  void set_limits(const ChatTemplateLimits& limits) { limits_ = limits; }
  const ChatTemplateLimits& limits() const { return limits_; }

 private:
  explicit ChatTemplate(std::shared_ptr<const jinja::ParsedTemplate> parsed)
      : parsed_(std::move(parsed)) {}

  std::shared_ptr<const jinja::ParsedTemplate> parsed_;
  ChatTemplateLimits limits_;
};

// The built-in fallback templates, by name: "gemma", "chatml", "llama3", "llama2". nullopt for
// any other name. (The same text lives in runtime/templates/<name>.jinja for reading and for the
// golden-file generator; a test keeps them identical.)
std::optional<std::string_view> BuiltinChatTemplate(std::string_view name);

// The template source for a model: `tokenizer.chat_template` when the file has one, otherwise a
// built-in chosen by `general.architecture`: gemma/gemma2/gemma3 -> "gemma" (system prompt folded
// into the first user turn); qwen2/qwen2moe/qwen3/qwen3moe -> "chatml"; llama -> "llama3" when
// the vocabulary has <|start_header_id|>, else "llama2". NotFound when nothing fits;
// InvalidArgument when a key has the wrong type.
absl::StatusOr<std::string> ChatTemplateSourceFor(const GgufFile& file);

}  // namespace exo::runtime

#endif  // EXO_RUNTIME_CHAT_TEMPLATE_H_
