"""KV swap benchmark: page copies, copy/compute overlap, and the engine under memory pressure.

Everything below is measured in one run, each number next to its peer:

- ``swap``: ``kv_copy_blocks`` moving 16-512 scattered pages (page size 64, 576 values, bf16:
  73.7 KB a page) from a device pool to a host pool of another size, and back. Peers: the
  machine's copy bandwidth (one large contiguous copy, ``copy_bandwidth_gbs``; on CUDA, one large
  pinned <-> device ``copy_``), and one torch ``copy_`` per page (what vLLM's ``swap_blocks`` does
  with one ``cudaMemcpyAsync`` per block). Repeats take disjoint id sets in turn, but the pages
  of 16-128-block copies still fit in the CPU's last-level cache, so those rows can exceed the
  DRAM copy bandwidth. GB/s
  counts bytes read + written on the CPU (as the copy bandwidth does) and bytes moved on CUDA.
  On CUDA every method (kernel, batched DMA, per-run DMA) is measured.
- ``overlap``: a 4-layer cache moved by ``ChunkedCopier`` (16-page chunks, background worker /
  copy stream) while the caller computes (a matmul loop); efficiency = (compute alone +
  transfer alone - overlapped) / min(compute, transfer), 1.0 = the shorter one fully hidden.
- ``pd``: prefill/decode disaggregation over two processes (gloo on CPU): time from the start of
  a prompt's prefill to its first decoded token on the decode side, against the same prompt in a
  single-process engine (the same model and weights on both sides).
- ``engine``: the tiny LongCat-Flash preset generating for 8 requests with a device cache too
  small for them: swapping to a host tier vs recompute preemption (no host tier), and an engine
  whose device cache holds everything (the ceiling). Generated tokens/s, median of repeats.
"""
from __future__ import annotations

import statistics
import time

import torch

from longcat.bench.common import BenchResult, copy_bandwidth_gbs, machine_info, measure, sync
from longcat.engine.kv_transfer import ChunkedCopier
from longcat.ops import KvCopyMethod, kv_copy_blocks

PAGE_SIZE = 64
BLOCKS = [16, 64, 128, 256, 512]
QUICK_BLOCKS = [16, 128, 512]


def _pool(pages: int, device: str, pin: bool = False) -> torch.Tensor:
    t = torch.empty(pages, PAGE_SIZE, 1, 576, dtype=torch.bfloat16, device="cpu" if pin else device)
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
        peer = {"d2h": 2 * big_dev.numel() / measure(lambda: big_host.copy_(big_dev, non_blocking=True), device, min_time) / 2e9,
                "h2d": 2 * big_dev.numel() / measure(lambda: big_dev.copy_(big_host, non_blocking=True), device, min_time) / 2e9}
        methods = [KvCopyMethod.KERNEL, KvCopyMethod.MEMCPY_BATCH, KvCopyMethod.MEMCPY_PER_BLOCK]
    else:
        bw = copy_bandwidth_gbs(device, quick)
        peer = {"d2h": bw, "h2d": bw}
        methods = [KvCopyMethod.CPU_THREADS]
    result.context["copy_bandwidth_gbs"] = peer
    stream = torch.cuda.Stream(device) if cuda else None
    for n in (QUICK_BLOCKS if quick else BLOCKS):
        for direction, (src, dst) in (("d2h", (dev, host)), ("h2d", (host, dev))):
            # Several disjoint id sets taken in turn, so that repeats do not find the pages of
            # the previous call still in the CPU's caches.
            sets = max(1, min(8, min(src.shape[0], dst.shape[0]) // n))
            s_perm, d_perm = _scattered(src.shape[0], src.shape[0], n), _scattered(dst.shape[0], dst.shape[0], n + 1)
            s_sets = [s_perm[i * n:(i + 1) * n].contiguous() for i in range(sets)]
            d_sets = [d_perm[i * n:(i + 1) * n].contiguous() for i in range(sets)]
            s_list, d_list = [x.tolist() for x in s_sets], [x.tolist() for x in d_sets]
            moved = n * page_bytes * (1 if cuda else 2)  # CPU: read + write, like the copy bandwidth
            turn = [0]

            def torch_peer():  # vLLM's swap_blocks: one copy per page
                i = turn[0] = (turn[0] + 1) % sets
                for a, b in zip(s_list[i], d_list[i]):
                    dst[b].copy_(src[a], non_blocking=True)

            t_peer = measure(torch_peer, device, min_time)
            for method in methods:
                def ours():
                    i = turn[0] = (turn[0] + 1) % sets
                    kv_copy_blocks(src, dst, s_sets[i], d_sets[i], method, stream=stream)
                    if stream is not None:
                        torch.cuda.current_stream(device).wait_stream(stream)

                t = measure(ours, device, min_time)
                gbs = moved / t / 1e9
                result.add(section="swap", case=f"{direction} {method.name.lower()}", blocks=n,
                           ours_ms=t * 1e3, peer_ms=t_peer * 1e3,
                           **{"GB/s": gbs, "of_copy_bw": gbs / peer[direction], "vs_torch_per_page": t_peer / t})


def _overlap_rows(result: BenchResult, device: str, quick: bool) -> None:
    cuda = device.startswith("cuda")
    layers, pages = 4, (256 if quick else 512)
    dev = [_pool(pages, device) for _ in range(layers)]
    host = [_pool(pages, device, pin=cuda) for _ in range(layers)]
    copier = ChunkedCopier(dev, host, chunk_pages=16)
    ids = list(range(pages))
    a = torch.randn(512 if not cuda else 8192, 512 if not cuda else 8192, device=device)

    def transfer():
        for e in copier.copy(ids, ids):
            e.wait()

    t_transfer = statistics.median(_timed(transfer, device) for _ in range(5))
    # Size the compute to take about as long as the transfer (the hardest case to hide).
    t_mm = statistics.median(_timed(lambda: a @ a, device) for _ in range(5))
    reps = max(1, round(t_transfer / t_mm))

    def compute():
        for _ in range(reps):
            a @ a

    def overlapped():
        events = copier.copy(ids, ids)
        compute()
        for e in events:
            e.wait()

    t_compute, t_transfer, t_both = (statistics.median(_timed(f, device) for _ in range(7))
                                     for f in (compute, transfer, overlapped))
    eff = (t_compute + t_transfer - t_both) / min(t_compute, t_transfer)
    result.add(section="overlap", case=f"{layers} layers x {pages} pages, 16-page chunks", blocks=pages,
               ours_ms=t_both * 1e3, peer_ms=(t_compute + t_transfer) * 1e3,
               note=f"compute {t_compute * 1e3:.1f} ms, transfer {t_transfer * 1e3:.1f} ms, hidden {eff:.0%}")
    result.context["overlap_efficiency"] = eff
    copier.close()


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
    outputs = {}
    for name, kw in configs.items():
        times = []
        for _ in range(1 if quick else 2):
            engine = LLMEngine(model, None, EngineArgs(page_size=page, max_num_batched_tokens=256,
                                                      enable_prefix_caching=False, **kw))
            t0 = time.perf_counter()
            reqs = [engine.add_request(p, params) for p in prompts]
            while engine.has_unfinished():
                engine.step()
            sync(device)
            times.append(time.perf_counter() - t0)
            outputs[name] = [r.outputs[0].token_ids for r in reqs]
        t = statistics.median(times)
        s = engine.kv_cache_stats()
        note = f"preemptions {s['num_preemptions']}"
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


def _pd_prefill(port: int, quick: bool, starts) -> None:
    import torch.distributed as dist

    from longcat.engine import SamplingParams
    from longcat.engine.disagg import PrefillWorker

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=2)
    worker = PrefillWorker(_tiny_model(), page_size=16, chunk_pages=4, max_len=1024)
    worker.send([5, 6, 7], SamplingParams(temperature=0, max_tokens=1), "warmup")
    for i, prompt in enumerate(_pd_prompts(quick)):
        starts.put((f"p{i}", time.time()))
        worker.send(prompt, SamplingParams(temperature=0, max_tokens=2, ignore_eos=True), f"p{i}")
    worker.stop()
    dist.destroy_process_group()


def _pd_decode(port: int, firsts) -> None:
    import torch.distributed as dist

    from longcat.engine import EngineArgs, LLMEngine
    from longcat.engine.disagg import DecodeWorker

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=1, world_size=2)
    engine = LLMEngine(_tiny_model(), None, EngineArgs(page_size=16, num_pages=256, max_model_len=1024))
    worker = DecodeWorker(engine)
    worker.serve()
    firsts.put(worker.first_token_at)
    dist.destroy_process_group()


