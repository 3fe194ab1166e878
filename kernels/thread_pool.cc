#include "kernels/thread_pool.h"

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <fstream>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace exo::kernels {

namespace {

// How long an idle worker (or the waiting caller) polls before blocking on its condition
// variable. Decode issues a few hundred small ParallelFor calls per token; a short poll saves
// the futex wake-up on each, while a pool with nothing to do still sleeps.
constexpr std::chrono::microseconds kSpinBeforeSleep{50};

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Polls `ready` for up to kSpinBeforeSleep; true if it became true.
template <typename Predicate>
bool SpinUntil(Predicate ready) {
  const auto deadline = std::chrono::steady_clock::now() + kSpinBeforeSleep;
  for (;;) {
    for (int i = 0; i < 16; ++i) {
      if (ready()) return true;
      CpuRelax();
    }
    // Yielding keeps polling cheap when the machine is oversubscribed: a thread that has work
    // (perhaps the one we wait for) gets the core.
    std::this_thread::yield();
    if (std::chrono::steady_clock::now() >= deadline) return ready();
  }
}

}  // namespace

// A job's state word: the low 32 bits of its generation, a closed bit, and how many workers
// have joined it and not yet left. A worker joins only an open job of the generation it saw, so
// the caller waits only for workers that are really running chunks, never for one that has not
// woken up yet (on an oversubscribed machine that wake-up can take a scheduler time slice, and
// decode issues a few hundred jobs per token).
constexpr uint64_t kParticipantMask = 0xffff;
constexpr uint64_t kClosed = uint64_t{1} << 16;
constexpr int kGenerationShift = 32;

struct ThreadPool::Impl {
  Impl(int threads, std::function<void()> hook)
      : num_threads(threads), worker_start_hook(std::move(hook)) {}

  // Claims chunks of the current job until none are left. Runs on workers and on the caller.
  void RunChunks() {
    for (;;) {
      const int64_t begin = next.fetch_add(chunk, std::memory_order_relaxed);
      if (begin >= n) return;
      (*fn)(begin, std::min(n, begin + chunk));
    }
  }

  // Joins job `g` if it is still open; false if it is closed or a newer job replaced it.
  bool Join(uint64_t g) {
    uint64_t s = state.load(std::memory_order_acquire);
    for (;;) {
      if ((s >> kGenerationShift) != (g & 0xffffffffu) || (s & kClosed) != 0) return false;
      if (state.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel,
                                      std::memory_order_acquire)) {
        return true;
      }
    }
  }

  // Each worker: wait (briefly polling, then asleep on work_cv) for a new job generation or
  // shutdown, join the job if the caller has not finished it alone, help run its chunks, leave.
  void WorkerLoop() {
    if (worker_start_hook) worker_start_hook();
    uint64_t seen_generation = 0;
    for (;;) {
      const auto has_news = [&] {
        return stop.load(std::memory_order_acquire) ||
               generation.load(std::memory_order_acquire) != seen_generation;
      };
      if (!SpinUntil(has_news)) {
        std::unique_lock<std::mutex> lock(mu);
        work_cv.wait(lock, has_news);
      }
      if (stop.load(std::memory_order_acquire)) return;
      seen_generation = generation.load(std::memory_order_acquire);
      if (!Join(seen_generation)) continue;
      RunChunks();
      const uint64_t before = state.fetch_sub(1, std::memory_order_acq_rel);
      if ((before & kParticipantMask) == 1 && (before & kClosed) != 0) {
        // The caller has closed the job and may be asleep waiting for the last participant.
        // Taking the lock orders this notify after its predicate check.
        std::lock_guard<std::mutex> lock(mu);
        done_cv.notify_one();
      }
    }
  }

  const int num_threads;
  const std::function<void()> worker_start_hook;
  std::vector<std::thread> workers;

  // Serialises ParallelFor calls coming from different threads.
  std::mutex call_mu;

  // mu pairs with the condition variables; the state itself is atomic so that it can be polled.
  std::mutex mu;
  std::condition_variable work_cv;
  std::condition_variable done_cv;
  std::atomic<uint64_t> generation{0};   // bumped (under mu) to publish a job
  std::atomic<uint64_t> state{kClosed};  // the current job's (generation, closed, participants)
  std::atomic<bool> stop{false};

  // The current job; written by the caller before generation is bumped (release), read by
  // workers after they join it (acquire).
  const std::function<void(int64_t, int64_t)>* fn = nullptr;
  int64_t n = 0;
  int64_t chunk = 1;
  std::atomic<int64_t> next{0};
};

ThreadPool::ThreadPool(int num_threads) : ThreadPool(num_threads, nullptr) {}

