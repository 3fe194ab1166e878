#include "node/api_server.h"

#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <optional>
#include <thread>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"
#include "kernels/types.h"
#include "node/api_proxy.h"
#include "node/api_request.h"
#include "node/api_webui.h"
#include "runtime/model_config.h"

namespace exo::node {
namespace {

using nlohmann::json;

constexpr char kOllamaVersion[] = "0.6.0";
constexpr absl::Duration kPollInterval = absl::Milliseconds(100);

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

int64_t UnixSeconds() { return absl::ToUnixSeconds(absl::Now()); }

std::string Rfc3339Now() {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E6SZ", absl::Now(), absl::UTCTimeZone());
}

std::string NewId(const char* prefix) {
  static std::atomic<uint64_t> counter{0};
  return absl::StrFormat("%s-%x%06x", prefix, absl::ToUnixMicros(absl::Now()),
                         counter.fetch_add(1) & 0xffffff);
}

bool IsOllama(ApiDialect d) {
  return d == ApiDialect::kOllamaChat || d == ApiDialect::kOllamaGenerate;
}

// ---- Errors ---------------------------------------------------------------------------------

int HttpStatusFor(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
      return 400;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kFailedPrecondition:
      return 503;
    default:
      return 500;
  }
}

const char* ErrorType(int http_status) {
  switch (http_status) {
    case 400:
    case 404:
    case 413:
      return "invalid_request_error";
    case 401:
      return "authentication_error";
    case 429:
      return "rate_limit_error";
    case 503:
      return "overloaded_error";
    default:
      return "server_error";
  }
}

// OpenAI's shape {"error": {message, type, param, code}}; Ollama's {"error": message}.
json ErrorBody(int http_status, const std::string& message, ApiDialect dialect,
               const std::string& code = "") {
  if (IsOllama(dialect)) return {{"error", message}};
  return {{"error",
           {{"message", message},
            {"type", ErrorType(http_status)},
            {"param", nullptr},
            {"code", code.empty() ? json(nullptr) : json(code)}}}};
}

void SetError(httplib::Response& res, int http_status, const std::string& message,
              ApiDialect dialect = ApiDialect::kOpenAiChat, const std::string& code = "") {
  res.status = http_status;
  if (http_status == 429 || http_status == 503) res.set_header("Retry-After", "1");
  res.set_content(Dump(ErrorBody(http_status, message, dialect, code)), "application/json");
}

void SetStatusError(httplib::Response& res, const absl::Status& status,
                    ApiDialect dialect = ApiDialect::kOpenAiChat) {
  SetError(res, HttpStatusFor(status), std::string(status.message()), dialect);
}

// ---- Text out of tokens: UTF-8 safe, with stop sequences held back until they cannot match ----

struct Delta {
  std::string text;
  std::vector<TokenEvent> tokens;
  bool finished = false;
  std::string finish_reason;  // "stop" or "length" when finished without error
  absl::Status error;
};

// One request's generation: pulls the sequence's tokens and turns them into text deltas.
class Generation {
 public:
  Generation(std::shared_ptr<ServedModel> model, std::shared_ptr<Sequence> sequence,
             GenerationRequest request, Metrics* metrics)
      : model_(std::move(model)),
        sequence_(std::move(sequence)),
        request_(std::move(request)),
        metrics_(metrics),
        decoder_(*model_->tokenizer) {
    for (const std::string& s : request_.stop) max_stop_ = std::max(max_stop_, s.size());
  }
  ~Generation() { sequence_->Cancel(); }

  Delta Poll(absl::Duration timeout) {
    Delta delta;
    if (done_) {
      delta.finished = true;
      delta.finish_reason = finish_reason_;
      return delta;
    }
    events_.clear();
    const Sequence::State state = sequence_->Wait(&events_, timeout);
    for (TokenEvent& e : events_) {
      if (completion_tokens_ == 0) {
        metrics_->Observe("exo_time_to_first_token_seconds",
                          absl::ToDoubleSeconds(e.time - sequence_->submit_time()));
      } else {
        metrics_->Observe("exo_inter_token_latency_seconds",
                          absl::ToDoubleSeconds(e.time - last_token_time_));
      }
      last_token_time_ = e.time;
      ++completion_tokens_;
      text_ += decoder_.Push(e.token);
      delta.tokens.push_back(std::move(e));
    }
    metrics_->Add("exo_generated_tokens_total", static_cast<double>(delta.tokens.size()));
    const bool finished = state == Sequence::State::kFinished;
    if (finished) text_ += decoder_.Flush();
    // A stop sequence ends the answer before it.
    if (max_stop_ > 0) {
      const size_t from = emitted_ > max_stop_ ? emitted_ - max_stop_ : 0;
      size_t best = std::string::npos;
      for (const std::string& s : request_.stop) best = std::min(best, text_.find(s, from));
      if (best != std::string::npos) {
        delta.text = text_.substr(emitted_, best - emitted_);
        emitted_ = best;
        Finish("stop", &delta);
        return delta;
      }
    }
    size_t end = text_.size();
    if (!finished && max_stop_ > 0) {
      // Hold back what could be the start of a stop sequence, on a character boundary.
      end = text_.size() >= emitted_ + max_stop_ - 1 ? text_.size() - (max_stop_ - 1) : emitted_;
      while (end > emitted_ && (static_cast<unsigned char>(text_[end]) & 0xC0) == 0x80) --end;
    }
    delta.text = text_.substr(emitted_, end - emitted_);
    emitted_ = end;
    if (finished) {
      const FinishReason reason = sequence_->finish_reason();
      if (reason == FinishReason::kError || reason == FinishReason::kCancelled) {
        delta.error = reason == FinishReason::kError
                          ? sequence_->error()
                          : absl::UnavailableError("the server is shutting down");
      }
      Finish(reason == FinishReason::kLength ? "length" : "stop", &delta);
    }
    return delta;
  }

