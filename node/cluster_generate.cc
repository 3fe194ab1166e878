#include "node/cluster_generate.h"

#include <httplib.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace exo::node {
namespace {

using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

std::string ModelId(const std::string& path_or_id) {
  std::string id = std::filesystem::path(path_or_id).filename().string();
  if (absl::EndsWith(id, ".gguf")) id.resize(id.size() - 5);
  return id;
}

// The server's message from an error body ({"error": {"message"}} or {"error": "message"}),
// else the body itself, shortened.
std::string ErrorMessage(const std::string& body) {
  const Json parsed = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_object() && parsed.contains("error")) {
    const Json& error = parsed["error"];
    if (error.is_string()) return error.get<std::string>();
    if (error.is_object() && error.contains("message") && error["message"].is_string()) {
      return error["message"].get<std::string>();
    }
  }
  if (parsed.is_object() && parsed.contains("detail") && parsed["detail"].is_string()) {
    return parsed["detail"].get<std::string>();
  }
  return body.substr(0, 300);
}

std::string ShortId(const std::string& id) { return id.substr(0, 8); }

std::unique_ptr<httplib::Client> MakeClient(const std::string& host, uint16_t port,
                                            const std::string& api_key, int read_timeout_s) {
  auto client = std::make_unique<httplib::Client>(host, port);
  client->set_connection_timeout(5);
  client->set_read_timeout(read_timeout_s);
  if (!api_key.empty()) client->set_bearer_token_auth(api_key);
  return client;
}

std::string BaseUrl(const std::string& host, uint16_t port) {
  return absl::StrCat("http://", host, ":", port);
}

// Waits until GET /health answers 200, printing what the node is doing when it changes.
absl::Status WaitUntilReady(httplib::Client& client, const std::string& url,
                            Clock::time_point deadline, std::ostream& err) {
  std::string last_detail;
  while (true) {
    httplib::Result result = client.Get("/health");
    if (!result) {
      return absl::UnavailableError(absl::StrCat("the node's API at ", url, " does not answer (",
                                                 httplib::to_string(result.error()),
                                                 "); is `exo-node serve` still running? Or pass "
                                                 "--local to generate in-process"));
    }
    if (result->status == 200) return absl::OkStatus();
    const Json body = Json::parse(result->body, nullptr, /*allow_exceptions=*/false);
    const std::string state =
        body.is_object() && body.contains("status") && body["status"].is_string()
            ? body["status"].get<std::string>()
            : "";
    std::string detail = ErrorMessage(result->body);
    if (body.is_object() && body.contains("detail") && body["detail"].is_string()) {
      detail = body["detail"].get<std::string>();
    }
    if (result->status != 503 || state == "error" || state == "failed") {
      return absl::FailedPreconditionError(
          absl::StrCat("the node at ", url, " cannot serve the model (HTTP ", result->status, ": ",
                       detail, "); fix it and restart `exo-node serve`, or pass --local"));
    }
    if (Clock::now() >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("the node at ", url, " was still not ready after the wait (", detail,
                       "); try again later, raise --ready_timeout_s, or pass --local"));
    }
    if (detail != last_detail) {
      err << "exo-node: waiting for the node: " << (detail.empty() ? state : detail) << "\n";
      last_detail = detail;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
}

}  // namespace

DaemonChoice ChooseDaemon(const NodeStatus& status, const std::string& model_path) {
  DaemonChoice choice;
  if (!status.running) {
    choice.why_not = status.why_not_running;
    return choice;
  }
  try {
    const Json caps = status.json.value("capabilities", Json::object());
    choice.node_id = status.json.value("node_id", "");
    const int64_t port = caps.value("http_port", int64_t{0});
    choice.served_model = caps.value("served_model", "");
    if (port <= 0 || port > 65535) {
      choice.why_not = absl::StrCat("the running node ", choice.node_id,
                                    " serves no HTTP API (started with --noapi?)");
      return choice;
    }
    choice.http_port = static_cast<uint16_t>(port);
    if (choice.served_model.empty()) {
      choice.why_not = absl::StrCat("the running node ", choice.node_id, " serves no model");
      return choice;
    }
    if (!model_path.empty() && ModelId(model_path) != ModelId(choice.served_model)) {
      choice.why_not = absl::StrCat("the running node ", choice.node_id, " serves ",
                                    choice.served_model, ", not ", ModelId(model_path));
      return choice;
    }
  } catch (const Json::exception& e) {
    choice.why_not = absl::StrCat(status.path, " is damaged (", e.what(), ")");
    return choice;
  }
  choice.use = true;
  return choice;
}

