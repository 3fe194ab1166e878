// `exo-node generate` through the node running on this machine: when `exo-node serve` runs with
// the HTTP API and a model (its status file says so), generate sends the prompt to that API and
// streams the answer, so the model runs over the whole cluster the node coordinates. The pure
// parts (choosing the node, building the request, reading the stream) are separate from the one
// function that talks HTTP, so they are tested without sockets.
#ifndef EXO_NODE_CLUSTER_GENERATE_H_
#define EXO_NODE_CLUSTER_GENERATE_H_

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "node/cli.h"
#include "node/cluster_cli.h"

namespace exo::node {

// The running node generate may use, or why it runs in-process instead.
struct DaemonChoice {
  bool use = false;
  std::string why_not;  // one line, set when !use (for the "generating in-process" note)
  std::string node_id;
  uint16_t http_port = 0;
  std::string served_model;  // the id the node serves (a file name without .gguf)
};

// Pure: the node of `status` serves its HTTP API with a model, and, when `model_path` is not
// empty, that model (the file stem of `model_path` equals the served id).
DaemonChoice ChooseDaemon(const NodeStatus& status, const std::string& model_path);

// The HTTP request that reproduces `command` on the API. The OpenAI endpoints (SSE) carry every
// setting generate has except the repeat penalty and the penalty window (OpenAI penalises the
// whole answer; generate the last 64 tokens), so with any penalty on, the Ollama endpoint
// /api/generate (NDJSON), which takes both, is used instead.
enum class StreamDialect { kOpenAiCompletion, kOpenAiChat, kOllamaGenerate };

struct ApiRequest {
  StreamDialect dialect = StreamDialect::kOpenAiCompletion;
  std::string path;
  nlohmann::json body;
};

ApiRequest BuildApiRequest(const GenerateCommand& command, const std::string& served_model);

// One event of the answer's stream.
struct StreamEvent {
  std::string text;                      // generated text, possibly empty
  std::optional<std::string> finish;     // finish reason, when the answer finished
  std::optional<int64_t> prompt_tokens;  // usage figures, when the event carries them
  std::optional<int64_t> completion_tokens;
  bool end_of_stream = false;  // OpenAI's [DONE] or Ollama's done: true
};

// Pure: one line of the response body (an SSE line or an NDJSON line, without the newline).
// Lines that carry nothing (blank lines, SSE comments, the role chunk) give an empty event.
// An error the server streams is returned as Unavailable with its message; a line that is not
// what the API writes as InvalidArgument.
absl::StatusOr<StreamEvent> ParseStreamLine(StreamDialect dialect, std::string_view line);

// Pure: the plan in force from GET /v1/cluster, e.g. "2 stages: 3f2a9c01 layers [0, 9) ->
// 7b1c0d22 layers [9, 18), 4.21 ms/token estimated"; "" when the view has no plan.
std::string DescribePlanInForce(const nlohmann::json& cluster_view);

struct ClusterGenerateOptions {
  std::string host = "127.0.0.1";
  std::string api_key;            // sent as "Authorization: Bearer KEY" when not empty
  int32_t ready_timeout_s = 600;  // how long to wait while the node loads or re-plans
};

// Generates `command` through the node `daemon` chose: waits (with progress on `err`) while the
// node answers 503, streams the text to `out`, prints the summary line on `err`, and writes
// --json_out. Returns the process exit code (1 with a one-line error).
int RunClusterGenerate(const GenerateCommand& command, const DaemonChoice& daemon,
                       const ClusterGenerateOptions& options, std::ostream& out, std::ostream& err);

// GET `path` on the node's API and parse the JSON body. Unavailable when the node does not
// answer, FailedPrecondition with the server's message for an error status.
absl::StatusOr<nlohmann::json> GetNodeJson(const std::string& host, uint16_t port,
                                           const std::string& api_key, const std::string& path);

}  // namespace exo::node

#endif  // EXO_NODE_CLUSTER_GENERATE_H_
