// Parsing and validation of the generation requests the HTTP API accepts: OpenAI's
// /v1/chat/completions and /v1/completions, Ollama's /api/chat and /api/generate. Bodies are
// untrusted: every field is type-checked, sizes are bounded, and each error is an InvalidArgument
// whose message names the field, ready for the client.
#ifndef EXO_NODE_API_REQUEST_H_
#define EXO_NODE_API_REQUEST_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "runtime/sampler.h"

namespace exo::node {

enum class ApiDialect { kOpenAiChat, kOpenAiCompletion, kOllamaChat, kOllamaGenerate };

struct RequestLimits {
  size_t max_messages = 1024;
  size_t max_text_bytes = 1 << 20;  // one message or prompt
  size_t max_stop_sequences = 4;
  size_t max_stop_bytes = 256;
  int32_t max_json_depth = 32;
};

struct GenerationRequest {
  ApiDialect dialect = ApiDialect::kOpenAiChat;
  std::string model;        // as asked for; "" for Ollama requests that omit it
  nlohmann::json messages;  // chat: [{role, content}], content always a string
  std::string prompt;       // completion / generate
  std::string system;       // Ollama generate: system prompt
  bool raw = false;         // Ollama generate: no template
  bool stream = false;
  int32_t max_tokens = -1;  // -1: until the context is full
  runtime::SamplingParams sampling;
  std::vector<std::string> stop;  // text sequences that end the answer (not included)
  int32_t top_logprobs = -1;      // -1: no log-probabilities
  bool include_usage = false;     // stream_options.include_usage
};

// Parses `body` for `dialect`. InvalidArgument for malformed JSON, a non-object body, wrong field
// types, out-of-range values and unsupported options (e.g. n > 1).
absl::StatusOr<GenerationRequest> ParseGenerationRequest(std::string_view body, ApiDialect dialect,
                                                         const RequestLimits& limits = {});

// Parses a JSON body with the depth bound; InvalidArgument when malformed or not an object.
absl::StatusOr<nlohmann::json> ParseJsonObject(std::string_view body, int32_t max_depth = 32);

}  // namespace exo::node

#endif  // EXO_NODE_API_REQUEST_H_
