"""Attention CUDA kernels (csrc/cuda/mla_decode.cu, mla_prefill.cu, kv_cache.cu) against the
plain-torch references, on the device.

Decode follows FlashMLA's test method: randomly permuted block tables, every page a sequence
does not own and every row past a sequence's length filled with NaN (a read of one shows up as
NaN in the output), unused table entries set to a huge page id, cache lengths 0 / 1 / 63 / 64 /
65 / 1000 / 8200 in one batch, s_q 1 / 2 / 4, h_q 1 / 16 / 64 / 128 (one and two 64-row tiles),
bf16 and fp16, several worker counts (one split per sequence up to many), the device planner
against the plan rule (num_sm_parts = SMs / 64-row tiles, at least 256 keys per split), query rows
s_q * h_q that split across tiles mid-query, a side stream, and a cache over 2^31 elements. SSA
decode and prefill check the window edges (127 / 128 / 129 tokens, exactly sink + local blocks,
one more), token mode, and equality with full attention when the
context fits in the window. Prefill covers the LongCat 192/128 shape, 64/64, the generic 128 and
256 instantiations with odd multiples of 8, GQA, chunked prefill (more keys than queries), fewer
keys than queries (rows that see nothing), non-causal, and strided (non-16-byte) inputs.

The lse comparisons are tight (fp32 on both sides) so that one key too many or too few shows up
even where the bf16 output tolerance would hide it.
"""
from __future__ import annotations

import math

import pytest
import torch

import longcat

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or longcat.build_info().get("cuda", "off").lower() != "on",
    reason="needs a CUDA device and a longcat built with its CUDA kernels")

DTYPES = [torch.bfloat16, torch.float16]
BAD_PAGE = 2147480000  # FlashMLA's filler for table entries a sequence does not use


def op(name):
    """The public op (looked up late so that collection works on machines without it)."""
    from longcat import ops

    return getattr(ops, name)


def ssa_window(**kw):
    from longcat.ops import SsaWindow

    return SsaWindow(**kw)


def ref(name):
    from longcat.ops import reference

    return getattr(reference, name)


def out_tol(dtype):
    return {"atol": 2.5e-2, "rtol": 2.5e-2} if dtype == torch.bfloat16 else {"atol": 4e-3, "rtol": 4e-3}


LSE_TOL = {"atol": 1e-4, "rtol": 1e-5}


def check_out_lse(out, lse, want_out, want_lse, dtype):
    assert out.is_cuda and lse.is_cuda
    assert out.dtype == dtype and lse.dtype == torch.float32
    assert out.shape == want_out.shape and lse.shape == want_lse.shape
    assert torch.isfinite(out).all(), "NaN/inf in the output: a masked or unused page was read"
    torch.testing.assert_close(out.cpu().float(), want_out.cpu().float(), **out_tol(dtype))
    torch.testing.assert_close(lse.cpu(), want_lse.cpu(), **LSE_TOL)


# ---- decode -------------------------------------------------------------------------------------

def make_paged(lens, page_size, dtype, seed, extra_pages=3):
    """kv_cache [pages, page_size, 1, 576] with the pages of each sequence scattered by a random
    permutation; pages nobody owns and rows past each length are NaN."""
    g = torch.Generator().manual_seed(seed)
    need = [math.ceil(L / page_size) for L in lens]
    num_pages = sum(need) + extra_pages
    max_pages = max(need + [1]) + 1
    kv = torch.full((num_pages, page_size, 1, 576), float("nan"))
    table = torch.full((len(lens), max_pages), BAD_PAGE, dtype=torch.int32)
    perm = torch.randperm(num_pages, generator=g)
    nxt = 0
    for b, L in enumerate(lens):
        for p in range(need[b]):
            page = int(perm[nxt])
            nxt += 1
            table[b, p] = page
            rows = min(page_size, L - p * page_size)
            kv[page, :rows] = torch.randn(rows, 1, 576, generator=g)
    return (kv.to(dtype).cuda(), table.cuda(), torch.tensor(lens, dtype=torch.int32).cuda())


def make_q(batch, s_q, h_q, dtype, seed):
    g = torch.Generator().manual_seed(seed + 1000)
    return torch.randn(batch, s_q, h_q, 576, generator=g).to(dtype).cuda()


def decode_ref(q, kv, table, lens, scale, causal=True, window=None):
    # The reference works per sequence on the CPU.
    return ref("mla_decode")(q.cpu(), kv.cpu(), table.cpu(), lens.cpu(), 512, scale, causal=causal, window=window)


