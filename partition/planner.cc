#include "partition/planner.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "partition/internal/saturating.h"

namespace exo::partition {
namespace {

constexpr double kInfinity = std::numeric_limits<double>::infinity();
constexpr uint64_t kTokenIdBytes = 4;
// The exact search is skipped when its work estimate (inner-loop steps) exceeds this.
constexpr double kExactWorkBudget = 3e8;

double TransferSeconds(const LinkProfile& link, uint64_t bytes) {
  double seconds = link.latency_seconds;
  if (link.bytes_per_second > 0) seconds += static_cast<double>(bytes) / link.bytes_per_second;
  return seconds;
}

absl::Status ValidateFleet(absl::Span<const DeviceProfile> devices, const LinkModel& links) {
  for (size_t i = 0; i < devices.size(); ++i) {
    const DeviceProfile& device = devices[i];
    if (device.node_id.empty()) {
      return absl::InvalidArgumentError(absl::StrFormat("device %d has an empty node id", i));
    }
    if (!std::isfinite(device.decode_bytes_per_second) || device.decode_bytes_per_second < 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("node '%s' has a bandwidth of %g bytes/s; it must be finite and >= 0",
                          device.node_id, device.decode_bytes_per_second));
    }
    for (size_t j = 0; j < i; ++j) {
      if (device.node_id == devices[j].node_id) {
        return absl::InvalidArgumentError(
            absl::StrFormat("node '%s' is listed twice among the devices", device.node_id));
      }
    }
  }
  auto bad = [](double value) { return !std::isfinite(value) || value < 0; };
  if (bad(links.default_latency_seconds) || bad(links.default_bytes_per_second)) {
    return absl::InvalidArgumentError(
        "the default link latency and bandwidth must be finite and >= 0");
  }
  for (const LinkProfile& link : links.links) {
    if (bad(link.latency_seconds) || bad(link.bytes_per_second)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "link '%s' -> '%s': latency and bandwidth must be finite and >= 0", link.from, link.to));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateInputs(const ModelProfile& model, absl::Span<const DeviceProfile> devices,
                            const LinkModel& links) {
  RETURN_IF_ERROR(ValidateModelProfile(model));
  RETURN_IF_ERROR(ValidateFleet(devices, links));
  if (ModelMemoryBytes(model) == std::numeric_limits<uint64_t>::max()) {
    return absl::InvalidArgumentError("model profile: its byte counts add up to more than 2^64");
  }
  if (devices.empty()) return absl::FailedPreconditionError("no devices to place the model on");
  return absl::OkStatus();
}

// Bytes of the embedding and head a stage loads that its node did not hold before.
uint64_t EndpointMovedBytes(const ModelProfile& model, bool has_embedding, bool has_head,
                            bool had_embedding, bool had_head) {
  if (model.head_shares_embedding) {
    const uint64_t embedding = model.embedding_bytes;
    const uint64_t head_rest = model.head_bytes - model.embedding_bytes;
    uint64_t moved = 0;
    if ((has_embedding || has_head) && !(had_embedding || had_head)) moved += embedding;
    if (has_head && !had_head) moved += head_rest;
    return moved;
  }
  uint64_t moved = 0;
  if (has_embedding && !had_embedding) moved += model.embedding_bytes;
  if (has_head && !had_head) moved += model.head_bytes;
  return moved;
}

// What a node held under a previous plan.
struct Holding {
  std::vector<bool> layers;  // size n_layers
  bool embedding = false;
  bool head = false;
};

std::map<std::string, Holding> Holdings(const Plan& plan, const ModelProfile& model) {
  std::map<std::string, Holding> holdings;
  for (const Stage& stage : plan.stages) {
    Holding& holding = holdings[stage.node_id];
    holding.layers.resize(model.layer_bytes.size(), false);
    const int32_t n_layers = static_cast<int32_t>(model.layer_bytes.size());
    for (int32_t layer = std::max(stage.layer_begin, 0);
         layer < std::min(stage.layer_end, n_layers); ++layer) {
      holding.layers[layer] = true;
    }
    holding.embedding |= stage.has_embedding;
    holding.head |= stage.has_head;
  }
  return holdings;
}

// A stage as the search sees it: a device (index into Search::devices_) and a layer range.
struct Segment {
  int32_t device = 0;
  int32_t begin = 0;
  int32_t end = 0;
};

struct Candidate {
  double objective = kInfinity;
  std::vector<Segment> segments;
};

// The search space of one planning problem. Devices are sorted by node id so that the input
// order never matters and ties resolve towards lower ids. The objective of a plan is its
// estimated time per token plus `penalty_per_byte` times the bytes it moves from `previous`.
class Search {
 public:
  Search(const ModelProfile& model, absl::Span<const DeviceProfile> devices, const LinkModel& links,
         int32_t max_stages)
      : model_(model), n_layers_(model.n_layers), max_stages_(max_stages) {
    devices_.assign(devices.begin(), devices.end());
    std::sort(devices_.begin(), devices_.end(),
              [](const DeviceProfile& a, const DeviceProfile& b) { return a.node_id < b.node_id; });
    const size_t n = devices_.size();
    if (max_stages_ <= 0 || max_stages_ > static_cast<int32_t>(n)) {
      max_stages_ = static_cast<int32_t>(n);
    }
    weight_prefix_.assign(n_layers_ + 1, 0);
    memory_prefix_.assign(n_layers_ + 1, 0);
    for (int32_t layer = 0; layer < n_layers_; ++layer) {
      weight_prefix_[layer + 1] = weight_prefix_[layer] + model.layer_bytes[layer];
      memory_prefix_[layer + 1] =
          memory_prefix_[layer] + model.layer_bytes[layer] + LayerKvBytes(model, layer);
    }
    hop_.assign(n * n, 0.0);
    return_.assign(n * n, 0.0);
    for (size_t a = 0; a < n; ++a) {
      for (size_t b = 0; b < n; ++b) {
        if (a == b) continue;
        const LinkProfile link = FindLink(links, devices_[a].node_id, devices_[b].node_id);
        hop_[a * n + b] = TransferSeconds(link, model.hidden_bytes_per_token);
        return_[a * n + b] = TransferSeconds(link, kTokenIdBytes);
      }
    }
    previous_prefix_.assign(n, std::vector<uint64_t>(n_layers_ + 1, 0));
    previous_embedding_.assign(n, false);
    previous_head_.assign(n, false);
  }

