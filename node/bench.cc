// `exo-node bench`: llama-bench style figures for one model on this machine: prompt processing
// (pp) and decode (tg) tokens/s over repetitions, the bytes a decode step reads, the measured
// memory bandwidth and the decode roofline it implies, peak RSS and cold start.
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <numeric>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "kernels/quants.h"
#include "kernels/thread_pool.h"
#include "nlohmann/json.hpp"
#include "node/cli.h"
#include "node/model_loader.h"

namespace exo::node {
namespace {

const auto kBenchProcessStart = std::chrono::steady_clock::now();

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

struct Figure {
  double mean = 0;
  double stddev = 0;
};

Figure Summarize(const std::vector<double>& values) {
  Figure f;
  f.mean = std::accumulate(values.begin(), values.end(), 0.0) / values.size();
  for (double v : values) f.stddev += (v - f.mean) * (v - f.mean);
  f.stddev = values.size() > 1 ? std::sqrt(f.stddev / (values.size() - 1)) : 0.0;
  return f;
}

// Read bandwidth of this machine over a buffer of `bytes`: the best of several parallel passes
// (one thread per pool thread, each summing its own chunks).
double MeasureReadBandwidth(kernels::ThreadPool& pool, size_t bytes) {
  const size_t words = std::max<size_t>(bytes, size_t{1} << 20) / sizeof(uint64_t);
  std::vector<uint64_t> buffer(words);
  for (size_t i = 0; i < words; ++i) buffer[i] = i;
  std::vector<uint64_t> partial(pool.num_threads() * 64, 0);
  double best = 0;
  for (int pass = 0; pass < 5; ++pass) {
    const auto start = Clock::now();
    std::atomic<uint64_t> total{0};
    pool.ParallelFor(static_cast<int64_t>(words), 1 << 16, [&](int64_t begin, int64_t end) {
      uint64_t a = 0, b = 0, c = 0, d = 0;
      int64_t i = begin;
      for (; i + 4 <= end; i += 4) {
        a += buffer[i];
        b += buffer[i + 1];
        c += buffer[i + 2];
        d += buffer[i + 3];
      }
      for (; i < end; ++i) a += buffer[i];
      total += a + b + c + d;
    });
    const double seconds = SecondsSince(start);
    if (total.load() == 1) std::abort();  // keeps the sums alive
    best = std::max(best, words * sizeof(uint64_t) / seconds);
  }
  return best;
}

// Peak resident memory of this process, in MiB. VmHWM, the high-water mark of this process's own
// address space, rather than getrusage's ru_maxrss: Linux carries ru_maxrss over from the parent
// at fork and exec, so a bench started by a large process (a Python script with llama.cpp and the
// model loaded) would report the parent's size.
double PeakRssMib() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    long long kib = 0;
    if (std::sscanf(line.c_str(), "VmHWM: %lld kB", &kib) == 1) return kib / 1024.0;
  }
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss / 1024.0;  // KiB on Linux
}