ApiRequest BuildApiRequest(const GenerateCommand& command, const std::string& served_model) {
  const runtime::SamplingParams& s = command.sampling;
  const bool penalties =
      s.repetition_penalty != 1.0f || s.presence_penalty != 0.0f || s.frequency_penalty != 0.0f;
  ApiRequest request;
  if (penalties) {
    request.dialect = StreamDialect::kOllamaGenerate;
    request.path = "/api/generate";
    Json options = {{"temperature", s.temperature},
                    {"top_k", s.top_k},
                    {"top_p", s.top_p},
                    {"min_p", s.min_p},
                    {"num_predict", command.max_tokens},
                    {"repeat_penalty", s.repetition_penalty},
                    {"repeat_last_n", s.penalty_last_n},
                    {"presence_penalty", s.presence_penalty},
                    {"frequency_penalty", s.frequency_penalty}};
    if (s.seed != 0) options["seed"] = s.seed;
    request.body = {{"model", served_model},
                    {"prompt", command.prompt},
                    {"raw", !command.chat_template},
                    {"stream", true},
                    {"options", options}};
    return request;
  }
  request.dialect =
      command.chat_template ? StreamDialect::kOpenAiChat : StreamDialect::kOpenAiCompletion;
  request.path = command.chat_template ? "/v1/chat/completions" : "/v1/completions";
  request.body = {{"model", served_model},
                  {"max_tokens", command.max_tokens},
                  {"temperature", s.temperature},
                  {"top_k", s.top_k},
                  {"top_p", s.top_p},
                  {"min_p", s.min_p},
                  {"stream", true},
                  {"stream_options", {{"include_usage", true}}}};
  if (s.seed != 0) request.body["seed"] = s.seed;
  if (command.chat_template) {
    request.body["messages"] = Json::array({{{"role", "user"}, {"content", command.prompt}}});
  } else {
    request.body["prompt"] = command.prompt;
  }
  return request;
}

absl::StatusOr<StreamEvent> ParseStreamLine(StreamDialect dialect, std::string_view line) {
  StreamEvent event;
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (line.empty()) return event;
  std::string_view payload = line;
  if (dialect != StreamDialect::kOllamaGenerate) {
    if (line.front() == ':') return event;  // an SSE comment
    if (line.substr(0, 5) != "data:") {
      return event;  // other SSE fields (event:, id:, retry:) carry nothing for us
    }
    payload.remove_prefix(5);
    if (!payload.empty() && payload.front() == ' ') payload.remove_prefix(1);
    if (payload == "[DONE]") {
      event.end_of_stream = true;
      return event;
    }
  }
  const Json chunk = Json::parse(payload.begin(), payload.end(), nullptr, false);
  if (!chunk.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the node sent a stream line that is not a JSON object: ",
                     std::string(payload.substr(0, 200))));
  }
  if (chunk.contains("error")) {
    return absl::UnavailableError(
        absl::StrCat("the node stopped the answer: ", ErrorMessage(chunk.dump())));
  }
  try {
    if (dialect == StreamDialect::kOllamaGenerate) {
      event.text = chunk.value("response", "");
      if (chunk.value("done", false)) {
        event.end_of_stream = true;
        event.finish = chunk.value("done_reason", "stop");
        if (chunk.contains("prompt_eval_count")) {
          event.prompt_tokens = chunk["prompt_eval_count"].get<int64_t>();
        }
        if (chunk.contains("eval_count")) {
          event.completion_tokens = chunk["eval_count"].get<int64_t>();
        }
      }
      return event;
    }
    const Json usage = chunk.value("usage", Json());
    if (usage.is_object()) {
      event.prompt_tokens = usage.value("prompt_tokens", int64_t{0});
      event.completion_tokens = usage.value("completion_tokens", int64_t{0});
    }
    const Json choices = chunk.value("choices", Json::array());
    if (choices.is_array() && !choices.empty() && choices[0].is_object()) {
      const Json& choice = choices[0];
      if (dialect == StreamDialect::kOpenAiChat) {
        const Json delta = choice.value("delta", Json::object());
        const Json content = delta.value("content", Json());
        if (content.is_string()) event.text = content.get<std::string>();
      } else {
        event.text = choice.value("text", "");
      }
      const Json finish = choice.value("finish_reason", Json());
      if (finish.is_string()) event.finish = finish.get<std::string>();
    }
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("the node sent a stream event of an unexpected shape (", e.what(), ")"));
  }
  return event;
}

