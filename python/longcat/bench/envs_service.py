"""Environment-service benchmark (issue 12): 32,000 open environments, a random-step load at
1,000 steps/s offered, replay check, fault injection, the open/close soak, and the plain
synchronous ``Environment`` loop as the peer, all in one run.

Phases (``--quick``: 600 environments and short phases):

1. peer: the synchronous loop (one process, live ``Environment`` objects, the same action mix).
2. open + reset N environments over a handful of built (record, task) pairs; memory is the
   proportional set size (PSS) of the service, the zygote and the workers, before and after.
3. load ``uniform``: steps arrive at 1,000/s (open loop) on environments drawn uniformly from
   all N: the worst case, almost every step wakes a hibernated environment (it resumes its
   suspended state and the one it evicts is suspended); run ``UNIFORM_REPEATS`` times, the
   medians go to the context. Memory is measured again after it (live environments included).
4. load ``active set``: the same offered rate on a working set that fits the workers' live
   caches, woken once before (what an RL loop with that many episodes in flight looks like);
   then again at 300 steps/s offered, below saturation, for the latency of an unloaded service.
5. faults, under the active-set load: SIGKILL a worker, a tool that hangs (the call times out,
   its worker is replaced), a tool that raises.
6. replay check: every environment's observations and final database hash against a sequential
   replay of the steps the service reported as committed (0 lost, 0 mixed is the target).
7. soak: open/close cycles (100,000; ``--quick`` 2,000), 1 in 10 through a session cancelled
   mid-episode; service memory and file descriptors before/after.

Offered steps beyond the service's admission limits are rejected (``Overloaded``) and counted,
never queued without bound; latencies are of the steps that ran. ``cpu_ms_per_step`` is the CPU
time of this process (the client and the service) and the workers per step that ran: unlike the
rates, it does not depend on how loaded the machine is. The load average (``os.getloadavg``) is
recorded at the start and the end: on a shared machine the rates depend on it."""
from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import os
import random
import statistics
import time

from longcat.envs.runtime import Environment

OFFERED_RATE = 1000.0
SUSTAINABLE_RATE = 300.0   # a second active-set load below saturation, for its latency
TARGET_P99_MS = 50.0
UNIFORM_REPEATS = 3
FINAL_MESSAGE = {"type": "message", "content": "All done: your request is complete."}  # ends the episode
QUESTIONS = ["Could you tell me your email?", "What is your name?", "Which order is it?",
             "Can you confirm the details?"]


class FaultyEnvironment(Environment):
    """Fault injection for the benchmark and tests: the tool ``__hang__`` never returns, the
    tool ``__raise__`` raises; every other action is the plain ``Environment``'s."""

    def step(self, action):
        name = action.get("name") if isinstance(action, dict) else None
        if name == "__hang__":
            time.sleep(3600)
        if name == "__raise__":
            raise RuntimeError("injected tool failure")
        return super().step(action)


def faulty_environment(record, noise=None):
    return FaultyEnvironment(record, noise=noise)


def make_pairs(domains=("retail", "airline"), per_domain: int = 6, seed: int = 7) -> list:
    """Verified (environment record, task) pairs built in-process (no files, no network)."""
    from longcat.envs.growth import DomainContext, build_environment
    from longcat.envs.tasks import SynthStats, synthesize_task

    pairs = []
    for dom in domains:
        ctx = DomainContext(dom)
        uses, stats = {}, SynthStats()
        for i in range(per_domain):
            env = build_environment(ctx, seed, i, uses)
            if env["verified"]:
                task = synthesize_task(ctx, env, 0, stats)
                if task is not None:
                    pairs.append((env, task))
    if not pairs:
        raise RuntimeError("no verified environment/task pairs were built")
    return pairs


def action_for(task, handle: int, episode: int, k: int) -> dict:
    """The k-th action of an episode: a gold tool call, a question, or a malformed action."""
    rng = random.Random(hash((handle, episode, k)) & 0xFFFFFFFF)
    p = rng.random()
    gold = task["gold_actions"]
    if p < 0.6 and gold:
        a = gold[rng.randrange(len(gold))]
        return {"type": "tool_call", "name": a["name"], "arguments": a["arguments"]}
    if p < 0.93:
        return {"type": "message", "content": rng.choice(QUESTIONS)}
    return {"type": "dance", "moves": k}


