// Thread pool behind longcat::cpu::parallel_for (see csrc/core/parallel.h).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "core/parallel.h"
#include "longcat/common.h"
#include "longcat/runtime.h"

#if defined(__linux__)
#include <pthread.h>
#include <sched.h>
#endif
#if defined(__x86_64__)
#include <immintrin.h>
#define LONGCAT_PAUSE() _mm_pause()
#else
#define LONGCAT_PAUSE() std::this_thread::yield()
#endif

namespace longcat {
namespace {

constexpr int kMaxThreads = 1024;  // set_num_threads / LONGCAT_NUM_THREADS beyond this are refused / capped

int default_threads() {
  if (const char* env = std::getenv("LONGCAT_NUM_THREADS"); env && *env) {
    int n = std::atoi(env);
    if (n >= 1) return std::min(n, kMaxThreads);
  }
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
#endif
  return std::max(1u, std::thread::hardware_concurrency());
}

// Workers spin this long for the next task before sleeping: back-to-back small kernels then
// start without a futex wake-up, and idle workers still free their core soon.
constexpr auto kSpin = std::chrono::microseconds(50);

// A worker that woke on the caller's core leaves a run shorter than this to the caller.
constexpr auto kMoveAfter = std::chrono::microseconds(200);

// The CPU the calling thread runs on (-1 where unknown).
int current_cpu() {
#if defined(__linux__)
  return sched_getcpu();
#else
  return -1;
#endif
}

// Moves the calling thread off CPU `cpu`: its affinity without that CPU (the kernel migrates it
// at once), then the affinity it had (it stays where it landed). False where that cannot be done.
bool move_off_cpu(int cpu) {
#if defined(__linux__)
  cpu_set_t had, others;
  if (cpu < 0 || cpu >= CPU_SETSIZE || sched_getaffinity(0, sizeof(had), &had) != 0 || !CPU_ISSET(cpu, &had) ||
      CPU_COUNT(&had) < 2)
    return false;
  others = had;
  CPU_CLR(cpu, &others);
  if (sched_setaffinity(0, sizeof(others), &others) != 0) return false;
  sched_setaffinity(0, sizeof(had), &had);
  return true;
#else
  (void)cpu;
  return false;
#endif
}

class Pool {
 public:
  // Starts threads - 1 workers. If the OS refuses one (address-space or thread limits), the
  // ones already started are stopped and joined before the error leaves, so nothing waits on a
  // destroyed pool.
  explicit Pool(int threads) {
    try {
      for (int i = 1; i < threads; ++i) workers_.emplace_back([this, i] { loop(i); });
    } catch (const std::exception& e) {
      const int started = static_cast<int>(workers_.size()) + 1;
      stop_workers();
      fail(ErrorKind::Runtime, "set_num_threads: could not start " + std::to_string(threads) + " threads (" +
                                   e.what() + "; " + std::to_string(started) + " started)");
    }
  }
  ~Pool() { stop_workers(); }
  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // Runs fn(piece) for every piece in [0, pieces), pieces < 2^24. Pieces are claimed, not
  // assigned: the caller takes pieces until none is left and then waits only for the pieces a
  // worker is running. A worker whose core is busy (torch's OpenMP threads spin for a while
  // after each torch op) therefore never delays the caller: it wakes, finds nothing left and
  // goes back to sleep, and small kernels between torch ops keep their speed.
  // Only the caller and workers 1 .. threads - 1 take part (a caller's thread limit).
  void run(int pieces, int threads, const std::function<void(int)>& fn) {
    task_ = &fn;
    caller_cpu_.store(current_cpu(), std::memory_order_relaxed);
    threads_.store(threads, std::memory_order_relaxed);
    error_ = nullptr;
    pieces_ = pieces;
    done_.store(0, std::memory_order_relaxed);
    const uint64_t gen = gen_.load(std::memory_order_relaxed) + 1;
    claim_.store(gen << kPieceBits, std::memory_order_release);  // piece 0 of generation gen
    {
      std::lock_guard<std::mutex> lk(m_);
      gen_.store(gen, std::memory_order_release);
    }
    cv_work_.notify_all();
    work(gen);
    auto until = std::chrono::steady_clock::now() + kSpin;
    while (done_.load(std::memory_order_acquire) != pieces && std::chrono::steady_clock::now() < until)
      LONGCAT_PAUSE();
    if (done_.load(std::memory_order_acquire) != pieces) {
      std::unique_lock<std::mutex> lk(m_);
      cv_done_.wait(lk, [&] { return done_.load(std::memory_order_acquire) == pieces; });
    }
    task_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

 private:
  static constexpr int kPieceBits = 24;  // claim_ = generation << 24 | next piece (pieces <= 1024)

  void stop_workers() {
    {
      std::lock_guard<std::mutex> lk(m_);
      stop_ = true;
      gen_.fetch_add(1);
    }
    cv_work_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
  }

  // Claims and runs pieces of generation gen until none is left. A claim succeeds only while
  // claim_ still belongs to gen, so a late worker never touches a finished run's task.
  void work(uint64_t gen) {
    uint64_t c = claim_.load(std::memory_order_acquire);
    while ((c >> kPieceBits) == gen) {
      const int piece = static_cast<int>(c & ((uint64_t{1} << kPieceBits) - 1));
      if (piece >= pieces_) return;
      if (!claim_.compare_exchange_weak(c, c + 1, std::memory_order_acq_rel, std::memory_order_acquire)) continue;
      try {
        (*task_)(piece);
      } catch (...) {
        std::lock_guard<std::mutex> lk(err_m_);
        if (!error_) error_ = std::current_exception();
      }
      if (done_.fetch_add(1, std::memory_order_acq_rel) + 1 == pieces_) {
        std::lock_guard<std::mutex> lk(m_);
        cv_done_.notify_one();
      }
      c = claim_.load(std::memory_order_acquire);
    }
  }

  bool on_callers_core() const {
    const int cpu = current_cpu();
    return cpu >= 0 && cpu == caller_cpu_.load(std::memory_order_relaxed);
  }

  // True while the run of generation gen has pieces no thread has claimed yet.
  bool pieces_left(uint64_t gen) const {
    const uint64_t c = claim_.load(std::memory_order_acquire);
    return (c >> kPieceBits) == gen && static_cast<int>(c & ((uint64_t{1} << kPieceBits) - 1)) < pieces_;
  }

  void loop(int worker) {
    uint64_t seen = 0;
    bool spin = true;  // false: straight to sleep (this worker shared the caller's core)
    for (;;) {
      auto until = std::chrono::steady_clock::now() + kSpin;
      while (spin && gen_.load(std::memory_order_acquire) == seen && std::chrono::steady_clock::now() < until)
        LONGCAT_PAUSE();
      spin = true;
      if (gen_.load(std::memory_order_acquire) == seen) {
        std::unique_lock<std::mutex> lk(m_);
        cv_work_.wait(lk, [&] { return gen_.load() != seen; });
      }
      seen = gen_.load(std::memory_order_acquire);
      if (stop_) return;
      // A worker the scheduler woke on the caller's core (the other cores busy: another
      // process, torch's spinning OpenMP workers) can only time-share that core with the
      // caller: a piece it claims waits while the caller spins for it, and its own spin after
      // the run delays the caller. So it leaves a short run to the caller (measured on the
      // 2-core Zen 5 with the other core busy, load 3.4-4.2, kv_copy_blocks of scattered pages
      // on 2 threads, medians of 5 runs of 41 calls without / with leaving: 16 pages 201 -> 133
      // us, 1 thread 89-96 us). If the run still has pieces left after kMoveAfter, it moves
      // itself off the caller's core and joins: the core it woke on was taken only for a moment
      // (torch's OpenMP workers spin a few ms after each op), but a woken worker can stay
      // there: on a VM the scheduler need not wake a thread on an idle virtual CPU (one the
      // host has descheduled counts as preempted), so each later run woke it on the caller's
      // core again. In one 5-minute stretch on the 2-core Zen 5 VM, moe_grouped_swiglu at 3
      // rows (9-10 ms on two cores), the second call after a torch copy_, ran on the caller's
      // core alone in 30 of 40 calls (13-19 ms) without the move, in 0 of 40 with it; later
      // neither build showed it (0 of 140 calls), nor did either win clearly elsewhere.
      bool shared = on_callers_core();
      if (shared && pieces_left(seen)) {
        std::this_thread::sleep_for(kMoveAfter);
        shared = on_callers_core();
        if (shared && pieces_left(seen) && move_off_cpu(caller_cpu_.load(std::memory_order_relaxed)))
          shared = on_callers_core();
      }
      if (shared) {
        spin = false;
        continue;
      }
      if (worker < threads_.load(std::memory_order_relaxed)) work(seen);
    }
  }

  std::vector<std::thread> workers_;
  std::mutex m_, err_m_;
  std::condition_variable cv_work_, cv_done_;
  std::atomic<uint64_t> gen_{0};
  std::atomic<uint64_t> claim_{0};
  std::atomic<int> done_{0};
  const std::function<void(int)>* task_ = nullptr;
  int pieces_ = 0;
  std::atomic<int> threads_{0};  // read by late workers of an earlier run too
  std::atomic<int> caller_cpu_{-1};  // the CPU the caller ran on when the run began
  bool stop_ = false;
  std::exception_ptr error_;
};

std::mutex g_pool_m;            // guards g_pool and g_threads; held for the whole of a parallel run
Pool* g_pool = nullptr;         // created lazily; leaked in a forked child (its threads are gone)
std::atomic<int> g_threads{0};  // 0 = not yet read from the environment
thread_local bool t_in_parallel = false;
thread_local int t_limit = 0;   // set_thread_limit: 0 = no cap for this thread

#if defined(__linux__)
void after_fork_in_child() {
  g_pool = nullptr;  // the parent's workers do not exist here; a new pool starts on first use
  new (&g_pool_m) std::mutex();
}
struct AtFork {
  AtFork() { pthread_atfork(nullptr, nullptr, after_fork_in_child); }
} g_at_fork;
#endif

}  // namespace

int num_threads() {
  int n = g_threads.load();
  if (n == 0) {
    int expected = 0;
    g_threads.compare_exchange_strong(expected, default_threads());
    n = g_threads.load();
  }
  return n;
}

void set_num_threads(int n) {
  if (n < 1 || n > kMaxThreads)
    fail(ErrorKind::Value, "set_num_threads: expected n in [1, " + std::to_string(kMaxThreads) + "], got " +
                               std::to_string(n));
  std::lock_guard<std::mutex> lk(g_pool_m);  // waits for a running parallel region to finish
  // Start the new pool before dropping the old one: if the OS refuses the threads, the old pool
  // and count stay as they were and the caller gets the error here, not at some later op.
  Pool* fresh = n > 1 ? new Pool(n) : nullptr;  // throws Error(Runtime), nothing changed
  delete g_pool;
  g_pool = fresh;
  g_threads.store(n);
}

void set_thread_limit(int n) {
  if (n < 0 || n > kMaxThreads)
    fail(ErrorKind::Value, "set_thread_limit: expected n in [0, " + std::to_string(kMaxThreads) + "] (0: no cap), got " +
                               std::to_string(n));
  t_limit = n;
}

int thread_limit() { return t_limit; }

namespace cpu {

namespace {

// Runs fn over [0, n) in `pieces` contiguous, near-equal pieces on the pool (inline when the
// pool is busy or this is a nested call); per_thread: at most one piece per pool thread.
void run_pieces(int64_t n, int64_t pieces, int threads, bool per_thread,
                const std::function<void(int64_t, int64_t)>& fn) {
  std::unique_lock<std::mutex> lk(g_pool_m, std::defer_lock);
  if (pieces <= 1 || t_in_parallel || !lk.try_lock()) {
    fn(0, n);
    return;
  }
  if (!g_pool) {
    try {
      g_pool = new Pool(num_threads());
    } catch (const Error&) {  // the default count cannot start here: run on the caller alone
      lk.unlock();
      fn(0, n);
      return;
    }
  }
  if (per_thread) pieces = std::min<int64_t>(pieces, g_pool->size());
  const int64_t per = n / pieces, extra = n % pieces;
  std::function<void(int)> body = [&](int piece) {
    const int64_t begin = piece * per + std::min<int64_t>(piece, extra);
    const int64_t end = begin + per + (piece < extra ? 1 : 0);
    struct InParallel {  // nested parallel_for calls run inline, even if fn throws
      InParallel() { t_in_parallel = true; }
      ~InParallel() { t_in_parallel = false; }
    } flag;
    fn(begin, end);
  };
  g_pool->run(static_cast<int>(pieces), threads, body);
}

int threads_for_caller() { return t_limit > 0 ? std::min(t_limit, num_threads()) : num_threads(); }

}  // namespace

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  const int threads = threads_for_caller();
  const int64_t chunks = std::min<int64_t>(threads, (n + grain - 1) / grain);
  run_pieces(n, chunks, threads, /*per_thread=*/true, fn);
}

void parallel_for_claimed(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  constexpr int64_t kMaxPieces = 1024;
  const int threads = threads_for_caller();
  run_pieces(n, threads <= 1 ? 1 : std::min<int64_t>(kMaxPieces, (n + grain - 1) / grain), threads,
             /*per_thread=*/false, fn);
}

}  // namespace cpu
}  // namespace longcat
