"""KV swap benchmark: page copies, copy/compute overlap, and the engine under memory pressure.

Everything below is measured in one run, each number next to its peer:

- ``swap``: ``kv_copy_blocks`` moving 16-512 scattered pages (page size 64 as the engine's
  default, 576 values, bf16: 73.7 KB a page) from a device pool to a host pool of another size,
  and back. Peers, timed in the same interleaved rounds (``measure_interleaved``): the
  machine's copy bandwidth (one contiguous copy far larger than the caches; on CUDA, one large
  pinned <-> device ``copy_``), and one torch ``copy_`` per page (what vLLM's ``swap_blocks``
  does with one ``cudaMemcpyAsync`` per block). Repeats take disjoint id sets in turn, cycling
  through more memory than the last-level cache, so the pages come from DRAM as the big copy's
  do. GB/s counts bytes read + written on the CPU (as the copy bandwidth does) and bytes moved
  on CUDA; ``of_same_bytes`` compares with a contiguous copy of the same bytes. On CUDA every
  method (kernel, batched DMA, per-run DMA) is measured. On the CPU the peers and ours run on
  the same number of threads: first all of longcat's pool (torch set to the same count; wall
  time, with the cores the process got, since on a shared machine a 10 ms peer and a 0.1 ms
  call see the load differently; and ``vs_1_thread``, the same call capped to one thread in
  the same rounds: what the other threads add to a call of that size), then one thread
  against torch on one thread (the copier worker's configuration; the thread's CPU time), and
  once more as the engine's copier moves a chunk: every layer's pages in one call (4 layers,
  1 thread).
- ``overlap``: a 4-layer cache moved by ``ChunkedCopier`` (16-page chunks, background worker /
  copy stream) while the caller computes; hidden = (compute alone + transfer alone -
  overlapped) / min(compute, transfer), 1.0 = the shorter one fully hidden. On the CPU the
  copier's worker owns one core and the compute runs on the rest (one torch thread on 2 cores,
  so no OpenMP worker spins on the copier's core), in all three measurements. Each row also
  gives ``hidden_max``, what the machine allows: compute and copy are each CPU-bound on their
  thread, so overlapped >= (their CPU seconds alone) / (the cores the process got while
  overlapped): with compute ~ transfer and 1.6 cores, at most 2 - 2 / 1.6 = 75%, however good
  the overlap. Two computes: a cached matmul (compute-bound; what falls short of hidden_max is
  what sharing the L3 and memory costs: 5-7% of the matmul's CPU time measured against a
  concurrent page copy) and a DRAM-streaming elementwise op (memory-bound: both sides need the
  one memory system, so overlapped >= the bytes both move through DRAM / the all-thread copy
  bandwidth of the swap rows in DRAM bytes (the peer's or ours, whichever moved more), which
  bounds hidden_max too. DRAM bytes count the read an ordinary store makes of the line it
  writes: the elementwise op moves 3x its input, torch's copy_ 1.5x what it counts, ours
  (non-temporal stores) what it counts); on the CPU also a control that needs no core
  (sleeps), bounded only by the cores the copier got. Each row says how many cores the process
  got while overlapped.
- ``pd``: prefill/decode disaggregation over two processes (gloo on CPU): time from the start of
  a prompt's prefill to its first decoded token on the decode side (sampled there from the
  logits the prefill side sends after the last chunk), against the same prompt in a
  single-process engine (the same model and weights on both sides) with all cores' threads and
  with one. Each process gets its own thread count (prefill N - 1, decode 1 on N cores), with
  64-token chunks and the whole prompt as one chunk; the full run adds 128-token chunks and
  torch's default of N threads in both processes.
- ``engine``: the tiny LongCat-Flash preset generating for 8 requests with a device cache too
  small for them: swapping to a host tier vs recompute preemption (no host tier), and an engine
  whose device cache holds everything (the ceiling), taking turns, on N - 1 compute threads
  (the swap-in copier owns the last core). Generated tokens/s, median of rounds.
"""
from __future__ import annotations

import math
import os
import statistics
import time

import torch

import longcat
from longcat.bench.common import BenchResult, machine_info, measure_interleaved, sync
from longcat.engine.kv_transfer import ChunkedCopier, compute_threads
from longcat.ops import KvCopyMethod, kv_copy_blocks
from longcat.ops.kv_cache import kv_copy_blocks_layers, zeros_on_huge_pages

PAGE_SIZE = 64
BLOCKS = [16, 64, 128, 256, 512]
QUICK_BLOCKS = [16, 128, 512]


