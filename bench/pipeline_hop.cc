// Pipeline benchmarks on loopback, printing figures (never pass/fail):
//   1. hop: round trip of one Forward frame of n_embd f32 values (640 for the default model) over
//      a persistent gRPC stream to a server that answers at once (transport and protobuf only);
//   2. decode: tokens/s of greedy decode through a pipeline of in-process stages (each its own
//      gRPC server on loopback and its own compute thread) for 1 and 4 concurrent sequences,
//      against a single StageHost holding every layer (1 and 4 sequences batched per step).
//
// Usage: pipeline_hop [--model PATH] [--stages 2] [--tokens 64] [--reps 3] [--hops 2000]
//        [--threads 1] [--skip_decode]
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "node/paths.h"
#include "node/pipeline.h"
#include "node/shard_handler.h"
#include "node/stage_host.h"
#include "node/stage_server.h"
#include "node/tensor_fetch.h"
#include "node/wire.h"
#include "runtime/gguf.h"
#include "runtime/model_config.h"

namespace exo::node {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// CPU seconds (user + system) of every thread of this process so far.
double CpuSeconds() {
  rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_stime.tv_sec + 1e-6 * (u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

// One configuration's figures: wall-clock tokens/s and CPU milliseconds per token.
struct Figure {
  double tokens_per_second = 0;
  double cpu_ms_per_token = 0;
};

// Answers every frame at once with an empty result.
class EchoService final : public v1::NodeService::Service {
 public:
  grpc::Status Forward(
      grpc::ServerContext*,
      grpc::ServerReaderWriter<v1::ForwardResult, v1::ForwardFrame>* stream) override {
    v1::ForwardFrame frame;
    v1::ForwardResult result;
    while (stream->Read(&frame)) {
      result.set_sequence_id(frame.sequence_id());
      if (!stream->Write(result)) break;
    }
    return grpc::Status::OK;
  }
};

void BenchHop(int n_embd, int hops) {
  EchoService service;
  auto started = StartServer(&service, "127.0.0.1", 0);
  if (!started.ok()) {
    std::fprintf(stderr, "%s\n", std::string(started.status().message()).c_str());
    return;
  }
  auto stub = v1::NodeService::NewStub(MakePeerChannel(absl::StrCat("127.0.0.1:", started->port)));
  grpc::ClientContext ctx;
  auto stream = stub->Forward(&ctx);
  v1::ForwardFrame frame;
  frame.set_plan_epoch(1);
  frame.set_token_count(1);
  frame.set_dtype(v1::DTYPE_F32);
  frame.add_shape(1);
  frame.add_shape(n_embd);
  std::vector<float> hidden(n_embd, 0.5f);
  frame.set_hidden(hidden.data(), hidden.size() * 4);
  frame.add_tokens(1);
  v1::ForwardResult result;
  std::vector<double> us;
  for (int i = 0; i < hops + 200; ++i) {
    frame.set_sequence_id(i);
    const auto t0 = Clock::now();
    stream->Write(frame);
    stream->Read(&result);
    if (i >= 200) us.push_back(1e6 * Seconds(t0, Clock::now()));
  }
  stream->WritesDone();
  (void)stream->Finish();
  started->server->Shutdown();
  std::sort(us.begin(), us.end());
  double mean = 0;
  for (double u : us) mean += u / us.size();
  std::printf(
      "hop: one frame of %d f32 (%zu bytes on the wire) round trip over loopback gRPC, %d trips: "
      "median %.1f us, p90 %.1f us, p99 %.1f us, mean %.1f us\n",
      n_embd, frame.ByteSizeLong(), hops, us[us.size() / 2], us[us.size() * 9 / 10],
      us[us.size() * 99 / 100], mean);
}

// Greedy decode of `tokens` tokens for each of `n_seq` sequences on a chain of StageHosts in this
// thread (`split` hosts over the layers; 1 is the single node), no networking.
Figure LocalTokensPerSecond(const runtime::GgufFile& file, int n_layer, int split, int n_seq,
                            int tokens, int threads) {
  kernels::ThreadPool pool(threads);
  auto ranges = SplitLayersEvenly(n_layer, split);
  std::vector<std::unique_ptr<StageHost>> hosts;
  for (int i = 0; i < split; ++i) {
    StageHostOptions o;
    o.plan_epoch = 1;
    o.layers = (*ranges)[i];
    o.has_embedding = i == 0;
    o.has_head = i == split - 1;
    o.context = 512;
    o.max_sequences = n_seq;
    o.pool = &pool;
    auto host = StageHost::Create(file, o);
    if (!host.ok()) return {};
    hosts.push_back(std::move(*host));
  }
  auto frame = [](uint64_t id, int32_t pos, std::vector<int32_t> t) {
    StageFrame f;
    f.sequence_id = id;
    f.plan_epoch = 1;
    f.first_position = pos;
    f.token_count = static_cast<int32_t>(t.size());
    f.tokens = std::move(t);
    f.sampling.params.temperature = 0;
    return f;
  };
  auto run = [&](std::vector<StageFrame> frames) {
    std::vector<StageOutput> out;
    for (auto& host : hosts) {
      out = host->Step(std::move(frames));
      frames.clear();
      for (auto& o : out) {
        if (o.next.has_value()) frames.push_back(std::move(*o.next));
      }
    }
    return out;
  };
  // Timed like the pipeline: the 4-token prompt and tokens + 1 generated per sequence.
  const auto t0 = Clock::now();
  const double c0 = CpuSeconds();
  std::vector<StageFrame> frames;
  for (int s = 0; s < n_seq; ++s) frames.push_back(frame(s, 0, {2, 100 + s, 200, 300}));
  std::vector<StageOutput> out = run(std::move(frames));
  for (int i = 0; i < tokens; ++i) {
    frames.clear();
    for (int s = 0; s < n_seq; ++s) frames.push_back(frame(s, 4 + i, {out[s].tokens[0].token}));
    out = run(std::move(frames));
  }
  const double n = double(n_seq) * (tokens + 1);
  return {n / Seconds(t0, Clock::now()), 1e3 * (CpuSeconds() - c0) / n};
}

Figure PipelineTokensPerSecond(Pipeline& pipeline, int n_seq, int tokens) {
  std::vector<std::unique_ptr<absl::Notification>> done;
  const auto t0 = Clock::now();
  const double c0 = CpuSeconds();
  for (int s = 0; s < n_seq; ++s) {
    done.push_back(std::make_unique<absl::Notification>());
    SequenceRequest r;
    r.prompt = {2, 100 + s, 200, 300};
    r.max_tokens = tokens + 1;
    r.sampling.temperature = 0;
    absl::Notification* d = done.back().get();
    r.on_done = [d, tokens](const absl::Status& status, const SequenceStats& stats) {
      if (!status.ok()) std::fprintf(stderr, "sequence failed: %s\n", status.ToString().c_str());
      if (stats.generated_tokens != tokens + 1) {
        std::fprintf(stderr, "sequence generated %d tokens, not %d\n", stats.generated_tokens,
                     tokens + 1);
      }
      d->Notify();
    };
    if (!pipeline.Start(std::move(r)).ok()) return {};
  }
  for (auto& d : done) d->WaitForNotification();
  // Includes the short prompt; tokens + 1 generated per sequence.
  const double n = double(n_seq) * (tokens + 1);
  return {n / Seconds(t0, Clock::now()), 1e3 * (CpuSeconds() - c0) / n};
}

int Main(int argc, char** argv) {
  std::string model = DefaultModelPath();
  int n_stages = 2, tokens = 64, reps = 3, hops = 2000, threads = 1;
  bool skip_decode = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (a == "--model")
      model = next();
    else if (a == "--stages")
      n_stages = std::stoi(next());
    else if (a == "--tokens")
      tokens = std::stoi(next());
    else if (a == "--reps")
      reps = std::stoi(next());
    else if (a == "--hops")
      hops = std::stoi(next());
    else if (a == "--threads")
      threads = std::stoi(next());
    else if (a == "--skip_decode")
      skip_decode = true;
    else {
      std::fprintf(stderr, "unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  auto file = runtime::GgufFile::Open(model);
  if (!file.ok()) {
    std::fprintf(stderr, "%s\n", std::string(file.status().message()).c_str());
    return 1;
  }
  auto config = runtime::ReadModelConfig(**file);
  if (!config.ok()) return 1;
  std::printf("model %s: %d layers, n_embd %d; %ld online cpus; compute threads per stage %d\n",
              model.c_str(), config->n_layer, config->n_embd, sysconf(_SC_NPROCESSORS_ONLN),
              threads);
  BenchHop(config->n_embd, hops);
  if (skip_decode) return 0;

  AllowAllPeers allow_all;
  std::vector<std::unique_ptr<ShardHandler>> handlers;
  std::vector<std::unique_ptr<StageNodeService>> services;
  std::vector<std::unique_ptr<grpc::Server>> servers;
  PipelineOptions po;
  for (int i = 0; i < n_stages; ++i) {
    ShardHandlerOptions ho;
    ho.model_path = model;
    ho.threads = threads;
    handlers.push_back(std::make_unique<ShardHandler>(ho, &allow_all));
    services.push_back(std::make_unique<StageNodeService>("bench", handlers.back().get()));
    auto started = StartServer(services.back().get(), "127.0.0.1", 0);
    if (!started.ok()) return 1;
    servers.push_back(std::move(started->server));
    po.stages.push_back(absl::StrCat("127.0.0.1:", started->port));
  }
  auto identity = ComputeModelIdentity(model);
  if (!identity.ok()) return 1;
  po.model = *identity;
  po.n_layer = config->n_layer;
  po.context = 512;
  po.max_sequences = 4;
  auto pipeline = Pipeline::Connect(po);
  if (!pipeline.ok()) {
    std::fprintf(stderr, "%s\n", pipeline.status().ToString().c_str());
    return 1;
  }
  // Interleaved repetitions: each round measures every configuration once.
  std::vector<Figure> single1, single4, pipe1, pipe4, local1;
  for (int r = 0; r < reps; ++r) {
    single1.push_back(LocalTokensPerSecond(**file, config->n_layer, 1, 1, tokens, threads));
    local1.push_back(LocalTokensPerSecond(**file, config->n_layer, n_stages, 1, tokens, threads));
    pipe1.push_back(PipelineTokensPerSecond(**pipeline, 1, tokens));
    single4.push_back(LocalTokensPerSecond(**file, config->n_layer, 1, 4, tokens, threads));
    pipe4.push_back(PipelineTokensPerSecond(**pipeline, 4, tokens));
  }
  auto print = [](const std::string& name, std::vector<Figure> v) {
    std::sort(v.begin(), v.end(), [](const Figure& a, const Figure& b) {
      return a.tokens_per_second < b.tokens_per_second;
    });
    const Figure& m = v[v.size() / 2];
    std::printf("  %-44s %8.1f tok/s (best %8.1f)  %6.2f cpu ms/token\n", name.c_str(),
                m.tokens_per_second, v.back().tokens_per_second, m.cpu_ms_per_token);
  };
  std::printf(
      "decode (median of %d interleaved reps; each sequence: a 4-token prompt, then %d tokens; "
      "cpu ms/token counts every thread of this process, stages and gRPC included):\n",
      reps, tokens + 1);
  print("single node, 1 sequence", single1);
  print(absl::StrCat(n_stages, " StageHosts chained in one thread, 1 seq"), local1);
  print(absl::StrCat(n_stages, "-stage pipeline over gRPC, 1 sequence"), pipe1);
  print("single node, 4 sequences batched", single4);
  print(absl::StrCat(n_stages, "-stage pipeline over gRPC, 4 sequences"), pipe4);
  // Close the coordinator's stream, then each stage in pipeline order (a stage's Shard holds the
  // stream into the next stage, which that stage's server waits for on shutdown).
  pipeline->reset();
  for (int i = 0; i < n_stages; ++i) {
    servers[i]->Shutdown();
    handlers[i].reset();
  }
  return 0;
}

}  // namespace
}  // namespace exo::node

int main(int argc, char** argv) { return exo::node::Main(argc, argv); }