  const std::vector<DeviceProfile>& devices() const { return devices_; }
  int32_t max_stages() const { return max_stages_; }

  // Makes the objective count moved bytes from `previous`, each at `penalty_per_byte` seconds.
  void SetPrevious(const Plan& previous, double penalty_per_byte) {
    penalty_per_byte_ = penalty_per_byte;
    const std::map<std::string, Holding> holdings = Holdings(previous, model_);
    for (size_t d = 0; d < devices_.size(); ++d) {
      auto it = holdings.find(devices_[d].node_id);
      std::vector<uint64_t>& prefix = previous_prefix_[d];
      std::fill(prefix.begin(), prefix.end(), 0);
      previous_embedding_[d] = previous_head_[d] = false;
      if (it == holdings.end()) continue;
      for (int32_t layer = 0; layer < n_layers_; ++layer) {
        prefix[layer + 1] =
            prefix[layer] + (it->second.layers[layer] ? model_.layer_bytes[layer] : 0);
      }
      previous_embedding_[d] = it->second.embedding;
      previous_head_[d] = it->second.head;
    }
  }

  bool Fits(int32_t d, int32_t begin, int32_t end) const {
    return StageMemory(begin, end) <= devices_[d].memory_bytes;
  }

  uint64_t StageMemory(int32_t begin, int32_t end) const {
    const bool has_embedding = begin == 0;
    const bool has_head = end == n_layers_;
    uint64_t total = model_.scratch_bytes + memory_prefix_[end] - memory_prefix_[begin];
    if (has_embedding && !(has_head && model_.head_shares_embedding)) {
      total += model_.embedding_bytes;
    }
    if (has_head) total += model_.head_bytes;
    return total;
  }

  // Compute time of a stage plus its moved-bytes penalty.
  double StageCost(int32_t d, int32_t begin, int32_t end) const {
    const double bandwidth = devices_[d].decode_bytes_per_second;
    if (bandwidth <= 0) return kInfinity;
    uint64_t read = weight_prefix_[end] - weight_prefix_[begin];
    if (end == n_layers_) read += model_.head_bytes;
    double cost = static_cast<double>(read) / bandwidth;
    if (penalty_per_byte_ > 0) {
      const uint64_t held = previous_prefix_[d][end] - previous_prefix_[d][begin];
      const uint64_t moved = (weight_prefix_[end] - weight_prefix_[begin] - held) +
                             EndpointMovedBytes(model_, begin == 0, end == n_layers_,
                                                previous_embedding_[d], previous_head_[d]);
      cost += penalty_per_byte_ * static_cast<double>(moved);
    }
    return cost;
  }

