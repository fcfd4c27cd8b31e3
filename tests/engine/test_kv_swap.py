"""The host tier of the KV cache: chunked background copies with completion events, the
engine's swap-out / prefetched swap-in under memory pressure (output identical to an engine that
never swaps, nothing recomputed), the watermark, a full host tier, aborts and weight updates."""
import sys
import time

import pytest
import torch
from toy_model import ToyPagedModel, greedy_reference

from longcat.engine import EngineArgs, LLMEngine, SamplingParams
from longcat.engine.kv_swap import HostKVTier, HostPoolFull
from longcat import _C
from longcat.engine.kv_transfer import ChunkedCopier
from longcat.ops._common import dl


def _prompts(n, lengths, seed=0, vocab=64):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, vocab, (lengths[i % len(lengths)],), generator=g).tolist() for i in range(n)]


def _engine(model, **kw):
    kw.setdefault("page_size", 4)
    kw.setdefault("max_num_batched_tokens", 64)
    return LLMEngine(model, None, EngineArgs(**kw))


def _run(engine, max_steps=2000):
    for _ in range(max_steps):
        if not engine.has_unfinished():
            return
        engine.step()
    raise AssertionError("engine did not finish")


def _generate(engine, prompts, params):
    reqs = [engine.add_request(p, prm) for p, prm in zip(prompts, params)]
    _run(engine)
    return [[(o.token_ids, o.logprobs) for o in r.outputs] for r in reqs]


def _layers(pages, n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(pages, 4, 1, 576, generator=g) for _ in range(n)]


# ---- chunked copies ----------------------------------------------------------------------------

def test_chunked_copier_moves_every_layer_chunk_by_chunk():
    src, dst = _layers(20, seed=1), _layers(30, seed=2)
    want = [d.clone() for d in dst]
    s_ids = [7, 3, 19, 0, 4, 5, 6, 11, 2]
    d_ids = [29, 0, 1, 2, 3, 10, 11, 12, 5]
    for w, s in zip(want, src):
        w[d_ids] = s[s_ids]
    copier = ChunkedCopier(src, dst, chunk_pages=4, copy_threads=1)
    events = copier.copy(s_ids, d_ids)
    assert [e.pages for e in events] == [4, 4, 1]
    for e in events:
        e.wait()
        assert e.done()
    assert all(torch.equal(d, w) for d, w in zip(dst, want))
    copier.close()


def test_chunked_copier_validates_the_whole_transfer_first():
    src, dst = _layers(8, seed=3), _layers(8, seed=4)
    before = [d.clone() for d in dst]
    copier = ChunkedCopier(src, dst, chunk_pages=2)
    with pytest.raises(ValueError, match=r"'dst_ids' must hold page ids in \[0, 8\)"):
        copier.copy([0, 1, 2, 3], [0, 1, 2, 8])  # the last chunk is bad: no chunk may move
    with pytest.raises(ValueError, match=r"'dst_ids' must not repeat a destination page"):
        copier.copy([0, 1, 2], [4, 5, 4])
    with pytest.raises(ValueError, match=r"'src_ids' holds a page id outside int32"):
        copier.copy([2**32 + 1], [0])  # would wrap to page 1
    with pytest.raises(ValueError, match=r"'dst_ids' holds a page id outside int32"):
        copier.copy(torch.tensor([0]), torch.tensor([2**32 + 1]))
    with pytest.raises(TypeError, match=r"'src_ids' must hold integer page ids, got torch.float32"):
        copier.copy(torch.tensor([0.0]), [0])
    with pytest.raises(TypeError, match=r"'dst_ids' must hold integer page ids, got torch.float32"):
        copier.copy([0], [1.5])
    with pytest.raises(ValueError, match=r"'src_ids' must hold int32 page ids"):
        copier.copy([2**70], [0])
    assert copier.copy([], []) == []
    with pytest.raises(ValueError, match=r"'dst_ids' must hold page ids in \[0, 8\) .*got -1"):
        copier.copy(torch.tensor([0], dtype=torch.int64), torch.tensor([-1], dtype=torch.int16))
    with pytest.raises(ValueError, match=r"'src_pools\[0\]' must have size 576"):
        ChunkedCopier([torch.zeros(8, 4, 1, 512)], [torch.zeros(8, 4, 1, 576)]).copy([0], [0])
    with pytest.raises(ValueError, match=r"'chunk_pages' must be an int >= 1"):
        ChunkedCopier(src, dst, chunk_pages=0)
    with pytest.raises(ValueError, match=r"'copy_threads' must be an int >= 0 \(0: the whole kernel pool\), got -1"):
        ChunkedCopier(src, dst, copy_threads=-1)
    assert all(torch.equal(d, b) for d, b in zip(dst, before))
    copier.close()