ThreadPool::ThreadPool(int num_threads, std::function<void()> worker_start_hook)
    : impl_(std::make_unique<Impl>(num_threads > 0 ? num_threads : PhysicalCoreCount(),
                                   std::move(worker_start_hook))) {
  for (int i = 1; i < impl_->num_threads; ++i) {
    // Worker thread: runs chunks of ParallelFor jobs; sleeps on work_cv between jobs.
    impl_->workers.emplace_back([impl = impl_.get()] { impl->WorkerLoop(); });
  }
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->stop.store(true, std::memory_order_release);
  }
  impl_->work_cv.notify_all();
  for (std::thread& t : impl_->workers) t.join();
}

int ThreadPool::num_threads() const { return impl_->num_threads; }

void ThreadPool::ParallelFor(int64_t n, int64_t grain,
                             const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  const int threads = impl_->num_threads;
  // About four chunks per thread for load balance, each a multiple of the grain.
  const int64_t target = (n + 4 * threads - 1) / (4 * threads);
  const int64_t chunk = std::max<int64_t>(grain, (target + grain - 1) / grain * grain);
  if (threads == 1 || chunk >= n) {
    fn(0, n);
    return;
  }
  std::lock_guard<std::mutex> call_lock(impl_->call_mu);
  Impl& impl = *impl_;
  {
    std::lock_guard<std::mutex> lock(impl.mu);
    impl.fn = &fn;
    impl.n = n;
    impl.chunk = chunk;
    impl.next.store(0, std::memory_order_relaxed);
    const uint64_t g = impl.generation.load(std::memory_order_relaxed) + 1;
    // Open before it is announced: a worker that sees generation g finds state g open.
    impl.state.store((g & 0xffffffffu) << kGenerationShift, std::memory_order_release);
    impl.generation.store(g, std::memory_order_release);
  }
  impl.work_cv.notify_all();
  impl.RunChunks();
  // Every chunk is claimed. Close the job (no worker joins it now) and wait only for those that
  // joined and still run a chunk.
  impl.state.fetch_or(kClosed, std::memory_order_acq_rel);
  const auto all_done = [&] {
    return (impl.state.load(std::memory_order_acquire) & kParticipantMask) == 0;
  };
  if (!SpinUntil(all_done)) {
    std::unique_lock<std::mutex> lock(impl.mu);
    impl.done_cv.wait(lock, all_done);
  }
  impl.fn = nullptr;
}

namespace {

bool ReadLine(const std::string& path, std::string* line) {
  std::ifstream in(path);
  return static_cast<bool>(std::getline(in, *line));
}

// Parses a cpulist such as "0-3,8,10-11" into CPU ids; false on malformed text.
bool ParseCpuList(const std::string& text, std::vector<int>* cpus) {
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find(',', pos);
    if (end == std::string::npos) end = text.size();
    const std::string part = text.substr(pos, end - pos);
    pos = end + 1;
    if (part.empty()) continue;
    try {
      const size_t dash = part.find('-');
      const int first = std::stoi(part.substr(0, dash));
      const int last = dash == std::string::npos ? first : std::stoi(part.substr(dash + 1));
      if (first < 0 || last < first || last - first > 65536) return false;
      for (int c = first; c <= last; ++c) cpus->push_back(c);
    } catch (...) {
      return false;
    }
  }
  return !cpus->empty();
}

int CountPhysicalCores() {
  const std::string base = "/sys/devices/system/cpu/";
  std::string online;
  std::vector<int> cpus;
  if (!ReadLine(base + "online", &online) || !ParseCpuList(online, &cpus)) return 0;
  // Only CPUs this process may run on (containers often pin a subset).
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  const bool have_affinity = sched_getaffinity(0, sizeof(allowed), &allowed) == 0;
  std::set<std::pair<std::string, std::string>> cores;  // (package id, core id)
  for (int cpu : cpus) {
    if (have_affinity && cpu < CPU_SETSIZE && !CPU_ISSET(cpu, &allowed)) continue;
    const std::string topology = base + "cpu" + std::to_string(cpu) + "/topology/";
    std::string package, core;
    if (!ReadLine(topology + "physical_package_id", &package) ||
        !ReadLine(topology + "core_id", &core)) {
      return 0;
    }
    cores.emplace(package, core);
  }
  return static_cast<int>(cores.size());
}

}  // namespace

int PhysicalCoreCount() {
  static const int count = [] {
    int cores = CountPhysicalCores();
    if (cores <= 0) cores = static_cast<int>(std::thread::hardware_concurrency());
    return std::max(1, cores);
  }();
  return count;
}

}  // namespace exo::kernels
