// generate and plan against the running node: the status file judged (missing, stopped, dead,
// stale, damaged), the choice of node, the request that reproduces generate's settings, the
// stream parser, the live fleet; and RunClusterGenerate against a scripted HTTP server on
// loopback (port 0): streaming, waiting out a 503, a refused request, a dropped connection.
#include "node/cluster_generate.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "node/cluster_cli.h"
#include "node/plan_cmd.h"

namespace exo::node {
namespace {

using ::testing::HasSubstr;
using Json = nlohmann::json;

constexpr int64_t kNow = 1'800'000'000'000;
constexpr char kSelf[] = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
constexpr char kPeer[] = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

Json Status(int64_t http_port, const std::string& served_model) {
  return {{"pid", 1234},
          {"running", true},
          {"updated_unix_millis", kNow - 300},
          {"node_id", kSelf},
          {"capabilities",
           {{"memory_bytes", 2ull << 30},
            {"memory_bandwidth_bytes_per_second", 2e10},
            {"device_kind", "cpu-avx2"},
            {"http_port", http_port},
            {"served_model", served_model}}},
          {"peers",
           {{{"node_id", kPeer},
             {"state", "up"},
             {"capabilities",
              {{"memory_bytes", 1ull << 30},
               {"memory_bandwidth_bytes_per_second", 1e10},
               {"device_kind", "cpu-neon"},
               {"http_port", 0},
               {"served_model", ""}}}},
            {{"node_id", "cccccccccccccccccccccccccccccccc"},
             {"state", "down"},
             {"capabilities", {{"memory_bytes", 1ull << 34}}}}}}};
}

NodeStatus Judge(Json json, bool alive = true) {
  return EvaluateNodeStatus(std::move(json), "/state", kNow, [alive](int64_t) { return alive; });
}

TEST(NodeStatus, RunningWhenTheFileSaysSoThePidLivesAndItIsFresh) {
  const NodeStatus status = Judge(Status(52415, "m"));
  EXPECT_TRUE(status.running) << status.why_not_running;
  EXPECT_EQ(status.path, "/state/cluster.json");
  EXPECT_EQ(status.age_millis, 300);
}

TEST(NodeStatus, StoppedDeadStaleAndDamagedFilesAreNotRunning) {
  Json stopped = Status(52415, "m");
  stopped["running"] = false;
  EXPECT_THAT(Judge(stopped).why_not_running, HasSubstr("has stopped"));
  EXPECT_THAT(Judge(Status(52415, "m"), /*alive=*/false).why_not_running,
              HasSubstr("(pid 1234) is no longer running"));
  Json stale = Status(52415, "m");
  stale["updated_unix_millis"] = kNow - kStatusStaleMillis - 1000;
  EXPECT_THAT(Judge(stale).why_not_running, HasSubstr("has not updated its status for 6 s"));
  Json wrong_type = Status(52415, "m");
  wrong_type["pid"] = "1234";
  const NodeStatus damaged = Judge(wrong_type);
  EXPECT_FALSE(damaged.running);
  EXPECT_THAT(damaged.why_not_running, HasSubstr("is damaged"));
  EXPECT_THAT(Judge(Json::array()).why_not_running, HasSubstr("is not valid JSON"));
}

TEST(NodeStatus, AMissingFileSaysNoNodeHasRun) {
  const std::string dir = absl::StrCat(::testing::TempDir(), "/cluster_generate_test_", getpid());
  std::filesystem::create_directories(dir);
  const NodeStatus status = ReadNodeStatus(dir);
  EXPECT_FALSE(status.running);
  EXPECT_THAT(status.why_not_running, HasSubstr("no node has run with state directory"));
  std::ofstream(dir + "/cluster.json") << "{not json";
  EXPECT_THAT(ReadNodeStatus(dir).why_not_running, HasSubstr("is not valid JSON"));
}

TEST(ChooseDaemon, UsesANodeWithItsApiAndTheRequestedModel) {
  DaemonChoice choice = ChooseDaemon(Judge(Status(52415, "gemma-3-270m-q4_k_m")), "");
  EXPECT_TRUE(choice.use) << choice.why_not;
  EXPECT_EQ(choice.http_port, 52415);
  EXPECT_EQ(choice.node_id, kSelf);
  EXPECT_EQ(choice.served_model, "gemma-3-270m-q4_k_m");
  // --model names the same file by any path.
  EXPECT_TRUE(ChooseDaemon(Judge(Status(52415, "gemma-3-270m-q4_k_m")),
                           "/elsewhere/gemma-3-270m-q4_k_m.gguf")
                  .use);
}

TEST(ChooseDaemon, SaysWhyItRunsInProcess) {
  EXPECT_THAT(ChooseDaemon(Judge(Status(0, "m")), "").why_not, HasSubstr("serves no HTTP API"));
  Json no_field = Status(0, "m");
  no_field["capabilities"].erase("http_port");  // a node from before the field existed
  EXPECT_FALSE(ChooseDaemon(Judge(no_field), "").use);
  EXPECT_THAT(ChooseDaemon(Judge(Status(52415, "")), "").why_not, HasSubstr("serves no model"));
  EXPECT_THAT(ChooseDaemon(Judge(Status(52415, "other")), "/m/gemma.gguf").why_not,
              HasSubstr("serves other, not gemma"));
  Json stale = Status(52415, "m");
  stale["updated_unix_millis"] = 0;
  EXPECT_THAT(ChooseDaemon(Judge(stale), "").why_not, HasSubstr("has not updated"));
  Json bad = Status(52415, "m");
  bad["capabilities"]["http_port"] = "52415";
  EXPECT_THAT(ChooseDaemon(Judge(bad), "").why_not, HasSubstr("is damaged"));
}

GenerateCommand Command() {
  GenerateCommand command;
  command.prompt = "The capital of France is";
  command.max_tokens = 16;
  command.sampling.temperature = 0.7f;
  command.sampling.top_k = 40;
  command.sampling.top_p = 0.9f;
  command.sampling.min_p = 0.05f;
  command.sampling.seed = 7;
  return command;
}

TEST(BuildApiRequest, CompletionsCarryEverySamplingSetting) {
  const ApiRequest request = BuildApiRequest(Command(), "m");
  EXPECT_EQ(request.dialect, StreamDialect::kOpenAiCompletion);
  EXPECT_EQ(request.path, "/v1/completions");
  const Json& body = request.body;
  EXPECT_EQ(body["model"], "m");
  EXPECT_EQ(body["prompt"], "The capital of France is");
  EXPECT_EQ(body["max_tokens"], 16);
  EXPECT_FLOAT_EQ(body["temperature"].get<float>(), 0.7f);
  EXPECT_EQ(body["top_k"], 40);
  EXPECT_FLOAT_EQ(body["top_p"].get<float>(), 0.9f);
  EXPECT_FLOAT_EQ(body["min_p"].get<float>(), 0.05f);
  EXPECT_EQ(body["seed"], 7);
  EXPECT_EQ(body["stream"], true);
  EXPECT_EQ(body["stream_options"]["include_usage"], true);
}

TEST(BuildApiRequest, ChatTemplateUsesChatAndSeedZeroIsLeftOut) {
  GenerateCommand command = Command();
  command.chat_template = true;
  command.sampling.seed = 0;  // generate's "pick one"
  const ApiRequest request = BuildApiRequest(command, "m");
  EXPECT_EQ(request.dialect, StreamDialect::kOpenAiChat);
  EXPECT_EQ(request.path, "/v1/chat/completions");
  EXPECT_EQ(request.body["messages"],
            Json::parse(R"([{"role":"user","content":"The capital of France is"}])"));
  EXPECT_FALSE(request.body.contains("seed"));
  EXPECT_FALSE(request.body.contains("prompt"));
}

TEST(BuildApiRequest, PenaltiesGoToTheOllamaEndpointWithGeneratesWindow) {
  GenerateCommand command = Command();
  command.sampling.repetition_penalty = 1.1f;
  ApiRequest request = BuildApiRequest(command, "m");
  EXPECT_EQ(request.dialect, StreamDialect::kOllamaGenerate);
  EXPECT_EQ(request.path, "/api/generate");
  EXPECT_EQ(request.body["raw"], true);
  const Json& options = request.body["options"];
  EXPECT_FLOAT_EQ(options["repeat_penalty"].get<float>(), 1.1f);
  EXPECT_EQ(options["repeat_last_n"], 64);
  EXPECT_EQ(options["num_predict"], 16);
  EXPECT_EQ(options["seed"], 7);
  command.sampling.repetition_penalty = 1.0f;
  command.sampling.frequency_penalty = 0.5f;
  command.chat_template = true;
  request = BuildApiRequest(command, "m");
  EXPECT_EQ(request.dialect, StreamDialect::kOllamaGenerate);
  EXPECT_EQ(request.body["raw"], false);  // the server applies the chat template
}

TEST(ParseStreamLine, ReadsOpenAiCompletionEvents) {
  const auto dialect = StreamDialect::kOpenAiCompletion;
  auto event = ParseStreamLine(
      dialect, R"(data: {"choices":[{"index":0,"text":" Paris","finish_reason":null}]})");
  ASSERT_TRUE(event.ok()) << event.status();
  EXPECT_EQ(event->text, " Paris");
  EXPECT_FALSE(event->finish.has_value());
  event = ParseStreamLine(
      dialect, R"(data: {"choices":[{"text":"","finish_reason":"length"}],"usage":null})");
  ASSERT_TRUE(event.ok());
  EXPECT_EQ(event->finish, "length");
  event = ParseStreamLine(
      dialect, R"(data: {"choices":[],"usage":{"prompt_tokens":6,"completion_tokens":16}})");
  ASSERT_TRUE(event.ok());
  EXPECT_EQ(event->prompt_tokens, 6);
  EXPECT_EQ(event->completion_tokens, 16);
  event = ParseStreamLine(dialect, "data: [DONE]\r");
  ASSERT_TRUE(event.ok());
  EXPECT_TRUE(event->end_of_stream);
  for (const char* nothing : {"", ": keep-alive", "event: message"}) {
    event = ParseStreamLine(dialect, nothing);
    ASSERT_TRUE(event.ok());
    EXPECT_TRUE(event->text.empty() && !event->end_of_stream);
  }
}

TEST(ParseStreamLine, ReadsChatDeltasAndOllamaLines) {
  auto event =
      ParseStreamLine(StreamDialect::kOpenAiChat,
                      R"(data: {"choices":[{"delta":{"role":"assistant","content":""}}]})");
  ASSERT_TRUE(event.ok());
  EXPECT_EQ(event->text, "");
  event = ParseStreamLine(StreamDialect::kOpenAiChat,
                          R"(data: {"choices":[{"delta":{"content":"Hi"},"finish_reason":null}]})");
  ASSERT_TRUE(event.ok());
  EXPECT_EQ(event->text, "Hi");
  event = ParseStreamLine(StreamDialect::kOllamaGenerate, R"({"response":"Hi","done":false})");
  ASSERT_TRUE(event.ok());
  EXPECT_EQ(event->text, "Hi");
  event = ParseStreamLine(
      StreamDialect::kOllamaGenerate,
      R"({"response":"","done":true,"done_reason":"stop","prompt_eval_count":5,"eval_count":9})");
  ASSERT_TRUE(event.ok());
  EXPECT_TRUE(event->end_of_stream);
  EXPECT_EQ(event->finish, "stop");
  EXPECT_EQ(event->prompt_tokens, 5);
  EXPECT_EQ(event->completion_tokens, 9);
}

TEST(ParseStreamLine, ErrorsAndGarbageAreErrors) {
  auto event = ParseStreamLine(StreamDialect::kOpenAiCompletion,
                               R"(data: {"error":{"message":"a stage went away"}})");
  EXPECT_EQ(event.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(event.status().message(), HasSubstr("a stage went away"));
  event = ParseStreamLine(StreamDialect::kOllamaGenerate, R"({"error":"out of memory"})");
  EXPECT_THAT(event.status().message(), HasSubstr("out of memory"));
  event = ParseStreamLine(StreamDialect::kOpenAiCompletion, "data: {truncated");
  EXPECT_EQ(event.status().code(), absl::StatusCode::kInvalidArgument);
  event = ParseStreamLine(StreamDialect::kOpenAiCompletion, R"(data: {"choices":[{"text":3}]})");
  EXPECT_EQ(event.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(DescribePlanInForce, NamesEachStage) {
  const Json view = Json::parse(R"({"plan": {"model": "m", "seconds_per_token": 0.0042,
      "stages": [{"node": "3f2a9c01ffff", "layer_begin": 0, "layer_end": 9},
                 {"node": "7b1c0d22ffff", "layer_begin": 9, "layer_end": 18}]}})");
  EXPECT_EQ(DescribePlanInForce(view),
            "2 stages: 3f2a9c01 layers [0, 9) -> 7b1c0d22 layers [9, 18), 4.20 ms/token "
            "estimated");
  EXPECT_EQ(DescribePlanInForce(Json::parse(R"({"plan": {"stages": []}})")), "");
  EXPECT_EQ(DescribePlanInForce(Json::object()), "");
}

TEST(FleetFromStatus, ThisNodeAndUpPeersWithTheirCapabilities) {
  absl::StatusOr<Fleet> fleet = FleetFromStatus(Status(52415, "m"));
  ASSERT_TRUE(fleet.ok()) << fleet.status();
  ASSERT_EQ(fleet->devices.size(), 2u);  // the down peer is left out
  EXPECT_EQ(fleet->devices[0].node_id, kSelf);
  EXPECT_EQ(fleet->devices[0].memory_bytes, 2ull << 30);
  EXPECT_DOUBLE_EQ(fleet->devices[0].decode_bytes_per_second, 2e10);
  EXPECT_EQ(fleet->devices[0].device_kind, "cpu-avx2");
  EXPECT_EQ(fleet->devices[1].node_id, kPeer);
  EXPECT_EQ(fleet->devices[1].memory_bytes, 1ull << 30);
  EXPECT_EQ(fleet->devices[1].device_kind, "cpu-neon");
  EXPECT_DOUBLE_EQ(fleet->links.default_latency_seconds,
                   partition::LinkModel().default_latency_seconds);
  EXPECT_TRUE(fleet->links.links.empty());
}

TEST(FleetFromStatus, DamagedStatusIsAnError) {
  Json no_caps = Status(52415, "m");
  no_caps.erase("capabilities");
  EXPECT_THAT(FleetFromStatus(no_caps).status().message(), HasSubstr("has no capabilities"));
  Json no_id = Status(52415, "m");
  no_id["peers"][0].erase("node_id");
  EXPECT_THAT(FleetFromStatus(no_id).status().message(), HasSubstr("has no node_id"));
  Json bad = Status(52415, "m");
  bad["capabilities"]["memory_bytes"] = "lots";
  EXPECT_THAT(FleetFromStatus(bad).status().message(), HasSubstr("damaged"));
}

// A loopback HTTP server answering one request per connection with what `respond` returns for
// the request's first line (e.g. "POST /v1/completions HTTP/1.1"). Runs until destroyed.
class ScriptedServer {
 public:
  explicit ScriptedServer(std::function<std::string(const std::string&)> respond)
      : respond_(std::move(respond)) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(bind(fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
    EXPECT_EQ(listen(fd_, 8), 0);
    socklen_t size = sizeof(address);
    getsockname(fd_, reinterpret_cast<sockaddr*>(&address), &size);
    port_ = ntohs(address.sin_port);
    // Accepts connections one at a time and answers each from the script.
    thread_ = std::thread([this] {
      while (true) {
        const int client = accept(fd_, nullptr, nullptr);
        if (client < 0 || stopping_) {
          if (client >= 0) close(client);
          return;
        }
        std::string request;
        char buffer[4096];
        while (request.find("\r\n\r\n") == std::string::npos) {
          const ssize_t n = read(client, buffer, sizeof(buffer));
          if (n <= 0) break;
          request.append(buffer, static_cast<size_t>(n));
        }
        // The body (POST) follows the headers; its length is in Content-Length.
        const size_t header_end = request.find("\r\n\r\n");
        const size_t length_at = request.find("Content-Length: ");
        if (header_end != std::string::npos && length_at != std::string::npos) {
          const size_t length = std::stoul(request.substr(length_at + 16));
          while (request.size() < header_end + 4 + length) {
            const ssize_t n = read(client, buffer, sizeof(buffer));
            if (n <= 0) break;
            request.append(buffer, static_cast<size_t>(n));
          }
          last_body_ = request.substr(header_end + 4);
          last_post_ = request.substr(0, header_end);
        }
        requests_.push_back(request.substr(0, request.find("\r\n")));
        const std::string response = respond_(requests_.back());
        (void)!write(client, response.data(), response.size());
        close(client);
      }
    });
  }
  ~ScriptedServer() {
    stopping_ = true;
    shutdown(fd_, SHUT_RDWR);
    close(fd_);
    thread_.join();
  }
  uint16_t port() const { return port_; }
  // Read after the client is done with the server.
  const std::vector<std::string>& requests() const { return requests_; }
  const std::string& last_body() const { return last_body_; }
  const std::string& last_post_headers() const { return last_post_; }

  static std::string Reply(int status, const std::string& content_type, const std::string& body) {
    return absl::StrCat("HTTP/1.1 ", status, " X\r\nContent-Type: ", content_type,
                        "\r\nContent-Length: ", body.size(), "\r\nConnection: close\r\n\r\n", body);
  }

 private:
  std::function<std::string(const std::string&)> respond_;
  int fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stopping_{false};
  std::vector<std::string> requests_;
  std::string last_body_;
  std::string last_post_;
  std::thread thread_;
};

constexpr char kCompletionStream[] =
    "data: {\"choices\":[{\"text\":\" Paris\",\"finish_reason\":null}],\"usage\":null}\n\n"
    "data: {\"choices\":[{\"text\":\".\",\"finish_reason\":null}],\"usage\":null}\n\n"
    "data: {\"choices\":[{\"text\":\"\",\"finish_reason\":\"length\"}],\"usage\":null}\n\n"
    "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":6,\"completion_tokens\":2}}\n\n"
    "data: [DONE]\n\n";

std::string ClusterView() {
  return R"({"plan": {"stages": [{"node": "aaaa", "layer_begin": 0, "layer_end": 18}]}})";
}

DaemonChoice Daemon(uint16_t port) { return DaemonChoice{true, "", kSelf, port, "model-id"}; }

TEST(RunClusterGenerate, StreamsTheTextAndSummarises) {
  ScriptedServer server([](const std::string& line) {
    if (absl::StartsWith(line, "GET /health")) {
      return ScriptedServer::Reply(200, "application/json", R"({"status":"ok"})");
    }
    if (absl::StartsWith(line, "GET /v1/cluster")) {
      return ScriptedServer::Reply(200, "application/json", ClusterView());
    }
    return ScriptedServer::Reply(200, "text/event-stream", kCompletionStream);
  });
  GenerateCommand command = Command();
  command.json_out =
      absl::StrCat(::testing::TempDir(), "/cluster_generate_test_", getpid(), ".json");
  std::ostringstream out, err;
  ASSERT_EQ(RunClusterGenerate(command, Daemon(server.port()), {.api_key = "secret"}, out, err), 0)
      << err.str();
  EXPECT_EQ(out.str(), " Paris.\n");
  EXPECT_THAT(err.str(), HasSubstr(absl::StrCat("generating through the cluster node ", kSelf,
                                                " at http://127.0.0.1:", server.port())));
  EXPECT_THAT(err.str(), HasSubstr("plan: 1 stage: aaaa layers [0, 18)"));
  EXPECT_THAT(err.str(), HasSubstr("prompt: 6 tokens | generation: 2 tokens in"));
  EXPECT_THAT(err.str(), HasSubstr("time to first token"));
  EXPECT_THAT(err.str(), HasSubstr("finish: length"));
  ASSERT_GE(server.requests().size(), 3u);
  EXPECT_EQ(server.requests().back(), "POST /v1/completions HTTP/1.1");
  EXPECT_EQ(Json::parse(server.last_body())["max_tokens"], 16);
  EXPECT_EQ(Json::parse(server.last_body())["model"], "model-id");
  EXPECT_THAT(server.last_post_headers(), HasSubstr("Authorization: Bearer secret"));
  std::ifstream json_file(command.json_out);
  const Json written = Json::parse(json_file);
  EXPECT_EQ(written["text"], " Paris.");
  EXPECT_EQ(written["prompt_token_count"], 6);
  EXPECT_EQ(written["generated_token_count"], 2);
}

TEST(RunClusterGenerate, WaitsWhileTheNodeLoads) {
  std::atomic<int> health_calls{0};
  ScriptedServer server([&](const std::string& line) {
    if (absl::StartsWith(line, "GET /health")) {
      if (++health_calls < 3) {
        return ScriptedServer::Reply(503, "application/json",
                                     R"({"status":"loading","detail":"loading shards"})");
      }
      return ScriptedServer::Reply(200, "application/json", R"({"status":"ok"})");
    }
    if (absl::StartsWith(line, "GET /v1/cluster")) {
      return ScriptedServer::Reply(200, "application/json", "{}");
    }
    return ScriptedServer::Reply(200, "text/event-stream", kCompletionStream);
  });
  std::ostringstream out, err;
  ASSERT_EQ(RunClusterGenerate(Command(), Daemon(server.port()), {}, out, err), 0) << err.str();
  EXPECT_THAT(err.str(), HasSubstr("waiting for the node: loading shards"));
  EXPECT_EQ(out.str(), " Paris.\n");
}

TEST(RunClusterGenerate, GivesUpWaitingAtTheTimeout) {
  ScriptedServer server([](const std::string&) {
    return ScriptedServer::Reply(503, "application/json",
                                 R"({"status":"loading","detail":"waiting for peers"})");
  });
  std::ostringstream out, err;
  ClusterGenerateOptions options;
  options.ready_timeout_s = 0;
  EXPECT_EQ(RunClusterGenerate(Command(), Daemon(server.port()), options, out, err), 1);
  EXPECT_THAT(err.str(), HasSubstr("was still not ready after the wait (waiting for peers)"));
}

TEST(RunClusterGenerate, ARefusedRequestIsOneLineError) {
  ScriptedServer server([](const std::string& line) {
    if (absl::StartsWith(line, "POST")) {
      return ScriptedServer::Reply(400, "application/json",
                                   R"({"error":{"message":"'temperature' must be in [0, 2]"}})");
    }
    return ScriptedServer::Reply(200, "application/json", "{}");
  });
  std::ostringstream out, err;
  EXPECT_EQ(RunClusterGenerate(Command(), Daemon(server.port()), {}, out, err), 1);
  EXPECT_THAT(err.str(), HasSubstr("refused the request (HTTP 400): 'temperature' must be in"));
}

TEST(RunClusterGenerate, ADroppedStreamIsAnError) {
  ScriptedServer server([](const std::string& line) {
    if (absl::StartsWith(line, "POST")) {
      // Headers promise a chunked stream; the connection closes after one event.
      return std::string(
          "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: "
          "chunked\r\n\r\n3c\r\ndata: {\"choices\":[{\"text\":\" Paris\",\"finish_reason\":"
          "null}]}\n\n\r\n");
    }
    return ScriptedServer::Reply(200, "application/json", "{}");
  });
  std::ostringstream out, err;
  EXPECT_EQ(RunClusterGenerate(Command(), Daemon(server.port()), {}, out, err), 1);
  EXPECT_THAT(err.str(), HasSubstr("dropped after 1 piece(s) of text"));
  EXPECT_EQ(out.str(), " Paris\n");
}

TEST(RunClusterGenerate, GivesUpWhenRequestsKeepGetting503WhileHealthy) {
  ScriptedServer server([](const std::string& line) {
    if (absl::StartsWith(line, "POST")) {
      return ScriptedServer::Reply(503, "application/json",
                                   R"({"error":{"message":"no model is loaded"}})");
    }
    return ScriptedServer::Reply(200, "application/json", "{}");
  });
  std::ostringstream out, err;
  EXPECT_EQ(RunClusterGenerate(Command(), Daemon(server.port()), {}, out, err), 1);
  EXPECT_THAT(err.str(), HasSubstr("kept answering 503 (no model is loaded)"));
}

TEST(RunClusterGenerate, AMissingKeySaysWhichFlagToPass) {
  ScriptedServer server([](const std::string& line) {
    if (absl::StartsWith(line, "POST")) {
      return ScriptedServer::Reply(401, "application/json",
                                   R"({"error":{"message":"missing or wrong API key"}})");
    }
    return ScriptedServer::Reply(200, "application/json", "{}");
  });
  std::ostringstream out, err;
  EXPECT_EQ(RunClusterGenerate(Command(), Daemon(server.port()), {}, out, err), 1);
  EXPECT_THAT(err.str(), HasSubstr("(HTTP 401): missing or wrong API key; pass the node's key "
                                   "with --api_key KEY"));
}

TEST(RunClusterGenerate, NoAnswerSaysToCheckTheNode) {
  uint16_t port;
  {
    ScriptedServer closed([](const std::string&) { return std::string(); });
    port = closed.port();
  }
  std::ostringstream out, err;
  EXPECT_EQ(RunClusterGenerate(Command(), Daemon(port), {}, out, err), 1);
  EXPECT_THAT(err.str(), HasSubstr("does not answer"));
  EXPECT_THAT(err.str(), HasSubstr("--local"));
}

}  // namespace
}  // namespace exo::node