  void Cancel() { sequence_->Cancel(); }
  int32_t prompt_tokens() const { return sequence_->prompt_tokens(); }
  int32_t completion_tokens() const { return completion_tokens_; }
  const GenerationRequest& request() const { return request_; }
  const ServedModel& model() const { return *model_; }
  absl::Time submit_time() const { return sequence_->submit_time(); }
  absl::Time first_token_time() const { return first_token_time_; }

 private:
  void Finish(const std::string& reason, Delta* delta) {
    done_ = true;
    finish_reason_ = reason;
    delta->finished = true;
    delta->finish_reason = reason;
    sequence_->Cancel();  // frees the slot now when a stop sequence ended it early
    metrics_->Add("exo_prompt_tokens_total", sequence_->prompt_tokens());
    metrics_->Add("exo_requests_finished_total", 1, {{"finish_reason", reason}});
  }

  std::shared_ptr<ServedModel> model_;
  std::shared_ptr<Sequence> sequence_;
  GenerationRequest request_;
  Metrics* metrics_;
  runtime::StreamingDecoder decoder_;
  std::vector<TokenEvent> events_;
  std::string text_;
  size_t emitted_ = 0;
  size_t max_stop_ = 0;
  int32_t completion_tokens_ = 0;
  absl::Time last_token_time_;
  absl::Time first_token_time_;
  bool done_ = false;
  std::string finish_reason_;
};

// ---- Response formatting ----------------------------------------------------------------------

json TokenBytes(const std::string& piece) {
  json bytes = json::array();
  for (unsigned char c : piece) bytes.push_back(static_cast<int>(c));
  return bytes;
}

// OpenAI chat logprobs: {"content": [{token, logprob, bytes, top_logprobs: [...]}, ...]}.
json ChatLogprobs(const runtime::Tokenizer& tokenizer, const std::vector<TokenEvent>& tokens) {
  json content = json::array();
  for (const TokenEvent& e : tokens) {
    const std::string piece = tokenizer.TokenToPiece(e.token);
    json top = json::array();
    for (const auto& t : e.top) {
      const std::string p = tokenizer.TokenToPiece(t.id);
      top.push_back({{"token", p}, {"logprob", t.logprob}, {"bytes", TokenBytes(p)}});
    }
    content.push_back({{"token", piece},
                       {"logprob", e.logprob},
                       {"bytes", TokenBytes(piece)},
                       {"top_logprobs", top}});
  }
  return {{"content", content}};
}

// OpenAI completions logprobs: parallel arrays.
json CompletionLogprobs(const runtime::Tokenizer& tokenizer, const std::vector<TokenEvent>& tokens,
                        size_t text_offset) {
  json out = {{"tokens", json::array()},
              {"token_logprobs", json::array()},
              {"top_logprobs", json::array()},
              {"text_offset", json::array()}};
  for (const TokenEvent& e : tokens) {
    const std::string piece = tokenizer.TokenToPiece(e.token);
    out["tokens"].push_back(piece);
    out["token_logprobs"].push_back(e.logprob);
    json top = json::object();
    for (const auto& t : e.top) top[tokenizer.TokenToPiece(t.id)] = t.logprob;
    out["top_logprobs"].push_back(top);
    out["text_offset"].push_back(text_offset);
    text_offset += piece.size();
  }
  return out;
}

json Usage(const Generation& g) {
  return {{"prompt_tokens", g.prompt_tokens()},
          {"completion_tokens", g.completion_tokens()},
          {"total_tokens", g.prompt_tokens() + g.completion_tokens()}};
}

// Ollama's final statistics (durations in nanoseconds).
void AddOllamaStats(const Generation& g, json* out) {
  const absl::Duration total = absl::Now() - g.submit_time();
  (*out)["total_duration"] = absl::ToInt64Nanoseconds(total);
  (*out)["load_duration"] = 0;
  (*out)["prompt_eval_count"] = g.prompt_tokens();
  (*out)["eval_count"] = g.completion_tokens();
  (*out)["eval_duration"] = absl::ToInt64Nanoseconds(total);
}

// Builds one streamed piece (an SSE event's JSON or an NDJSON line) for `delta`; empty when there
// is nothing to say.
class StreamWriter {
 public:
  explicit StreamWriter(Generation* g) : g_(g), id_(NewId(IdPrefix(g->request().dialect))) {}

  static const char* IdPrefix(ApiDialect d) {
    return d == ApiDialect::kOpenAiChat ? "chatcmpl" : "cmpl";
  }

  // Text to write for `delta`, including the final events when it finishes.
  std::string Write(const Delta& delta) {
    const GenerationRequest& r = g_->request();
    const runtime::Tokenizer& tokenizer = *g_->model().tokenizer;
    std::string out;
    if (!delta.error.ok()) {
      const int status = HttpStatusFor(delta.error);
      const json body = ErrorBody(status, std::string(delta.error.message()), r.dialect);
      return IsOllama(r.dialect) ? Dump(body) + "\n"
                                 : "data: " + Dump(body) + "\n\ndata: [DONE]\n\n";
    }
    switch (r.dialect) {
      case ApiDialect::kOpenAiChat: {
        if (!sent_role_) {
          sent_role_ = true;
          out += Sse(Chunk({{"role", "assistant"}, {"content", ""}}, nullptr, nullptr));
        }
        if (!delta.text.empty() || (!delta.tokens.empty() && r.top_logprobs >= 0)) {
          out +=
              Sse(Chunk({{"content", delta.text}},
                        r.top_logprobs >= 0 ? ChatLogprobs(tokenizer, delta.tokens) : json(nullptr),
                        nullptr));
        }
        if (delta.finished) {
          out += Sse(Chunk(json::object(), nullptr, delta.finish_reason));
          if (r.include_usage) {
            json usage_chunk = Base("chat.completion.chunk");
            usage_chunk["choices"] = json::array();
            usage_chunk["usage"] = Usage(*g_);
            out += Sse(usage_chunk);
          }
          out += "data: [DONE]\n\n";
        }
        break;
      }
      case ApiDialect::kOpenAiCompletion: {
        if (!delta.text.empty() || (!delta.tokens.empty() && r.top_logprobs >= 0) ||
            delta.finished) {
          json chunk = Base("text_completion");
          chunk["choices"] = json::array(
              {{{"index", 0},
                {"text", delta.text},
                {"logprobs", r.top_logprobs >= 0
                                 ? CompletionLogprobs(tokenizer, delta.tokens, text_offset_)
                                 : json(nullptr)},
                {"finish_reason", delta.finished ? json(delta.finish_reason) : json(nullptr)}}});
          if (r.include_usage) chunk["usage"] = nullptr;
          out += Sse(chunk);
          text_offset_ += delta.text.size();
        }
        if (delta.finished) {
          if (r.include_usage) {
            json usage_chunk = Base("text_completion");
            usage_chunk["choices"] = json::array();
            usage_chunk["usage"] = Usage(*g_);
            out += Sse(usage_chunk);
          }
          out += "data: [DONE]\n\n";
        }
        break;
      }
      case ApiDialect::kOllamaChat:
      case ApiDialect::kOllamaGenerate: {
        const bool chat = r.dialect == ApiDialect::kOllamaChat;
        if (!delta.text.empty()) out += Dump(OllamaPiece(chat, delta.text, false)) + "\n";
        if (delta.finished) {
          json last = OllamaPiece(chat, "", true);
          last["done_reason"] = delta.finish_reason;
          AddOllamaStats(*g_, &last);
          out += Dump(last) + "\n";
        }
        break;
      }
    }
    return out;
  }