def digest(result) -> str:
    return hashlib.sha1(json.dumps(result[:3], sort_keys=True, default=str).encode()).hexdigest()[:16]


def _pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


class Book:
    """What the client saw: per handle, the committed actions since the last reset and the
    digest of each observation."""

    def __init__(self, handles, pair_of):
        self.pair_of = pair_of
        self.actions = {h: [] for h in handles}
        self.obs = {h: [] for h in handles}
        self.episode = dict.fromkeys(handles, 0)
        self.length = {h: 3 + h % 6 for h in handles}
        self.done = dict.fromkeys(handles, False)
        self.busy: set = set()
        self.lat: list = []
        self.errors: dict = {}
        self.rejected = 0
        self.skipped = 0
        self.resets = 0

    async def one(self, svc, h):
        """One call on ``h``; the caller put ``h`` in ``busy`` when it scheduled it."""
        from longcat.envs.service import Overloaded

        try:
            if self.done[h]:
                await svc.reset(h)
                self.resets += 1
                self.actions[h], self.obs[h], self.done[h] = [], [], False
                self.episode[h] += 1
                return
            k = len(self.actions[h])
            task = self.pair_of(h)[1]
            a = FINAL_MESSAGE if k >= self.length[h] else action_for(task, h, self.episode[h], k)
            t0 = time.perf_counter()
            r = await svc.step(h, a)
            dt = time.perf_counter() - t0
            kind = r[3].get("error")
            if kind:
                self.errors[kind] = self.errors.get(kind, 0) + 1
                return
            self.lat.append(dt)
            self.actions[h].append(a)
            self.obs[h].append(digest(r))
            self.done[h] = bool(r[2])
        except Overloaded:
            self.rejected += 1
        except Exception as e:  # noqa: BLE001 - counted and shown, the load goes on
            key = f"exception:{type(e).__name__}"
            self.errors[key] = self.errors.get(key, 0) + 1
        finally:
            self.busy.discard(h)


