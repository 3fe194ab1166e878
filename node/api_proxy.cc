#include "node/api_proxy.h"

#include <atomic>
#include <deque>
#include <memory>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace exo::node {
namespace {

constexpr absl::Duration kPollInterval = absl::Milliseconds(100);
// Headers of the answer worth passing on (the body's framing is the proxy's own).
constexpr const char* kAnswerHeaders[] = {"Retry-After", "WWW-Authenticate", "Cache-Control",
                                          "X-Accel-Buffering"};

// One relayed request: the upstream call runs on its own thread and hands over the answer's
// head and body pieces; the client's side takes them from here.
class Relay {
 public:
  explicit Relay(const ApiEndpoint& target) : client_(target.host, target.port) {
    client_.set_connection_timeout(3, 0);
    client_.set_write_timeout(30, 0);
    client_.set_read_timeout(600, 0);  // a long non-streamed generation answers only at its end
  }

  ~Relay() {
    cancelled_.store(true);
    client_.stop();
    if (thread_.joinable()) thread_.join();
  }

  void Start(httplib::Request upstream) {
    upstream.response_handler = [this](const httplib::Response& answer) {
      absl::MutexLock lock(&mu_);
      status_ = answer.status;
      headers_ = answer.headers;
      have_head_ = true;
      return !cancelled_.load();
    };
    upstream.content_receiver = [this](const char* data, size_t size, uint64_t, uint64_t) {
      absl::MutexLock lock(&mu_);
      body_.emplace_back(data, size);
      return !cancelled_.load();
    };
    thread_ = std::thread([this, upstream = std::move(upstream)]() mutable {
      httplib::Response answer;
      httplib::Error error = httplib::Error::Success;
      client_.send(upstream, answer, error);
      absl::MutexLock lock(&mu_);
      finished_ = true;
      error_ = error;
    });
  }

  // Waits for the answer's head; false when the call ended without one.
  bool AwaitHead(int* status, httplib::Headers* headers, std::string* error) {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](Relay* r) { return r->have_head_ || r->finished_; }, this));
    if (!have_head_) {
      *error = httplib::to_string(error_);
      return false;
    }
    *status = status_;
    *headers = headers_;
    return true;
  }

  // Body pieces received so far (waits up to kPollInterval for one); `done` once all came.
  std::deque<std::string> Take(bool* done) {
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(
                             +[](Relay* r) { return !r->body_.empty() || r->finished_; }, this),
                         kPollInterval);
    std::deque<std::string> out;
    out.swap(body_);
    *done = finished_;
    return out;
  }

  void Cancel() {
    cancelled_.store(true);
    client_.stop();
  }

 private:
  httplib::Client client_;
  std::thread thread_;
  std::atomic<bool> cancelled_{false};
  absl::Mutex mu_;
  bool have_head_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  int status_ ABSL_GUARDED_BY(mu_) = 0;
  httplib::Headers headers_ ABSL_GUARDED_BY(mu_);
  std::deque<std::string> body_ ABSL_GUARDED_BY(mu_);
  httplib::Error error_ ABSL_GUARDED_BY(mu_) = httplib::Error::Success;
};

}  // namespace

bool ProxyRequest(const httplib::Request& req, httplib::Response& res, const ApiEndpoint& target,
                  const std::string& forwarded_by, std::string* error) {
  httplib::Request upstream;
  upstream.method = req.method;
  upstream.path = req.target.empty() ? req.path : req.target;
  upstream.body = req.body;
  for (const char* name : {"Authorization", "Content-Type", "Accept"}) {
    if (req.has_header(name)) upstream.headers.emplace(name, req.get_header_value(name));
  }
  upstream.headers.emplace(kForwardedByHeader, forwarded_by);
  auto relay = std::make_shared<Relay>(target);
  relay->Start(std::move(upstream));
  int status = 0;
  httplib::Headers headers;
  if (!relay->AwaitHead(&status, &headers, error)) return false;
  res.status = status;
  for (const char* name : kAnswerHeaders) {
    auto it = headers.find(name);
    if (it != headers.end()) res.set_header(name, it->second);
  }
  auto type = headers.find("Content-Type");
  const std::string content_type = type != headers.end() ? type->second : "application/json";
  res.set_chunked_content_provider(
      content_type,
      [relay](size_t, httplib::DataSink& sink) {
        bool done = false;
        std::deque<std::string> pieces = relay->Take(&done);
        if (!sink.is_writable()) {
          relay->Cancel();
          return false;
        }
        for (const std::string& piece : pieces) {
          if (!sink.write(piece.data(), piece.size())) {
            relay->Cancel();
            return false;
          }
        }
        if (done) sink.done();
        return true;
      },
      [relay](bool) { relay->Cancel(); });
  return true;
}

std::optional<std::string> FetchFrom(const ApiEndpoint& target, const httplib::Request& req,
                                     const std::string& forwarded_by) {
  httplib::Client client(target.host, target.port);
  client.set_connection_timeout(2, 0);
  client.set_read_timeout(5, 0);
  httplib::Headers headers = {{kForwardedByHeader, forwarded_by}};
  if (req.has_header("Authorization")) {
    headers.emplace("Authorization", req.get_header_value("Authorization"));
  }
  httplib::Result answer = client.Get(req.target.empty() ? req.path : req.target, headers);
  if (!answer || answer->status != 200) return std::nullopt;
  return answer->body;
}

}  // namespace exo::node