 private:
  json Base(const char* object) const {
    return {{"id", id_},
            {"object", object},
            {"created", created_},
            {"model", g_->model().id},
            {"system_fingerprint", nullptr}};
  }
  json Chunk(json delta, json logprobs, json finish_reason) const {
    json chunk = Base("chat.completion.chunk");
    chunk["choices"] = json::array({{{"index", 0},
                                     {"delta", std::move(delta)},
                                     {"logprobs", std::move(logprobs)},
                                     {"finish_reason", std::move(finish_reason)}}});
    if (g_->request().include_usage) chunk["usage"] = nullptr;
    return chunk;
  }
  json OllamaPiece(bool chat, const std::string& text, bool done) const {
    json piece = {{"model", g_->model().id}, {"created_at", Rfc3339Now()}, {"done", done}};
    if (chat) {
      piece["message"] = {{"role", "assistant"}, {"content", text}};
    } else {
      piece["response"] = text;
    }
    return piece;
  }
  static std::string Sse(const json& j) { return "data: " + Dump(j) + "\n\n"; }

  Generation* g_;
  std::string id_;
  int64_t created_ = UnixSeconds();
  bool sent_role_ = false;
  size_t text_offset_ = 0;
};

// The whole answer as one JSON response.
json FullResponse(Generation& g, const std::string& text, const std::vector<TokenEvent>& tokens,
                  const std::string& finish_reason) {
  const GenerationRequest& r = g.request();
  const runtime::Tokenizer& tokenizer = *g.model().tokenizer;
  switch (r.dialect) {
    case ApiDialect::kOpenAiChat:
      return {{"id", NewId("chatcmpl")},
              {"object", "chat.completion"},
              {"created", UnixSeconds()},
              {"model", g.model().id},
              {"system_fingerprint", nullptr},
              {"choices",
               json::array({{{"index", 0},
                             {"message", {{"role", "assistant"}, {"content", text}}},
                             {"logprobs", r.top_logprobs >= 0 ? ChatLogprobs(tokenizer, tokens)
                                                              : json(nullptr)},
                             {"finish_reason", finish_reason}}})},
              {"usage", Usage(g)}};
    case ApiDialect::kOpenAiCompletion:
      return {
          {"id", NewId("cmpl")},
          {"object", "text_completion"},
          {"created", UnixSeconds()},
          {"model", g.model().id},
          {"system_fingerprint", nullptr},
          {"choices",
           json::array({{{"index", 0},
                         {"text", text},
                         {"logprobs", r.top_logprobs >= 0 ? CompletionLogprobs(tokenizer, tokens, 0)
                                                          : json(nullptr)},
                         {"finish_reason", finish_reason}}})},
          {"usage", Usage(g)}};
    case ApiDialect::kOllamaChat:
    case ApiDialect::kOllamaGenerate: {
      json out = {{"model", g.model().id},
                  {"created_at", Rfc3339Now()},
                  {"done", true},
                  {"done_reason", finish_reason}};
      if (r.dialect == ApiDialect::kOllamaChat) {
        out["message"] = {{"role", "assistant"}, {"content", text}};
      } else {
        out["response"] = text;
      }
      AddOllamaStats(g, &out);
      return out;
    }
  }
  return json::object();
}

// ---- Prompts -------------------------------------------------------------------------------

// Tokenizes a chat-template rendering: the template writes BOS itself when it wants one.
std::vector<int32_t> EncodeRendered(const runtime::Tokenizer& tokenizer, const std::string& text) {
  const std::string bos(tokenizer.TokenText(tokenizer.bos_id()));  // "" when there is none
  const bool has_bos = !bos.empty() && text.rfind(bos, 0) == 0;
  return tokenizer.Encode(text, tokenizer.add_bos() && !has_bos, /*parse_special=*/true);
}

absl::StatusOr<std::vector<int32_t>> BuildPrompt(const ServedModel& model,
                                                 const GenerationRequest& r) {
  const runtime::Tokenizer& tokenizer = *model.tokenizer;
  json messages = r.messages;
  const bool templated = r.dialect == ApiDialect::kOpenAiChat ||
                         r.dialect == ApiDialect::kOllamaChat ||
                         (r.dialect == ApiDialect::kOllamaGenerate && !r.raw);
  if (!templated) {
    std::vector<int32_t> tokens = tokenizer.Encode(r.prompt, tokenizer.add_bos(), false);
    if (tokens.empty()) return absl::InvalidArgumentError("'prompt' is empty");
    return tokens;
  }
  if (r.dialect == ApiDialect::kOllamaGenerate) {
    messages = json::array();
    if (!r.system.empty()) messages.push_back({{"role", "system"}, {"content", r.system}});
    messages.push_back({{"role", "user"}, {"content", r.prompt}});
  }
  if (model.chat_template == nullptr) {
    return absl::InvalidArgumentError(
        "this model has no chat template; use /v1/completions (or raw: true) instead");
  }
  const std::string bos(tokenizer.TokenText(tokenizer.bos_id()));  // "" when there is none
  const std::string eos(tokenizer.TokenText(tokenizer.eos_id()));  // "" when there is none
  ASSIGN_OR_RETURN(std::string rendered,
                   model.chat_template->Render(messages, /*add_generation_prompt=*/true, bos, eos));
  return EncodeRendered(tokenizer, rendered);
}

bool ModelMatches(const ServedModel& model, const std::string& asked, bool ollama) {
  return ModelNameMatches(model.id, asked, ollama);
}

}  // namespace