def test_chunked_copier_worker_never_needs_the_gil():
    # The caller spins in Python without releasing the GIL, and with a switch interval longer
    # than the test: a worker that needed the interpreter (to run a wrapper or complete an
    # event) could not finish, the C++ worker does.
    src, dst = _layers(40, seed=5), _layers(40, seed=6)
    copier = ChunkedCopier(src, dst, chunk_pages=4, copy_threads=1)
    copier.copy([0], [0])[0].wait()  # the worker is started
    prev = sys.getswitchinterval()
    sys.setswitchinterval(30.0)
    try:
        events = copier.copy(list(range(40)), list(range(39, -1, -1)))
        deadline = time.perf_counter() + 10.0
        while not events[-1].done() and time.perf_counter() < deadline:
            pass
        finished = events[-1].done()
    finally:
        sys.setswitchinterval(prev)
    assert finished
    assert all(e.done() for e in events)
    assert all(torch.equal(d, s.flip(0)) for d, s in zip(dst, src))
    copier.close()


def ids(xs):
    return dl(torch.tensor(xs, dtype=torch.int32))


def test_copy_queue_checks_the_transfer_with_kv_copy_blocks_rules():
    # The queue itself (longcat::KvCopyQueue). submit refuses a bad transfer with nothing
    # queued, with kv_copy_blocks' own checks and messages: ids in range of every layer's pool,
    # no destination twice in the whole transfer, and within one pool no chunk (one copy) that
    # reads a page it writes; a page a chunk writes may be read by a later chunk.
    pools = _layers(10, seed=7)
    want = [p.clone() for p in pools]
    for w in want:
        w[[6, 7]] = w[[0, 1]].clone()
        w[[8, 9]] = w[[6, 7]].clone()  # chunk 2 reads what chunk 1 wrote
    q = _C.KvCopyQueue([dl(t) for t in pools], [dl(t) for t in pools], 0, 1)
    with pytest.raises(ValueError, match=r"'src_ids' reads page 2 at index 2, which dst_ids\[3\] writes in the same pool"):
        q.submit(ids([0, 1, 2, 3]), ids([6, 7, 3, 2]), 2)  # chunk 2 swaps pages 2 and 3 in place
    tickets = q.submit(ids([0, 1, 6, 7]), ids([6, 7, 8, 9]), 2)
    assert tickets == [1, 2]
    for t in tickets:
        q.wait(t)
    assert all(q.done(t) for t in tickets)
    assert all(torch.equal(p, w) for p, w in zip(pools, want))
    with pytest.raises(ValueError, match=r"'ticket' must be a ticket of this queue, in \[1, 2\], got 3"):
        q.wait(3)
    bad = [(([0, 1], [2]), r"'dst_ids' must have size 2 .*one destination per source"),
           (([0, 10], [1, 2]), r"'src_ids' must hold page ids in \[0, 10\) \(src_pools\[0\].shape\[0\]\), got 10 at index 1"),
           (([0], [-1]), r"'dst_ids' must hold page ids in \[0, 10\) .*got -1 at index 0"),
           (([0, 1, 2], [5, 6, 5]), r"'dst_ids' must not repeat a destination page; page 5 appears at indices 0 and 2"),
           (([0, 1, 2, 3, 4], [5, 6, 7, 8, 5]), r"page 5 appears at indices 0 and 4")]  # across chunks too
    for (s_ids, d_ids), msg in bad:
        with pytest.raises(ValueError, match=msg):
            q.submit(ids(s_ids), ids(d_ids), 2)
    with pytest.raises(TypeError, match=r"'src_ids' must have dtype int32"):
        q.submit(dl(torch.tensor([0])), ids([1]), 2)
    with pytest.raises(ValueError, match=r"'chunk_pages' must be >= 1, got 0"):
        q.submit(ids([0]), ids([1]), 0)
    assert q.submit(ids([]), ids([]), 2) == []
    q.close()
    q.close()  # idempotent
    with pytest.raises(RuntimeError, match=r"the queue is closed"):
        q.submit(ids([0]), ids([1]), 2)
    assert all(torch.equal(p, w) for p, w in zip(pools, want))  # nothing refused moved a byte
    with pytest.raises(ValueError, match=r"'copy_threads' is out of range"):
        _C.KvCopyQueue([dl(t) for t in pools], [dl(t) for t in pools], 0, -1)
    with pytest.raises(ValueError, match=r"'src_pools' and 'dst_pools' must hold the same number"):
        _C.KvCopyQueue([dl(t) for t in pools], [dl(pools[0])], 0, 1)
    with pytest.raises(ValueError, match=r"'dst_pools\[0\]' must have size 4 in dimension 1 \(src_pools\[0\].shape\[1\]"):
        _C.KvCopyQueue([dl(pools[0])], [dl(torch.zeros(8, 8, 1, 576))], 0, 1)
    with pytest.raises(TypeError, match=r"'dst_pools\[1\]' must have the dtype of 'src_pools\[1\]'"):
        _C.KvCopyQueue([dl(t) for t in pools], [dl(pools[0]), dl(pools[1].double())], 0, 1)
    with pytest.raises(ValueError, match=r"'method' must be Auto or CpuThreads for two host pools"):
        _C.KvCopyQueue([dl(t) for t in pools], [dl(t) for t in pools], 2, 1)
    # A smaller pool in any layer bounds the ids of all.
    q = _C.KvCopyQueue([dl(pools[0]), dl(torch.zeros(4, 4, 1, 576))], [dl(t) for t in _layers(10)], 0, 1)
    with pytest.raises(ValueError, match=r"'src_ids' must hold page ids in \[0, 4\) \(src_pools\[1\].shape\[0\]\)"):
        q.submit(ids([4]), ids([0]), 1)
    q.close()


