#include "node/api_request.h"

#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"

namespace exo::node {
namespace {

using nlohmann::json;

// Nesting depth of `body` outside strings, stopping early past `limit`.
int32_t JsonDepth(std::string_view body, int32_t limit) {
  int32_t depth = 0, max_depth = 0;
  bool in_string = false, escaped = false;
  for (char c : body) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      max_depth = std::max(max_depth, ++depth);
      if (max_depth > limit) return max_depth;
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return max_depth;
}

const char* TypeName(const json& v) {
  switch (v.type()) {
    case json::value_t::null:
      return "null";
    case json::value_t::boolean:
      return "a boolean";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
      return "an integer";
    case json::value_t::number_float:
      return "a number";
    case json::value_t::string:
      return "a string";
    case json::value_t::array:
      return "an array";
    case json::value_t::object:
      return "an object";
    default:
      return "an unsupported value";
  }
}

absl::Status WrongType(const std::string& field, const char* want, const json& got) {
  return absl::InvalidArgumentError(
      absl::StrCat("'", field, "' must be ", want, ", not ", TypeName(got)));
}

// Field readers: absent or null leaves `out` unchanged.
absl::Status ReadBool(const json& obj, const char* key, const std::string& path, bool* out) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_boolean()) return WrongType(path + key, "a boolean", *it);
  *out = it->get<bool>();
  return absl::OkStatus();
}

absl::Status ReadNumber(const json& obj, const char* key, const std::string& path, double lo,
                        double hi, float* out) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_number()) return WrongType(path + key, "a number", *it);
  const double v = it->get<double>();
  if (!(v >= lo && v <= hi)) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", path, key, "' must be between ", lo, " and ", hi, ", got ", v));
  }
  *out = static_cast<float>(v);
  return absl::OkStatus();
}

absl::Status ReadInt(const json& obj, const char* key, const std::string& path, int64_t lo,
                     int64_t hi, int64_t* out) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return absl::OkStatus();
  if (it->is_number_float()) {
    const double d = it->get<double>();
    if (d != std::floor(d) || !std::isfinite(d)) return WrongType(path + key, "an integer", *it);
  } else if (!it->is_number()) {
    return WrongType(path + key, "an integer", *it);
  }
  const double v = it->get<double>();
  if (!(v >= static_cast<double>(lo) && v <= static_cast<double>(hi))) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", path, key, "' must be between ", lo, " and ", hi));
  }
  *out = it->is_number_unsigned()  ? static_cast<int64_t>(it->get<uint64_t>())
         : it->is_number_integer() ? it->get<int64_t>()
                                   : static_cast<int64_t>(v);
  return absl::OkStatus();
}

absl::Status ReadString(const json& obj, const char* key, const std::string& path, size_t max_bytes,
                        std::string* out) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_string()) return WrongType(path + key, "a string", *it);
  const auto& s = it->get_ref<const std::string&>();
  if (s.size() > max_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", path, key, "' is longer than ", max_bytes, " bytes"));
  }
  *out = s;
  return absl::OkStatus();
}

// `stop`: a string or an array of strings.
absl::Status ReadStop(const json& obj, const std::string& path, const RequestLimits& limits,
                      std::vector<std::string>* out) {
  auto it = obj.find("stop");
  if (it == obj.end() || it->is_null()) return absl::OkStatus();
  std::vector<const json*> items;
  if (it->is_string()) {
    items.push_back(&*it);
  } else if (it->is_array()) {
    if (it->size() > limits.max_stop_sequences) {
      return absl::InvalidArgumentError(absl::StrCat("'", path, "stop' may hold at most ",
                                                     limits.max_stop_sequences, " sequences"));
    }
    for (const json& s : *it) items.push_back(&s);
  } else {
    return WrongType(path + "stop", "a string or an array of strings", *it);
  }
  for (const json* s : items) {
    if (!s->is_string()) return WrongType(path + "stop[]", "a string", *s);
    const auto& text = s->get_ref<const std::string&>();
    if (text.size() > limits.max_stop_bytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("a stop sequence is longer than ", limits.max_stop_bytes, " bytes"));
    }
    if (!text.empty()) out->push_back(text);
  }
  return absl::OkStatus();
}

