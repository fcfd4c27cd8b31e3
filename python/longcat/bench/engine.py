"""Generation engine benchmark: the ``small`` LongCat-Flash preset, random weights, greedy.

Peer, measured in the same run on the same weights: transformers' ``LongcatFlashForCausalLM``
(our model saved with ``save_pretrained``, loaded with transformers' ``from_pretrained``; its
default SDPA attention, KV cache on), ``generate(do_sample=False, min_new_tokens=max_new_tokens)``
against ``LLM.generate(temperature=0, ignore_eos=True)``; the first generated tokens of both are
checked to agree before anything is timed.

- decode tokens/s at batch 1, 8, 32: ``B * (G - 1) / (time(G tokens) - time(1 token))`` for both
  (the prefill and the first token cancel out), median of repeats, in wall time and in process
  CPU time (steadier on a shared machine);
- prefill tokens/s: one prompt through the engine (``max_tokens=1``) against transformers'
  forward of the same prompt with ``logits_to_keep=1`` (as its generate's prefill);
- one batch-8 decode step split into: the model call and the engine around it (timers), and
  the time inside native code (torch ops from ``torch.profiler`` plus the longcat kernels, timed
  at their ``longcat._C`` entry points, the ops on their eager fast path as in unprofiled
  steps); Python overhead = the non-native share of the profiled run (profiler overhead
  included: the headline, an upper bound), and step - native per step;
- the 560B shape on the meta device: parameter bytes (bf16) and KV-cache bytes per token per
  layer, MLA's 576 cached values per sublayer against a GQA equivalent (8 KV heads x 128 dims,
  K and V).

Threads: both sides use ``LONGCAT_BENCH_THREADS`` threads (torch and longcat kernels; default:
torch's current count). dtype: ``LONGCAT_BENCH_DTYPE`` for both sides, default bfloat16 (on the
AVX512-BF16 CPU it was measured on, bf16 was faster than fp32 for both sides); the token
agreement with transformers is checked in float32 and in the bench dtype.
"""
from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
import time

import torch

import longcat
from longcat.bench.common import BenchResult, machine_info

SAMPLE_PROMPTS = 4  # rows compared token by token against transformers before timing


def _interleaved_medians(fns: dict, reps: int) -> tuple[dict, dict]:
    """Median wall seconds and median process-CPU seconds per call of each fn, the fns taking
    turns in every repeat (so a change in the machine's load hits both sides alike; the CPU time
    is what a call costs whoever else runs on the shared cores)."""
    wall: dict = {k: [] for k in fns}
    cpu: dict = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
    return ({k: statistics.median(v) for k, v in wall.items()}, {k: statistics.median(v) for k, v in cpu.items()})


@contextlib.contextmanager
def _timed_kernels():
    """Accumulate the wall time spent inside each ``longcat._C`` function (the compiled kernels)."""
    from collections import Counter

    from longcat import _C

    total: Counter = Counter()
    originals = {}
    for name in dir(_C):
        fn = getattr(_C, name)
        if name.startswith("_") or not callable(fn) or isinstance(fn, type):
            continue

        def wrapped(*a, __fn=fn, __name=name, **k):
            t0 = time.perf_counter()
            try:
                return __fn(*a, **k)
            finally:
                total[__name] += time.perf_counter() - t0

        originals[name] = fn
        setattr(_C, name, wrapped)
    try:
        yield total
    finally:
        for name, fn in originals.items():
            setattr(_C, name, fn)