  double Hop(int32_t a, int32_t b) const { return hop_[a * devices_.size() + b]; }
  double Return(int32_t a, int32_t b) const { return return_[a * devices_.size() + b]; }

  double Objective(const std::vector<Segment>& segments) const {
    double total = 0;
    for (size_t i = 0; i < segments.size(); ++i) {
      const Segment& s = segments[i];
      if (!Fits(s.device, s.begin, s.end)) return kInfinity;
      total += StageCost(s.device, s.begin, s.end);
      if (i > 0) total += Hop(segments[i - 1].device, s.device);
    }
    if (segments.size() > 1) total += Return(segments.back().device, segments.front().device);
    return total;
  }

  // Inner-loop steps of Exact over k devices (for choosing between exact and heuristic).
  double ExactWork(int32_t k) const {
    const double layers = n_layers_;
    return k * std::ldexp(1.0, k - 1) * layers * k * (k + layers);
  }

  // Exact: every subset of `candidates` (at most max_stages of them), every order, every
  // contiguous split. f[first][mask][last][end] = best objective of stages covering [0, end)
  // using the devices of mask, starting on `first` and ending on `last`.
  Candidate Exact(const std::vector<int32_t>& candidates) const {
    const int32_t k = static_cast<int32_t>(candidates.size());
    const int32_t width = n_layers_ + 1;
    const size_t states = (size_t{1} << k) * k * width;
    std::vector<double> best(states);
    std::vector<int32_t> parent(states);  // previous (last * width + end), -1 for the first stage
    auto index = [&](uint32_t mask, int32_t last, int32_t end) {
      return (static_cast<size_t>(mask) * k + last) * width + end;
    };
    Candidate result;
    std::vector<int32_t> finite_lasts;
    for (int32_t first = 0; first < k; ++first) {
      std::fill(best.begin(), best.end(), kInfinity);
      const uint32_t first_bit = uint32_t{1} << first;
      for (int32_t end = 1; end <= n_layers_; ++end) {
        if (!Fits(candidates[first], 0, end)) break;
        best[index(first_bit, first, end)] = StageCost(candidates[first], 0, end);
        parent[index(first_bit, first, end)] = -1;
      }
      for (uint32_t mask = first_bit; mask < (uint32_t{1} << k); ++mask) {
        if ((mask & first_bit) == 0) continue;
        if (std::popcount(mask) >= max_stages_) continue;
        for (int32_t begin = 1; begin < n_layers_; ++begin) {
          finite_lasts.clear();
          for (int32_t last = 0; last < k; ++last) {
            if ((mask >> last & 1) && best[index(mask, last, begin)] < kInfinity) {
              finite_lasts.push_back(last);
            }
          }
          if (finite_lasts.empty()) continue;
          for (int32_t next = 0; next < k; ++next) {
            if (mask >> next & 1) continue;
            const int32_t device = candidates[next];
            if (devices_[device].decode_bytes_per_second <= 0) continue;
            double entry = kInfinity;
            int32_t entry_last = -1;
            for (int32_t last : finite_lasts) {
              const double value = best[index(mask, last, begin)] + Hop(candidates[last], device);
              if (value < entry) {
                entry = value;
                entry_last = last;
              }
            }
            const uint32_t next_mask = mask | (uint32_t{1} << next);
            for (int32_t end = begin + 1; end <= n_layers_; ++end) {
              if (!Fits(device, begin, end)) break;
              const double value = entry + StageCost(device, begin, end);
              const size_t at = index(next_mask, next, end);
              if (value < best[at]) {
                best[at] = value;
                parent[at] = entry_last * width + begin;
              }
            }
          }
        }
      }
      // Close the loop: the sampled token goes back to the first stage.
      for (uint32_t mask = first_bit; mask < (uint32_t{1} << k); ++mask) {
        if ((mask & first_bit) == 0) continue;
        for (int32_t last = 0; last < k; ++last) {
          if ((mask >> last & 1) == 0) continue;
          double value = best[index(mask, last, n_layers_)];
          if (value == kInfinity) continue;
          if (last != first) value += Return(candidates[last], candidates[first]);
          if (value < result.objective) {
            result.objective = value;
            result.segments.clear();
            uint32_t m = mask;
            int32_t l = last;
            int32_t end = n_layers_;
            while (true) {
              const int32_t link = parent[index(m, l, end)];
              const int32_t begin = link < 0 ? 0 : link % width;
              result.segments.push_back({candidates[l], begin, end});
              if (link < 0) break;
              m &= ~(uint32_t{1} << l);
              l = link / width;
              end = begin;
            }
            std::reverse(result.segments.begin(), result.segments.end());
          }
        }
      }
    }
    return result;
  }