// Message content: a string, or OpenAI's list of parts of which only text parts are supported.
absl::StatusOr<std::string> ReadContent(const json& message, size_t index,
                                        const RequestLimits& limits) {
  const std::string where = absl::StrCat("messages[", index, "].content");
  auto it = message.find("content");
  if (it == message.end() || it->is_null()) return std::string();
  std::string text;
  if (it->is_string()) {
    text = it->get<std::string>();
  } else if (it->is_array()) {
    for (const json& part : *it) {
      if (!part.is_object()) return WrongType(where + "[]", "an object", part);
      auto type = part.find("type");
      if (type == part.end() || !type->is_string() || *type != "text") {
        return absl::InvalidArgumentError(
            absl::StrCat("'", where, "' parts must be of type \"text\" (this model reads text)"));
      }
      auto t = part.find("text");
      if (t == part.end() || !t->is_string()) {
        return absl::InvalidArgumentError(absl::StrCat("'", where, "[].text' must be a string"));
      }
      text += t->get<std::string>();
      if (text.size() > limits.max_text_bytes) break;
    }
  } else {
    return WrongType(where, "a string or an array of parts", *it);
  }
  if (text.size() > limits.max_text_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", where, "' is longer than ", limits.max_text_bytes, " bytes"));
  }
  return text;
}

absl::StatusOr<json> ReadMessages(const json& body, const RequestLimits& limits) {
  auto it = body.find("messages");
  if (it == body.end()) return absl::InvalidArgumentError("'messages' is required");
  if (!it->is_array()) return WrongType("messages", "an array", *it);
  if (it->empty()) return absl::InvalidArgumentError("'messages' must hold at least one message");
  if (it->size() > limits.max_messages) {
    return absl::InvalidArgumentError(
        absl::StrCat("'messages' may hold at most ", limits.max_messages, " messages"));
  }
  json messages = json::array();
  for (size_t i = 0; i < it->size(); ++i) {
    const json& m = (*it)[i];
    if (!m.is_object()) return WrongType(absl::StrCat("messages[", i, "]"), "an object", m);
    auto role = m.find("role");
    if (role == m.end() || !role->is_string()) {
      return absl::InvalidArgumentError(absl::StrCat("'messages[", i, "].role' must be a string"));
    }
    const std::string r = role->get<std::string>();
    if (r != "system" && r != "user" && r != "assistant" && r != "developer" && r != "tool") {
      return absl::InvalidArgumentError(absl::StrCat(
          "'messages[", i, "].role' must be system, developer, user, assistant or tool, not '",
          r.substr(0, 64), "'"));
    }
    std::string content;
    auto c = ReadContent(m, i, limits);
    if (!c.ok()) return c.status();
    messages.push_back({{"role", r == "developer" ? "system" : r}, {"content", *c}});
  }
  return messages;
}

// Sampling parameters shared by OpenAI requests (top level) and Ollama (inside "options").
absl::Status ReadSampling(const json& obj, const std::string& path, runtime::SamplingParams* s) {
  absl::Status st;
  if (!(st = ReadNumber(obj, "temperature", path, 0, 2, &s->temperature)).ok()) return st;
  if (!(st = ReadNumber(obj, "top_p", path, 0, 1, &s->top_p)).ok()) return st;
  if (!(st = ReadNumber(obj, "min_p", path, 0, 1, &s->min_p)).ok()) return st;
  if (!(st = ReadNumber(obj, "presence_penalty", path, -2, 2, &s->presence_penalty)).ok()) {
    return st;
  }
  if (!(st = ReadNumber(obj, "frequency_penalty", path, -2, 2, &s->frequency_penalty)).ok()) {
    return st;
  }
  int64_t top_k = s->top_k;
  if (!(st = ReadInt(obj, "top_k", path, 0, 1 << 20, &top_k)).ok()) return st;
  s->top_k = static_cast<int32_t>(top_k);
  auto seed = obj.find("seed");
  if (seed != obj.end() && !seed->is_null()) {
    if (!seed->is_number_integer() && !seed->is_number_unsigned()) {
      return WrongType(path + "seed", "an integer", *seed);
    }
    // The sampler reads 0 as "pick a random seed"; a client's seed 0 is a fixed seed too.
    const uint64_t v = seed->is_number_unsigned() ? seed->get<uint64_t>()
                                                  : static_cast<uint64_t>(seed->get<int64_t>());
    s->seed = v == 0 ? 0x9e3779b97f4a7c15ULL : v;
  }
  return absl::OkStatus();
}

