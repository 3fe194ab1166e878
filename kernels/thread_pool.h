// A fixed pool of worker threads for data-parallel kernels. Idle workers sleep on a condition
// variable (they do not spin).
#ifndef EXO_KERNELS_THREAD_POOL_H_
#define EXO_KERNELS_THREAD_POOL_H_

#include <cstdint>
#include <functional>
#include <memory>

namespace exo::kernels {

class ThreadPool {
 public:
  // `num_threads` includes the calling thread; 0 picks the number of physical cores.
  explicit ThreadPool(int num_threads = 0);
  // For tests: every worker calls worker_start_hook before it takes any job (a hook that blocks
  // stands for workers the OS has not scheduled yet).
  ThreadPool(int num_threads, std::function<void()> worker_start_hook);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const;

  // Calls fn(begin, end) on disjoint chunks covering [0, n) across all threads (the caller
  // included) and returns when every chunk is done. Chunks are multiples of `grain` (except the
  // last). Chunks are claimed as threads arrive: a worker that has not woken up by the time the
  // caller has claimed the last chunk sits the job out, so on an oversubscribed machine a job
  // never waits for a thread the OS has not scheduled. Not reentrant: do not call ParallelFor
  // from inside fn.
  void ParallelFor(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Number of physical cores of this machine (at least 1).
int PhysicalCoreCount();

}  // namespace exo::kernels

#endif  // EXO_KERNELS_THREAD_POOL_H_