def _pool(pages: int, device: str, pin: bool = False) -> torch.Tensor:
    # The CPU pools as the engine makes them (make_kv_caches, HostKVTier): on huge pages.
    on_cpu = not pin and not device.startswith("cuda")
    t = zeros_on_huge_pages((pages, PAGE_SIZE, 1, 576)) if on_cpu else \
        torch.empty(pages, PAGE_SIZE, 1, 576, dtype=torch.bfloat16, device="cpu" if pin else device)
    t.view(torch.int16).random_(-1000, 1000)
    return t.pin_memory() if pin else t


def _scattered(n: int, pages: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(pages, generator=g)[:n].to(torch.int32)


def _swap_rows(result: BenchResult, device: str, quick: bool, min_time: float) -> None:
    cuda = device.startswith("cuda")
    dev_pages, host_pages = (600, 1100) if quick else (1100, 2200)
    dev = _pool(dev_pages, device)
    host = _pool(host_pages, device, pin=cuda)
    page_bytes = dev[0].numel() * dev.element_size()
    if cuda:
        big_dev = torch.empty(256 << 20, dtype=torch.uint8, device=device)
        big_host = torch.empty(256 << 20, dtype=torch.uint8).pin_memory()
        big = {"d2h": lambda: big_host.copy_(big_dev, non_blocking=True),
               "h2d": lambda: big_dev.copy_(big_host, non_blocking=True)}
        big_bytes = big_dev.numel()  # bytes moved
        methods = [KvCopyMethod.KERNEL, KvCopyMethod.MEMCPY_BATCH, KvCopyMethod.MEMCPY_PER_BLOCK]
    else:
        # The peer: one contiguous copy far larger than the caches (bytes read + written).
        # On huge pages like the pools (a fair peer: a 66 MB copy_ gained 3-5% from them).
        a = zeros_on_huge_pages(((64 if quick else 256) << 20,), torch.uint8).fill_(1)
        b = zeros_on_huge_pages(a.shape, torch.uint8)
        big = {"d2h": lambda: b.copy_(a), "h2d": lambda: b.copy_(a)}
        big_bytes = 2 * a.numel()
        methods = [KvCopyMethod.CPU_THREADS]
    stream = torch.cuda.Stream(device) if cuda else None
    # CPU: the kernel pool on every thread (an engine's swap-out), then one thread against
    # torch on one thread (the copier's worker; swap-ins). d2h only for the latter.
    runs = [("", ("d2h", "h2d"))] + ([] if cuda else [(", 1 thread", ("d2h",))])
    bw_seen: dict = {}
    for suffix, directions in runs:
        one = suffix != ""
        prev_torch, prev_limit = torch.get_num_threads(), longcat.thread_limit()
        # The peers copy on torch's threads, ours on longcat's pool: the same count on both
        # sides (all threads: longcat's pool size, which OMP_NUM_THREADS does not change).
        threads = 1 if one else longcat.num_threads()
        if not cuda:
            torch.set_num_threads(threads)
            longcat.set_thread_limit(1 if one else 0)
        try:
            for n in (QUICK_BLOCKS if quick else BLOCKS):
                for direction in directions:
                    src, dst = (dev, host) if direction == "d2h" else (host, dev)
                    c0, w0 = time.process_time(), time.perf_counter()
                    times, sets = _time_swap(src, dst, n, big[direction], methods, device, stream, min_time, one,
                                             with_one_thread_peer=not cuda and not one)
                    cores = (time.process_time() - c0) / (time.perf_counter() - w0)
                    clock = "CPU time" if one else "wall time"
                    if not cuda:
                        clock += f", {threads} thread(s) for the copy bandwidth, ours and the peers"
                    if not cuda and not one:
                        # Wall-time ratios of a 0.1 ms call to a 10 ms peer mean little when the
                        # process had fewer cores than threads (other jobs): say how many it had.
                        clock += f"; cores this process got over these rounds {cores:.2f}"
                    bw = big_bytes / times[0] / 1e9
                    bw_seen.setdefault(direction + suffix, []).append(bw)
                    moved = n * page_bytes * (1 if cuda else 2)  # CPU: read + write, like the bandwidth
                    for method, t in zip(methods, times[3:3 + len(methods)]):
                        gbs = moved / t / 1e9
                        if not one:
                            result.context["swap_best_gbs"] = max(gbs, result.context.get("swap_best_gbs", 0.0))
                        extra = {}
                        if len(times) > 3 + len(methods):  # ours capped to one thread, same rounds
                            extra["vs_1_thread"] = times[-1] / t
                        result.add(section="swap", case=f"{direction} {method.name.lower()}{suffix}", blocks=n,
                                   ours_ms=t * 1e3, peer_ms=times[2] * 1e3,
                                   **{"GB/s": gbs, "of_copy_bw": gbs / bw, "of_same_bytes": times[1] / t,
                                      "vs_torch_per_page": times[2] / t}, **extra,
                                   note=f"copy bandwidth {bw:.1f} GB/s in the same rounds ({clock}); {sets} id sets")
        finally:
            torch.set_num_threads(prev_torch)
            longcat.set_thread_limit(prev_limit)
    if not cuda:
        del dev, host  # room for the per-layer pools below
        _swap_layers_rows(result, quick, big["d2h"], big_bytes, min_time, bw_seen)
    result.context["copy_bandwidth_gbs"] = {k: statistics.median(v) for k, v in bw_seen.items()}


def _swap_layers_rows(result: BenchResult, quick: bool, big, big_bytes: int, min_time: float, bw_seen: dict) -> None:
    """The engine's configuration on the CPU: ChunkedCopier's worker moves a chunk of pages for
    every layer in one call (``kv_copy_blocks_layers``, 4 layers here) on one thread. Peers in
    the same rounds: the 1-thread copy bandwidth, and one contiguous copy per layer of the same
    bytes."""
    layers = 4
    dev_pages, host_pages = (150, 300) if quick else (300, 600)
    devs = [_pool(dev_pages, "cpu") for _ in range(layers)]
    hosts = [_pool(host_pages, "cpu") for _ in range(layers)]
    page_bytes = devs[0][0].numel() * devs[0].element_size()
    prev_torch, prev_limit = torch.get_num_threads(), longcat.thread_limit()
    torch.set_num_threads(1)
    longcat.set_thread_limit(1)
    try:
        for n in (QUICK_BLOCKS[:2] if quick else BLOCKS[:4]):
            # Disjoint id sets in turn: 4 layers cycle through 44-88 MB, past the L3.
            sets = max(1, dev_pages // n)
            s_perm, d_perm = _scattered(dev_pages, dev_pages, n), _scattered(host_pages, host_pages, n + 1)
            s_sets = [s_perm[i * n:(i + 1) * n].contiguous() for i in range(sets)]
            d_sets = [d_perm[i * n:(i + 1) * n].contiguous() for i in range(sets)]
            turn = [0]

            def nxt() -> int:
                turn[0] = (turn[0] + 1) % sets
                return turn[0]

            def same_bytes():
                i = nxt()
                for d, h in zip(devs, hosts):
                    h[i * n:(i + 1) * n].copy_(d[i * n:(i + 1) * n])

            def ours():
                i = nxt()
                kv_copy_blocks_layers(devs, hosts, s_sets[i], d_sets[i])

            def warm_code():
                hosts[0][:0].copy_(devs[0][:0])
                kv_copy_blocks_layers(devs, hosts, s_sets[0][:0], d_sets[0][:0])

            t_big, t_same, t = measure_interleaved([big, same_bytes, ours], "cpu", min_time=min_time,
                                                   min_rounds=9 if quick else 25,
                                                   clock=time.thread_time,  # one thread: its CPU time
                                                   before_each=_scrub_caches(warm_code))
            bw = big_bytes / t_big / 1e9
            bw_seen.setdefault("d2h, 1 thread, layers", []).append(bw)
            gbs = 2 * layers * n * page_bytes / t / 1e9
            result.add(section="swap", case=f"d2h all {layers} layers per call (the engine's copier), 1 thread",
                       blocks=n, ours_ms=t * 1e3, **{"GB/s": gbs, "of_copy_bw": gbs / bw, "of_same_bytes": t_same / t},
                       note=f"blocks per layer; copy bandwidth {bw:.1f} GB/s in the same rounds (CPU time); "
                            f"{sets} id sets")
    finally:
        torch.set_num_threads(prev_torch)
        longcat.set_thread_limit(prev_limit)


def _time_swap(src: torch.Tensor, dst: torch.Tensor, n: int, big, methods, device: str, stream, min_time: float,
               one_thread: bool, with_one_thread_peer: bool = False) -> tuple[list[float], int]:
    """Interleaved medians of: the big contiguous copy, a contiguous copy of the same bytes
    (n pages), one torch copy_ per page, then kv_copy_blocks with each method, and with
    ``with_one_thread_peer`` last kv_copy_blocks capped to one thread (``set_thread_limit(1)``):
    what the other threads add to the same call in the same rounds. On one thread the
    clock is the calling thread's CPU time (every copy then runs on that thread): on a shared
    machine a long call (the big copy) is descheduled more often than a short one, which skews
    wall-time ratios; CPU time is what each copy costs while it runs, whatever the load. (Not
    the process's CPU time: idle pool threads that spin would be counted.)"""
    # Disjoint id sets taken in turn, as many as the pools hold: they cycle through 44-81 MB,
    # more than the last-level cache (32 MB here), so the pages come from DRAM as the big
    # copy's do (the big copy also flushes the cache between rounds).
    sets = max(1, min(src.shape[0], dst.shape[0]) // n)
    s_perm, d_perm = _scattered(src.shape[0], src.shape[0], n), _scattered(dst.shape[0], dst.shape[0], n + 1)
    s_sets = [s_perm[i * n:(i + 1) * n].contiguous() for i in range(sets)]
    d_sets = [d_perm[i * n:(i + 1) * n].contiguous() for i in range(sets)]
    s_list, d_list = [x.tolist() for x in s_sets], [x.tolist() for x in d_sets]
    turn = [0]

    def nxt() -> int:
        turn[0] = (turn[0] + 1) % sets
        return turn[0]

    def same_bytes():  # the same n pages' bytes, contiguous on both sides
        i = nxt()
        dst[i * n:(i + 1) * n].copy_(src[i * n:(i + 1) * n], non_blocking=True)

    def torch_peer():  # vLLM's swap_blocks: one copy per page
        i = nxt()
        for x, y in zip(s_list[i], d_list[i]):
            dst[y].copy_(src[x], non_blocking=True)

    def ours_with(method):
        def ours():
            i = nxt()
            kv_copy_blocks(src, dst, s_sets[i], d_sets[i], method, stream=stream)
            if stream is not None:
                torch.cuda.current_stream(device).wait_stream(stream)
        return ours

    def ours_one_thread():
        i = nxt()
        prev = longcat.thread_limit()
        longcat.set_thread_limit(1)
        try:
            kv_copy_blocks(src, dst, s_sets[i], d_sets[i], methods[0])
        finally:
            longcat.set_thread_limit(prev)

    fns = [big, same_bytes, torch_peer] + [ours_with(m) for m in methods] + \
        ([ours_one_thread] if with_one_thread_peer else [])
    clock = time.thread_time if one_thread else time.perf_counter
    empty = torch.zeros(0, dtype=torch.int32)

    def warm_code():  # every timed function's code path, moving nothing
        dst[:0].copy_(src[:0])
        for m in methods:
            kv_copy_blocks(src, dst, empty, empty, m)

    # One thread, full run: 25 rounds (a few seconds). Where other jobs come and go, the median
    # of a 0.2 ms copy is much noisier than that of the 30 ms peer.
    rounds = 25 if one_thread and min_time >= 0.3 else 9
    return measure_interleaved(fns, device, min_time=min_time, min_rounds=rounds, clock=clock,
                               before_each=None if stream is not None else _scrub_caches(warm_code)), sets


SPIN_OUT_S = 0.012  # longer than torch's OpenMP workers spin after a parallel region (6-8 ms)


def _scrub_caches(warm_code):
    """Untimed before every timed CPU copy: a read of 64 MB (twice the L3 here), so that the
    dirty lines the previous function's cached stores left behind are written back now rather
    than during whichever copy runs next, then ``warm_code`` (every timed function's code path
    with nothing to move). Every function then starts with its pages in DRAM, clean caches and
    warm code, as a copier's loop does. Fair to the peers: they gain most, since their own
    write-backs go untimed too. (Measured without the warm-up, a call right after the scrub
    pays its interpreter and binding code from DRAM: ~200 us for a kv_copy_blocks of 0 pages,
    ~60 us for torch's copy_ of one element, against 5 and 4 us warm.)

    The scrub runs on one torch thread: after a parallel region torch's OpenMP workers spin for
    about 6-8 ms (measured on the Zen 5: that much process CPU time in a 50 ms sleep after a
    2-thread sum), so a 2-thread scrub would leave a spinning thread on the other core for the
    timed call, and longcat's pool worker (asleep, it spins only 50 us) would share that core
    with it while torch's own workers, still spinning, start at once. The torch peers' own
    calls (a copy_ of a 73.7 KB page runs on torch's threads) leave their workers spinning too, so
    the scrub goes on for at least ``SPIN_OUT_S``: every function then starts with the other
    cores free. (Before, the call after the per-page peer shared a core with a spinning worker:
    on the Zen 5 a 2-thread kv_copy_blocks of 128-512 pages ran at 0.56-0.68 of the copy
    bandwidth in the bench against 1.0-1.3 in a loop of its own.)"""
    scrub = torch.ones(8 << 20, dtype=torch.int64)

    def before():
        prev = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            t0 = time.perf_counter()
            scrub.sum()
            while time.perf_counter() - t0 < SPIN_OUT_S:
                scrub.sum()
        finally:
            torch.set_num_threads(prev)
        warm_code()
    return before


def _overlap_rows(result: BenchResult, device: str, quick: bool) -> None:
    """A 4-layer swap moved by ChunkedCopier while the caller computes. On the CPU the copier's
    worker owns one core (copy_threads=1) and the compute runs on the others; compute alone,
    transfer alone and both together all run with those same thread counts, timed in the same
    rounds. Two kinds of compute: a matmul that stays in cache (compute-bound) and an
    elementwise op streaming through DRAM (memory-bound: it competes with the copy for memory
    bandwidth, not for a core)."""
    cuda = device.startswith("cuda")
    layers, pages, chunk = 4, (256 if quick else 512), 16
    dev = [_pool(pages, device) for _ in range(layers)]
    host = [_pool(pages, device, pin=cuda) for _ in range(layers)]
    ids = _scattered(pages, pages, 3).tolist()  # an engine's pages are scattered
    copy_threads = 0 if cuda else 1
    threads = torch.get_num_threads() if cuda else compute_threads(copy_threads)
    copier = ChunkedCopier(dev, host, chunk_pages=chunk, copy_threads=copy_threads)
    side = 8192 if cuda else 512
    m = torch.randn(side, side, device=device)
    x = torch.randn((256 if cuda else 8) << 20, device=device)  # 32 MB on the CPU: past the caches
    y = torch.empty_like(x)
    kinds = {"compute-bound (fp32 matmul %d^2)" % side: lambda: m @ m,
             "memory-bound (elementwise, %d MB in + out)" % (x.numel() * 4 >> 20): lambda: torch.mul(x, 1.5, out=y)}
    # Bytes each side moves through DRAM, for overlap_bound's memory-system floor (the matmul's
    # stay in the caches). The elementwise op writes y with ordinary stores, and an ordinary
    # store to a line not in the cache first reads it (read for ownership): x read, y read, y
    # written. The copier's non-temporal stores skip that read: each page read + written.
    bytes_compute = {name: 3 * x.numel() * 4 for name in kinds if name.startswith("memory")}
    transfer_bytes = 2 * layers * len(ids) * dev[0][0].numel() * dev[0].element_size()
    if not cuda:
        # A control that needs no core (a GPU or I/O wait stands in): what the copier's
        # machinery hides when the core it needs is free, whatever the machine's load.
        kinds["off-CPU (sleep 1 ms, a stand-in for GPU / I/O waits)"] = lambda: time.sleep(1e-3)

    def transfer():
        for e in copier.copy(ids, ids):
            e.wait()

    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        t_transfer = statistics.median(_timed(transfer, device) for _ in range(5))
        for name, op in kinds.items():
            # Sized to take about as long as the transfer: the hardest case to hide.
            t_op = statistics.median(_timed(op, device) for _ in range(5))
            reps = max(1, round(t_transfer / t_op))

            def compute():
                for _ in range(reps):
                    op()

            shares = []  # process CPU seconds per wall second of each overlapped run
            cpu_alone = {"compute": [], "transfer": []}  # process CPU seconds of each run alone

            def cpu_timed(name, fn):
                def run():
                    c0 = time.process_time()
                    fn()
                    cpu_alone[name].append(time.process_time() - c0)
                return run

            def overlapped():
                c0, w0 = time.process_time(), time.perf_counter()
                events = copier.copy(ids, ids)
                compute()
                for e in events:
                    e.wait()
                shares.append((time.process_time() - c0) / (time.perf_counter() - w0))

            rounds: list = []
            t_compute, t_alone, t_both = measure_interleaved(
                [cpu_timed("compute", compute), cpu_timed("transfer", transfer), overlapped], device,
                min_time=0.5 if quick else 4.0, min_rounds=7 if quick else 9, rounds=rounds)
            eff = (t_compute + t_alone - t_both) / min(t_compute, t_alone)
            # The same formula within each round (its three runs saw the same load), median over
            # rounds: steadier than the medians' formula when the machine's load drifts.
            eff_rounds = statistics.median((c + t - b) / min(c, t) for c, t, b in rounds)
            got = statistics.median(shares)
            bws = result.context.get("copy_bandwidth_gbs", {})
            # What the memory system moves per second, in DRAM bytes: at least what the fastest
            # all-thread copy moved. Ours (non-temporal stores) moves the bytes it counts; torch's
            # copy_ peer reads each destination line before writing it, 1.5x the bytes it counts
            # (the same run's swap rows: ours at ~1.5x its GB/s on 512 pages).
            dram = lambda gbs: gbs * 1.5 if gbs else None  # noqa: E731
            bw_all = max([b for b in (dram(bws.get("d2h")), result.context.get("swap_best_gbs")) if b], default=None)
            bw_one = dram(bws.get("d2h, 1 thread"))
            hidden_max, why = overlap_bound(
                t_compute, t_alone, statistics.median(cpu_alone["compute"]), statistics.median(cpu_alone["transfer"]),
                None if cuda else got, None if cuda else (bytes_compute.get(name, 0) * reps + transfer_bytes),
                bw_all * 1e9 if bw_all and not cuda else None, bw_one * 1e9 if bw_one else None)
            result.add(section="overlap", case=f"{name}, {layers} layers x {pages} pages, {chunk}-page chunks",
                       blocks=pages, ours_ms=t_both * 1e3, peer_ms=(t_compute + t_alone) * 1e3,
                       hidden=eff, hidden_max=hidden_max,
                       note=f"compute {t_compute * 1e3:.1f} ms on {threads} thread(s), transfer {t_alone * 1e3:.1f} "
                            f"ms on {copy_threads or 'all'} (alone, same thread counts); hidden {eff:.0%} "
                            f"(medians), {eff_rounds:.0%} (median of {len(rounds)} rounds), at most "
                            f"{hidden_max:.0%} ({why}); cores this process got while overlapped {got:.2f}")
            result.context[f"overlap_hidden {name.split(' ')[0]}"] = eff
            result.context[f"overlap_hidden_per_round {name.split(' ')[0]}"] = eff_rounds
            result.context[f"overlap_hidden_max {name.split(' ')[0]}"] = hidden_max
            result.context[f"overlap_cores_got {name.split(' ')[0]}"] = got
    finally:
        torch.set_num_threads(prev)
        copier.close()


def overlap_bound(t_compute: float, t_transfer: float, cpu_compute: float, cpu_transfer: float,
                  cores_got: float | None = None, bytes_both: float | None = None, bw_all: float | None = None,
                  bw_one: float | None = None) -> tuple[float, str]:
    """The most of min(compute, transfer) an overlap can hide, and what bounds it.

    Alone, compute takes ``t_compute`` s (``cpu_compute`` CPU seconds) and the transfer
    ``t_transfer`` s (``cpu_transfer``). Overlapped takes at least the longer of the two; with
    ``cores_got`` cores (what the process had while overlapped) at least the CPU seconds of both
    over those cores (compute ~ transfer on 1.6 cores: at most 2 - 2 / 1.6 = 75% hidden); and
    since both share one memory system, at least ``bytes_both`` (what the two move through
    DRAM) over the all-thread copy bandwidth ``bw_all`` (DRAM bytes / s). ``bw_one``, the
    1-thread copy bandwidth in the same terms: an all-thread one no higher was
    measured under other load and bounds nothing; nor does a memory floor longer than the two
    sides one after the other (the bandwidth was measured low). What a measured overlap falls
    short of this, sharing the caches and memory cost. A NaN anywhere gives NaN."""
    given = [x for x in (t_compute, t_transfer, cpu_compute, cpu_transfer, cores_got, bytes_both, bw_all, bw_one)
             if x is not None]
    if any(math.isnan(x) for x in given):
        return math.nan, "a NaN input"
    floor, why = max(t_compute, t_transfer), []
    if cores_got is not None and cores_got > 0:
        cores_floor = (cpu_compute + cpu_transfer) / cores_got
        if cores_floor > floor:
            floor = cores_floor
            why.append(f"cores got {cores_got:.2f}")
    if bytes_both and bw_all:
        if bw_one and bw_all <= bw_one:  # other load took the cores the all-thread copy needed
            why.append(f"no bandwidth bound: the all-thread copy ({bw_all / 1e9:.0f} GB/s) was not faster than "
                       f"1 thread's")
        elif bytes_both / bw_all > t_compute + t_transfer:  # the two ran apart faster than that
            why.append(f"no bandwidth bound: {bytes_both / 1e6:.0f} MB at {bw_all / 1e9:.0f} GB/s would take longer "
                       f"than compute and transfer one after the other")
        elif bytes_both / bw_all > floor:
            floor = bytes_both / bw_all
            why.append(f"{bytes_both / 1e6:.0f} MB through a {bw_all / 1e9:.0f} GB/s memory system")
    return (t_compute + t_transfer - floor) / min(t_compute, t_transfer), ", ".join(why) or "the shorter fully hidden"


def _timed(fn, device: str) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def _engine_rows(result: BenchResult, device: str, quick: bool) -> None:
    from longcat.engine import EngineArgs, LLMEngine, SamplingParams

    model = _tiny_model(device)
    n_req, prompt_len, gen = (4, 32, 12) if quick else (6, 64, 32)
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, 1000, (prompt_len,), generator=g).tolist() for _ in range(n_req)]
    params = SamplingParams(temperature=0, max_tokens=gen, ignore_eos=True)
    page = 16
    per_seq = -(-(prompt_len + gen) // page)
    tight = per_seq * n_req // 2  # half of what the requests need at once
    configs = {"roomy (no pressure)": dict(num_pages=per_seq * n_req + 8),
               "swap (host tier)": dict(num_pages=tight, num_host_pages=per_seq * n_req),
               "recompute (no host tier)": dict(num_pages=tight)}
    outputs, times, stats = {}, {name: [] for name in configs}, {}
    # The configurations take turns (rounds), so load drift hits all three alike. On the CPU the
    # engine computes on N - 1 threads, leaving the swap-in copier its core, in all three.
    threads = torch.get_num_threads() if device.startswith("cuda") else compute_threads(1)
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for _ in range(1 if quick else 3):
            for name, kw in configs.items():
                engine = LLMEngine(model, None, EngineArgs(page_size=page, max_num_batched_tokens=256,
                                                          enable_prefix_caching=False, **kw))
                t0 = time.perf_counter()
                reqs = [engine.add_request(p, params) for p in prompts]
                while engine.has_unfinished():
                    engine.step()
                sync(device)
                times[name].append(time.perf_counter() - t0)
                outputs[name] = [r.outputs[0].token_ids for r in reqs]
                stats[name] = engine.kv_cache_stats()
                if engine.host_tier is not None:
                    engine.host_tier.close()  # stop its copier threads
    finally:
        torch.set_num_threads(prev)
    for name, kw in configs.items():
        t, s = statistics.median(times[name]), stats[name]
        note = f"{threads} compute thread(s), preemptions {s['num_preemptions']}"
        if "swap_outs" in s:
            note += (f", swap-outs {s['swap_outs']}, {s['bytes_out'] / 1e6:.1f} MB out, stall "
                     f"{s['stall_seconds'] * 1e3:.1f} ms, recompute avoided {s['tokens_recompute_avoided']} tokens")
        result.add(section="engine", case=name, blocks=kw["num_pages"], ours_ms=t * 1e3,
                   **{"tok/s": n_req * gen / t}, note=note)
    result.context["engine_swap_tokens_equal_roomy"] = outputs["swap (host tier)"] == outputs["roomy (no pressure)"]


def _tiny_model(device: str = "cpu"):
    from longcat.models import LongcatFlashConfig, LongcatFlashForCausalLM

    torch.manual_seed(0)
    return LongcatFlashForCausalLM(LongcatFlashConfig.from_preset("tiny")).eval().to(device)


def _pd_prompts(quick: bool) -> list[list[int]]:
    g = torch.Generator().manual_seed(1)
    n, length = (2, 128) if quick else (4, 256)
    return [torch.randint(3, 1000, (length,), generator=g).tolist() for _ in range(n)]


def _pd_prefill(port: int, quick: bool, starts, threads: int, chunk_pages: int) -> None:
    import torch.distributed as dist

    from longcat.engine import SamplingParams
    from longcat.engine.disagg import PrefillWorker

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=2)
    worker = PrefillWorker(_tiny_model(), page_size=16, chunk_pages=chunk_pages, max_len=1024, num_threads=threads)
    worker.send([5, 6, 7], SamplingParams(temperature=0, max_tokens=1), "warmup")
    for i, prompt in enumerate(_pd_prompts(quick)):
        starts.put((f"p{i}", time.time()))
        worker.send(prompt, SamplingParams(temperature=0, max_tokens=2, ignore_eos=True), f"p{i}")
    worker.stop()
    dist.destroy_process_group()


def _pd_decode(port: int, firsts, threads: int) -> None:
    import torch.distributed as dist

    from longcat.engine import EngineArgs, LLMEngine
    from longcat.engine.disagg import DecodeWorker

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=1, world_size=2)
    engine = LLMEngine(_tiny_model(), None, EngineArgs(page_size=16, num_pages=256, max_model_len=1024))
    worker = DecodeWorker(engine, num_threads=threads)
    worker.serve()
    firsts.put(worker.first_token_at)
    dist.destroy_process_group()