def _pd_rows(result: BenchResult, device: str, quick: bool) -> None:
    import socket

    import torch.multiprocessing as mp

    from longcat.engine import EngineArgs, LLMEngine, SamplingParams

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
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    starts, firsts = ctx.Queue(), ctx.Queue()
    procs = [ctx.Process(target=_pd_prefill, args=(port, quick, starts)),
             ctx.Process(target=_pd_decode, args=(port, firsts))]
    for p in procs:
        p.start()
    first_at = firsts.get(timeout=300)
    for p in procs:
        p.join(timeout=60)
    began = dict(starts.get() for _ in range(len(_pd_prompts(quick))))
    pd = [first_at[k] - began[k] for k in began]
    t_single, t_pd = statistics.median(single), statistics.median(pd)
    result.add(section="pd", case=f"time to first decode token, prompt {len(_pd_prompts(quick)[0])}, 64-token chunks",
               blocks=len(pd), ours_ms=t_pd * 1e3, peer_ms=t_single * 1e3,
               note=f"PD / single process = {t_pd / t_single:.2f}")


def run(device: str = "cpu", quick: bool = False) -> BenchResult:
    result = BenchResult(
        area="kv",
        title=f"KV swap on {device}: page copies, overlap, engine under memory pressure (medians)",
        columns=["section", "case", "blocks", "ours_ms", "peer_ms", "GB/s", "of_copy_bw", "vs_torch_per_page", "tok/s",
                 "note"],
        context={"machine": machine_info(device),
                 "note": "swap: peer_ms = one torch copy_ per page; of_copy_bw = GB/s / the copy bandwidth measured "
                         "in this run. overlap: peer_ms = compute alone + transfer alone. engine: blocks = device "
                         "pages (16 tokens each). pd: peer_ms = the single-process engine, blocks = prompts"},
    )
    min_time = 0.05 if quick else 0.3
    _swap_rows(result, device, quick, min_time)
    _overlap_rows(result, device, quick)
    _engine_rows(result, device, quick)
    if not device.startswith("cuda"):  # the two-process handoff runs over gloo on the CPU
        _pd_rows(result, device, quick)
    return result


def main(argv: list[str] | None = None) -> None:
    from longcat.cli import main as cli_main

    cli_main(["bench", "kv", *(argv or [])])
