"""LongCat-Flash model benchmark: ``forward_paged`` prefill and decode steps against transformers'
``LongcatFlashForCausalLM`` with its ``DynamicCache`` (the peer), same weights, same run.

Per preset, dtype and batch: a prefill of ``batch`` prompts of 128 tokens in one step, and a
decode step (one token per sequence on top of them). The peer's decode step is its forward of
one token per sequence with the cache, then ``crop(-1)`` so every timed step sees the same
context. ``overhead_bound`` estimates the fixed per-step cost (Python, op dispatch, kernel
launches): the decode step of a skeleton model with the same layers and ops but near-zero
compute (hidden 64, one head, 8-wide experts), as a share of the real step; an upper bound,
since the skeleton still computes a little. On a shared machine the wall-clock medians include
time the process waits for a core; the ``*_cpu_ms`` columns (process CPU time, medians) and
the load average in the context tell how much.
"""
from __future__ import annotations

import inspect
import os
import statistics
import tempfile
import time

import torch

from longcat.bench.common import BenchResult, machine_info, measure
from longcat.models import LongcatFlashConfig, LongcatFlashForCausalLM, PagedBatch, count_parameters

PROMPT = 128
PAGE = 64


def _batches(B: int, P: int, vocab: int, device: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (B, P), generator=g)
    pages_per = -(-(P + 1) // PAGE)
    bt = torch.arange(B * pages_per, dtype=torch.int32).view(B, pages_per)
    prefill = PagedBatch(input_ids=ids.reshape(-1), positions=torch.arange(P).repeat(B),
                         cu_seqlens_q=torch.arange(0, B * P + 1, P, dtype=torch.int32),
                         seq_lens=torch.full((B,), P, dtype=torch.int32), block_table=bt,
                         logits_indices=torch.arange(P - 1, B * P, P), max_q_len=P)
    decode = PagedBatch(input_ids=ids[:, -1].clone(), positions=torch.full((B,), P),
                        cu_seqlens_q=torch.arange(B + 1, dtype=torch.int32),
                        seq_lens=torch.full((B,), P + 1, dtype=torch.int32), block_table=bt,
                        logits_indices=torch.arange(B), max_q_len=1)
    prefill, decode = (PagedBatch(**{k: (v.to(device) if isinstance(v, torch.Tensor) else v)
                                     for k, v in vars(b).items()}) for b in (prefill, decode))
    return ids.to(device), prefill, decode, B * pages_per


def _cpu_ms(fn, iters: int = 20) -> float:
    """Median process CPU time per call in ms (what the call costs, whoever else runs)."""
    fn()
    times = []
    for _ in range(iters):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return statistics.median(times) * 1e3


def _ours(model, B, min_time, device):
    ids, prefill, decode, pages = _batches(B, PROMPT, model.config.vocab_size, device)
    caches = model.make_kv_caches(pages, PAGE)
    t_prefill = measure(lambda: model.forward_paged(prefill, caches), device, min_time, warmup=1, min_iters=3)
    t_decode = measure(lambda: model.forward_paged(decode, caches), device, min_time)
    cpu = _cpu_ms(lambda: model.forward_paged(decode, caches)) if device == "cpu" else float("nan")
    return ids, t_prefill, t_decode, cpu


def _peer(hf, ids, min_time, device):
    B, P = ids.shape
    # transformers 5 renamed past_key_values to cache
    key = "cache" if "cache" in inspect.signature(hf.forward).parameters else "past_key_values"
    with torch.no_grad():
        t_prefill = measure(lambda: hf(input_ids=ids, use_cache=True), device, min_time, warmup=1, min_iters=3)
        cache = getattr(hf(input_ids=ids, use_cache=True), key)
        last, pos = ids[:, -1:], torch.full((B, 1), P, device=ids.device)

        def step():
            hf(input_ids=last, position_ids=pos, use_cache=True, **{key: cache})
            cache.crop(-1)

        t_decode = measure(step, device, min_time)
        cpu = _cpu_ms(step) if device == "cpu" else float("nan")
    return t_prefill, t_decode, cpu


def _skeleton(config: LongcatFlashConfig) -> LongcatFlashConfig:
    return LongcatFlashConfig.from_dict({**config.to_dict(), "hidden_size": 64, "ffn_hidden_size": 64,
                                         "q_lora_rank": 32, "num_attention_heads": 1, "num_key_value_heads": 1,
                                         "qk_nope_head_dim": 8, "qk_head_dim": 72, "v_head_dim": 8,
                                         "expert_ffn_hidden_size": 8})


def run(device: str = "cpu", quick: bool = False) -> BenchResult:
    try:
        from transformers import LongcatFlashForCausalLM as HFModel
    except ImportError as e:
        raise ImportError("bench model: the peer is transformers' LongcatFlashForCausalLM; "
                          "pip install 'longcat[bench]' (transformers >= 4.57)") from e

    min_time = 0.3 if quick else 1.0
    presets = ["tiny"] if quick else ["tiny", "small"]
    dtypes = [torch.bfloat16] if quick else [torch.bfloat16, torch.float32]
    result = BenchResult(
        area="model",
        title=f"LongCat-Flash forward_paged vs transformers ({device}, prompt {PROMPT}, medians)",
        columns=["preset", "dtype", "batch", "params_M", "prefill_ms", "hf_prefill_ms", "prefill_speedup",
                 "decode_ms", "hf_decode_ms", "decode_speedup", "decode_tok/s", "decode_cpu_ms", "hf_decode_cpu_ms",
                 "cpu_speedup", "overhead_bound"],
        context={"machine": machine_info(device), "loadavg_start": os.getloadavg()[0],
                 "note": "hf_* = transformers LongcatFlashForCausalLM (eager attention, DynamicCache) with the "
                         "same weights; overhead_bound = skeleton-model decode step / decode step (CPU times on cpu)"},
    )
    for preset in presets:
        config = LongcatFlashConfig.from_preset(preset)
        for dtype in dtypes:
            torch.manual_seed(0)
            model = LongcatFlashForCausalLM(config, dtype=dtype).eval()
            skeleton = LongcatFlashForCausalLM(_skeleton(config), dtype=dtype).eval().to(device)
            with tempfile.TemporaryDirectory() as folder:
                model.save_pretrained(folder, zero_expert_slots="auto")
                hf = HFModel.from_pretrained(folder, dtype=dtype, attn_implementation="eager").eval().to(device)
            model.to(device)
            for B in ((1, 8) if not quick else (1,)):
                ids, t_pre, t_dec, c_dec = _ours(model, B, min_time, device)
                h_pre, h_dec, hc_dec = _peer(hf, ids, min_time, device)
                _, _, s_dec, sc_dec = _ours(skeleton, B, min_time, device)
                bound = sc_dec / c_dec if device == "cpu" else s_dec / t_dec
                result.add(preset=preset, dtype=str(dtype).replace("torch.", ""), batch=B,
                           params_M=count_parameters(config)["total"] / 1e6,
                           prefill_ms=t_pre * 1e3, hf_prefill_ms=h_pre * 1e3, prefill_speedup=h_pre / t_pre,
                           decode_ms=t_dec * 1e3, hf_decode_ms=h_dec * 1e3, decode_speedup=h_dec / t_dec,
                           **{"decode_tok/s": B / t_dec}, decode_cpu_ms=c_dec, hf_decode_cpu_ms=hc_dec,
                           cpu_speedup=hc_dec / c_dec, overhead_bound=min(1.0, bound))
    result.context["loadavg_end"] = os.getloadavg()[0]
    return result


def main(argv: list[str] | None = None) -> None:
    from longcat.cli import main as cli_main

    cli_main(["bench", "model", *(argv or [])])