  // Heuristic for large fleets: devices used in the given order (any subsequence of it, at most
  // max_stages), every contiguous split. The return hop is added for the chosen path but not
  // optimised over. O(n^2 L^2) (times max_stages when that limit binds).
  Candidate Ordered(const std::vector<int32_t>& order) const {
    const int32_t m = static_cast<int32_t>(order.size());
    const int32_t width = n_layers_ + 1;
    const bool count_stages = max_stages_ < m;
    const int32_t levels = count_stages ? max_stages_ : 1;
    // best[(level * m + i) * width + end]: stages covering [0, end), the last on order[i];
    // level = stages - 1 when counting stages.
    const size_t states = static_cast<size_t>(levels) * m * width;
    std::vector<double> best(states, kInfinity);
    std::vector<int64_t> parent(states, -1);
    auto index = [&](int32_t level, int32_t i, int32_t end) {
      return (static_cast<size_t>(level) * m + i) * width + end;
    };
    for (int32_t i = 0; i < m; ++i) {
      if (devices_[order[i]].decode_bytes_per_second <= 0) continue;
      for (int32_t end = 1; end <= n_layers_; ++end) {
        if (!Fits(order[i], 0, end)) break;
        best[index(0, i, end)] = StageCost(order[i], 0, end);
      }
    }
    for (int32_t begin = 1; begin < n_layers_; ++begin) {
      // Without a stage limit there is one level, extended into itself.
      const int32_t extendable_levels = count_stages ? levels - 1 : 1;
      for (int32_t level = 0; level < extendable_levels; ++level) {
        const int32_t next_level = count_stages ? level + 1 : 0;
        for (int32_t i = 0; i < m; ++i) {
          const double here = best[index(level, i, begin)];
          if (here == kInfinity) continue;
          for (int32_t j = i + 1; j < m; ++j) {
            const int32_t device = order[j];
            if (devices_[device].decode_bytes_per_second <= 0) continue;
            const double entry = here + Hop(order[i], device);
            for (int32_t end = begin + 1; end <= n_layers_; ++end) {
              if (!Fits(device, begin, end)) break;
              const double value = entry + StageCost(device, begin, end);
              const size_t at = index(next_level, j, end);
              if (value < best[at]) {
                best[at] = value;
                parent[at] = static_cast<int64_t>(index(level, i, begin));
              }
            }
          }
        }
      }
    }
    Candidate result;
    for (int32_t level = 0; level < levels; ++level) {
      for (int32_t i = 0; i < m; ++i) {
        if (best[index(level, i, n_layers_)] == kInfinity) continue;
        std::vector<Segment> segments;
        int64_t at = static_cast<int64_t>(index(level, i, n_layers_));
        while (at >= 0) {
          const int32_t end = static_cast<int32_t>(at % width);
          const int32_t position = static_cast<int32_t>((at / width) % m);
          const int64_t from = parent[at];
          const int32_t begin = from < 0 ? 0 : static_cast<int32_t>(from % width);
          segments.push_back({order[position], begin, end});
          at = from;
        }
        std::reverse(segments.begin(), segments.end());
        const double value = Objective(segments);
        if (value < result.objective) {
          result.objective = value;
          result.segments = std::move(segments);
        }
      }
    }
    return result;
  }

  // Every device alone, when it holds the whole model.
  Candidate BestSingle() const {
    Candidate result;
    for (int32_t d = 0; d < static_cast<int32_t>(devices_.size()); ++d) {
      if (!Fits(d, 0, n_layers_)) continue;
      const double value = StageCost(d, 0, n_layers_);
      if (value < result.objective) result = {value, {{d, 0, n_layers_}}};
    }
    return result;
  }