def test_close_runs_the_queued_chunks():
    src, dst = _layers(64, seed=9), _layers(64, seed=10)
    copier = ChunkedCopier(src, dst, chunk_pages=3)
    events = copier.copy(list(range(64)), list(range(64)))
    copier.close()  # without a wait: every queued chunk still lands
    assert all(e.done() for e in events)
    assert all(torch.equal(d, s) for d, s in zip(dst, src))
    events[-1].wait()  # an event outlives its copier's worker


def test_host_tier_round_trip_is_bit_exact():
    device = _layers(10, seed=7)
    saved = [d[[1, 4, 7]].clone() for d in device]
    tier = HostKVTier(device, num_host_pages=6, chunk_pages=2)
    host = tier.swap_out([1, 4, 7])
    for d in device:
        d[[1, 4, 7]] = float("nan")  # the device pages are reused meanwhile
    tier.start_swap_in(seq_id=0, host_pages=host, device_pages=[9, 0, 2])
    tier.finish_swap_in(0, host, tokens=12)
    assert all(torch.equal(d[[9, 0, 2]], s) for d, s in zip(device, saved))
    assert tier.num_free == 6 and tier.stats.tokens_recompute_avoided == 12
    assert tier.stats.bytes_in == tier.stats.bytes_out == 3 * 2 * 4 * 576 * 4
    tier.close()


def test_host_tier_full_copies_nothing():
    device = _layers(8, seed=5)
    tier = HostKVTier(device, num_host_pages=3, chunk_pages=2)
    host = tier.swap_out([5, 6])
    assert tier.num_free == 1
    assert all(torch.equal(h[host], d[[5, 6]]) for h, d in zip(tier.host_caches, device))
    before = [h.clone() for h in tier.host_caches]
    with pytest.raises(HostPoolFull, match="2 pages to swap out, 1 of 3 free"):
        tier.swap_out([0, 1])
    assert tier.num_free == 1 and all(torch.equal(h, b) for h, b in zip(tier.host_caches, before))
    tier.close()


# ---- the engine --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def workload():
    prompts = _prompts(4, [10, 13, 7, 12], seed=3)
    params = [SamplingParams(temperature=0, max_tokens=10, ignore_eos=True, logprobs=2),
              SamplingParams(temperature=0.9, seed=5, max_tokens=9, ignore_eos=True, logprobs=0),
              SamplingParams(temperature=0, max_tokens=8, ignore_eos=True, n=2),
              SamplingParams(temperature=0.7, seed=9, max_tokens=10, ignore_eos=True, n=2, logprobs=1)]
    return prompts, params