// ---- The server ---------------------------------------------------------------------------------

class ApiServer::Impl {
 public:
  explicit Impl(const ApiServerOptions& options) : options_(options) { Describe(); }

  ~Impl() {
    server_.stop();
    if (thread_.joinable()) thread_.join();
  }

  absl::Status Start() {
    const size_t threads = static_cast<size_t>(std::max(8, options_.threads));
    server_.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
    server_.set_payload_max_length(options_.max_body_bytes);
    server_.set_keep_alive_timeout(5);
    server_.set_tcp_nodelay(true);
    Routes();
    int port = options_.port;
    if (port == 0) {
      port = server_.bind_to_any_port(options_.host);
      if (port < 0) return absl::UnavailableError(absl::StrCat("cannot bind ", options_.host));
    } else if (!server_.bind_to_port(options_.host, port)) {
      return absl::UnavailableError(
          absl::StrCat("cannot listen on ", options_.host, ":", port,
                       " (is another exo-node running? pick another --http_port)"));
    }
    port_ = port;
    // The listener thread accepts connections and hands each to the worker pool until Stop.
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    return absl::OkStatus();
  }

  int port() const { return port_; }
  Metrics& metrics() { return metrics_; }

  void SetLoading(const std::string& id, const std::string& detail) {
    absl::MutexLock lock(&mu_);
    state_ = State::kLoading;
    loading_id_ = id;
    loading_detail_ = detail;
    model_.reset();  // requests already running keep their own reference
  }
  void SetModel(std::shared_ptr<ServedModel> model) {
    absl::MutexLock lock(&mu_);
    state_ = State::kReady;
    model_ = std::move(model);
  }
  void SetLoadError(const absl::Status& status) {
    absl::MutexLock lock(&mu_);
    state_ = State::kFailed;
    load_error_ = status;
  }
  void SetFollowing(const std::string& id, const std::string& detail) {
    absl::MutexLock lock(&mu_);
    state_ = State::kFollowing;
    loading_id_ = id;
    loading_detail_ = detail;
    model_.reset();
  }

 private:
  enum class State { kNoModel, kLoading, kReady, kFailed, kFollowing };

  void Describe() {
    metrics_.Describe("exo_generated_tokens_total", "counter", "Tokens generated.");
    metrics_.Describe("exo_prompt_tokens_total", "counter", "Prompt tokens of finished requests.");
    metrics_.Describe("exo_requests_total", "counter", "HTTP requests by path and status.");
    metrics_.Describe("exo_requests_finished_total", "counter",
                      "Generations finished, by finish reason.");
    metrics_.Describe("exo_time_to_first_token_seconds", "histogram",
                      "From request queued to first generated token.");
    metrics_.Describe("exo_inter_token_latency_seconds", "histogram",
                      "Time between consecutive generated tokens of one request.");
    metrics_.Describe("exo_queue_depth", "gauge", "Requests waiting for a sequence slot.");
    metrics_.Describe("exo_running_sequences", "gauge", "Sequences holding a KV slot.");
    metrics_.Describe("exo_sequence_slots", "gauge", "KV slots (max concurrent sequences).");
    metrics_.Describe("exo_engine_steps_total", "counter", "Batched forward passes.");
    metrics_.Describe("exo_rejected_requests_total", "counter", "Requests refused: queue full.");
    metrics_.Describe("exo_speculative_passes_total", "counter",
                      "Speculative decoding: verification passes through the model.");
    metrics_.Describe("exo_speculative_drafted_tokens_total", "counter",
                      "Speculative decoding: tokens drafted and sent for verification.");
    metrics_.Describe("exo_speculative_accepted_tokens_total", "counter",
                      "Speculative decoding: drafted tokens the model accepted.");
    metrics_.Describe("exo_speculative_acceptance_rate", "gauge",
                      "Speculative decoding: accepted / drafted tokens so far.");
    metrics_.Describe("exo_speculative_tokens_per_pass", "gauge",
                      "Speculative decoding: tokens generated per verification pass so far.");
    metrics_.Describe("exo_proxied_requests_total", "counter",
                      "Requests this node passed to the model's coordinator, by node.");
    metrics_.Describe("exo_node_state", "gauge",
                      "1 for this node's current state (no_model, loading, ready, failed, proxy).");
  }

  std::shared_ptr<ServedModel> model() const {
    absl::MutexLock lock(&mu_);
    return model_;
  }

  // The model for a generation request, or an error response (503 while loading).
  std::shared_ptr<ServedModel> ReadyModel(httplib::Response& res, ApiDialect dialect) const {
    absl::MutexLock lock(&mu_);
    switch (state_) {
      case State::kReady:
        return model_;
      case State::kLoading:
        SetError(
            res, 503,
            absl::StrCat("the model ", loading_id_, " is still loading",
                         loading_detail_.empty() ? "" : absl::StrCat(" (", loading_detail_, ")"),
                         "; retry soon"),
            dialect);
        return nullptr;
      case State::kFailed:
        SetError(res, 503, absl::StrCat("the model failed to load: ", load_error_.message()),
                 dialect);
        return nullptr;
      case State::kNoModel:
        SetError(res, 503, "no model is loaded on this node (start it with --model PATH)", dialect);
        return nullptr;
      case State::kFollowing:
        res.set_header("Retry-After", "1");
        SetError(res, 503,
                 absl::StrCat("this node serves ", loading_id_, " through its coordinator (",
                              loading_detail_, "), which cannot be reached now; retry soon"),
                 dialect);
        return nullptr;
    }
    return nullptr;
  }