def _step_split(llm, prompts, steps: int) -> dict:
    """Median wall time of a decode step, of the model call inside it, and the native time."""
    from torch.profiler import ProfilerActivity, profile

    from longcat.engine import SamplingParams
    from longcat.ops._common import ops_unrecorded_in_profiler

    engine = llm.engine
    for p in prompts:
        engine.add_request(p, SamplingParams(temperature=0, max_tokens=4 * steps + 8, ignore_eos=True))
    engine.step()  # prefill
    model_times: list[float] = []
    forward = engine.model.forward_paged

    def timed_forward(batch, caches):
        t0 = time.perf_counter()
        out = forward(batch, caches)
        model_times.append(time.perf_counter() - t0)
        return out

    engine.model.forward_paged = timed_forward
    try:
        for _ in range(2):
            engine.step()
        model_times.clear()
        step_times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            engine.step()
            step_times.append(time.perf_counter() - t0)
        # The longcat ops keep their eager fast path under the profiler (as in the unprofiled
        # steps; their kernels are timed at the _C entry points), so the profiled run does not
        # add the dispatcher's Python around each op call to the step.
        with _timed_kernels() as kernel_total, ops_unrecorded_in_profiler(), \
                profile(activities=[ProfilerActivity.CPU]) as prof:
            t0 = time.perf_counter()
            for _ in range(steps):
                engine.step()
            profiled_wall = time.perf_counter() - t0
    finally:
        del engine.model.forward_paged
        for rid in list(engine.requests):
            engine.abort(rid)
    events = prof.key_averages()
    # longcat ops also show as profiler events (``longcat::*``) while a profiler records; their
    # kernels are timed at the ``_C`` entry points instead, so they are not counted twice.
    torch_ops = sum(e.self_cpu_time_total for e in events if not e.key.startswith("longcat::")) / 1e6
    matmuls = sum(e.self_cpu_time_total for e in events if e.key in ("aten::mm", "aten::bmm", "aten::addmm")) / 1e6
    kernels = sum(kernel_total.values())
    native_share = (torch_ops + kernels) / profiled_wall
    step = statistics.median(step_times)
    model = statistics.median(model_times[:steps])
    # Where the native time goes, in ms per step of the profiled run (profiler overhead included).
    breakdown = {"torch matmuls": matmuls, "other torch ops": torch_ops - matmuls}
    breakdown.update({f"longcat {k}": v for k, v in kernel_total.most_common(4)})
    # Python overhead, two estimates: the non-native share of the profiled run applied to the
    # step (charges the profiler's own overhead to Python: an upper bound), and the step minus
    # the native time per step (the profiled run's torch op and kernel times).
    native_per_step = (torch_ops + kernels) / steps
    return {"step": step, "model": model, "engine": step - model, "native": step * native_share,
            "python": step * (1 - native_share), "python_direct": max(step - native_per_step, 0.0),
            "native_breakdown_ms": {k: round(v / steps * 1e3, 2) for k, v in breakdown.items()}}


def _meta_560b() -> dict:
    from longcat.models import LongcatFlashConfig, LongcatFlashForCausalLM

    config = LongcatFlashConfig.from_preset("longcat-flash")
    model = LongcatFlashForCausalLM(config, dtype=torch.bfloat16, device="meta")
    params = model.num_parameters()
    caches = model.make_kv_caches(1, 1, device="meta")  # one token, every attention sublayer
    mla_per_token = sum(c.numel() * c.element_size() for c in caches)
    per_layer = mla_per_token / config.num_layers
    gqa_per_sublayer = 8 * 128 * 2 * 2  # 8 KV heads x 128 dims x (K, V) x bf16 bytes
    gqa_per_layer = gqa_per_sublayer * len(caches) / config.num_layers
    return {"params": params, "param_bytes": params * 2, "kv_per_token": mla_per_token,
            "kv_per_layer": per_layer, "gqa_per_layer": gqa_per_layer, "sublayers": len(caches)}


