// libFuzzer target: parses arbitrary bytes as an HTTP API generation request body in each of the
// four dialects (OpenAI chat and completions, Ollama chat and generate). Any input must give a
// request or an InvalidArgument error: never a crash, a hang or a sanitizer report; a parsed
// request always satisfies the limits and passes the sampler's validation.
//
// Seed corpus: tests/fuzz/corpus/api_request/.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "node/api_request.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  exo::node::RequestLimits limits;
  limits.max_messages = 16;
  limits.max_text_bytes = 4096;
  for (exo::node::ApiDialect dialect :
       {exo::node::ApiDialect::kOpenAiChat, exo::node::ApiDialect::kOpenAiCompletion,
        exo::node::ApiDialect::kOllamaChat, exo::node::ApiDialect::kOllamaGenerate}) {
    absl::StatusOr<exo::node::GenerationRequest> r =
        exo::node::ParseGenerationRequest(body, dialect, limits);
    if (!r.ok()) {
      if (!absl::IsInvalidArgument(r.status())) std::abort();
      continue;
    }
    if (r->messages.size() > limits.max_messages || r->prompt.size() > limits.max_text_bytes ||
        r->stop.size() > limits.max_stop_sequences || r->top_logprobs > 20 ||
        !exo::runtime::ValidateSamplingParams(r->sampling).ok()) {
      std::abort();
    }
  }
  return 0;
}