  // The node that answers a request for `asked` when it is not this one; nullopt when this node
  // answers (it coordinates the model, the request was proxied here already, or no node in the
  // cluster serves the model).
  std::optional<ApiEndpoint> Upstream(const httplib::Request& req, const std::string& asked,
                                      bool ollama, std::string* self_id) const {
    if (!options_.routes || req.has_header(kForwardedByHeader)) return std::nullopt;
    if (auto m = model(); m != nullptr && ModelMatches(*m, asked, ollama)) return std::nullopt;
    const ApiServerOptions::ClusterRoutes routes = options_.routes();
    *self_id = routes.self_id;
    std::optional<ApiEndpoint> target = RouteModel(routes.endpoints, asked, ollama);
    if (!target.has_value() || target->self) return std::nullopt;
    return target;
  }

  // Proxies the request when another node answers it; true when `res` is filled.
  bool MaybeProxy(const httplib::Request& req, httplib::Response& res, const std::string& asked,
                  ApiDialect dialect) {
    std::string self_id;
    std::optional<ApiEndpoint> target = Upstream(req, asked, IsOllama(dialect), &self_id);
    if (!target.has_value()) return false;
    std::string error;
    if (ProxyRequest(req, res, *target, self_id, &error)) {
      metrics_.Add("exo_proxied_requests_total", 1, {{"node", target->node_id}});
      return true;
    }
    res.set_header("Retry-After", "1");
    SetError(res, 502,
             absl::StrCat("the model ", target->model, " is served by node ",
                          target->node_id.substr(0, 12), " at ", EndpointAddress(*target),
                          ", which did not answer (", error, "); retry soon"),
             dialect);
    return true;
  }

  // Every model the cluster serves besides `listed` (ids), from the routes.
  std::vector<std::string> RemoteModels(const std::vector<std::string>& listed) const {
    std::vector<std::string> out;
    if (!options_.routes) return out;
    for (const ApiEndpoint& e : ModelCoordinators(options_.routes().endpoints)) {
      if (std::find(listed.begin(), listed.end(), e.model) == listed.end()) {
        out.push_back(e.model);
      }
    }
    return out;
  }

  bool Authorized(const httplib::Request& req) const {
    if (options_.api_key.empty()) return true;
    const std::string header = req.get_header_value("Authorization");
    const std::string want = "Bearer " + options_.api_key;
    // Constant-time comparison: the key is a secret.
    if (header.size() != want.size()) return false;
    unsigned char diff = 0;
    for (size_t i = 0; i < want.size(); ++i) diff |= header[i] ^ want[i];
    return diff == 0;
  }