std::string DescribePlanInForce(const Json& view) {
  if (!view.is_object() || !view.contains("plan") || !view["plan"].is_object()) return "";
  const Json& plan = view["plan"];
  const Json stages = plan.value("stages", Json::array());
  if (!stages.is_array() || stages.empty()) return "";
  std::vector<std::string> parts;
  try {
    for (const Json& stage : stages) {
      parts.push_back(absl::StrFormat("%s layers [%d, %d)", ShortId(stage.value("node", "")),
                                      stage.value("layer_begin", 0), stage.value("layer_end", 0)));
    }
    std::string text = absl::StrCat(
        stages.size(), stages.size() == 1 ? " stage: " : " stages: ", absl::StrJoin(parts, " -> "));
    if (plan.contains("seconds_per_token") && plan["seconds_per_token"].is_number()) {
      absl::StrAppend(&text, absl::StrFormat(", %.2f ms/token estimated",
                                             plan["seconds_per_token"].get<double>() * 1000.0));
    }
    return text;
  } catch (const Json::exception&) {
    return "";
  }
}

absl::StatusOr<Json> GetNodeJson(const std::string& host, uint16_t port, const std::string& api_key,
                                 const std::string& path) {
  std::unique_ptr<httplib::Client> client = MakeClient(host, port, api_key, 10);
  httplib::Result result = client->Get(path.c_str());
  if (!result) {
    return absl::UnavailableError(absl::StrCat("the node's API at ", BaseUrl(host, port),
                                               " does not answer (",
                                               httplib::to_string(result.error()), ")"));
  }
  if (result->status != 200) {
    return absl::FailedPreconditionError(absl::StrCat(
        "GET ", path, " answered HTTP ", result->status, ": ", ErrorMessage(result->body)));
  }
  Json body = Json::parse(result->body, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) {
    return absl::InvalidArgumentError(absl::StrCat("GET ", path, " did not answer JSON"));
  }
  return body;
}

namespace {

struct StreamResult {
  std::string text;
  std::optional<std::string> finish;
  int64_t prompt_tokens = -1;
  int64_t completion_tokens = -1;
  int64_t pieces = 0;  // events with text (a lower bound on tokens when usage is missing)
  Clock::time_point first_text;
  Clock::time_point end;
};

// One POST with the answer streamed to `out`. Sets `*retry` when the node answered 503 before
// any text (loading, or re-planning after a node left), so the caller may wait and try again.
absl::Status StreamOnce(httplib::Client& client, const std::string& url, const ApiRequest& api,
                        std::ostream& out, StreamResult& result, bool* retry) {
  *retry = false;
  int status = 0;
  std::string error_body;
  std::string pending;  // bytes after the last newline
  absl::Status stream_error;
  bool ended = false;
  httplib::Request request;
  request.method = "POST";
  request.path = api.path;
  request.body = api.body.dump();
  request.set_header("Content-Type", "application/json");
  request.set_header("Accept", api.dialect == StreamDialect::kOllamaGenerate
                                   ? "application/x-ndjson"
                                   : "text/event-stream");
  request.response_handler = [&](const httplib::Response& response) {
    status = response.status;
    return true;
  };
  request.content_receiver = [&](const char* data, size_t size, uint64_t, uint64_t) {
    if (status != 200) {
      if (error_body.size() < 65536) error_body.append(data, size);
      return true;
    }
    pending.append(data, size);
    size_t start = 0;
    for (size_t newline; (newline = pending.find('\n', start)) != std::string::npos;
         start = newline + 1) {
      absl::StatusOr<StreamEvent> event =
          ParseStreamLine(api.dialect, std::string_view(pending).substr(start, newline - start));
      if (!event.ok()) {
        stream_error = event.status();
        return false;
      }
      if (!event->text.empty()) {
        if (result.pieces == 0) result.first_text = Clock::now();
        ++result.pieces;
        result.text += event->text;
        out << event->text << std::flush;
      }
      if (event->finish.has_value()) result.finish = event->finish;
      if (event->prompt_tokens.has_value()) result.prompt_tokens = *event->prompt_tokens;
      if (event->completion_tokens.has_value()) {
        result.completion_tokens = *event->completion_tokens;
      }
      if (event->end_of_stream) ended = true;
    }
    pending.erase(0, start);
    return true;
  };
  httplib::Result sent = client.send(request);
  result.end = Clock::now();
  if (!stream_error.ok()) return stream_error;
  if (status == 503 && result.pieces == 0) {
    *retry = true;
    return absl::UnavailableError(ErrorMessage(error_body));
  }
  if (status != 0 && status != 200) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the node at ", url, " refused the request (HTTP ", status, "): ", ErrorMessage(error_body),
        status == 401 ? "; pass the node's key with --api_key KEY"
                      : (status == 400 ? "; check the flags, or pass --local" : "")));
  }
  if (!sent || !ended) {
    const std::string why =
        sent ? "the stream ended early" : absl::StrCat(httplib::to_string(sent.error()));
    return absl::UnavailableError(absl::StrCat(
        "the connection to the node at ", url, " dropped after ", result.pieces,
        " piece(s) of text (", why, "); is `exo-node serve` still running? Or pass --local"));
  }
  return absl::OkStatus();
}

}  // namespace

