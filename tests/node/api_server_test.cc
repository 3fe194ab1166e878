// The HTTP server in-process, over a real loopback socket: health follows the loading state,
// generation waits for a model with 503 + Retry-After, and a synthetic model answers.
#include "node/api_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <functional>
#include <string>

#include "common/status_macros.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "synthetic_model_testlib.h"

namespace exo::node {
namespace {

struct HttpResponse {
  int status = 0;
  std::string headers;
  std::string body;
};

// A chunked body's data ("<hex size>\r\n<data>\r\n" ... "0\r\n\r\n").
std::string Unchunk(const std::string& raw) {
  std::string out;
  size_t at = 0;
  while (at < raw.size()) {
    const size_t line_end = raw.find("\r\n", at);
    if (line_end == std::string::npos) break;
    const size_t size = std::stoul(raw.substr(at, line_end - at), nullptr, 16);
    if (size == 0) break;
    out += raw.substr(line_end + 2, size);
    at = line_end + 2 + size + 2;
  }
  return out;
}

// One request on a fresh connection ("Connection: close"), read to the end; `extra_headers` are
// "Name: value\r\n" lines.
HttpResponse Fetch(int port, const std::string& method, const std::string& path,
                   const std::string& body = "", const std::string& extra_headers = "") {
  HttpResponse response;
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address = {};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    close(fd);
    return response;
  }
  const std::string request = method + " " + path + " HTTP/1.1\r\nHost: localhost\r\n" +
                              "Connection: close\r\nContent-Type: application/json\r\n" +
                              extra_headers + "Content-Length: " + std::to_string(body.size()) +
                              "\r\n\r\n" + body;
  (void)!write(fd, request.data(), request.size());
  std::string raw;
  char buffer[4096];
  ssize_t n;
  while ((n = read(fd, buffer, sizeof(buffer))) > 0) raw.append(buffer, n);
  close(fd);
  const size_t split = raw.find("\r\n\r\n");
  if (raw.size() < 12 || split == std::string::npos) return response;
  response.status = std::stoi(raw.substr(9, 3));
  response.headers = raw.substr(0, split);
  response.body = raw.substr(split + 4);
  if (response.headers.find("Transfer-Encoding: chunked") != std::string::npos) {
    response.body = Unchunk(response.body);
  }
  return response;
}

// `routes`: the cluster this node sees (none: a single node).
std::unique_ptr<ApiServer> StartServer(
    std::function<ApiServerOptions::ClusterRoutes()> routes = nullptr) {
  ApiServerOptions options;
  options.host = "127.0.0.1";
  options.port = 0;
  options.threads = 8;
  options.routes = std::move(routes);
  auto server = ApiServer::Start(options);
  EXPECT_TRUE(server.ok()) << server.status();
  return server.ok() ? std::move(*server) : nullptr;
}

const char kCompletion[] = R"({"model": "tiny", "prompt": "abc", "max_tokens": 3,
                              "temperature": 0})";

TEST(ApiServerTest, HealthFollowsLoadingAndGenerationWaitsWith503) {
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  HttpResponse r = Fetch(server->port(), "GET", "/health");
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(nlohmann::json::parse(r.body)["model"].is_null());

  server->SetLoading("tiny");
  r = Fetch(server->port(), "GET", "/health");
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(nlohmann::json::parse(r.body)["status"], "loading");
  EXPECT_NE(r.headers.find("Retry-After: 1"), std::string::npos);
  r = Fetch(server->port(), "POST", "/v1/completions", kCompletion);
  EXPECT_EQ(r.status, 503);
  EXPECT_NE(r.headers.find("Retry-After"), std::string::npos);
  EXPECT_NE(nlohmann::json::parse(r.body)["error"]["message"].get<std::string>().find("loading"),
            std::string::npos);

  server->SetLoadError(absl::InvalidArgumentError("bad file"));
  r = Fetch(server->port(), "GET", "/health");
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(nlohmann::json::parse(r.body)["error"], "bad file");
  r = Fetch(server->port(), "GET", "/metrics");
  EXPECT_EQ(r.status, 200);
  EXPECT_NE(r.body.find("exo_node_state{state=\"failed\"} 1"), std::string::npos);
}

// A tiny synthetic model with a 64-position context, ready to serve.
absl::StatusOr<std::shared_ptr<ServedModel>> TinyModel() {
  runtime::synthetic::SyntheticModelOptions model_options;
  const std::string path =
      ::testing::TempDir() + "/api_server_test." + std::to_string(getpid()) + ".tiny.gguf";
  RETURN_IF_ERROR(runtime::synthetic::WriteSyntheticModel(model_options, path).status());
  ServeModelOptions options;
  options.path = path;
  options.context = 64;
  options.num_slots = 2;
  options.threads = 1;
  return LoadServedModel(options);
}