  Plan ToPlan(const std::vector<Segment>& segments, uint64_t epoch) const {
    Plan plan;
    plan.epoch = epoch;
    for (size_t i = 0; i < segments.size(); ++i) {
      plan.stages.push_back(Stage{.node_id = devices_[segments[i].device].node_id,
                                  .layer_begin = segments[i].begin,
                                  .layer_end = segments[i].end,
                                  .has_embedding = i == 0,
                                  .has_head = i + 1 == segments.size()});
    }
    return plan;
  }

  std::vector<Segment> ToSegments(const Plan& plan) const {
    std::vector<Segment> segments;
    for (const Stage& stage : plan.stages) {
      for (int32_t d = 0; d < static_cast<int32_t>(devices_.size()); ++d) {
        if (devices_[d].node_id == stage.node_id) {
          segments.push_back({d, stage.layer_begin, stage.layer_end});
        }
      }
    }
    return segments;
  }

  int32_t n_layers() const { return n_layers_; }

 private:
  const ModelProfile& model_;
  const int32_t n_layers_;
  int32_t max_stages_;
  std::vector<DeviceProfile> devices_;
  std::vector<uint64_t> weight_prefix_;  // layer weights of [0, layer)
  std::vector<uint64_t> memory_prefix_;  // layer weights and KV of [0, layer)
  std::vector<double> hop_;              // hidden state from a to b
  std::vector<double> return_;           // token id from a to b
  double penalty_per_byte_ = 0.0;
  std::vector<std::vector<uint64_t>> previous_prefix_;  // per device: held layer bytes
  std::vector<bool> previous_embedding_;
  std::vector<bool> previous_head_;
};

// The ring order: memory descending, ties by node id; at most max_stages devices.
std::vector<int32_t> RingOrder(const Search& search) {
  std::vector<int32_t> order(search.devices().size());
  std::iota(order.begin(), order.end(), 0);
  const auto& devices = search.devices();
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return devices[a].memory_bytes > devices[b].memory_bytes;
  });
  order.resize(std::min<size_t>(order.size(), search.max_stages()));
  return order;
}

// Cumulative proportional boundaries: node i of `order` ends at targets[i] (real layers).
std::vector<double> RingTargets(const Search& search, const std::vector<int32_t>& order) {
  long double total = 0;
  for (int32_t d : order) total += search.devices()[d].memory_bytes;
  std::vector<double> targets;
  long double cumulative = 0;
  for (int32_t d : order) {
    cumulative += search.devices()[d].memory_bytes;
    targets.push_back(total > 0 ? static_cast<double>(cumulative / total * search.n_layers())
                                : search.n_layers());
  }
  targets.back() = search.n_layers();
  return targets;
}

// The ring: boundaries b_1 <= ... <= b_n = L minimising sum |b_i - target_i| such that every
// non-empty stage fits (an empty stage drops its node from the plan). Rounding the targets is
// the answer whenever it fits; otherwise boundaries move as little as needed.
Candidate RingSearch(const Search& search) {
  const std::vector<int32_t> order = RingOrder(search);
  const std::vector<double> targets = RingTargets(search, order);
  const int32_t n = static_cast<int32_t>(order.size());
  const int32_t layers = search.n_layers();
  const int32_t width = layers + 1;
  // deviation[i * width + b]: best sum for the first i+1 nodes with node i ending at b.
  std::vector<double> deviation(static_cast<size_t>(n) * width, kInfinity);
  std::vector<int32_t> parent(static_cast<size_t>(n) * width, -1);
  for (int32_t i = 0; i < n; ++i) {
    for (int32_t end = 0; end <= layers; ++end) {
      const double own = std::fabs(end - targets[i]);
      for (int32_t begin = 0; begin <= end; ++begin) {
        const double before =
            i == 0 ? (begin == 0 ? 0.0 : kInfinity) : deviation[(i - 1) * width + begin];
        if (before == kInfinity) continue;
        if (begin < end && !search.Fits(order[i], begin, end)) continue;
        const double value = before + own;
        if (value < deviation[i * width + end]) {
          deviation[i * width + end] = value;
          parent[i * width + end] = begin;
        }
      }
    }
  }
  Candidate result;
  if (deviation[(n - 1) * width + layers] == kInfinity) return result;
  int32_t end = layers;
  for (int32_t i = n - 1; i >= 0; --i) {
    const int32_t begin = parent[i * width + end];
    if (begin < end) result.segments.push_back({order[i], begin, end});
    end = begin;
  }
  std::reverse(result.segments.begin(), result.segments.end());
  result.objective = search.Objective(result.segments);
  return result;
}