#define EXO_API_RETURN_IF_ERROR(expr)  \
  do {                                 \
    absl::Status status_ = (expr);     \
    if (!status_.ok()) return status_; \
  } while (0)

absl::Status ParseOpenAi(const json& body, const RequestLimits& limits, GenerationRequest* r) {
  // OpenAI's defaults: no filtering, temperature 1, penalties over the whole answer.
  r->sampling = runtime::SamplingParams();
  r->sampling.temperature = 1.0f;
  r->sampling.top_k = 0;
  r->sampling.top_p = 1.0f;
  r->sampling.min_p = 0.0f;
  r->sampling.penalty_last_n = -1;
  EXO_API_RETURN_IF_ERROR(ReadSampling(body, "", &r->sampling));
  EXO_API_RETURN_IF_ERROR(ReadBool(body, "stream", "", &r->stream));
  int64_t max_tokens = -1;
  EXO_API_RETURN_IF_ERROR(ReadInt(body, "max_tokens", "", 1, 1 << 30, &max_tokens));
  EXO_API_RETURN_IF_ERROR(ReadInt(body, "max_completion_tokens", "", 1, 1 << 30, &max_tokens));
  r->max_tokens = static_cast<int32_t>(max_tokens);
  int64_t n = 1;
  EXO_API_RETURN_IF_ERROR(ReadInt(body, "n", "", 1, 128, &n));
  if (n != 1) return absl::InvalidArgumentError("'n' must be 1: one choice per request");
  EXO_API_RETURN_IF_ERROR(ReadStop(body, "", limits, &r->stop));
  auto options = body.find("stream_options");
  if (options != body.end() && !options->is_null()) {
    if (!options->is_object()) return WrongType("stream_options", "an object", *options);
    EXO_API_RETURN_IF_ERROR(
        ReadBool(*options, "include_usage", "stream_options.", &r->include_usage));
  }
  if (r->dialect == ApiDialect::kOpenAiChat) {
    bool logprobs = false;
    EXO_API_RETURN_IF_ERROR(ReadBool(body, "logprobs", "", &logprobs));
    int64_t top = 0;
    EXO_API_RETURN_IF_ERROR(ReadInt(body, "top_logprobs", "", 0, 20, &top));
    if (top > 0 && !logprobs) {
      return absl::InvalidArgumentError("'top_logprobs' needs 'logprobs': true");
    }
    r->top_logprobs = logprobs ? static_cast<int32_t>(top) : -1;
    auto messages = ReadMessages(body, limits);
    if (!messages.ok()) return messages.status();
    r->messages = std::move(*messages);
  } else {
    // Completions: logprobs is an integer count of alternatives (0..5).
    int64_t logprobs = -1;
    EXO_API_RETURN_IF_ERROR(ReadInt(body, "logprobs", "", 0, 5, &logprobs));
    r->top_logprobs = static_cast<int32_t>(logprobs);
    auto prompt = body.find("prompt");
    if (prompt == body.end()) return absl::InvalidArgumentError("'prompt' is required");
    if (prompt->is_array() && prompt->size() == 1 && (*prompt)[0].is_string()) {
      r->prompt = (*prompt)[0].get<std::string>();
    } else if (prompt->is_string()) {
      r->prompt = prompt->get<std::string>();
    } else {
      return WrongType("prompt", "a string", *prompt);
    }
    if (r->prompt.size() > limits.max_text_bytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("'prompt' is longer than ", limits.max_text_bytes, " bytes"));
    }
  }
  return absl::OkStatus();
}