  void Routes() {
    // Browsers on other origins (chat front ends) may call the API: allow it, and answer their
    // preflight requests, which carry no credentials.
    server_.set_default_headers({{"Access-Control-Allow-Origin", "*"}});
    server_.Options(R"(/.*)", [](const httplib::Request&, httplib::Response& res) {
      res.status = 204;
      res.set_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS");
      res.set_header("Access-Control-Allow-Headers", "Authorization, Content-Type");
      res.set_header("Access-Control-Max-Age", "86400");
    });
    server_.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (req.method == "OPTIONS") return httplib::Server::HandlerResponse::Unhandled;
      const bool protected_path = absl::StartsWith(req.path, "/v1/") ||
                                  absl::StartsWith(req.path, "/api/") || req.path == "/metrics";
      if (protected_path && !Authorized(req)) {
        res.set_header("WWW-Authenticate", "Bearer");
        SetError(
            res, 401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
            absl::StartsWith(req.path, "/api/") ? ApiDialect::kOllamaChat : ApiDialect::kOpenAiChat,
            "invalid_api_key");
        return httplib::Server::HandlerResponse::Handled;
      }
      return httplib::Server::HandlerResponse::Unhandled;
    });
    // Errors httplib raises itself (413, 404, 400) get a JSON body too.
    server_.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty() || res.content_provider_) return;
      std::string message = absl::StrCat("HTTP ", res.status);
      if (res.status == 413) message = "the request body is too large";
      if (res.status == 404)
        message = absl::StrCat("no such endpoint: ", req.method, " ", req.path);
      if (res.status == 405) message = absl::StrCat("method not allowed: ", req.method);
      SetError(
          res, res.status, message,
          absl::StartsWith(req.path, "/api/") ? ApiDialect::kOllamaChat : ApiDialect::kOpenAiChat);
    });
    server_.set_post_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      metrics_.Add("exo_requests_total", 1,
                   {{"path", KnownPath(req.path)}, {"status", absl::StrCat(res.status)}});
    });

    auto generate = [this](ApiDialect dialect) {
      return [this, dialect](const httplib::Request& req, httplib::Response& res) {
        HandleGeneration(req, res, dialect);
      };
    };
    server_.Post("/v1/chat/completions", generate(ApiDialect::kOpenAiChat));
    server_.Post("/v1/completions", generate(ApiDialect::kOpenAiCompletion));
    server_.Post("/api/chat", generate(ApiDialect::kOllamaChat));
    server_.Post("/api/generate", generate(ApiDialect::kOllamaGenerate));

    server_.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
      absl::MutexLock lock(&mu_);
      json body;
      switch (state_) {
        case State::kReady:
          body = {{"status", "ok"}, {"model", model_->id}};
          break;
        case State::kNoModel:
          body = {{"status", "ok"}, {"model", nullptr}};
          break;
        case State::kLoading:
          res.status = 503;
          res.set_header("Retry-After", "1");
          body = {{"status", "loading"}, {"model", loading_id_}};
          if (!loading_detail_.empty()) body["detail"] = loading_detail_;
          break;
        case State::kFailed:
          res.status = 503;
          body = {{"status", "error"}, {"error", std::string(load_error_.message())}};
          break;
        case State::kFollowing:
          body = {{"status", "ok"}, {"model", loading_id_}, {"role", "proxy"}};
          if (!loading_detail_.empty()) body["detail"] = loading_detail_;
          break;
      }
      res.set_content(Dump(body), "application/json");
    });
    server_.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      UpdateGauges();
      res.set_content(metrics_.Render(), "text/plain; version=0.0.4; charset=utf-8");
    });
    server_.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
      json data = json::array();
      std::vector<std::string> listed;
      if (auto m = model()) {
        data.push_back(ModelEntry(m->id));
        listed.push_back(m->id);
      }
      for (const std::string& id : RemoteModels(listed)) data.push_back(ModelEntry(id));
      res.set_content(Dump({{"object", "list"}, {"data", data}}), "application/json");
    });
    server_.Get(R"(/v1/models/(.+))", [this](const httplib::Request& req, httplib::Response& res) {
      if (MaybeProxy(req, res, req.matches[1], ApiDialect::kOpenAiChat)) return;
      auto m = model();
      if (m == nullptr || !ModelMatches(*m, req.matches[1], false)) {
        SetError(res, 404,
                 absl::StrCat("the model '", std::string(req.matches[1]).substr(0, 256),
                              "' does not exist"),
                 ApiDialect::kOpenAiChat, "model_not_found");
        return;
      }
      res.set_content(Dump(ModelEntry(m->id)), "application/json");
    });
    server_.Get("/v1/cluster", [this](const httplib::Request& req, httplib::Response& res) {
      // A node that serves no model itself shows the coordinator's view (its plan and stages).
      if (model() == nullptr) {
        std::string self_id;
        if (std::optional<ApiEndpoint> target = Upstream(req, "", false, &self_id)) {
          if (std::optional<std::string> body = FetchFrom(*target, req, self_id)) {
            res.set_content(*body, "application/json");
            return;
          }
        }
      }
      res.set_content(Dump(ClusterView()), "application/json");
    });
    server_.Get("/api/version", [](const httplib::Request&, httplib::Response& res) {
      res.set_content(Dump({{"version", kOllamaVersion}}), "application/json");
    });
    server_.Get("/api/tags", [this](const httplib::Request&, httplib::Response& res) {
      json models = json::array();
      std::vector<std::string> listed;
      if (auto m = model()) {
        models.push_back(OllamaTag(*m));
        listed.push_back(m->id);
      }
      for (const std::string& id : RemoteModels(listed)) models.push_back(RemoteOllamaTag(id));
      res.set_content(Dump({{"models", models}}), "application/json");
    });
    server_.Get("/api/ps", [this](const httplib::Request&, httplib::Response& res) {
      json models = json::array();
      if (auto m = model()) models.push_back(OllamaTag(*m));
      res.set_content(Dump({{"models", models}}), "application/json");
    });
    server_.Post("/api/show", [this](const httplib::Request& req, httplib::Response& res) {
      absl::StatusOr<json> body = ParseJsonObject(req.body);
      if (!body.ok()) return SetStatusError(res, body.status(), ApiDialect::kOllamaChat);
      std::string name;
      for (const char* key : {"model", "name"}) {
        auto it = body->find(key);
        if (it != body->end() && it->is_string()) name = it->get<std::string>();
      }
      if (!name.empty() && MaybeProxy(req, res, name, ApiDialect::kOllamaChat)) return;
      auto m = model();
      if (m == nullptr || name.empty() || !ModelMatches(*m, name, true)) {
        return SetError(res, 404, absl::StrCat("model '", name.substr(0, 256), "' not found"),
                        ApiDialect::kOllamaChat);
      }
      json out = {{"modelfile", absl::StrCat("FROM ", m->path)},
                  {"parameters", ""},
                  {"template", m->details.value("chat_template", "")},
                  {"details", OllamaTag(*m)["details"]},
                  {"model_info", m->details},
                  {"capabilities", json::array({"completion"})},
                  {"modified_at", Rfc3339Now()}};
      res.set_content(Dump(out), "application/json");
    });
    server_.Get(R"(/(|index\.html|[a-z0-9_-]+\.(js|css|svg)))", [](const httplib::Request& req,
                                                                   httplib::Response& res) {
      const WebAsset* asset = FindWebAsset(req.path);
      if (asset == nullptr) {
        res.status = 404;
        return;
      }
      res.set_header("Cache-Control", "no-cache");
      res.set_content(asset->bytes.data(), asset->bytes.size(), std::string(asset->content_type));
    });
  }

  static std::string KnownPath(const std::string& path) {
    for (const char* p : {"/v1/chat/completions", "/v1/completions", "/v1/models", "/v1/cluster",
                          "/api/chat", "/api/generate", "/api/tags", "/api/show", "/api/version",
                          "/api/ps", "/health", "/metrics", "/"}) {
      if (path == p) return p;
    }
    return absl::StartsWith(path, "/v1/models/") ? "/v1/models/{id}" : "other";
  }

  json ModelEntry(const std::string& id) const {
    return {{"id", id}, {"object", "model"}, {"created", created_}, {"owned_by", "exo-node"}};
  }

  // A model another node serves: what its name says (its details are on that node's /api/show).
  static json RemoteOllamaTag(const std::string& id) {
    return {{"name", id}, {"model", id},  {"modified_at", Rfc3339Now()},
            {"size", 0},  {"digest", ""}, {"details", {{"format", "gguf"}}}};
  }

  json OllamaTag(const ServedModel& m) const {
    std::error_code ec;
    const auto size = std::filesystem::file_size(m.path, ec);
    return {{"name", m.id},
            {"model", m.id},
            {"modified_at", Rfc3339Now()},
            {"size", ec ? 0 : size},
            {"digest", ""},
            {"details",
             {{"format", "gguf"},
              {"family", m.details.value("architecture", "")},
              {"families", json::array({m.details.value("architecture", "")})},
              {"parameter_size", m.details.value("parameter_size", "")},
              {"quantization_level", m.details.value("quantization", "")}}}};
  }

  void UpdateGauges() {
    std::string state;
    {
      absl::MutexLock lock(&mu_);
      state = state_ == State::kReady       ? "ready"
              : state_ == State::kLoading   ? "loading"
              : state_ == State::kFailed    ? "failed"
              : state_ == State::kFollowing ? "proxy"
                                            : "no_model";
    }
    for (const char* s : {"no_model", "loading", "ready", "failed", "proxy"}) {
      metrics_.Set("exo_node_state", s == state ? 1 : 0, {{"state", s}});
    }
    if (auto m = model()) {
      const EngineStats stats = m->engine->stats();
      metrics_.Set("exo_queue_depth", stats.queued);
      metrics_.Set("exo_running_sequences", stats.running);
      metrics_.Set("exo_sequence_slots", stats.slots);
      metrics_.Set("exo_engine_steps_total", static_cast<double>(stats.steps));
      metrics_.Set("exo_rejected_requests_total", static_cast<double>(stats.rejected_sequences));
      metrics_.Set("exo_speculative_passes_total", static_cast<double>(stats.speculative_passes));
      metrics_.Set("exo_speculative_drafted_tokens_total",
                   static_cast<double>(stats.speculative_drafted));
      metrics_.Set("exo_speculative_accepted_tokens_total",
                   static_cast<double>(stats.speculative_accepted));
      metrics_.Set("exo_speculative_acceptance_rate",
                   stats.speculative_drafted > 0
                       ? static_cast<double>(stats.speculative_accepted) / stats.speculative_drafted
                       : 0.0);
      metrics_.Set("exo_speculative_tokens_per_pass",
                   stats.speculative_passes > 0
                       ? static_cast<double>(stats.speculative_emitted) / stats.speculative_passes
                       : 0.0);
    }
  }

  // The cluster view with live figures of this node's engine.
  json ClusterView() {
    json view = options_.cluster_view ? options_.cluster_view() : json::object();
    auto m = model();
    json live = {{"tokens_per_second", 0.0}, {"running", 0}, {"queued", 0}};
    if (m != nullptr) {
      const EngineStats stats = m->engine->stats();
      const absl::Time now = absl::Now();
      absl::MutexLock lock(&rate_mu_);
      const double dt = absl::ToDoubleSeconds(now - rate_time_);
      if (dt >= 0.5) {
        rate_ = rate_time_ == absl::InfinitePast()
                    ? 0
                    : static_cast<double>(stats.generated_tokens - rate_tokens_) / dt;
        rate_time_ = now;
        rate_tokens_ = stats.generated_tokens;
      }
      live = {{"tokens_per_second", rate_},
              {"running", stats.running},
              {"queued", stats.queued},
              {"slots", stats.slots},
              {"generated_tokens", stats.generated_tokens}};
    }
    view["live"] = live;
    if (view.contains("nodes") && view["nodes"].is_array() && !view["nodes"].empty()) {
      view["nodes"][0]["tokens_per_second"] = live["tokens_per_second"];
    }
    return view;
  }

  void HandleGeneration(const httplib::Request& req, httplib::Response& res, ApiDialect dialect) {
    absl::StatusOr<GenerationRequest> request = ParseGenerationRequest(req.body, dialect);
    if (!request.ok()) return SetStatusError(res, request.status(), dialect);
    if (MaybeProxy(req, res, request->model, dialect)) return;
    std::shared_ptr<ServedModel> model = ReadyModel(res, dialect);
    if (model == nullptr) return;
    if (!ModelMatches(*model, request->model, IsOllama(dialect))) {
      return SetError(res, IsOllama(dialect) ? 404 : 400,
                      absl::StrCat("the model '", request->model.substr(0, 256),
                                   "' does not exist; this node serves '", model->id, "'"),
                      dialect, "model_not_found");
    }
    absl::StatusOr<std::vector<int32_t>> prompt = BuildPrompt(*model, *request);
    if (!prompt.ok()) return SetStatusError(res, prompt.status(), dialect);
    EngineRequest sequence_request;
    sequence_request.prompt = std::move(*prompt);
    sequence_request.max_tokens = request->max_tokens;
    sequence_request.sampling = request->sampling;
    sequence_request.top_logprobs = request->top_logprobs;
    absl::StatusOr<std::shared_ptr<Sequence>> sequence =
        model->engine->Submit(std::move(sequence_request));
    if (!sequence.ok()) {
      if (absl::IsInvalidArgument(sequence.status())) {
        return SetError(res, 400, std::string(sequence.status().message()), dialect,
                        "context_length_exceeded");
      }
      return SetStatusError(res, sequence.status(), dialect);
    }
    auto generation =
        std::make_shared<Generation>(model, std::move(*sequence), std::move(*request), &metrics_);
    if (generation->request().stream) {
      auto writer = std::make_shared<StreamWriter>(generation.get());
      res.set_header("Cache-Control", "no-cache");
      res.set_header("X-Accel-Buffering", "no");
      res.set_chunked_content_provider(
          IsOllama(dialect) ? "application/x-ndjson" : "text/event-stream",
          [generation, writer](size_t, httplib::DataSink& sink) {
            // Runs on the request's worker thread until the answer is complete or the client
            // goes away; either way the sequence's slot is released.
            const Delta delta = generation->Poll(kPollInterval);
            if (!sink.is_writable()) {
              generation->Cancel();
              return false;
            }
            const std::string out = writer->Write(delta);
            if (!out.empty() && !sink.write(out.data(), out.size())) {
              generation->Cancel();
              return false;
            }
            if (delta.finished) sink.done();
            return true;
          },
          [generation](bool) { generation->Cancel(); });
      return;
    }
    std::string text;
    std::vector<TokenEvent> tokens;
    while (true) {
      Delta delta = generation->Poll(kPollInterval);
      text += delta.text;
      for (TokenEvent& e : delta.tokens) tokens.push_back(std::move(e));
      if (!delta.error.ok()) return SetStatusError(res, delta.error, dialect);
      if (delta.finished) {
        res.set_content(Dump(FullResponse(*generation, text, tokens, delta.finish_reason)),
                        "application/json");
        return;
      }
    }
  }

  const ApiServerOptions options_;
  httplib::Server server_;
  std::thread thread_;
  int port_ = 0;
  Metrics metrics_;
  const int64_t created_ = UnixSeconds();

  mutable absl::Mutex mu_;
  State state_ ABSL_GUARDED_BY(mu_) = State::kNoModel;
  std::string loading_id_ ABSL_GUARDED_BY(mu_);
  std::string loading_detail_ ABSL_GUARDED_BY(mu_);  // what loading waits for, if anything
  absl::Status load_error_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<ServedModel> model_ ABSL_GUARDED_BY(mu_);

  absl::Mutex rate_mu_;
  absl::Time rate_time_ ABSL_GUARDED_BY(rate_mu_) = absl::InfinitePast();
  int64_t rate_tokens_ ABSL_GUARDED_BY(rate_mu_) = 0;
  double rate_ ABSL_GUARDED_BY(rate_mu_) = 0;
};