async def offered_load(svc, book: Book, pick, rate: float, seconds: float, events=()):
    """Starts one call per 1/rate seconds (open loop) on ``pick()``'s handle; ``events``:
    (time offset, coroutine function) run during the load. Returns (offered, steps done)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    n0 = len(book.lat)
    offered = 0
    pending: set = set()
    events = sorted(events, key=lambda e: e[0])
    while True:
        now = loop.time()
        while events and now - start >= events[0][0]:
            pending.add(loop.create_task(events.pop(0)[1]()))
        due = int((now - start) * rate) - offered
        if now - start >= seconds:
            break
        for _ in range(max(due, 0)):
            offered += 1
            h = pick()
            if h in book.busy:
                book.skipped += 1
                continue
            book.busy.add(h)
            t = loop.create_task(book.one(svc, h))
            pending.add(t)
            t.add_done_callback(pending.discard)
        await asyncio.sleep(0.002)
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
    return offered, len(book.lat) - n0, loop.time() - start


def sync_peer(pairs, steps: int) -> dict:
    """The plain synchronous loop: live Environments, the same action mix, one core."""
    envs = [Environment(r) for r, _ in pairs]
    lat = []
    h = 0
    t_start = time.perf_counter()
    while len(lat) < steps:
        env, (_, task) = envs[h % len(envs)], pairs[h % len(envs)]
        env.reset(task)
        for k in range(3 + h % 6):
            t0 = time.perf_counter()
            env.step(action_for(task, h, 0, k))
            lat.append(time.perf_counter() - t0)
        env.step(FINAL_MESSAGE)
        h += 1
    secs = time.perf_counter() - t_start
    for e in envs:
        e.close()
    return {"steps": len(lat), "per_second": len(lat) / secs, "p50_ms": 1e3 * statistics.median(lat),
            "p99_ms": 1e3 * _pct(lat, 0.99)}


async def replay_check(svc, book: Book, handles) -> dict:
    """Every environment's observations and final hash against a sequential replay (a fresh
    ``Environment`` per record; the state of an empty replay is computed once per pair)."""
    cache: dict = {}
    reset_hash: dict = {}
    lost = mixed = checked = 0
    n = svc.max_inflight + svc.max_queue // 4   # two chunks in flight stay within the limits
    chunks = [handles[i:i + n] for i in range(0, len(handles), n)]

    def hashes(chunk):
        return asyncio.ensure_future(asyncio.gather(*(svc.db_hash(h) for h in chunk)))
    nxt = hashes(chunks[0]) if chunks else None
    for ci, chunk in enumerate(chunks):
        got_all, nxt = await nxt, (hashes(chunks[ci + 1]) if ci + 1 < len(chunks) else None)
        for h, got in zip(chunk, got_all):
            rec, task = book.pair_of(h)
            env = cache.get(id(rec))
            if env is None:
                env = cache[id(rec)] = Environment(rec)
            if not book.actions[h] and id(task) in reset_hash:
                ok_obs, want = True, reset_hash[id(task)]
            else:
                env.reset(task)
                ok_obs = all(digest(env.step(a)) == d
                             for a, d in zip(book.actions[h], book.obs[h]))
                want = env.db_hash()
                if not book.actions[h]:
                    reset_hash[id(task)] = want
            if not ok_obs:
                mixed += 1
            elif want != got:
                lost += 1
            checked += 1
        await asyncio.sleep(0)   # let the next chunk's hashes go out
    for env in cache.values():
        env.close()
    return {"checked": checked, "lost": lost, "mixed": mixed}


async def soak(svc, pair, cycles: int, concurrency: int = 32) -> dict:
    from longcat.envs.service.host import rss_bytes

    def fds():
        try:
            return len(os.listdir("/proc/self/fd"))
        except OSError:
            return -1

    async def cycle(i):
        if i % 10 == 0:   # a client that disconnects mid-episode
            async def client():
                async with svc.session() as s:
                    h = await s.open(*pair)
                    await s.reset(h)
                    await asyncio.sleep(3600)
            t = asyncio.get_running_loop().create_task(client())
            await asyncio.sleep(0.01)
            t.cancel()
            await asyncio.gather(t, return_exceptions=True)
        else:
            h = await svc.open(*pair)
            await svc.close(h)

    async def run(n):
        # a fixed pool of clients (not n tasks at once: their memory would be measured too)
        counter = iter(range(n))

        async def client_loop():
            for i in counter:
                await cycle(i)
        await asyncio.gather(*(client_loop() for _ in range(concurrency)))
    warm = min(2000, max(cycles // 10, 100))
    await run(warm)                      # allocator and caches reach their steady state
    before = (rss_bytes(), fds(), svc.memory_bytes()["total"])
    t0 = time.perf_counter()
    await run(cycles)
    secs = time.perf_counter() - t0
    after = (rss_bytes(), fds(), svc.memory_bytes()["total"])
    stats = await svc.worker_stats()
    return {"cycles": cycles, "seconds": secs, "per_second": cycles / secs,
            "service_rss_delta_mb": (after[0] - before[0]) / 2**20,
            "total_pss_delta_mb": (after[2] - before[2]) / 2**20,
            "fds_before": before[1], "fds_after": after[1], "open_after": len(svc._handles),
            "worker_handles_after": sum(s.get("handles", 0) for s in stats)}


def _log(msg: str) -> None:
    import sys

    print(f"[envs-service {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


async def _run(quick: bool) -> tuple[list, dict]:
    from longcat.envs.service import EnvService, Overloaded

    from longcat.envs.service.workers import usable_cpus

    n_envs = 600 if quick else 32_000
    seconds = 2.0 if quick else 15.0
    workers = len(usable_cpus())
    live = 128 if quick else 2048
    ctx: dict = {"environments": n_envs, "workers": workers, "live_per_worker": live,
                 "offered_steps_per_s": OFFERED_RATE, "load_average_start": _loadavg(),
                 "usable_cpus": usable_cpus()}
    rows = []
    gc_pauses = _GcPauses()
    t0 = time.perf_counter()
    pairs = make_pairs(per_domain=3 if quick else 6)
    ctx["pairs"] = len(pairs)
    ctx["pairs_build_s"] = time.perf_counter() - t0

    _log('building done; sync peer')
    peer = sync_peer(pairs, 200 if quick else 3000)
    rows.append({"phase": "peer: sync Environment loop (1 core)", "steps": peer["steps"],
                 "steps_per_s": peer["per_second"], "p50_ms": peer["p50_ms"],
                 "p99_ms": peer["p99_ms"]})

    _log('starting the service')
    step_timeout = 3.0   # a worker's first reset of a domain builds its template database
    svc = EnvService(workers=workers, env_factory="longcat.bench.envs_service:faulty_environment",
                     live_per_worker=live, step_timeout=step_timeout, max_inflight=32 * workers,
                     max_queue=128)
    t0 = time.perf_counter()
    await svc.start()
    ctx["start_s"] = time.perf_counter() - t0
    try:
        mem0 = svc.memory_bytes()
        t0 = time.perf_counter()
        handles = []
        burst = svc.max_inflight + svc.max_queue // 2   # within the admission limits
        for i in range(0, n_envs, burst):
            handles += await asyncio.gather(*(svc.open(*pairs[j % len(pairs)])
                                              for j in range(i, min(i + burst, n_envs))))
        t_open = time.perf_counter() - t0
        pair_idx = {h: i % len(pairs) for i, h in enumerate(handles)}

        def pair_of(h):
            return pairs[pair_idx[h]]
        t0 = time.perf_counter()
        for i in range(0, n_envs, burst):
            await asyncio.gather(*(svc.reset(h) for h in handles[i:i + burst]))
        t_reset = time.perf_counter() - t0
        mem1 = svc.memory_bytes()
        per_env = (mem1["total"] - mem0["total"]) / n_envs
        ctx.update(open_per_s=n_envs / t_open, reset_per_s=n_envs / t_reset,
                   memory_total_gib=mem1["total"] / 2**30,
                   memory_per_env_kib=per_env / 1024, memory_before_gib=mem0["total"] / 2**30,
                   memory_target_gib=12.0)
        rows.append({"phase": f"open + reset {n_envs}", "steps": n_envs,
                     "steps_per_s": n_envs / (t_open + t_reset),
                     "note": f"{mem1['total'] / 2**30:.2f} GiB total, "
                             f"{per_env / 1024:.1f} KiB/env"})

        _log('opened and reset')
        # The client and the service share this process: tens of thousands of handles, logs
        # and book entries make a full garbage collection pause the event loop for a second
        # or more. What exists now lives to the end, so it leaves the collector's generations
        # (what a long-running server does after warm-up); the pauses are still recorded.
        gc.collect()
        gc.freeze()
        gc.callbacks.append(gc_pauses)
        book = Book(handles, pair_of)
        rng = random.Random(0)
        active = handles[:workers * live // 2]
        phases = [("uniform over all", lambda: rng.choice(handles), OFFERED_RATE)] * \
            UNIFORM_REPEATS + [("active set", lambda: rng.choice(active), OFFERED_RATE),
                               ("active set", lambda: rng.choice(active), SUSTAINABLE_RATE)]
        uniform = []
        for name, pick, rate in phases:
            if name == "active set" and rate == OFFERED_RATE:
                # an RL loop's episodes in flight are awake: wake the set once, untimed
                _log("waking the active set")
                for i in range(0, len(active), burst):
                    await asyncio.gather(*(svc.db_hash(h) for h in active[i:i + burst]))
            n_lat = len(book.lat)
            rej0, skip0, err0 = book.rejected, book.skipped, sum(book.errors.values())
            _log(f"load: {name} at {rate:.0f}/s")
            pids = [os.getpid()] + [w.pid for w in svc._workers]
            cpu0 = _cpu_seconds(pids)
            offered, done, secs = await offered_load(svc, book, pick, rate, seconds)
            cpu1 = _cpu_seconds(pids)
            lat = book.lat[n_lat:]
            rows.append({"phase": f"load: {name} ({len(active) if name == 'active set' else n_envs} "
                                  f"envs) at {rate:.0f}/s",
                         "offered": offered, "steps": done, "steps_per_s": done / secs,
                         "cpu_ms_per_step": None if cpu0 is None or cpu1 is None or not done
                         else 1e3 * (cpu1 - cpu0) / done,
                         "p50_ms": 1e3 * statistics.median(lat) if lat else float("nan"),
                         "p99_ms": 1e3 * _pct(lat, 0.99), "rejected": book.rejected - rej0,
                         "skipped_busy": book.skipped - skip0,
                         "errors": sum(book.errors.values()) - err0})
            if name == "uniform over all":
                uniform.append(rows[-1])
                if len(uniform) == UNIFORM_REPEATS:
                    ctx["uniform_median"] = {k: statistics.median(r[k] for r in uniform)
                                             for k in ("steps_per_s", "p50_ms", "p99_ms")
                                             + (("cpu_ms_per_step",) if all(
                                                 r["cpu_ms_per_step"] for r in uniform) else ())}
                    ctx["uniform_median"]["target_p99_ms"] = TARGET_P99_MS
                    mem2 = svc.memory_bytes()
                    stats = await svc.worker_stats()
                    ctx.update(memory_after_uniform_gib=mem2["total"] / 2**30,
                               memory_per_env_after_uniform_kib=(mem2["total"] - mem0["total"])
                               / n_envs / 1024,
                               suspended_state_mib=sum(st.get("suspended_bytes", 0)
                                                       for st in stats) / 2**20,
                               live_after_uniform=sum(st.get("live", 0) for st in stats),
                               worker_cpus=[st.get("cpus") for st in stats])

        _log('faults')
        # faults under the active-set load
        fault_log: dict = {}
        victim = active[0]

        async def kill():
            fault_log["killed_pid"] = svc.kill_worker(0)

        async def fault_step(h, name):
            """One injected call on ``h`` (reset first if its episode ended)."""
            while h in book.busy:
                await asyncio.sleep(0.001)
            book.busy.add(h)
            try:
                while book.done[h]:
                    try:
                        await svc.reset(h)
                    except Overloaded:
                        await asyncio.sleep(0.005)
                        continue
                    book.actions[h], book.obs[h], book.done[h] = [], [], False
                    book.episode[h] += 1
                while True:   # under a saturating load it waits its turn like any client
                    try:
                        r = await svc.step(h, {"type": "tool_call", "name": name, "arguments": {}})
                        return r[3].get("error")
                    except Overloaded:
                        await asyncio.sleep(0.005)
            except Exception as e:  # noqa: BLE001 - reported in the result
                return f"exception {type(e).__name__}: {e}"
            finally:
                book.busy.discard(h)

        async def hang():
            fault_log["hang"] = await fault_step(victim, "__hang__")

        async def raise_():
            fault_log["raise"] = await fault_step(active[1], "__raise__")
        n_lat = len(book.lat)
        err0 = dict(book.errors)
        restarts0 = svc.metrics()["worker_restarts"]
        marks = []

        async def mark():
            marks.append((asyncio.get_running_loop().time(), len(book.lat)))
        # before: [0, t_kill); the hang holds its worker for step_timeout, then the replaced
        # workers rebuild their environments; after: the last 40%
        fault_s = max(seconds, 4 * step_timeout)
        t_kill = fault_s / 8
        events = [(0.0, mark), (t_kill, mark), (t_kill, kill), (1.5 * t_kill, hang),
                  (1.7 * t_kill, raise_), (0.6 * fault_s, mark)]
        ticks = []   # (time, steps done) every half second: the throughput timeline

        async def tick():
            ticks.append((asyncio.get_running_loop().time(), len(book.lat)))
        events += [(0.5 * i, tick) for i in range(int(fault_s / 0.5) + 1)]
        offered, done, secs = await offered_load(svc, book, lambda: rng.choice(active),
                                                 OFFERED_RATE, fault_s, events)
        await mark()
        lat = book.lat[n_lat:]
        before_rate = (marks[1][1] - marks[0][1]) / max(marks[1][0] - marks[0][0], 1e-9)
        after_rate = (marks[3][1] - marks[2][1]) / max(marks[3][0] - marks[2][0], 1e-9)
        errs = {k: v - err0.get(k, 0) for k, v in book.errors.items() if v - err0.get(k, 0)}
        rows.append({"phase": "faults: kill worker, hang, raise", "offered": offered,
                     "steps": done, "steps_per_s": done / secs,
                     "p50_ms": 1e3 * statistics.median(lat) if lat else float("nan"),
                     "p99_ms": 1e3 * _pct(lat, 0.99), "errors": sum(errs.values()),
                     "note": f"restarts {svc.metrics()['worker_restarts'] - restarts0}, hang -> "
                             f"{fault_log.get('hang')}, raise -> {fault_log.get('raise')}, "
                             f"steps/s before {before_rate:.0f} after {after_rate:.0f}"})
        ctx["faults"] = {"errors_by_kind": errs, "hang_step": fault_log.get("hang"),
                         "raise_step": fault_log.get("raise"),
                         "killed_pid": fault_log.get("killed_pid"),
                         "steps_per_s_before": before_rate, "steps_per_s_after_recovery": after_rate,
                         "timeline_steps_per_s": [
                             [round(t0 - ticks[0][0], 1), round((n1 - n0) / max(t1 - t0, 1e-9))]
                             for (t0, n0), (t1, n1) in zip(ticks, ticks[1:])],
                         "kill_at_s": t_kill, "hang_at_s": 1.5 * t_kill,
                         "step_timeout_s": step_timeout}

        _log('replay check')
        t0 = time.perf_counter()
        rc = await replay_check(svc, book, handles)
        rows.append({"phase": "replay check (all environments)", "steps": rc["checked"],
                     "note": f"lost {rc['lost']}, mixed {rc['mixed']}",
                     "steps_per_s": rc["checked"] / (time.perf_counter() - t0)})
        ctx["replay"] = rc
        ctx["service_metrics"] = svc.metrics()

        for i in range(0, len(handles), burst):
            await asyncio.gather(*(svc.close(h) for h in handles[i:i + burst]))
        _log('soak')
        sk = await soak(svc, pairs[0], 2000 if quick else 100_000)
        rows.append({"phase": f"soak: {sk['cycles']} open/close", "steps": sk["cycles"],
                     "steps_per_s": sk["per_second"],
                     "note": f"service RSS {sk['service_rss_delta_mb']:+.1f} MiB, total PSS "
                             f"{sk['total_pss_delta_mb']:+.1f} MiB, fds {sk['fds_before']}->"
                             f"{sk['fds_after']}, left open {sk['open_after']}/"
                             f"{sk['worker_handles_after']}"})
        ctx["soak"] = sk
    finally:
        if gc_pauses in gc.callbacks:
            gc.callbacks.remove(gc_pauses)
        gc.unfreeze()
        await svc.stop()
    ctx["load_average_end"] = _loadavg()
    ctx["client_and_service_gc"] = gc_pauses.summary()
    return rows, ctx


class _GcPauses:
    """A ``gc.callbacks`` entry timing this process's collections (full ones apart)."""

    def __init__(self):
        self.t0 = 0.0
        self.pauses: dict[int, list] = {0: [], 1: [], 2: []}

    def __call__(self, phase, info):
        if phase == "start":
            self.t0 = time.perf_counter()
        else:
            self.pauses[info["generation"]].append(time.perf_counter() - self.t0)

    def summary(self) -> dict:
        full = self.pauses[2]
        young = self.pauses[0] + self.pauses[1]
        return {"full_collections": len(full), "full_max_ms": 1e3 * max(full, default=0.0),
                "young_collections": len(young), "young_max_ms": 1e3 * max(young, default=0.0)}