absl::Status ParseOllama(const json& body, const RequestLimits& limits, GenerationRequest* r) {
  // Ollama's defaults.
  r->sampling = runtime::SamplingParams();
  r->sampling.temperature = 0.8f;
  r->sampling.top_k = 40;
  r->sampling.top_p = 0.9f;
  r->sampling.min_p = 0.0f;
  r->sampling.repetition_penalty = 1.1f;
  r->stream = true;  // Ollama streams unless told not to
  EXO_API_RETURN_IF_ERROR(ReadBool(body, "stream", "", &r->stream));
  auto options = body.find("options");
  if (options != body.end() && !options->is_null()) {
    if (!options->is_object()) return WrongType("options", "an object", *options);
    EXO_API_RETURN_IF_ERROR(ReadSampling(*options, "options.", &r->sampling));
    EXO_API_RETURN_IF_ERROR(
        ReadNumber(*options, "repeat_penalty", "options.", 0, 10, &r->sampling.repetition_penalty));
    int64_t last_n = r->sampling.penalty_last_n;
    EXO_API_RETURN_IF_ERROR(ReadInt(*options, "repeat_last_n", "options.", -1, 1 << 20, &last_n));
    r->sampling.penalty_last_n = static_cast<int32_t>(last_n);
    int64_t num_predict = -1;
    EXO_API_RETURN_IF_ERROR(
        ReadInt(*options, "num_predict", "options.", -2, 1 << 30, &num_predict));
    r->max_tokens = num_predict < 0 ? -1 : static_cast<int32_t>(num_predict);
    if (num_predict == 0) {
      return absl::InvalidArgumentError("'options.num_predict' must not be 0");
    }
    EXO_API_RETURN_IF_ERROR(ReadStop(*options, "options.", limits, &r->stop));
  }
  if (r->dialect == ApiDialect::kOllamaChat) {
    auto messages = ReadMessages(body, limits);
    if (!messages.ok()) return messages.status();
    r->messages = std::move(*messages);
  } else {
    auto prompt = body.find("prompt");
    if (prompt == body.end()) return absl::InvalidArgumentError("'prompt' is required");
    EXO_API_RETURN_IF_ERROR(ReadString(body, "prompt", "", limits.max_text_bytes, &r->prompt));
    EXO_API_RETURN_IF_ERROR(ReadString(body, "system", "", limits.max_text_bytes, &r->system));
    EXO_API_RETURN_IF_ERROR(ReadBool(body, "raw", "", &r->raw));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<json> ParseJsonObject(std::string_view body, int32_t max_depth) {
  if (JsonDepth(body, max_depth) > max_depth) {
    return absl::InvalidArgumentError(
        absl::StrCat("the JSON body nests deeper than ", max_depth, " levels"));
  }
  json parsed = json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) {
    return absl::InvalidArgumentError("the request body is not valid JSON");
  }
  if (!parsed.is_object()) {
    return absl::InvalidArgumentError("the request body must be a JSON object");
  }
  return parsed;
}

absl::StatusOr<GenerationRequest> ParseGenerationRequest(std::string_view body, ApiDialect dialect,
                                                         const RequestLimits& limits) {
  absl::StatusOr<json> parsed = ParseJsonObject(body, limits.max_json_depth);
  if (!parsed.ok()) return parsed.status();
  GenerationRequest r;
  r.dialect = dialect;
  const bool ollama = dialect == ApiDialect::kOllamaChat || dialect == ApiDialect::kOllamaGenerate;
  auto model = parsed->find("model");
  if (model == parsed->end() || model->is_null()) {
    if (!ollama) return absl::InvalidArgumentError("'model' is required");
  } else if (!model->is_string()) {
    return WrongType("model", "a string", *model);
  } else {
    r.model = model->get<std::string>();
    if (r.model.size() > 256) return absl::InvalidArgumentError("'model' is too long");
  }
  EXO_API_RETURN_IF_ERROR(ollama ? ParseOllama(*parsed, limits, &r)
                                 : ParseOpenAi(*parsed, limits, &r));
  EXO_API_RETURN_IF_ERROR(runtime::ValidateSamplingParams(r.sampling));
  return r;
}

}  // namespace exo::node