ApiServer::ApiServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ApiServer::~ApiServer() = default;

absl::StatusOr<std::unique_ptr<ApiServer>> ApiServer::Start(const ApiServerOptions& options) {
  auto impl = std::make_unique<Impl>(options);
  RETURN_IF_ERROR(impl->Start());
  return std::unique_ptr<ApiServer>(new ApiServer(std::move(impl)));
}

int ApiServer::port() const { return impl_->port(); }
void ApiServer::SetLoading(const std::string& model_id, const std::string& detail) {
  impl_->SetLoading(model_id, detail);
}
void ApiServer::SetModel(std::shared_ptr<ServedModel> model) { impl_->SetModel(std::move(model)); }
void ApiServer::SetLoadError(const absl::Status& status) { impl_->SetLoadError(status); }
void ApiServer::SetFollowing(const std::string& model_id, const std::string& detail) {
  impl_->SetFollowing(model_id, detail);
}
Metrics& ApiServer::metrics() { return impl_->metrics(); }

// ---- Loading
// -------------------------------------------------------------------------------------

absl::StatusOr<std::shared_ptr<ServedModel>> LoadServedModelFrontEnd(
    const ServeModelOptions& options) {
  auto model = std::make_shared<ServedModel>();
  model->path = options.path;
  model->id = std::filesystem::path(options.path).stem().string();
  ASSIGN_OR_RETURN(model->file, runtime::GgufFile::Open(options.path));
  ASSIGN_OR_RETURN(runtime::ModelConfig config, runtime::ReadModelConfig(*model->file));
  ASSIGN_OR_RETURN(model->tokenizer, runtime::Tokenizer::FromGguf(*model->file));
  if (model->tokenizer->vocab_size() != config.n_vocab) {
    return absl::InvalidArgumentError(
        absl::StrCat("the tokenizer has ", model->tokenizer->vocab_size(),
                     " tokens but the embedding has ", config.n_vocab, " rows"));
  }
  std::string template_source;
  if (absl::StatusOr<std::string> source = runtime::ChatTemplateSourceFor(*model->file);
      source.ok()) {
    absl::StatusOr<runtime::ChatTemplate> parsed = runtime::ChatTemplate::Parse(*source);
    if (parsed.ok()) {
      model->chat_template = std::make_unique<runtime::ChatTemplate>(std::move(*parsed));
      template_source = *source;
    }
  }
  if (options.threads < 0) return absl::InvalidArgumentError("--threads must be 0 or more");
  if (options.num_slots < 1 || options.num_slots > 1024) {
    return absl::InvalidArgumentError("--max_sequences must be between 1 and 1024");
  }
  int64_t parameters = 0;
  std::map<std::string, int> types;
  for (const runtime::GgufTensorInfo& t : model->file->tensors()) {
    parameters += t.num_elements();
    types[kernels::TypeName(t.type)]++;
  }
  std::string quantization;
  // The most common tensor type stands for the quantisation.
  int best = 0;
  for (const auto& [type, count] : types) {
    if (count > best) best = count, quantization = type;
  }
  model->details = {{"architecture", runtime::ArchitectureName(config.arch)},
                    {"name", config.name},
                    {"parameters", parameters},
                    {"parameter_size", absl::StrFormat("%.0fM", parameters / 1e6)},
                    {"quantization", quantization},
                    {"context_length", std::min(options.context, config.context_length)},
                    {"trained_context_length", config.context_length},
                    {"layers", config.n_layer},
                    {"embedding_length", config.n_embd},
                    {"vocab_size", config.n_vocab},
                    {"max_sequences", options.num_slots},
                    {"chat_template", template_source}};
  return model;
}

