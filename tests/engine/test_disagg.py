"""Prefill/decode disaggregation over two CPU processes (gloo): the decode worker's output equals
the single-process engine's, chunk sizes that do not divide the prompt included; a prefill peer
that dies in the middle of a handoff fails that request only."""
import gc
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from toy_model import ToyPagedModel

from longcat.engine import EngineArgs, LLMEngine, SamplingParams
from longcat.engine.disagg import DecodeWorker, PrefillWorker

PAGE = 4


def _requests():
    g = torch.Generator().manual_seed(11)
    prompts = [torch.randint(3, 64, (n,), generator=g).tolist() for n in (21, 9, 4, 12, 8, 30)]
    # The first token is sampled from the prefill side's logits: greedy with logprobs, seeded,
    # n > 1 (the other samples fork there), and a request that ends with that token.
    params = [SamplingParams(temperature=0, max_tokens=10, ignore_eos=True, logprobs=1),
              SamplingParams(temperature=0.8, seed=3, max_tokens=8, ignore_eos=True),
              SamplingParams(temperature=0, max_tokens=6, ignore_eos=True),
              SamplingParams(temperature=0.9, seed=5, n=3, max_tokens=5, ignore_eos=True, logprobs=2),
              SamplingParams(temperature=0, max_tokens=1, ignore_eos=True),
              SamplingParams(temperature=1.0, seed=4, top_k=5, max_tokens=7, ignore_eos=True)]
    return [(f"r{i}", p, s) for i, (p, s) in enumerate(zip(prompts, params))]


def _engine():
    return LLMEngine(ToyPagedModel(vocab_size=64, seed=0), None,
                     EngineArgs(page_size=PAGE, num_pages=64, max_num_batched_tokens=32))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _prefill(port: int, die_mid_request: bool) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=2)
    worker = PrefillWorker(ToyPagedModel(vocab_size=64, seed=0), page_size=PAGE, chunk_pages=3)
    reqs = _requests()
    for rid, prompt, params in reqs[:-1]:
        worker.send(prompt, params, rid)
    if die_mid_request:
        # The last request's header, prompt and first chunk go out, then the process dies.
        send_chunk = dist.isend

        def send_then_die(tensor, dst):
            send_chunk(tensor, dst).wait()
            os._exit(0)

        dist.isend = send_then_die
    worker.send(reqs[-1][1], reqs[-1][2], reqs[-1][0])
    worker.stop()
    gc.collect()
    dist.destroy_process_group()


def _decode(port: int, results) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=1, world_size=2)
    engine = _engine()
    out = DecodeWorker(engine, prefill_rank=0).serve()
    results.put({rid: (c.error, [(o.token_ids, o.logprobs) for o in c.outputs]) for rid, c in out.items()})
    results.put(engine.allocator.num_free == engine.num_pages)
    gc.collect()
    if dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception:
            pass


def _run_pair(die: bool):
    ctx = mp.get_context("spawn")
    port = _free_port()
    results = ctx.Queue()
    procs = [ctx.Process(target=_prefill, args=(port, die)), ctx.Process(target=_decode, args=(port, results))]
    for p in procs:
        p.start()
    got, no_leak = results.get(timeout=120), results.get(timeout=30)
    for p in procs:
        p.join(timeout=60)
    return got, no_leak


def _single_process():
    engine = _engine()
    reqs = [engine.add_request(p, s, request_id=rid) for rid, p, s in _requests()]
    while engine.has_unfinished():
        engine.step()
    return {r.request_id: [(o.token_ids, o.logprobs) for o in r.outputs] for r in reqs}


def _same(a, b):
    """Same tokens; logprobs equal up to float rounding (the prefill side computes the last
    prompt token in a batch of its own)."""
    for (ta, la), (tb, lb) in zip(a, b):
        assert ta == tb
        if la is not None:
            for x, y in zip(la, lb):
                assert x.keys() == y.keys() and all(abs(x[k] - y[k]) < 1e-4 for k in x)


def test_decode_output_equals_single_process_and_a_dying_peer_fails_only_its_request():
    # One pair of processes (starting them dominates the time): five requests are handed off,
    # the prefill process dies after the first chunk of the sixth. The clean shutdown path
    # (PrefillWorker.stop) runs in `longcat bench kv`.
    want = _single_process()
    got, no_leak = _run_pair(die=True)
    assert set(got) == set(want)
    for rid in ("r0", "r1", "r2", "r3", "r4"):  # handed off before the peer died: served to the end
        assert got[rid][0] is None
        _same(got[rid][1], want[rid])
    assert [len(t) for t, _ in got["r3"][1]] == [5, 5, 5] and len(got["r4"][1][0][0]) == 1
    assert "prefill peer was lost" in got["r5"][0]
    assert no_leak  # the failed request's pages are free again


def test_thread_counts_are_validated():
    with pytest.raises(ValueError, match=r"PrefillWorker: 'num_threads' must be None or an int >= 1, got 0"):
        PrefillWorker(ToyPagedModel(vocab_size=64, seed=0), page_size=PAGE, num_threads=0)
    with pytest.raises(ValueError, match=r"DecodeWorker: 'num_threads' must be None or an int >= 1, got True"):
        DecodeWorker(_engine(), num_threads=True)