def run(device: str = "cpu", quick: bool = False) -> BenchResult:
    from transformers import LongcatFlashForCausalLM as HFModel

    from longcat.engine import LLM, SamplingParams
    from longcat.models import LongcatFlashConfig, LongcatFlashForCausalLM

    threads = int(os.environ.get("LONGCAT_BENCH_THREADS", torch.get_num_threads()))
    torch.set_num_threads(threads)
    longcat.set_num_threads(threads)
    dtype = getattr(torch, os.environ.get("LONGCAT_BENCH_DTYPE", "bfloat16"))
    batches = [1, 8] if quick else [1, 8, 32]
    prompt_len, gen = (16, 8) if quick else (64, 32)
    prefill_len = 128 if quick else 512
    reps = 1 if quick else 5

    load_start = os.getloadavg()[0]
    torch.manual_seed(0)
    config = LongcatFlashConfig.from_preset("small")
    master = LongcatFlashForCausalLM(config, dtype=torch.float32, device=device)
    master.reset_parameters(0.05)  # sharper than the 0.02 init: greedy tokens are not near-ties
    g = torch.Generator().manual_seed(1)

    def prompts(b, n):
        return torch.randint(3, config.vocab_size, (b, n), generator=g)

    def make_ours(model):
        return LLM(model.eval(), max_model_len=max(prefill_len, prompt_len + gen) + 8, max_num_seqs=max(batches),
                   max_num_batched_tokens=max(2048, max(batches) * prompt_len, prefill_len))

    def ours_generate(llm, ids, n):
        return llm.generate(ids.tolist(), SamplingParams(temperature=0, max_tokens=n, ignore_eos=True))

    @torch.inference_mode()
    def hf_generate(hf, ids, n):
        return hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                           do_sample=False)

    def agreement(llm, hf):
        check = prompts(SAMPLE_PROMPTS, prompt_len)
        mine = [o.outputs[0].token_ids for o in ours_generate(llm, check, 4)]
        theirs = hf_generate(hf, check, 4)[:, prompt_len:].tolist()
        return (f"{sum(a[0] == b[0] for a, b in zip(mine, theirs))}/{SAMPLE_PROMPTS} first tokens, "
                f"{sum(a == b for a, b in zip(mine, theirs))}/{SAMPLE_PROMPTS} all 4")

    with tempfile.TemporaryDirectory() as tmp:
        master.save_pretrained(tmp, zero_expert_slots="auto")
        # Same weights on both sides: checked in float32 first, then timed in the bench dtype
        # (both loaded from the checkpoint, so both keep the router in float32).
        hf = HFModel.from_pretrained(tmp, dtype=torch.float32).to(device).eval()
        hf.generation_config.pad_token_id = config.pad_token_id
        agree_fp32 = agreement(make_ours(master), hf)
        if dtype != torch.float32:
            del hf
            hf = HFModel.from_pretrained(tmp, dtype=dtype).to(device).eval()
            hf.generation_config.pad_token_id = config.pad_token_id
            ours = LongcatFlashForCausalLM.from_pretrained(tmp, dtype=dtype, device=device)
        else:
            ours = master
    llm = make_ours(ours)
    agree = agreement(llm, hf)
    result = BenchResult(
        area="engine",
        title=(f"Engine on {device}, small preset ({ours.num_parameters() / 1e6:.0f}M params), "
               f"{str(dtype).replace('torch.', '')}, "
               f"{threads} thread(s): greedy decode / prefill vs transformers generate"),
        columns=["case", "batch", "tokens", "longcat", "transformers", "vs_transformers", "unit"])
    for b in batches:
        ids = prompts(b, prompt_len)
        ours_generate(llm, ids, 2), hf_generate(hf, ids, 2)  # warm-up
        wall, cpu = _interleaved_medians({
            "ours_full": lambda: ours_generate(llm, ids, gen), "hf_full": lambda: hf_generate(hf, ids, gen),
            "ours_first": lambda: ours_generate(llm, ids, 1), "hf_first": lambda: hf_generate(hf, ids, 1)}, reps)
        for case, t, unit in (("decode", wall, "tokens/s"), ("decode (process CPU time)", cpu, "tokens/CPU-s")):
            mine_tps = b * (gen - 1) / (t["ours_full"] - t["ours_first"])
            theirs_tps = b * (gen - 1) / (t["hf_full"] - t["hf_first"])
            result.add(case=case, batch=b, tokens=f"{prompt_len}+{gen}", longcat=mine_tps, transformers=theirs_tps,
                       vs_transformers=mine_tps / theirs_tps, unit=unit)

    ids = prompts(1, prefill_len)
    with torch.inference_mode():
        hf(ids, logits_to_keep=1), ours_generate(llm, ids, 1)  # warm-up
        t, _ = _interleaved_medians({"ours": lambda: ours_generate(llm, ids, 1),
                                     "hf": lambda: hf(ids, logits_to_keep=1)}, reps)
    t_ours, t_hf = t["ours"], t["hf"]
    result.add(case="prefill", batch=1, tokens=prefill_len, longcat=prefill_len / t_ours,
               transformers=prefill_len / t_hf, vs_transformers=t_hf / t_ours, unit="tokens/s")

    splits = {}
    for b in (1, 8):
        split = splits[b] = _step_split(llm, prompts(b, prompt_len).tolist(), steps=4 if quick else 10)
        for part in ("step", "model", "engine", "native", "python"):
            result.add(case=f"decode step b{b}: {part}", batch=b, longcat=split[part] * 1e3, unit="ms")
        result.add(case=f"decode step b{b}: python overhead", batch=b, longcat=100 * split["python"] / split["step"],
                   unit="% of step")
        result.add(case=f"decode step b{b}: python overhead (step - native)", batch=b,
                   longcat=100 * split["python_direct"] / split["step"], unit="% of step")
    split = splits[8]
    python_share = split["python"] / split["step"]

    meta = _meta_560b()
    result.add(case="560B: parameters (bf16)", longcat=meta["param_bytes"] / 1e9, unit="GB")
    result.add(case="560B: KV per token per layer (MLA vs GQA-8x128)", longcat=meta["kv_per_layer"],
               transformers=meta["gqa_per_layer"], vs_transformers=meta["gqa_per_layer"] / meta["kv_per_layer"],
               unit="bytes (bf16)")
    result.add(case="560B: KV per token, all layers", longcat=meta["kv_per_token"] / 1024, unit="KiB (bf16)")
    def ratio(case, b):
        return next(r for r in result.rows if r["case"] == case and r["batch"] == b)["vs_transformers"]

    decode8, decode1 = ratio("decode", 8), ratio("decode", 1)
    cpu8, cpu1 = ratio("decode (process CPU time)", 8), ratio("decode (process CPU time)", 1)
    result.context = {
        "machine": machine_info(device),
        "dtype": str(dtype).replace("torch.", ""),
        "loadavg_start_end": [round(load_start, 2), round(os.getloadavg()[0], 2)],
        "threads": threads,
        "agreement_with_transformers_fp32": agree_fp32,
        f"agreement_with_transformers_{str(dtype).replace('torch.', '')}": agree,
        "decode_step_b1_native_ms": splits[1]["native_breakdown_ms"],
        "decode_step_b8_native_ms": splits[8]["native_breakdown_ms"],
        "560B_params": meta["params"],
        "560B_attention_sublayers": meta["sublayers"],
        "targets": (f"decode vs transformers: b8 {decode8:.2f}x wall / {cpu8:.2f}x CPU time (target >= 3), "
                    f"b1 {decode1:.2f}x wall / {cpu1:.2f}x CPU time (target >= 1.5); python overhead at b8 "
                    f"{100 * python_share:.0f}% of the profiled run, "
                    f"{100 * split['python_direct'] / split['step']:.0f}% as step - native (target < 25%)"),
        "logprobs": "raw (log_softmax of the model's float32 logits, vLLM's raw_logprobs)",
    }
    return result


if __name__ == "__main__":
    import sys

    from longcat.bench.common import report

    report(run(quick="--quick" in sys.argv))