// ResourceExhausted naming the nodes that lack memory under the proportional split.
absl::Status NothingFits(const Search& search, const ModelProfile& model) {
  const std::vector<int32_t> order = RingOrder(search);
  const std::vector<double> targets = RingTargets(search, order);
  uint64_t available = 0;
  for (int32_t d : order) {
    available = internal::SaturatingAdd(available, search.devices()[d].memory_bytes);
  }
  const uint64_t needed = ModelMemoryBytes(model);
  std::vector<std::string> missing;
  int32_t begin = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    const int32_t end = static_cast<int32_t>(std::lround(targets[i]));
    if (end <= begin) continue;
    const DeviceProfile& device = search.devices()[order[i]];
    const uint64_t stage = search.StageMemory(begin, end);
    if (stage > device.memory_bytes) {
      missing.push_back(absl::StrFormat(
          "node '%s' would hold layers [%d, %d) needing %s but has "
          "%s: %s missing",
          device.node_id, begin, end, FormatBytes(stage), FormatBytes(device.memory_bytes),
          FormatBytes(stage - device.memory_bytes)));
    }
    begin = end;
  }
  const std::string split = missing.empty() ? std::string("")
                                            : absl::StrCat("; split in proportion to memory, ",
                                                           absl::StrJoin(missing, "; "));
  if (needed > available) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "the model does not fit on the %d usable nodes: it needs at least %s (weights, KV cache "
        "for %d tokens, scratch) but they have %s in total, %s missing%s; add nodes, raise "
        "--memory_limit or lower --ctx",
        order.size(), FormatBytes(needed), model.context_length, FormatBytes(available),
        FormatBytes(needed - available), split));
  }
  return absl::ResourceExhaustedError(absl::StrFormat(
      "the model does not fit on the %d usable nodes: together they have %s for the %s it needs, "
      "but whole layers plus each stage's %s of scratch cannot be split to fit%s; add nodes, "
      "raise --memory_limit or lower --ctx",
      order.size(), FormatBytes(available), FormatBytes(needed), FormatBytes(model.scratch_bytes),
      split));
}

// The best candidate of the optimal strategy under the search's current objective.
Candidate OptimalSearch(const Search& search, const PlannerOptions& options) {
  const int32_t n = static_cast<int32_t>(search.devices().size());
  std::vector<int32_t> all(n);
  std::iota(all.begin(), all.end(), 0);
  const int32_t exact_limit = std::clamp(options.max_exact_devices, 1, 20);
  if (n <= exact_limit && search.ExactWork(n) <= kExactWorkBudget) {
    return search.Exact(all);
  }
  // Heuristic. Devices ranked by bandwidth (then memory, then id).
  std::vector<int32_t> ranked = all;
  const auto& devices = search.devices();
  std::stable_sort(ranked.begin(), ranked.end(), [&](int32_t a, int32_t b) {
    if (devices[a].decode_bytes_per_second != devices[b].decode_bytes_per_second) {
      return devices[a].decode_bytes_per_second > devices[b].decode_bytes_per_second;
    }
    return devices[a].memory_bytes > devices[b].memory_bytes;
  });
  // (1) The exact search over the fastest devices the budget allows.
  int32_t k = std::min(n, exact_limit);
  while (k > 1 && search.ExactWork(k) > kExactWorkBudget) --k;
  std::vector<int32_t> fastest(ranked.begin(), ranked.begin() + k);
  std::sort(fastest.begin(), fastest.end());
  Candidate best = search.Exact(fastest);
  // (2) All devices in a fixed order, any subsequence, contiguous splits; tried with the fastest
  // first, the fastest last (the last stage also reads the head), and the ring's memory order.
  std::vector<int32_t> fastest_last(ranked.rbegin(), ranked.rend());
  std::vector<int32_t> by_memory = all;
  std::stable_sort(by_memory.begin(), by_memory.end(), [&](int32_t a, int32_t b) {
    return devices[a].memory_bytes > devices[b].memory_bytes;
  });
  for (const std::vector<int32_t>* order : {&ranked, &fastest_last, &by_memory}) {
    Candidate ordered = search.Ordered(*order);
    if (ordered.objective < best.objective) best = std::move(ordered);
  }
  // (3) The ring and (4) every single node.
  Candidate ring = RingSearch(search);
  if (ring.objective < best.objective) best = std::move(ring);
  Candidate single = search.BestSingle();
  if (single.objective < best.objective) best = std::move(single);
  return best;
}

}  // namespace