absl::Status Bench(const BenchCommand& command, std::ostream& out, std::ostream& err) {
  if (command.prompt_tokens <= 0 || command.generate_tokens <= 0 || command.repetitions <= 0) {
    return absl::InvalidArgumentError("--pp, --tg and --reps must be positive");
  }
  if (command.depth < 0) return absl::InvalidArgumentError("--depth must be 0 or more");
  const int64_t needed =
      int64_t{command.depth} + std::max(command.prompt_tokens, command.generate_tokens);
  if (needed > (1 << 20)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--depth plus the larger test size is ", needed, " tokens, too many"));
  }
  ModelOptions model_options = command.model;
  model_options.context = std::max<int32_t>(model_options.context, static_cast<int32_t>(needed));
  ASSIGN_OR_RETURN(LoadedModel model, LoadModel(model_options));
  runtime::Stage& stage = *model.stage;
  const int32_t vocab = stage.config().n_vocab;
  if (stage.options().context < needed) {
    return absl::InvalidArgumentError(
        absl::StrCat("the model's context of ", stage.options().context,
                     " tokens is smaller than the test sizes (", needed, " with --depth)"));
  }

  // Cold start: process start to the first token out of a one-token prompt.
  std::vector<int32_t> one = {model.tokenizer->bos_id() >= 0 ? model.tokenizer->bos_id() : 0};
  runtime::StageInput first;
  first.tokens = one;
  RETURN_IF_ERROR(stage.Forward(first, runtime::LogitsMode::kLast).status());
  const double cold_start = SecondsSince(kBenchProcessStart);

  std::mt19937 rng(1234);
  // Random tokens: the first `depth` fill the context, the prompt test feeds the next
  // prompt_tokens and the decode test the next generate_tokens.
  std::vector<int32_t> tokens(needed);
  for (int32_t& t : tokens) t = static_cast<int32_t>(rng() % vocab);
  const int32_t depth = command.depth;

  // Feeds tokens [from, to) to slot 0 in batches as large as the stage takes.
  auto feed = [&](int32_t from, int32_t to) -> absl::Status {
    for (int32_t pos = from; pos < to;) {
      const int32_t n = std::min(stage.options().max_batch_tokens, to - pos);
      runtime::StageInput in;
      in.first_position = pos;
      in.tokens = absl::MakeConstSpan(tokens).subspan(pos, n);  // pos + n <= to <= needed
      RETURN_IF_ERROR(stage.Forward(in, runtime::LogitsMode::kLast).status());
      pos += n;
    }
    return absl::OkStatus();
  };
  // A fresh slot holding `depth` tokens, filled untimed.
  auto fill_depth = [&]() -> absl::Status {
    stage.ResetSlot(0);
    if (depth > 0) err << absl::StrFormat("exo-node bench: filling %d tokens of context\n", depth);
    return feed(0, depth);
  };
  auto run_prompt = [&]() -> absl::StatusOr<double> {
    RETURN_IF_ERROR(fill_depth());
    const auto start = Clock::now();
    RETURN_IF_ERROR(feed(depth, depth + command.prompt_tokens));
    return command.prompt_tokens / SecondsSince(start);
  };
  auto run_decode = [&]() -> absl::StatusOr<double> {
    RETURN_IF_ERROR(fill_depth());
    const auto start = Clock::now();
    for (int32_t pos = depth; pos < depth + command.generate_tokens; ++pos) {
      runtime::StageInput in;
      in.first_position = pos;
      in.tokens = absl::MakeConstSpan(tokens).subspan(pos, 1);
      RETURN_IF_ERROR(stage.Forward(in, runtime::LogitsMode::kLast).status());
    }
    return command.generate_tokens / SecondsSince(start);
  };

  err << "exo-node bench: warming up\n";
  {
    // A short decode from an empty context: the warm-up is for the weights, not the depth.
    stage.ResetSlot(0);
    for (int32_t pos = 0; pos < std::min(command.generate_tokens, 16); ++pos) {
      runtime::StageInput in;
      in.first_position = pos;
      in.tokens = absl::MakeConstSpan(tokens).subspan(pos, 1);
      RETURN_IF_ERROR(stage.Forward(in, runtime::LogitsMode::kLast).status());
    }
  }
  std::vector<double> pp, tg;
  for (int32_t rep = 0; rep < command.repetitions; ++rep) {
    err << absl::StrFormat("exo-node bench: repetition %d/%d\n", rep + 1, command.repetitions);
    ASSIGN_OR_RETURN(double p, run_prompt());
    ASSIGN_OR_RETURN(double t, run_decode());
    pp.push_back(p);
    tg.push_back(t);
  }
  // Peak RSS of inference, read before the bandwidth test allocates its buffer.
  const double peak_rss_mib = PeakRssMib();
  err << "exo-node bench: measuring memory bandwidth\n";
  // The machine's bandwidth, read with a thread per physical core whatever --threads says, so
  // that the roofline is the machine's and not the thread count's.
  // Two readings: a 512 MiB buffer that no cache holds (memory), and a buffer of the bytes one
  // decode step reads, which a large last-level cache may partly hold just as it holds the
  // weights. The roofline uses the larger, so a model that fits in cache is not credited with
  // beating memory.
  // At depth, a decode step also reads the cached keys and values it attends to (f16): counted
  // at the middle of the decode test.
  uint64_t kv_bytes_per_token = 0;
  if (depth > 0) {
    const runtime::ModelConfig& c = stage.config();
    const int64_t visible_full = int64_t{depth} + command.generate_tokens / 2 + 1;
    const runtime::LayerRange layers = stage.options().layers;
    for (int32_t il = layers.begin; il < layers.end; ++il) {
      const bool sliding = c.sliding_window > 0 && c.layer_is_swa[il];
      const int64_t visible =
          sliding ? std::min<int64_t>(visible_full, c.sliding_window) : visible_full;
      kv_bytes_per_token += visible * (c.n_embd_k_gqa() + c.n_embd_v_gqa()) * sizeof(uint16_t);
    }
  }
  const uint64_t bytes_per_token = stage.weight_bytes_per_token() + kv_bytes_per_token;
  double bandwidth, working_set_bandwidth;
  {
    std::unique_ptr<kernels::ThreadPool> all_cores;
    kernels::ThreadPool* pool = model.pool.get();
    if (pool->num_threads() < kernels::PhysicalCoreCount()) {
      all_cores = std::make_unique<kernels::ThreadPool>(kernels::PhysicalCoreCount());
      pool = all_cores.get();
    }
    bandwidth = MeasureReadBandwidth(*pool, size_t{512} << 20);
    working_set_bandwidth = MeasureReadBandwidth(*pool, bytes_per_token);
  }
  const double roofline = std::max(bandwidth, working_set_bandwidth) / bytes_per_token;
  // The memory budget for generation: the model file, the KV cache and 64 MiB.
  const double file_mib = model.file->file_size() / 1048576.0;
  const double kv_mib = stage.kv_cache_bytes() / 1048576.0;
  const double rss_budget_mib = file_mib + kv_mib + 64.0;

  const Figure pp_fig = Summarize(pp);
  const Figure tg_fig = Summarize(tg);
  const std::string pp_name = absl::StrCat("pp", command.prompt_tokens);
  const std::string tg_name = absl::StrCat("tg", command.generate_tokens);
  // llama-bench's naming for a test at depth: "tg128 @ d4096".
  const std::string at_depth = depth > 0 ? absl::StrCat(" @ d", depth) : "";
  if (command.json) {
    nlohmann::json j = {{"model", stage.config().name},
                        {"threads", model.pool->num_threads()},
                        {"kernels", kernels::SimdLevelName()},
                        {"repetitions", command.repetitions},
                        {"depth", depth},
                        {pp_name, {{"tokens_per_second", pp_fig.mean}, {"stddev", pp_fig.stddev}}},
                        {tg_name, {{"tokens_per_second", tg_fig.mean}, {"stddev", tg_fig.stddev}}},
                        {"bytes_per_token", bytes_per_token},
                        {"kv_bytes_per_token", kv_bytes_per_token},
                        {"memory_bandwidth_bytes_per_second", bandwidth},
                        {"working_set_bandwidth_bytes_per_second", working_set_bandwidth},
                        {"roofline_tokens_per_second", roofline},
                        {"roofline_fraction", tg_fig.mean / roofline},
                        {"peak_rss_mib", peak_rss_mib},
                        {"kv_cache_mib", kv_mib},
                        {"model_file_mib", file_mib},
                        {"rss_budget_mib", rss_budget_mib},
                        {"cold_start_seconds", cold_start}};
    out << j.dump(2) << "\n";
  } else {
    out << absl::StrFormat("model: %s, %d threads, %s kernels, %d repetitions\n",
                           stage.config().name, model.pool->num_threads(), kernels::SimdLevelName(),
                           command.repetitions);
    out << absl::StrFormat("  %-8s %10.1f ± %.1f tok/s\n", pp_name + at_depth, pp_fig.mean,
                           pp_fig.stddev);
    out << absl::StrFormat("  %-8s %10.1f ± %.1f tok/s\n", tg_name + at_depth, tg_fig.mean,
                           tg_fig.stddev);
    out << absl::StrFormat("  bytes read per decoded token: %.1f MiB", bytes_per_token / 1048576.0);
    if (depth > 0) {
      out << absl::StrFormat(" (%.1f MiB of it cached keys and values)",
                             kv_bytes_per_token / 1048576.0);
    }
    out << "\n";
    out << absl::StrFormat(
        "  read bandwidth: %.2f GB/s (512 MiB buffer), %.2f GB/s (%.0f MiB, the bytes one token "
        "reads) -> decode roofline %.1f tok/s; tg is %.0f%% of it\n",
        bandwidth / 1e9, working_set_bandwidth / 1e9, bytes_per_token / 1048576.0, roofline,
        100.0 * tg_fig.mean / roofline);
    out << absl::StrFormat(
        "  peak RSS %.1f MiB (model file %.1f MiB + KV cache %.1f MiB + 64 MiB = %.1f MiB "
        "budget), cold start %.3f s\n",
        peak_rss_mib, file_mib, kv_mib, rss_budget_mib, cold_start);
  }
  return absl::OkStatus();
}

}  // namespace

int RunBench(const BenchCommand& command, std::ostream& out, std::ostream& err) {
  absl::Status status = Bench(command, out, err);
  if (status.ok()) return 0;
  err << "exo-node: error: " << status.message() << "\n";
  return 1;
}

}  // namespace exo::node