LENS = [0, 1, 63, 64, 65, 1000, 8200]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("h_q", [1, 16, 64, 128])
@pytest.mark.parametrize("s_q", [1, 2, 4])
def test_decode_grid(s_q, h_q, dtype):
    kv, table, lens = make_paged(LENS, 64, dtype, seed=s_q * 7 + h_q)
    q = make_q(len(LENS), s_q, h_q, dtype, seed=h_q)
    scale = 576 ** -0.5
    out, lse = op("mla_decode")(q, kv, table, lens, 512, scale, True)
    want_out, want_lse = decode_ref(q, kv, table, lens, scale)
    check_out_lse(out, lse, want_out, want_lse, dtype)
    # An empty cache: out 0 and lse +inf.
    assert (out[0] == 0).all() and torch.isinf(lse[0]).all() and (lse[0] > 0).all()


def plan_rule(keys, num_workers, min_chunk):
    """The split-KV plan of csrc/core/attention_args.h, in Python: chunk = max(min_chunk,
    round_up(ceil(sum(keys + 64) / workers), 64)), max(1, ceil(keys / chunk)) splits each."""
    per = -(-sum(k + 64 for k in keys) // num_workers)
    chunk = max(min_chunk, -(-per // 64) * 64)
    rows, first = [], 0
    for k in keys:
        rows.append([first, chunk])
        first += max(1, -(-k // chunk))
    return torch.tensor(rows + [[first, 0]], dtype=torch.int32)


@pytest.mark.parametrize("num_workers", [1, 3, 16, 132])
@pytest.mark.parametrize("causal", [True, False])
def test_decode_splits_and_planner(num_workers, causal):
    dtype = torch.bfloat16
    lens = [8200, 0, 1000, 65, 3000]
    kv, table, lens_t = make_paged(lens, 64, dtype, seed=num_workers)
    s_q, h_q = 2, 64
    q = make_q(len(lens), s_q, h_q, dtype, seed=num_workers)
    meta = op("mla_decode_metadata")(lens_t, s_q, num_workers, causal=causal)
    meta_cpu = op("mla_decode_metadata")(lens_t.cpu(), s_q, num_workers, causal=causal)
    assert meta.device.type == "cuda"
    # Full attention: every cached token is visible. The two backends share the rule and differ
    # only in the smallest split (a CUDA split is a CTA per 64-row tile: at least 256 keys).
    assert torch.equal(meta.cpu(), plan_rule(lens, num_workers, 256))
    assert torch.equal(meta_cpu, plan_rule(lens, num_workers, 64))
    scale = 0.05
    out, lse = op("mla_decode")(q, kv, table, lens_t, 512, scale, causal, meta)
    want_out, want_lse = decode_ref(q, kv, table, lens_t, scale, causal=causal)
    check_out_lse(out, lse, want_out, want_lse, dtype)


@pytest.mark.parametrize("s_q,h_q", [(1, 128), (2, 128), (4, 64), (3, 40)])
def test_decode_plan_by_tiles(s_q, h_q):
    # FlashMLA's num_sm_parts: with s_q * h_q query rows each split runs ceil(rows / 64) CTAs, so
    # the default plan balances the keys over SMs / tiles split slots, not over every SM.
    lens = [4096] * 8 + [100, 0, 20000]
    lens_t = torch.tensor(lens, dtype=torch.int32, device="cuda")
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    parts = max(1, sms // -(-(s_q * h_q) // 64))
    meta = op("mla_decode_metadata")(lens_t, s_q, h_q=h_q)
    assert torch.equal(meta.cpu(), plan_rule(lens, parts, 256))
    assert int(meta[-1, 0]) <= len(lens) + parts
    # mla_decode without metadata plans the same way, and the result matches the reference.
    kv, table, lens_t = make_paged(lens[8:] + [700], 64, torch.bfloat16, seed=s_q + h_q)
    q = make_q(4, s_q, h_q, torch.bfloat16, seed=s_q)
    out, lse = op("mla_decode")(q, kv, table, lens_t, 512, 0.05, True)
    check_out_lse(out, lse, *decode_ref(q, kv, table, lens_t, 0.05), torch.bfloat16)


@pytest.mark.parametrize("s_q,h_q", [(3, 40), (5, 30), (7, 19)])
@pytest.mark.parametrize("ssa", [False, True])
def test_decode_rows_split_across_tiles(s_q, h_q, ssa):
    # Rows are (query i, head h) flattened as i * h_q + h; with 120 / 150 / 133 rows a 64-row tile
    # starts and ends in the middle of a query, so rows of one tile see different causal ranges.
    dtype = torch.bfloat16
    lens = [1, 2, 5, 64, 129, 1000, 2500]
    kv, table, lens_t = make_paged(lens, 64, dtype, seed=s_q * h_q)
    q = make_q(len(lens), s_q, h_q, dtype, seed=s_q * h_q)
    window = ssa_window(sink=1, local=2, block_size=64) if ssa else None
    meta = op("mla_decode_metadata")(lens_t, s_q, 7, window=window)
    if ssa:
        out, lse = op("ssa_decode")(q, kv, table, lens_t, 512, 0.05, True, meta, window=window)
    else:
        out, lse = op("mla_decode")(q, kv, table, lens_t, 512, 0.05, True, meta)
    assert torch.isinf(lse[0, :, :s_q - 1]).all()  # the first queries of a 1-token cache see nothing
    check_out_lse(out, lse, *decode_ref(q, kv, table, lens_t, 0.05, window=window), dtype)


def test_ops_run_on_the_current_stream():
    # Inputs written on a side stream after a ~25 ms spin, then the ops on that stream: an op that
    # launched on the legacy default stream (or planned there) would read q before the copy lands.
    dtype = torch.bfloat16
    kv, table, lens = make_paged([300, 1000, 5], 64, dtype, seed=60)
    q = make_q(3, 2, 16, dtype, seed=60)
    pq, pk, pv, cq, ck, mq, mk = make_varlen([40, 7], [90, 7], 2, 2, 192, 128, dtype, 61)
    want_decode = op("mla_decode")(q, kv, table, lens, 512, 0.05, True)
    want_prefill = op("mla_prefill")(pq, pk, pv, cq, ck, mq, mk, 0.07, True)
    side = torch.cuda.Stream()
    q2, pq2 = torch.zeros_like(q), torch.zeros_like(pq)
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        torch.cuda._sleep(50_000_000)
        q2.copy_(q)
        pq2.copy_(pq)
        got_decode = op("mla_decode")(q2, kv, table, lens, 512, 0.05, True)
        got_prefill = op("mla_prefill")(pq2, pk, pv, cq, ck, mq, mk, 0.07, True)
    side.synchronize()
    for got, want in ((got_decode, want_decode), (got_prefill, want_prefill)):
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_decode_cache_over_2_pow_31_elements():
    # 58300 pages x 64 x 576 = 2.15e9 elements (4.3 GB): page offsets past 2^31 elements must be
    # computed in 64 bits in decode, append and gather.
    pages, page = 58300, 64
    need = 5.5 * 2 ** 30   # every Hopper GPU has it; a busy device is a test-setup failure, not a pass
    free = torch.cuda.mem_get_info()[0]
    assert free >= need, f"needs {need / 2 ** 30:.1f} GiB of free device memory, {free / 2 ** 30:.1f} GiB free"
    assert pages * page * 576 > 2 ** 31
    dtype = torch.bfloat16
    kv = torch.full((pages, page, 1, 576), float("nan"), dtype=dtype, device="cuda")
    lens = [300, 1000]
    g = torch.Generator().manual_seed(70)
    # Sequence 0 in the last pages; sequence 1 straddles element 2^31 (page 58254.2).
    ids = [[pages - 1, pages - 3, pages - 2, pages - 5, pages - 4],
           list(range(58245, 58261))]
    table = torch.full((2, 17), BAD_PAGE, dtype=torch.int32)
    compact = torch.full((len(ids[0]) + len(ids[1]), page, 1, 576), float("nan"))
    compact_table = torch.full((2, 17), BAD_PAGE, dtype=torch.int32)
    nxt = 0
    for b, L in enumerate(lens):
        for p, page_id in enumerate(ids[b]):
            rows = min(page, L - p * page)
            data = torch.randn(rows, 1, 576, generator=g).to(dtype)
            kv[page_id, :rows] = data.cuda()
            compact[nxt, :rows] = data.float()
            table[b, p], compact_table[b, p] = page_id, nxt
            nxt += 1
    table, lens_t = table.cuda(), torch.tensor(lens, dtype=torch.int32, device="cuda")
    q = make_q(2, 2, 16, dtype, seed=70)
    out, lse = op("mla_decode")(q, kv, table, lens_t, 512, 0.05, True)
    want_out, want_lse = ref("mla_decode")(q.cpu(), compact.to(dtype), compact_table, lens_t.cpu(), 512, 0.05)
    check_out_lse(out, lse, want_out, want_lse, dtype)
    # Append one token at the end of each sequence, then gather both back.
    latent = torch.randn(2, 512, generator=g).to(dtype).cuda()
    rope_k = torch.randn(2, 64, generator=g).to(dtype).cuda()
    positions = torch.tensor([300, 1000], dtype=torch.int32, device="cuda")
    op("mla_append_kv")(latent, rope_k, kv, table, positions,
                        seq_ids=torch.tensor([0, 1], dtype=torch.int32, device="cuda"))
    got, cu = op("mla_gather")(kv, table, lens_t + 1)
    assert torch.equal(got[300, :512], latent[0]) and torch.equal(got[300, 512:], rope_k[0])
    assert torch.equal(got[-1, :512], latent[1]) and torch.equal(got[-1, 512:], rope_k[1])
    assert torch.isfinite(got.float()).all()


def test_decode_default_scale_and_metadata_reuse():
    dtype = torch.float16
    kv, table, lens = make_paged([500, 129, 4097], 64, dtype, seed=11)
    q = make_q(3, 1, 16, dtype, seed=11)
    meta = op("mla_decode_metadata")(lens, 1)
    outs = [op("mla_decode")(q, kv, table, lens, metadata=meta) for _ in range(2)]
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
    want_out, want_lse = decode_ref(q, kv, table, lens, 576 ** -0.5)
    check_out_lse(*outs[0], want_out, want_lse, dtype)


def test_decode_strided_q():
    # q as a view of a wider buffer: the row pointers are not 16-byte aligned (scalar Q loads).
    dtype = torch.bfloat16
    kv, table, lens = make_paged([300, 70], 64, dtype, seed=12)
    big = make_q(2, 2, 16, dtype, seed=12)
    wide = torch.cat([big, big[..., :3]], dim=-1)  # last dim 579
    q = wide[..., :576]
    assert q.stride(2) % 8 != 0
    out, lse = op("mla_decode")(q, kv, table, lens, 512, 0.04, True)
    want_out, want_lse = decode_ref(q.contiguous(), kv, table, lens, 0.04)
    check_out_lse(out, lse, want_out, want_lse, dtype)


@pytest.mark.parametrize("page_size", [16, 64, 100])
def test_decode_page_sizes(page_size):
    dtype = torch.bfloat16
    lens = [1, 99, 100, 101, 2000]
    kv, table, lens_t = make_paged(lens, page_size, dtype, seed=page_size)
    q = make_q(len(lens), 4, 16, dtype, seed=page_size)
    out, lse = op("mla_decode")(q, kv, table, lens_t, 512, 0.05, True)
    want_out, want_lse = decode_ref(q, kv, table, lens_t, 0.05)
    check_out_lse(out, lse, want_out, want_lse, dtype)


SSA_LENS = [127, 128, 129, 1024, 1025, 1152, 1153, 5000, 9000]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("s_q", [1, 2, 4])
def test_ssa_decode_blocks(s_q, dtype):
    kv, table, lens = make_paged(SSA_LENS, 64, dtype, seed=20 + s_q)
    q = make_q(len(SSA_LENS), s_q, 64, dtype, seed=20 + s_q)
    window = ssa_window(sink=1, local=7, block_size=128)
    out, lse = op("ssa_decode")(q, kv, table, lens, 512, 0.06, True, window=window)
    want_out, want_lse = decode_ref(q, kv, table, lens, 0.06, window=window)
    check_out_lse(out, lse, want_out, want_lse, dtype)
    # Contexts that fit in sink + local blocks (<= 1024 tokens, even with s_q queries) equal full
    # attention bit for bit: alone in a batch, both plans split them the same way (in the mixed
    # batch above the long sequences make the two plans' chunks differ, and so the rounding).
    fits = [i for i, L in enumerate(SSA_LENS) if L <= 1024]
    sub = (q[fits], kv, table[fits], lens[fits])
    ssa_plan = op("mla_decode_metadata")(lens[fits], s_q, window=window, h_q=64)
    full_plan = op("mla_decode_metadata")(lens[fits], s_q, h_q=64)
    assert torch.equal(ssa_plan, full_plan)
    ssa_out, ssa_lse = op("ssa_decode")(*sub, 512, 0.06, True, ssa_plan, window=window)
    full_out, full_lse = op("mla_decode")(*sub, 512, 0.06, True, full_plan)
    assert torch.equal(ssa_out, full_out) and torch.equal(ssa_lse, full_lse)


@pytest.mark.parametrize("sink,local,bs", [(1, 2, 16), (0, 3, 32), (2, 1, 64)])
def test_ssa_decode_small_blocks(sink, local, bs):
    dtype = torch.float16
    lens = [bs - 1, bs, bs + 1, (sink + local) * bs, (sink + local) * bs + 1, 777]
    kv, table, lens_t = make_paged(lens, 64, dtype, seed=bs)
    q = make_q(len(lens), 2, 16, dtype, seed=bs)
    window = ssa_window(sink=sink, local=local, block_size=bs)
    out, lse = op("ssa_decode")(q, kv, table, lens_t, 512, 0.06, True, window=window)
    want_out, want_lse = decode_ref(q, kv, table, lens_t, 0.06, window=window)
    check_out_lse(out, lse, want_out, want_lse, dtype)


@pytest.mark.parametrize("causal", [True, False])
def test_ssa_decode_tokens(causal):
    dtype = torch.bfloat16
    lens = [1, 4, 5, 104, 105, 106, 3000]
    kv, table, lens_t = make_paged(lens, 64, dtype, seed=31)
    q = make_q(len(lens), 4, 16, dtype, seed=31)
    window = ssa_window(sink=4, local=100, tokens=True)
    out, lse = op("ssa_decode")(q, kv, table, lens_t, 512, 0.06, causal, window=window)
    want_out, want_lse = decode_ref(q, kv, table, lens_t, 0.06, causal=causal, window=window)
    check_out_lse(out, lse, want_out, want_lse, dtype)


def test_decode_zero_lengths_and_short_cache():
    # Every sequence empty, and a cache shorter than s_q (the first queries see nothing).
    dtype = torch.bfloat16
    kv, table, lens = make_paged([0, 0, 2], 64, dtype, seed=40)
    q = make_q(3, 4, 16, dtype, seed=40)
    out, lse = op("mla_decode")(q, kv, table, lens, 512, 0.05, True)
    want_out, want_lse = decode_ref(q, kv, table, lens, 0.05)
    assert (out[:2] == 0).all() and torch.isinf(lse[:2]).all()
    assert (out[2, :2] == 0).all() and torch.isinf(lse[2, :, :2]).all()
    check_out_lse(out, lse, want_out, want_lse, dtype)


# ---- prefill ------------------------------------------------------------------------------------

def make_varlen(lens_q, lens_k, h, h_k, d_qk, d_v, dtype, seed, pad=0):
    g = torch.Generator().manual_seed(seed)
    tq, tk = sum(lens_q), sum(lens_k)

    def rnd(t, heads, d):
        # pad > 0: a view into a wider buffer (row strides not multiples of 8 elements)
        x = torch.randn(t, heads, d + pad, generator=g).to(dtype).cuda()
        return x[..., :d]

    q, k, v = rnd(tq, h, d_qk), rnd(tk, h_k, d_qk), rnd(tk, h_k, d_v)
    cu = lambda lens: torch.tensor([0] + list(torch.tensor(lens).cumsum(0)), dtype=torch.int32).cuda()
    return q, k, v, cu(lens_q), cu(lens_k), max(lens_q), max(lens_k)


def check_prefill(lens_q, lens_k, h, h_k, d_qk, d_v, dtype, causal=True, window=None, seed=0, pad=0):
    q, k, v, cq, ck, mq, mk = make_varlen(lens_q, lens_k, h, h_k, d_qk, d_v, dtype, seed, pad)
    scale = d_qk ** -0.5
    if window is not None:
        out, lse = op("ssa_prefill")(q, k, v, cq, ck, mq, mk, scale, causal, window=window)
    else:
        out, lse = op("mla_prefill")(q, k, v, cq, ck, mq, mk, scale, causal)
    want_out, want_lse = ref("mla_prefill")(q, k, v, cq, ck, scale, causal=causal, window=window)
    check_out_lse(out, lse, want_out, want_lse, dtype)
    return out, lse


PREFILL_LENS = [([1, 63, 64, 65, 300, 0], [1, 63, 64, 65, 300, 0]),      # self-attention
                ([1, 63, 64, 65, 300, 7], [5, 63, 200, 165, 1000, 7]),  # chunked prefill onto a prefix
                ([10, 130], [5, 60])]                                   # fewer keys than queries


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("lens", PREFILL_LENS, ids=["self", "prefix", "short_k"])
@pytest.mark.parametrize("d_qk,d_v", [(192, 128), (64, 64), (128, 128), (40, 24), (200, 136), (256, 256)])
def test_prefill_grid(d_qk, d_v, lens, dtype):
    check_prefill(*lens, 4, 4, d_qk, d_v, dtype, seed=d_qk + d_v)


def test_prefill_longcat_long():
    check_prefill([4096, 100], [4096, 2148], 8, 8, 192, 128, torch.bfloat16, seed=3)


@pytest.mark.parametrize("causal", [True, False])
def test_prefill_gqa_noncausal_strided(causal):
    check_prefill([70, 200], [90, 200], 8, 2, 192, 128, torch.float16, causal=causal, seed=4)
    check_prefill([70, 200], [90, 200], 4, 4, 192, 128, torch.bfloat16, causal=causal, seed=5, pad=4)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("sink,local,bs", [(1, 7, 128), (1, 2, 16), (0, 3, 64), (2, 1, 32)])
def test_ssa_prefill_blocks(sink, local, bs, dtype):
    n = (sink + local) * bs
    lens = [bs - 1, bs, bs + 1, n, n + 1, 3 * n + 5]
    window = ssa_window(sink=sink, local=local, block_size=bs)
    check_prefill(lens, lens, 4, 4, 192, 128, dtype, window=window, seed=bs)
    # Chunked: the queries are the last tokens of a longer context.
    lens_k = [L + 300 for L in lens]
    check_prefill(lens, lens_k, 4, 4, 192, 128, dtype, window=window, seed=bs + 1)


def test_ssa_prefill_tokens():
    lens = [3, 4, 5, 68, 69, 70, 1000]
    window = ssa_window(sink=4, local=65, tokens=True)
    check_prefill(lens, lens, 4, 4, 192, 128, torch.float16, window=window, seed=9)
    check_prefill(lens, [L + 70 for L in lens], 4, 4, 192, 128, torch.bfloat16, window=window, seed=10)


def test_ssa_prefill_fits_equals_full():
    lens = [1, 500, 1024]
    q, k, v, cq, ck, mq, mk = make_varlen(lens, lens, 4, 4, 192, 128, torch.bfloat16, 10)
    full = op("mla_prefill")(q, k, v, cq, ck, mq, mk, 0.07, True)
    ssa = op("ssa_prefill")(q, k, v, cq, ck, mq, mk, 0.07, True, window=ssa_window(sink=1, local=7, block_size=128))
    assert torch.equal(full[0], ssa[0]) and torch.equal(full[1], ssa[1])


def test_prefill_default_scale_and_small_max_seqlen():
    # max_seqlen_q below the real maximum only sizes the grid: every row is still computed.
    q, k, v, cq, ck, mq, mk = make_varlen([300, 40], [300, 40], 2, 2, 64, 64, torch.bfloat16, 11)
    out, lse = op("mla_prefill")(q, k, v, cq, ck, mq, mk)
    want_out, want_lse = ref("mla_prefill")(q, k, v, cq, ck, 64 ** -0.5, causal=True)
    check_out_lse(out, lse, want_out, want_lse, torch.bfloat16)


def test_unsupported_inputs_raise_on_cuda():
    # Head dims beyond the CUDA instantiations, and float32 (CPU only): clear errors, and the
    # device stays usable.
    q, k, v, cq, ck, mq, mk = make_varlen([5], [5], 2, 2, 264, 64, torch.bfloat16, 12)
    with pytest.raises(ValueError, match="256"):
        op("mla_prefill")(q, k, v, cq, ck, mq, mk, 0.1, True)
    with pytest.raises((TypeError, ValueError)):
        op("mla_prefill")(q.float(), k.float(), v.float(), cq, ck, mq, mk, 0.1, True)
    kv, table, lens = make_paged([70], 64, torch.bfloat16, seed=13)
    with pytest.raises((TypeError, ValueError)):
        op("mla_decode")(make_q(1, 1, 4, torch.bfloat16, 13).float(), kv.float(), table, lens, 512, 0.1, True)
    torch.cuda.synchronize()
    check_prefill([65], [65], 2, 2, 64, 64, torch.bfloat16, seed=14)


# ---- RoPE and the paged cache helpers -----------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("half_output", [True, False])
@pytest.mark.parametrize("pos_dtype", [torch.int32, torch.int64], ids=str)
def test_rope(dtype, half_output, pos_dtype):
    from longcat.ops.kv_cache import rope_inv_freq

    g = torch.Generator().manual_seed(5)
    x = torch.randn(37, 64, 64, generator=g).to(dtype)
    positions = torch.randint(0, 131072, (37,), generator=g).to(pos_dtype)
    # One frequency table for both sides, so only the kernel is compared (torch's pow differs
    # between devices by an ulp, which moves the angle by ~position * 1e-7).
    inv_freq = rope_inv_freq(64, 1e7)
    tol = {"atol": 2e-5, "rtol": 2e-5} if dtype == torch.float32 else {}
    want = ref("rope_interleaved")(x, positions, 1e7, half_output, inv_freq=inv_freq)
    got = op("rope_interleaved")(x.cuda(), positions.cuda(), 1e7, half_output, inv_freq=inv_freq.cuda())
    assert got.is_cuda and got.dtype == dtype and got.shape == x.shape
    torch.testing.assert_close(got.cpu(), want, **tol)
    # In place, and on a strided view (the rope part of a q with nope dims in front).
    xc = x.cuda()
    op("rope_interleaved")(xc, positions.cuda(), 1e7, half_output, out=xc, inv_freq=inv_freq.cuda())
    torch.testing.assert_close(xc.cpu(), want, **tol)
    big = torch.randn(37, 4, 192, generator=g).to(dtype)
    got = op("rope_interleaved")(big.cuda()[..., 128:], positions.cuda(), 1e7, half_output, inv_freq=inv_freq.cuda())
    want = ref("rope_interleaved")(big[..., 128:], positions, 1e7, half_output, inv_freq=inv_freq)
    torch.testing.assert_close(got.cpu(), want, **tol)
    # The default table (computed on the device) stays within a bf16 rounding of the reference.
    got = op("rope_interleaved")(x.cuda(), (positions % 4096).cuda(), 1e7, half_output)
    want = ref("rope_interleaved")(x, positions % 4096, 1e7, half_output)
    torch.testing.assert_close(got.cpu().float(), want.float(), atol=2e-3, rtol=1.6e-2)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_append_and_gather(dtype):
    lens = [0, 5, 64, 130]
    kv, table, lens_t = make_paged(lens, 64, dtype, seed=50)
    kv = torch.nan_to_num(kv, nan=0.0)
    # One new token at the last position of each non-empty sequence, one mid-page, one at the
    # first row of a page.
    seq_ids = torch.tensor([1, 2, 3, 3, 3], dtype=torch.int32).cuda()
    positions = torch.tensor([4, 63, 129, 70, 64], dtype=torch.int32).cuda()
    g = torch.Generator().manual_seed(51)
    latent = torch.randn(5, 512, generator=g).to(dtype).cuda()
    rope_k = torch.randn(5, 64, generator=g).to(dtype).cuda()
    want = kv.cpu()
    ref("mla_append_kv")(want, latent.cpu(), rope_k.cpu(), table.cpu(), seq_ids.cpu(), positions.cpu())
    op("mla_append_kv")(latent, rope_k, kv, table, positions, seq_ids=seq_ids)
    assert torch.equal(kv.cpu(), want)
    # Strided sources: latent and rope_k as column slices of one [T, 576] buffer.
    both = torch.randn(5, 576, generator=g).to(dtype).cuda()
    ref("mla_append_kv")(want, both.cpu()[:, :512], both.cpu()[:, 512:], table.cpu(), seq_ids.cpu(), positions.cpu())
    op("mla_append_kv")(both[:, :512], both[:, 512:], kv, table, positions, seq_ids=seq_ids)
    assert torch.equal(kv.cpu(), want)
    # Gather reads the tokens back in sequence order, as the reference and the CPU kernel do.
    got, cu = op("mla_gather")(kv, table, lens_t)
    assert got.is_cuda and got.shape == (sum(lens), 576)
    assert torch.equal(got.cpu(), ref("mla_gather")(kv.cpu(), table.cpu(), lens_t.cpu()))
    assert torch.equal(cu.cpu(), torch.tensor([0, 0, 5, 69, 199], dtype=torch.int32))
    got_cpu, _ = op("mla_gather")(kv.cpu(), table.cpu(), lens_t.cpu())
    assert torch.equal(got.cpu(), got_cpu)


# ---- NaN propagation and plans that do not fit (same rules as the CPU kernels) ------------------

def test_nan_key_and_query_in_decode():
    kv, table, lens = make_paged([700, 650], 64, torch.bfloat16, seed=40)
    q = make_q(2, 2, 8, torch.bfloat16, seed=40)
    kv[table[0, 0], 5, 0, 100] = float("nan")  # key 5 of sequence 0: every query of it sees it
    q[1, 0, 3, 7] = float("nan")               # one query row of sequence 1
    out, lse = op("mla_decode")(q, kv, table, lens)
    nan_rows = torch.zeros(2, 2, 8, dtype=torch.bool, device="cuda")
    nan_rows[0] = True
    nan_rows[1, 0, 3] = True
    assert torch.equal(out.isnan().any(-1), nan_rows) and torch.equal(out.isnan().all(-1), nan_rows)
    assert torch.equal(lse.isnan(), nan_rows.transpose(1, 2))


def test_nan_in_prefill():
    q, k, v, cq, ck, mq, mk = make_varlen([150], [150], 2, 2, 64, 64, torch.bfloat16, 41)
    k[40, 1, 3] = float("nan")  # head 1: queries at positions >= 40 see it
    q[10, 0, 0] = float("nan")  # head 0: only query 10
    out, lse = op("mla_prefill")(q, k, v, cq, ck, mq, mk)
    want = torch.zeros(150, 2, dtype=torch.bool, device="cuda")
    want[40:, 1] = True
    want[10, 0] = True
    assert torch.equal(out.isnan().any(-1), want) and torch.equal(lse.isnan(), want.t())


def test_plan_with_more_splits_than_the_workspace_is_refused():
    # mla_decode reads and checks a plan it did not make (a sync), as the CPU kernel does: a plan
    # for more workers than the device's SMs (made by the C++ planner directly, which the Python
    # one refuses) is a ValueError, before anything runs.
    from longcat import _C
    from longcat.ops import mla_decode, mla_decode_metadata

    kv, table, lens = make_paged([4096, 4096], 64, torch.bfloat16, seed=42)
    q = make_q(2, 1, 16, torch.bfloat16, seed=42)
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    md = torch.empty(3, 2, dtype=torch.int32, device="cuda")
    _C.mla_decode_metadata(md, lens, 1, 4 * sms, True, None, torch.cuda.current_stream().cuda_stream)
    assert int(md[2, 0]) > 2 + sms
    with pytest.raises(ValueError, match="argument 'metadata' plans .* splits, more than the workspace holds"):
        mla_decode(q, kv, table, lens, metadata=md)
    # A plan made here and then changed in place is read again: a shrunken plan still runs.
    good = mla_decode_metadata(lens, 1)
    good[0, 1] += 0
    mla_decode(q, kv, table, lens, metadata=good)


def test_plan_with_more_splits_than_the_workspace_is_not_silently_short():
    # The C++ API cannot read a device plan without a sync (nor can mla_decode inside a CUDA
    # graph capture): rows of the sequences whose splits do not fit the workspace come out NaN,
    # never a softmax over fewer keys.
    from longcat import _C

    kv, table, lens = make_paged([4096, 4096], 64, torch.bfloat16, seed=42)
    q = make_q(2, 1, 16, torch.bfloat16, seed=42)
    workers = 4
    md = torch.empty(3, 2, dtype=torch.int32, device="cuda")
    _C.mla_decode_metadata(md, lens, 1, 64, True, None, torch.cuda.current_stream().cuda_stream)
    assert int(md[2, 0]) > 2 + workers
    out = torch.empty(2, 1, 16, 512, dtype=torch.bfloat16, device="cuda")
    lse = torch.empty(2, 16, 1, device="cuda")
    ws = torch.empty(_C.mla_decode_workspace_size(2, 1, 16, 512, workers), dtype=torch.uint8, device="cuda")
    _C.mla_decode(out, lse, q, kv, table, lens, 512, 576 ** -0.5, True, md, ws, workers, None,
                  torch.cuda.current_stream().cuda_stream)
    assert lse[1].isnan().all() and out[1].isnan().all()
