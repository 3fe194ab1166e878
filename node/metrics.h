// Prometheus metrics for the HTTP API: counters, gauges and histograms kept in memory and written
// in the Prometheus text exposition format (version 0.0.4) by Render(). Thread-safe.
#ifndef EXO_NODE_METRICS_H_
#define EXO_NODE_METRICS_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace exo::node {

class Metrics {
 public:
  // Adds `value` to the counter `name` (with optional labels, e.g. {{"endpoint", "chat"}}).
  void Add(const std::string& name, double value,
           const std::map<std::string, std::string>& labels = {});
  // Sets the gauge `name`.
  void Set(const std::string& name, double value,
           const std::map<std::string, std::string>& labels = {});
  // Records one observation (seconds) in the histogram `name`.
  void Observe(const std::string& name, double seconds);
  // Help text printed as # HELP; a metric without help still renders.
  void Describe(const std::string& name, const std::string& type, const std::string& help);

  // The text exposition: # HELP / # TYPE lines, then samples, metrics sorted by name.
  std::string Render() const;

  // The value of a counter or gauge (0 when absent), for tests and the cluster view.
  double Value(const std::string& name,
               const std::map<std::string, std::string>& labels = {}) const;

 private:
  struct Histogram {
    std::vector<uint64_t> buckets;  // cumulative counts per upper bound
    uint64_t count = 0;
    double sum = 0;
  };
  static std::string Key(const std::map<std::string, std::string>& labels);

  mutable absl::Mutex mu_;
  std::map<std::string, std::pair<std::string, std::string>> descriptions_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::map<std::string, double>> values_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Histogram> histograms_ ABSL_GUARDED_BY(mu_);
};

}  // namespace exo::node

#endif  // EXO_NODE_METRICS_H_