def _pd_time(quick: bool, prefill_threads: int, decode_threads: int, chunk_pages: int) -> float:
    """Median time to first decode token over the prompts, two fresh processes."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    starts, firsts = ctx.Queue(), ctx.Queue()
    procs = [ctx.Process(target=_pd_prefill, args=(port, quick, starts, prefill_threads, chunk_pages)),
             ctx.Process(target=_pd_decode, args=(port, firsts, decode_threads))]
    for p in procs:
        p.start()
    first_at = firsts.get(timeout=300)
    for p in procs:
        p.join(timeout=60)
    began = dict(starts.get() for _ in range(len(_pd_prompts(quick))))
    return statistics.median(first_at[k] - began[k] for k in began)


def _single_ttft(quick: bool, threads: int) -> float:
    from longcat.engine import EngineArgs, LLMEngine, SamplingParams
    from longcat.engine.disagg import set_process_threads

    prev = torch.get_num_threads(), longcat.num_threads()
    set_process_threads("bench", threads)
    try:
        engine = LLMEngine(_tiny_model(), None, EngineArgs(page_size=16, num_pages=256, max_model_len=1024))
        engine.add_request([5, 6, 7], SamplingParams(temperature=0, max_tokens=1))
        while engine.has_unfinished():
            engine.step()
        single = []
        for prompt in _pd_prompts(quick):
            t0 = time.perf_counter()
            req = engine.add_request(prompt, SamplingParams(temperature=0, max_tokens=2, ignore_eos=True))
            while not req.outputs[0].token_ids:
                engine.step()
            single.append(time.perf_counter() - t0)
            while engine.has_unfinished():
                engine.step()
    finally:
        torch.set_num_threads(prev[0])
        longcat.set_num_threads(prev[1])
    return statistics.median(single)


def _pd_rows(result: BenchResult, device: str, quick: bool) -> None:
    """Two processes share the machine's cores: each gets its own thread count (num_threads of
    the workers). Peers in the same run: the single-process engine with all cores' threads and
    with one thread (on a loaded machine one thread can be the faster)."""
    cores = compute_threads(0)
    prompts = _pd_prompts(quick)
    singles = {n: _single_ttft(quick, n) for n in sorted({cores, 1})}
    best = min(singles.values())
    # Chunks of 64 and 128 tokens, and the whole prompt as one chunk (nothing to overlap, one
    # forward: with a model this small a forward's fixed cost outweighs the transfer it hides).
    whole = -(-len(prompts[0]) // 16)
    configs = [(max(1, cores - 1), 1, 4), (max(1, cores - 1), 1, whole)] + \
        ([] if quick else [(max(1, cores - 1), 1, 8), (cores, cores, 4)])
    for prefill_threads, decode_threads, chunk_pages in configs:
        t_pd = _pd_time(quick, prefill_threads, decode_threads, chunk_pages)
        result.add(section="pd", case=f"time to first decode token, prompt {len(prompts[0])}, {chunk_pages * 16}-token "
                                      f"chunks, threads prefill {prefill_threads} / decode {decode_threads}",
                   blocks=len(prompts), ours_ms=t_pd * 1e3, peer_ms=best * 1e3,
                   note="single process: " + ", ".join(f"{n} thread(s) {t * 1e3:.0f} ms" for n, t in singles.items())
                        + f"; PD / the faster single = {t_pd / best:.2f}")
    result.context["pd_single_process_ms"] = {str(n): t * 1e3 for n, t in singles.items()}


def run(device: str = "cpu", quick: bool = False) -> BenchResult:
    result = BenchResult(
        area="kv",
        title=f"KV swap on {device}: page copies, overlap, engine under memory pressure (medians)",
        columns=["section", "case", "blocks", "ours_ms", "peer_ms", "GB/s", "of_copy_bw", "of_same_bytes",
                 "vs_torch_per_page", "vs_1_thread", "hidden", "hidden_max", "tok/s", "note"],
        context={"machine": machine_info(device),
                 "note": "swap: peer_ms = one torch copy_ per page; of_copy_bw = GB/s / the copy bandwidth measured "
                         "in the same rounds; of_same_bytes = a contiguous copy of the same bytes' time / ours; vs_1_thread "
                         "(all-thread rows) = ours capped to one thread / ours, same rounds. overlap: hidden = "
                         "(compute + transfer - overlapped) / min(compute, transfer); hidden_max = the most the "
                         "cores this process got and the all-thread copy bandwidth allow. "
                         "overlap: peer_ms = compute alone + transfer alone. engine: blocks = device pages (16 tokens "
                         "each). pd: peer_ms = the faster single-process engine (all threads or one), "
                         "blocks = prompts"},
    )
    min_time = 0.05 if quick else 0.3
    # Timings on a shared machine are only as good as the cores the run got: the load average
    # before and after, and (overlap rows) the cores this process used while overlapped.
    result.context["load_average_before"] = os.getloadavg()[0]
    _swap_rows(result, device, quick, min_time)
    _overlap_rows(result, device, quick)
    _engine_rows(result, device, quick)
    if not device.startswith("cuda"):  # the two-process handoff runs over gloo on the CPU
        _pd_rows(result, device, quick)
    result.context["load_average_after"] = os.getloadavg()[0]
    return result


def main(argv: list[str] | None = None) -> None:
    from longcat.cli import main as cli_main

    cli_main(["bench", "kv", *(argv or [])])