def _cpu_seconds(pids) -> float | None:
    """CPU time (user + system) the processes used so far (Linux /proc; None elsewhere): the
    cost of a step that the machine's load does not change, unlike its latency."""
    total = 0.0
    try:
        for pid in pids:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
    return total


def _loadavg() -> list | None:
    """1, 5 and 15 minute load averages (what ``uptime`` prints), where the OS tells."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def run(device: str = "cpu", quick: bool = False):
    from longcat.bench.common import BenchResult, machine_info

    if device != "cpu":
        raise ValueError(f"device: the environment service runs on CPUs, got {device!r}")
    rows, ctx = asyncio.run(_run(quick))
    ctx["machine"] = machine_info("cpu")
    result = BenchResult(
        area="envs-service",
        title=f"Environment service: {ctx['environments']} open environments, "
              f"{ctx['workers']} worker(s), {OFFERED_RATE:.0f} steps/s offered",
        columns=["phase", "offered", "steps", "steps_per_s", "p50_ms", "p99_ms",
                 "cpu_ms_per_step", "rejected", "skipped_busy", "errors", "note"], context=ctx)
    for r in rows:
        result.add(**r)
    peer = rows[0]["steps_per_s"]
    for r in rows:
        if r["phase"].startswith("load") or r["phase"].startswith("faults"):
            ctx[f"ratio_vs_peer {r['phase']}"] = r["steps_per_s"] / peer
    return result


def main(argv: list[str] | None = None) -> None:
    from longcat.cli import main as cli_main

    cli_main(["bench", "envs-service", *(argv or [])])
