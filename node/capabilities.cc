#include "node/capabilities.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace exo::node {
namespace {

// A field of /proc/meminfo in bytes (0 if missing).
uint64_t MeminfoBytes(const std::string& field) {
  std::ifstream in("/proc/meminfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) != 0) continue;
    std::istringstream fields(line.substr(field.size() + 1));
    uint64_t kib = 0;
    fields >> kib;
    return kib * 1024;
  }
  return 0;
}

std::string DeviceKind() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return "cpu-avx512";
  if (__builtin_cpu_supports("avx2")) return "cpu-avx2";
  return "cpu-x86_64";
#elif defined(__aarch64__)
  return "cpu-neon";
#else
  return "cpu";
#endif
}

// Copies a 64 MiB buffer a few times and keeps the best rate (read + write bytes per second).
double MeasureBandwidth() {
  constexpr size_t kBytes = 64u << 20;
  std::unique_ptr<char[]> a(new char[kBytes]), b(new char[kBytes]);
  std::memset(a.get(), 1, kBytes);
  std::memset(b.get(), 2, kBytes);
  double best = 0;
  for (int i = 0; i < 3; ++i) {
    const auto start = std::chrono::steady_clock::now();
    std::memcpy(b.get(), a.get(), kBytes);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (seconds > 0) best = std::max(best, 2.0 * kBytes / seconds);
    a[i] = b[kBytes - 1 - i];  // keeps the copies observable
  }
  return best;
}

double CachedBandwidth(const std::string& state_dir) {
  const std::string path = state_dir.empty() ? "" : absl::StrCat(state_dir, "/bandwidth");
  if (!path.empty()) {
    std::ifstream in(path);
    std::string text;
    double value = 0;
    if (std::getline(in, text) && absl::SimpleAtod(text, &value) && value > 0) return value;
  }
  const double measured = MeasureBandwidth();
  if (!path.empty()) std::ofstream(path) << absl::StrCat(measured) << "\n";
  return measured;
}

}  // namespace

NodeCapabilities LocalCapabilities(const std::string& state_dir) {
  NodeCapabilities caps;
  caps.total_memory_bytes = MeminfoBytes("MemTotal");
  if (caps.total_memory_bytes == 0) {
    caps.total_memory_bytes = static_cast<uint64_t>(sysconf(_SC_PHYS_PAGES)) *
                              static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  }
  caps.memory_bytes = MeminfoBytes("MemAvailable");
  if (caps.memory_bytes == 0) caps.memory_bytes = caps.total_memory_bytes;
  caps.cpu_cores = std::max(1u, std::thread::hardware_concurrency());
  caps.device_kind = DeviceKind();
  caps.memory_bandwidth_bytes_per_second = CachedBandwidth(state_dir);
  return caps;
}

NodeLoad LocalLoad() {
  NodeLoad load;
  load.free_memory_bytes = MeminfoBytes("MemAvailable");
  double averages[1] = {0};
  if (getloadavg(averages, 1) == 1) {
    const double cores = std::max(1u, std::thread::hardware_concurrency());
    load.utilisation = static_cast<float>(std::clamp(averages[0] / cores, 0.0, 1.0));
  }
  return load;
}

}  // namespace exo::node
