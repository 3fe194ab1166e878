#include "kernels/thread_pool.h"

#include <time.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace exo::kernels {
namespace {

// Runs ParallelFor and checks every index in [0, n) is visited exactly once and every chunk but
// the last starts and ends on a multiple of the grain.
void ExpectExactCover(ThreadPool& pool, int64_t n, int64_t grain) {
  std::vector<std::atomic<int>> visits(static_cast<size_t>(n));
  std::mutex mu;
  std::vector<std::pair<int64_t, int64_t>> chunks;
  pool.ParallelFor(n, grain, [&](int64_t begin, int64_t end) {
    ASSERT_LT(begin, end);
    for (int64_t i = begin; i < end; ++i) visits[static_cast<size_t>(i)].fetch_add(1);
    std::lock_guard<std::mutex> lock(mu);
    chunks.emplace_back(begin, end);
  });
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_EQ(visits[static_cast<size_t>(i)].load(), 1) << "index " << i << " n=" << n;
  }
  for (const auto& [begin, end] : chunks) {
    EXPECT_EQ(begin % grain, 0) << "n=" << n << " grain=" << grain;
    if (end != n) {
      EXPECT_EQ(end % grain, 0) << "n=" << n << " grain=" << grain;
    }
  }
}

TEST(ThreadPool, CoversEveryIndexExactlyOnce) {
  for (int threads : {1, 2, 3, 4, 8}) {
    ThreadPool pool(threads);
    EXPECT_EQ(pool.num_threads(), threads);
    for (int64_t n : {1, 2, 3, 7, 16, 17, 100, 1000, 4099}) {
      for (int64_t grain : {1, 4, 16, 64}) ExpectExactCover(pool, n, grain);
    }
  }
}

TEST(ThreadPool, SingleThreadRunsInlineInOneChunk) {
  ThreadPool pool(1);
  int calls = 0;
  const std::thread::id caller = std::this_thread::get_id();
  pool.ParallelFor(1000, 1, [&](int64_t begin, int64_t end) {
    ++calls;
    EXPECT_EQ(begin, 0);
    EXPECT_EQ(end, 1000);
    EXPECT_EQ(std::this_thread::get_id(), caller);
  });
  EXPECT_EQ(calls, 1);
}

TEST(ThreadPool, FewerItemsThanThreads) {
  ThreadPool pool(8);
  for (int64_t n : {1, 2, 3, 5}) ExpectExactCover(pool, n, 1);
}

TEST(ThreadPool, ZeroItemsCallsNothing) {
  ThreadPool pool(4);
  bool called = false;
  pool.ParallelFor(0, 1, [&](int64_t, int64_t) { called = true; });
  pool.ParallelFor(-5, 1, [&](int64_t, int64_t) { called = true; });
  EXPECT_FALSE(called);
}

TEST(ThreadPool, UsesSeveralThreadsForLargeJobs) {
  ThreadPool pool(4);
  std::mutex mu;
  std::set<std::thread::id> ids;
  // Enough chunks that each takes a moment; workers must join in.
  for (int attempt = 0; attempt < 20 && ids.size() < 2; ++attempt) {
    pool.ParallelFor(64, 1, [&](int64_t, int64_t) {
      std::this_thread::sleep_for(std::chrono::microseconds(200));
      std::lock_guard<std::mutex> lock(mu);
      ids.insert(std::this_thread::get_id());
    });
  }
  EXPECT_GE(ids.size(), 2u);
}

// A worker the OS has not scheduled yet (here: held at its start) must not hold a job up: the
// caller claims every chunk and returns. Before workers joined jobs explicitly, the caller waited
// for every worker to report each job done, so this test hung.
TEST(ThreadPool, JobsFinishWhileWorkersHaveNotWokenUp) {
  std::mutex gate;
  gate.lock();  // workers block at their start until the gate opens
  ThreadPool pool(3, [&] { std::lock_guard<std::mutex> wait(gate); });
  std::set<std::thread::id> ids;
  int64_t total = 0;
  for (int job = 0; job < 100; ++job) {
    pool.ParallelFor(64, 1, [&](int64_t begin, int64_t end) {
      ids.insert(std::this_thread::get_id());  // only the caller runs chunks: no lock needed
      total += end - begin;
    });
  }
  EXPECT_EQ(total, 100 * 64);
  EXPECT_EQ(ids, std::set<std::thread::id>{std::this_thread::get_id()});
  gate.unlock();
  // Once they are up the workers take part again, and late ones never replay an old job.
  std::atomic<int64_t> after{0};
  std::mutex mu;
  std::set<std::thread::id> later_ids;
  for (int attempt = 0; attempt < 50 && later_ids.size() < 2; ++attempt) {
    pool.ParallelFor(64, 1, [&](int64_t begin, int64_t end) {
      std::this_thread::sleep_for(std::chrono::microseconds(200));
      after.fetch_add(end - begin);
      std::lock_guard<std::mutex> lock(mu);
      later_ids.insert(std::this_thread::get_id());
    });
    ASSERT_EQ(after.load(), (attempt + 1) * 64);
  }
  EXPECT_GE(later_ids.size(), 2u);
}

TEST(ThreadPool, ManyConsecutiveJobs) {
  ThreadPool pool(3);
  std::atomic<int64_t> total{0};
  for (int job = 0; job < 2000; ++job) {
    pool.ParallelFor(50, 2, [&](int64_t begin, int64_t end) { total.fetch_add(end - begin); });
  }
  EXPECT_EQ(total.load(), 2000 * 50);
}

TEST(ThreadPool, CallsFromSeveralThreadsAreSerialised) {
  ThreadPool pool(3);
  std::atomic<int64_t> total{0};
  std::vector<std::thread> callers;
  for (int c = 0; c < 3; ++c) {
    callers.emplace_back([&] {
      for (int job = 0; job < 200; ++job) {
        pool.ParallelFor(40, 1, [&](int64_t begin, int64_t end) { total.fetch_add(end - begin); });
      }
    });
  }
  for (std::thread& t : callers) t.join();
  EXPECT_EQ(total.load(), 3 * 200 * 40);
}

TEST(ThreadPool, DefaultSizeIsPhysicalCores) {
  EXPECT_GE(PhysicalCoreCount(), 1);
  EXPECT_LE(PhysicalCoreCount(),
            static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  ThreadPool pool;
  EXPECT_EQ(pool.num_threads(), PhysicalCoreCount());
}

double ProcessCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// Workers poll for a short while after a job, then sleep: an idle pool burns (almost) no CPU.
// Spinning workers would use up to 3 x 300 ms here; the bound leaves room for the short poll.
TEST(ThreadPool, IdleWorkersSleep) {
  ThreadPool pool(4);
  std::atomic<int64_t> sum{0};
  pool.ParallelFor(1000, 1, [&](int64_t begin, int64_t end) { sum += end - begin; });
  ASSERT_EQ(sum.load(), 1000);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // past the poll window
  const double start = ProcessCpuSeconds();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_LT(ProcessCpuSeconds() - start, 0.05);
}

}  // namespace
}  // namespace exo::kernels