LinkProfile FindLink(const LinkModel& links, const std::string& from, const std::string& to) {
  if (from == to) return LinkProfile{.from = from, .to = to};
  const LinkProfile* reverse = nullptr;
  for (const LinkProfile& link : links.links) {
    if (link.from == from && link.to == to) return link;
    if (link.from == to && link.to == from && reverse == nullptr) reverse = &link;
  }
  LinkProfile result{.from = from,
                     .to = to,
                     .latency_seconds = links.default_latency_seconds,
                     .bytes_per_second = links.default_bytes_per_second};
  if (reverse != nullptr) {
    result.latency_seconds = reverse->latency_seconds;
    result.bytes_per_second = reverse->bytes_per_second;
  }
  return result;
}

const char* StrategyName(Strategy strategy) {
  switch (strategy) {
    case Strategy::kRing:
      return "ring";
    case Strategy::kOptimal:
      return "optimal";
  }
  return "unknown";
}

absl::StatusOr<PlanEstimate> EstimatePlan(const Plan& plan, const ModelProfile& model,
                                          absl::Span<const DeviceProfile> devices,
                                          const LinkModel& links) {
  RETURN_IF_ERROR(ValidateModelProfile(model));
  RETURN_IF_ERROR(ValidateFleet(devices, links));
  if (plan.stages.empty()) return absl::InvalidArgumentError("the plan has no stages");
  PlanEstimate estimate;
  for (size_t i = 0; i < plan.stages.size(); ++i) {
    const Stage& stage = plan.stages[i];
    if (stage.layer_begin < 0 || stage.layer_end > model.n_layers ||
        stage.layer_begin >= stage.layer_end) {
      return absl::InvalidArgumentError(
          absl::StrFormat("stage %d (node '%s') has layer range [%d, %d) outside [0, %d)", i,
                          stage.node_id, stage.layer_begin, stage.layer_end, model.n_layers));
    }
    auto device = std::find_if(devices.begin(), devices.end(),
                               [&](const DeviceProfile& d) { return d.node_id == stage.node_id; });
    if (device == devices.end()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("stage %d names node '%s', which is not among the %d known devices", i,
                          stage.node_id, devices.size()));
    }
    StageEstimate out{.node_id = stage.node_id,
                      .layer_begin = stage.layer_begin,
                      .layer_end = stage.layer_end,
                      .memory_bytes = StageMemoryBytes(stage, model)};
    for (int32_t layer = stage.layer_begin; layer < stage.layer_end; ++layer) {
      out.bytes_read_per_token =
          internal::SaturatingAdd(out.bytes_read_per_token, model.layer_bytes[layer]);
    }
    if (stage.has_head) {
      out.bytes_read_per_token =
          internal::SaturatingAdd(out.bytes_read_per_token, model.head_bytes);
    }
    out.compute_seconds =
        device->decode_bytes_per_second > 0
            ? static_cast<double>(out.bytes_read_per_token) / device->decode_bytes_per_second
            : kInfinity;
    const bool last = i + 1 == plan.stages.size();
    const std::string& next = last ? plan.stages.front().node_id : plan.stages[i + 1].node_id;
    if (next != stage.node_id) {
      out.hop_seconds = TransferSeconds(FindLink(links, stage.node_id, next),
                                        last ? kTokenIdBytes : model.hidden_bytes_per_token);
    }
    estimate.compute_seconds += out.compute_seconds;
    estimate.hop_seconds += out.hop_seconds;
    estimate.stages.push_back(std::move(out));
  }
  estimate.seconds_per_token = estimate.compute_seconds + estimate.hop_seconds;
  return estimate;
}

absl::StatusOr<Plan> MakePlan(const ModelProfile& model, absl::Span<const DeviceProfile> devices,
                              const LinkModel& links, const PlannerOptions& options) {
  RETURN_IF_ERROR(ValidateInputs(model, devices, links));
  const Search search(model, devices, links, options.max_stages);
  Candidate best =
      options.strategy == Strategy::kRing ? RingSearch(search) : OptimalSearch(search, options);
  // When no node reports a bandwidth every time is infinite: fall back to the ring's split.
  if (best.segments.empty() && options.strategy == Strategy::kOptimal) best = RingSearch(search);
  if (best.segments.empty()) return NothingFits(search, model);
  return search.ToPlan(best.segments, options.epoch);
}