int RunClusterGenerate(const GenerateCommand& command, const DaemonChoice& daemon,
                       const ClusterGenerateOptions& options, std::ostream& out,
                       std::ostream& err) {
  auto fail = [&](const absl::Status& status) {
    err << "exo-node: error: " << status.message() << "\n";
    return 1;
  };
  const Clock::time_point start = Clock::now();
  const Clock::time_point deadline = start + std::chrono::seconds(options.ready_timeout_s);
  const std::string url = BaseUrl(options.host, daemon.http_port);
  std::unique_ptr<httplib::Client> client =
      MakeClient(options.host, daemon.http_port, options.api_key, 300);
  const ApiRequest api = BuildApiRequest(command, daemon.served_model);
  StreamResult result;
  bool announced = false;
  constexpr int kMaxRefusals = 10;
  int refusals = 0;
  while (true) {
    if (absl::Status ready = WaitUntilReady(*client, url, deadline, err); !ready.ok()) {
      return fail(ready);
    }
    if (!announced) {
      absl::StatusOr<Json> view =
          GetNodeJson(options.host, daemon.http_port, options.api_key, "/v1/cluster");
      const std::string plan = view.ok() ? DescribePlanInForce(*view) : "";
      err << "exo-node: generating through the cluster node " << daemon.node_id << " at " << url
          << " (model " << daemon.served_model << (plan.empty() ? "" : "; plan: ") << plan << ")\n";
      announced = true;
    }
    bool retry = false;
    absl::Status streamed = StreamOnce(*client, url, api, out, result, &retry);
    if (streamed.ok()) break;
    if (!retry) {
      if (result.pieces > 0) out << "\n" << std::flush;
      return fail(streamed);
    }
    // A node that re-plans also fails /health, which the wait above covers; one whose /health
    // is fine but keeps refusing requests with 503 (e.g. it has no model) will not recover.
    if (Clock::now() >= deadline || ++refusals > kMaxRefusals) {
      return fail(absl::UnavailableError(absl::StrCat("the node at ", url, " kept answering 503 (",
                                                      streamed.message(),
                                                      "); try again later, or pass --local")));
    }
    if (refusals == 1)
      err << "exo-node: the node is busy (" << streamed.message() << "); waiting\n";
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  out << "\n" << std::flush;

  const int64_t generated =
      result.completion_tokens >= 0 ? result.completion_tokens : result.pieces;
  const double generate_seconds = result.pieces > 0 ? Seconds(result.end - result.first_text) : 0;
  err << absl::StrFormat("prompt: %s | generation: %d tokens in %.3f s (%s) | through node %s",
                         result.prompt_tokens >= 0 ? absl::StrCat(result.prompt_tokens, " tokens")
                                                   : std::string("- tokens"),
                         generated, generate_seconds,
                         generated > 1 && generate_seconds > 0
                             ? absl::StrFormat("%.1f tok/s", (generated - 1) / generate_seconds)
                             : std::string("- tok/s"),
                         ShortId(daemon.node_id));
  if (result.pieces > 0) {
    err << absl::StrFormat(" | time to first token %.3f s", Seconds(result.first_text - start));
  }
  if (result.finish.has_value()) err << " | finish: " << *result.finish;
  err << "\n";

  if (!command.json_out.empty()) {
    Json json = {{"text", result.text},
                 {"generated_token_count", generated},
                 {"generate_seconds", generate_seconds},
                 {"time_to_first_token_seconds",
                  result.pieces > 0 ? Seconds(result.first_text - start) : 0.0},
                 {"finish_reason", result.finish.value_or("")},
                 {"node_id", daemon.node_id},
                 {"url", url},
                 {"model", daemon.served_model}};
    if (result.prompt_tokens >= 0) json["prompt_token_count"] = result.prompt_tokens;
    const std::string text = json.dump(2, ' ', false, Json::error_handler_t::replace);
    std::ofstream file(command.json_out, std::ios::binary);
    file << text;
    if (!file) {
      return fail(absl::UnavailableError(absl::StrCat("cannot write ", command.json_out)));
    }
  }
  return 0;
}

}  // namespace exo::node