def test_swapping_output_identical_to_an_engine_that_never_swaps(toy, workload):
    prompts, params = workload
    roomy = _engine(toy, num_pages=128)
    want = _generate(roomy, prompts, params)
    assert roomy.kv_cache_stats()["num_preemptions"] == 0
    # 10 device pages of 4 tokens for 6 sequences of up to 22 tokens: constant eviction.
    tight = _engine(toy, num_pages=10, num_host_pages=64, swap_chunk_pages=2)
    got = _generate(tight, prompts, params)
    # Tokens are identical. Logprobs are equal up to float rounding: evictions change which
    # sequences share a step, and batch size changes the GEMMs' reduction order (an engine that
    # never swaps, with a smaller token budget, differs from the roomy one by as much).
    assert [[t for t, _ in r] for r in got] == [[t for t, _ in r] for r in want]
    for r_got, r_want in zip(got, want):
        for (_, lp_got), (_, lp_want) in zip(r_got, r_want):
            if lp_want is not None:
                for a, b in zip(lp_got, lp_want):
                    assert a.keys() == b.keys()
                    assert all(abs(a[k] - b[k]) < 1e-4 for k in a)
    stats = tight.kv_cache_stats()
    assert stats["swap_outs"] > 0 and stats["swap_ins"] == stats["swap_outs"]
    assert stats["num_preemptions"] == 0  # never recomputed: the host held everything
    assert stats["tokens_recompute_avoided"] > 0 and stats["bytes_in"] == stats["bytes_out"] > 0
    assert stats["num_free_host_pages"] == 64 and stats["num_free_pages"] == 10
    assert all(r == 0 for r in tight.allocator.refcount)


def test_a_full_host_tier_falls_back_to_recompute(toy):
    prompts = _prompts(3, [10, 13, 12], seed=3)
    engine = _engine(toy, num_pages=9, num_host_pages=3)  # too small for most sequences
    reqs = [engine.add_request(p, SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)) for p in prompts]
    _run(engine)
    stats = engine.kv_cache_stats()
    assert stats["num_preemptions"] > 0
    for p, r in zip(prompts, reqs):
        assert r.outputs[0].token_ids == greedy_reference(toy, p, 8)
    assert stats["num_free_host_pages"] == 3 and stats["num_free_pages"] == 9


def test_watermark_swaps_out_the_least_recently_scheduled(toy):
    # Three greedy samples of one prompt (2 shared pages) and a budget of 2 tokens per step:
    # samples 0 and 1 run every step, sample 2 waits (its last_scheduled ages). When their new
    # pages take usage past 5 of 10 pages (watermark 0.5), sample 2 leaves for the host with
    # no page shortage at all, and comes back when the others are done.
    engine = _engine(toy, num_pages=10, num_host_pages=16, max_num_batched_tokens=2, swap_high_watermark=0.5)
    prompt = _prompts(1, [8], seed=4)[0]
    req = engine.add_request(prompt, SamplingParams(n=3, temperature=0, max_tokens=8, ignore_eos=True))
    swapped_out = []
    while engine.has_unfinished():
        sched = engine.scheduler
        last = {s.seq_id: s.last_scheduled for s in sched.running}
        before = {s.seq_id for s in sched.swapped}
        step_free = engine.allocator.num_free
        engine.step()
        for s in sched.swapped:
            if s.seq_id not in before:
                assert last[s.seq_id] == min(last.values())  # the least recently scheduled
                assert step_free > 0  # pushed out by the watermark, not by a shortage
                swapped_out.append(s.index)
    assert swapped_out == [2]
    assert engine.kv_cache_stats()["num_preemptions"] == 0
    want = greedy_reference(toy, prompt, 8)
    assert [o.token_ids for o in req.outputs] == [want] * 3
    assert engine.kv_cache_stats()["num_free_host_pages"] == 16


def test_abort_and_weight_update_release_host_pages(toy):
    model = ToyPagedModel(vocab_size=64, seed=0)
    engine = _engine(model, num_pages=10, num_host_pages=32)
    prompts = _prompts(4, [12, 12, 12, 12], seed=6)
    reqs = [engine.add_request(p, SamplingParams(temperature=0, max_tokens=16, ignore_eos=True),
                               request_id=f"r{i}") for i, p in enumerate(prompts)]
    while not engine.scheduler.swapped:
        engine.step()
    victim = engine.scheduler.swapped[0].request
    engine.abort(victim.request_id)
    assert victim.outputs[0].finish_reason == "abort"
    for _ in range(3):
        engine.step()
    engine.update_weights(ToyPagedModel(vocab_size=64, seed=1).state_dict(), version=1)
    assert not engine.scheduler.swapped  # stale latents are dropped, the sequences recompute
    _run(engine)
    assert all(r.finished for r in reqs)
    stats = engine.kv_cache_stats()
    assert stats["num_free_host_pages"] == 32 and stats["num_free_pages"] == 10


def test_engine_args_validation(toy):
    with pytest.raises(ValueError, match="swap_high_watermark must be a number in"):
        EngineArgs(swap_high_watermark=0)
    with pytest.raises(ValueError, match="num_host_pages must be an int >= 0"):
        EngineArgs(num_host_pages=-1)