uint64_t MovedBytes(const Plan& previous, const Plan& next, const ModelProfile& model) {
  const std::map<std::string, Holding> holdings = Holdings(previous, model);
  const int32_t n_layers = static_cast<int32_t>(model.layer_bytes.size());
  uint64_t moved = 0;
  for (const Stage& stage : next.stages) {
    auto it = holdings.find(stage.node_id);
    const Holding* holding = it == holdings.end() ? nullptr : &it->second;
    for (int32_t layer = std::max(stage.layer_begin, 0);
         layer < std::min(stage.layer_end, n_layers); ++layer) {
      if (holding == nullptr || !holding->layers[layer]) {
        moved = internal::SaturatingAdd(moved, model.layer_bytes[layer]);
      }
    }
    moved = internal::SaturatingAdd(moved,
                                    EndpointMovedBytes(model, stage.has_embedding, stage.has_head,
                                                       holding != nullptr && holding->embedding,
                                                       holding != nullptr && holding->head));
  }
  return moved;
}

absl::StatusOr<Plan> Replan(const Plan& previous, const ModelProfile& model,
                            absl::Span<const DeviceProfile> devices, const LinkModel& links,
                            const ReplanOptions& options) {
  if (options.planner.strategy == Strategy::kRing) {
    return MakePlan(model, devices, links, options.planner);
  }
  if (!std::isfinite(options.tolerance) || options.tolerance < 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("re-plan tolerance must be finite and >= 0, got %g", options.tolerance));
  }
  RETURN_IF_ERROR(ValidateInputs(model, devices, links));
  Search search(model, devices, links, options.planner.max_stages);
  const Candidate optimum = OptimalSearch(search, options.planner);
  if (optimum.segments.empty() || optimum.objective == kInfinity) {
    return MakePlan(model, devices, links, options.planner);
  }
  double budget = optimum.objective * (1.0 + options.tolerance);
  const Candidate single = search.BestSingle();
  if (single.objective < kInfinity) budget = std::min(budget, single.objective);
  // Allow for rounding between differently summed but equal times.
  budget *= 1.0 + 1e-12;

  struct Scored {
    std::vector<Segment> segments;
    double seconds;
    uint64_t moved;
  };
  std::vector<Scored> scored;
  auto consider = [&](const std::vector<Segment>& segments) {
    if (segments.empty()) return;
    const double seconds = search.Objective(segments);  // penalty off while scoring
    if (!(seconds <= budget)) return;
    scored.push_back({segments, seconds, MovedBytes(previous, search.ToPlan(segments, 0), model)});
  };
  consider(optimum.segments);
  // The previous plan as it is, if every node is still there and it still fits.
  if (ValidatePlan(previous, model, devices).ok()) {
    std::vector<Segment> kept = search.ToSegments(previous);
    if (kept.size() == previous.stages.size() &&
        static_cast<int32_t>(kept.size()) <= search.max_stages()) {
      consider(kept);
    }
  }
  // Optima of time + lambda * moved bytes, lambda swept so that moving every weight byte costs
  // from 1/16 to 16 times the tolerated slowdown.
  uint64_t all_bytes = 0;
  for (uint64_t bytes : model.layer_bytes) all_bytes += bytes;
  all_bytes +=
      model.head_shares_embedding ? model.head_bytes : model.embedding_bytes + model.head_bytes;
  const double slack = optimum.objective * std::max(options.tolerance, 1e-6);
  std::vector<std::vector<Segment>> penalised;
  for (int32_t step = -4; step <= 4; ++step) {
    const double lambda = slack * std::ldexp(1.0, step) / std::max<double>(all_bytes, 1.0);
    search.SetPrevious(previous, lambda);
    penalised.push_back(OptimalSearch(search, options.planner).segments);
  }
  search.SetPrevious(previous, 0.0);
  for (const auto& segments : penalised) consider(segments);

  const Scored* chosen = nullptr;
  for (const Scored& candidate : scored) {
    if (chosen == nullptr || candidate.moved < chosen->moved ||
        (candidate.moved == chosen->moved && candidate.seconds < chosen->seconds)) {
      chosen = &candidate;
    }
  }
  // The optimum is always within the budget; guard anyway rather than trust floating point.
  if (chosen == nullptr) return search.ToPlan(optimum.segments, options.planner.epoch);
  return search.ToPlan(chosen->segments, options.planner.epoch);
}

}  // namespace exo::partition