absl::StatusOr<std::shared_ptr<ServedModel>> LoadServedModel(const ServeModelOptions& options) {
  ASSIGN_OR_RETURN(std::shared_ptr<ServedModel> model, LoadServedModelFrontEnd(options));
  ASSIGN_OR_RETURN(runtime::ModelConfig config, runtime::ReadModelConfig(*model->file));
  model->pool = std::make_unique<kernels::ThreadPool>(options.threads);
  runtime::StageOptions stage_options;
  stage_options.layers = {0, config.n_layer};
  stage_options.context = std::min(options.context, config.context_length);
  stage_options.max_batch_tokens = std::max(options.batch, options.num_slots);
  stage_options.max_logit_rows = options.num_slots;
  stage_options.num_slots = options.num_slots;
  stage_options.pool = model->pool.get();
  ASSIGN_OR_RETURN(model->stage, runtime::Stage::Create(*model->file, stage_options));
  model->batch_model = StageBatchModel(*model->stage);
  EngineOptions engine_options;
  engine_options.max_queue = options.max_queue;
  engine_options.prefill_chunk = options.batch;
  const runtime::Tokenizer* tokenizer = model->tokenizer.get();
  engine_options.is_end_of_generation = [tokenizer](int32_t id) {
    return tokenizer->IsEndOfGeneration(id);
  };
  ASSIGN_OR_RETURN(model->engine, Engine::Create(*model->batch_model, engine_options));
  model->details["weight_bytes"] = model->stage->weight_bytes();
  model->details["kv_cache_bytes"] = model->stage->kv_cache_bytes();
  return model;
}

}  // namespace exo::node