TEST(ApiServerTest, SyntheticModelAnswersCompletions) {
  auto model = TinyModel();
  ASSERT_TRUE(model.ok()) << model.status();
  const std::string id = (*model)->id;
  auto server = StartServer();
  ASSERT_NE(server, nullptr);
  server->SetModel(*model);

  nlohmann::json body = nlohmann::json::parse(kCompletion);
  body["model"] = id;
  HttpResponse r = Fetch(server->port(), "POST", "/v1/completions", body.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  nlohmann::json answer = nlohmann::json::parse(r.body);
  EXPECT_EQ(
      answer["usage"]["completion_tokens"].get<int>() + answer["usage"]["prompt_tokens"].get<int>(),
      answer["usage"]["total_tokens"].get<int>());
  EXPECT_LE(answer["usage"]["completion_tokens"].get<int>(), 3);
  EXPECT_EQ(answer["model"], id);

  body["model"] = "other";
  r = Fetch(server->port(), "POST", "/v1/completions", body.dump());
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(nlohmann::json::parse(r.body)["error"]["code"], "model_not_found");
  body["model"] = id;
  body["prompt"] = std::string(200, 'a');  // longer than the 64-position context
  r = Fetch(server->port(), "POST", "/v1/completions", body.dump());
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(nlohmann::json::parse(r.body)["error"]["code"], "context_length_exceeded");

  r = Fetch(server->port(), "GET", "/v1/models");
  EXPECT_EQ(nlohmann::json::parse(r.body)["data"][0]["id"], id);
  r = Fetch(server->port(), "GET", "/");
  EXPECT_EQ(r.status, 200);
  EXPECT_NE(r.body.find("<title>exo-node</title>"), std::string::npos);
  r = Fetch(server->port(), "GET", "/app.js");
  EXPECT_EQ(r.status, 200);
  EXPECT_NE(r.headers.find("text/javascript"), std::string::npos);
  r = Fetch(server->port(), "GET", "/nothing.js");
  EXPECT_EQ(r.status, 404);
}

// A node that does not serve the model passes requests to the node that does (its coordinator),
// streams included, and says clearly when that node cannot be reached.
TEST(ApiServerTest, ProxiesRequestsToTheModelsCoordinator) {
  auto model = TinyModel();
  ASSERT_TRUE(model.ok()) << model.status();
  const std::string id = (*model)->id;
  auto coordinator = StartServer();
  ASSERT_NE(coordinator, nullptr);
  coordinator->SetModel(*model);
  const ApiEndpoint target{"node-b", "127.0.0.1", static_cast<uint16_t>(coordinator->port()), id,
                           false};
  auto front = StartServer([target] {
    return ApiServerOptions::ClusterRoutes{"node-a", {target}};
  });
  ASSERT_NE(front, nullptr);
  front->SetFollowing(id, "coordinated by node-b");
  HttpResponse r = Fetch(front->port(), "GET", "/health");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(nlohmann::json::parse(r.body)["role"], "proxy");

  nlohmann::json body = nlohmann::json::parse(kCompletion);
  body["model"] = id;
  const HttpResponse direct = Fetch(coordinator->port(), "POST", "/v1/completions", body.dump());
  ASSERT_EQ(direct.status, 200) << direct.body;
  r = Fetch(front->port(), "POST", "/v1/completions", body.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(nlohmann::json::parse(r.body)["choices"][0]["text"],
            nlohmann::json::parse(direct.body)["choices"][0]["text"]);

  body["stream"] = true;
  r = Fetch(front->port(), "POST", "/v1/completions", body.dump());
  EXPECT_EQ(r.status, 200);
  EXPECT_NE(r.headers.find("text/event-stream"), std::string::npos) << r.headers;
  EXPECT_NE(r.body.find("data: [DONE]"), std::string::npos) << r.body;
  body["stream"] = false;

  // Errors come back as the coordinator gave them.
  body["prompt"] = std::string(200, 'a');
  r = Fetch(front->port(), "POST", "/v1/completions", body.dump());
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(nlohmann::json::parse(r.body)["error"]["code"], "context_length_exceeded");
  body["prompt"] = "abc";

  r = Fetch(front->port(), "GET", "/v1/models");
  EXPECT_EQ(nlohmann::json::parse(r.body)["data"][0]["id"], id);
  r = Fetch(front->port(), "GET", "/api/tags");
  EXPECT_EQ(nlohmann::json::parse(r.body)["models"][0]["name"], id);
  r = Fetch(front->port(), "GET", "/v1/models/" + id);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(nlohmann::json::parse(r.body)["id"], id);

  // A request some node proxied already is never proxied again (no loops between nodes whose
  // views disagree): this node answers it itself.
  r = Fetch(front->port(), "POST", "/v1/completions", body.dump(),
            "X-Exo-Forwarded-By: node-c\r\n");
  EXPECT_EQ(r.status, 503);

  coordinator.reset();
  r = Fetch(front->port(), "POST", "/v1/completions", body.dump());
  EXPECT_EQ(r.status, 502);
  EXPECT_NE(r.headers.find("Retry-After"), std::string::npos);
  EXPECT_NE(nlohmann::json::parse(r.body)["error"]["message"].get<std::string>().find("node-b"),
            std::string::npos)
      << r.body;
}

}  // namespace
}  // namespace exo::node
