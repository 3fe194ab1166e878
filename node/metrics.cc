#include "node/metrics.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace exo::node {
namespace {

// Upper bounds (seconds) shared by every histogram: latencies from 1 ms to 2 minutes.
constexpr double kBounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                              0.5,   1,      2.5,   5,    10,    30,   60,  120};
constexpr size_t kNumBounds = sizeof(kBounds) / sizeof(kBounds[0]);

std::string Escape(const std::string& value) {
  std::string out;
  for (char c : value) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

std::string Number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  return absl::StrFormat("%.17g", v);
}

}  // namespace

std::string Metrics::Key(const std::map<std::string, std::string>& labels) {
  if (labels.empty()) return "";
  std::string key = "{";
  bool first = true;
  for (const auto& [name, value] : labels) {
    absl::StrAppend(&key, first ? "" : ",", name, "=\"", Escape(value), "\"");
    first = false;
  }
  return key + "}";
}

void Metrics::Add(const std::string& name, double value,
                  const std::map<std::string, std::string>& labels) {
  absl::MutexLock lock(&mu_);
  values_[name][Key(labels)] += value;
}

void Metrics::Set(const std::string& name, double value,
                  const std::map<std::string, std::string>& labels) {
  absl::MutexLock lock(&mu_);
  values_[name][Key(labels)] = value;
}

void Metrics::Observe(const std::string& name, double seconds) {
  absl::MutexLock lock(&mu_);
  Histogram& h = histograms_[name];
  if (h.buckets.empty()) h.buckets.resize(kNumBounds);
  for (size_t i = 0; i < kNumBounds; ++i) {
    if (seconds <= kBounds[i]) ++h.buckets[i];
  }
  ++h.count;
  h.sum += seconds;
}

void Metrics::Describe(const std::string& name, const std::string& type, const std::string& help) {
  absl::MutexLock lock(&mu_);
  descriptions_[name] = {type, help};
}

double Metrics::Value(const std::string& name,
                      const std::map<std::string, std::string>& labels) const {
  absl::MutexLock lock(&mu_);
  auto it = values_.find(name);
  if (it == values_.end()) return 0;
  auto sample = it->second.find(Key(labels));
  return sample == it->second.end() ? 0 : sample->second;
}

std::string Metrics::Render() const {
  absl::MutexLock lock(&mu_);
  std::string out;
  auto header = [&](const std::string& name, const std::string& default_type) {
    auto d = descriptions_.find(name);
    if (d != descriptions_.end()) {
      absl::StrAppend(&out, "# HELP ", name, " ", d->second.second, "\n# TYPE ", name, " ",
                      d->second.first, "\n");
    } else {
      absl::StrAppend(&out, "# TYPE ", name, " ", default_type, "\n");
    }
  };
  for (const auto& [name, samples] : values_) {
    header(name, "untyped");
    for (const auto& [labels, value] : samples) {
      absl::StrAppend(&out, name, labels, " ", Number(value), "\n");
    }
  }
  for (const auto& [name, h] : histograms_) {
    header(name, "histogram");
    for (size_t i = 0; i < kNumBounds; ++i) {
      absl::StrAppend(&out, name, "_bucket{le=\"", Number(kBounds[i]), "\"} ", h.buckets[i], "\n");
    }
    absl::StrAppend(&out, name, "_bucket{le=\"+Inf\"} ", h.count, "\n", name, "_sum ",
                    Number(h.sum), "\n", name, "_count ", h.count, "\n");
  }
  return out;
}

}  // namespace exo::node
