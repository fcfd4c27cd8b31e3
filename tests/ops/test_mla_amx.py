"""The AMX copies of the attention kernels (mla_prefill / ssa_prefill: Q K^T of every bf16 tile;
mla_decode / ssa_decode: Q K^T of bf16 row groups of >= 16 query rows) against the plain-torch
reference.

Two runs of the same kernel code, as test_moe_gemm_amx.py: the emulated copy (tile instructions
emulated in scalar C++ after the Intel SDM pseudocode; every machine, through private test entry
points), and the hardware copy (TDPBF16PS; skipped with the reason where the CPU has no AMX). Shapes cover
ragged key / query / head-dim tails (not multiples of 16 / 16 / 32), page boundaries inside a
16-key tile, NaN-poisoned unused pages, permuted block tables, split plans, SSA windows, empty
batches and sequences, and NaN propagation."""
import pytest
import torch

import longcat
from longcat import _C
from longcat.ops import SsaWindow, mla_decode, mla_decode_metadata, mla_prefill, reference, ssa_decode, ssa_prefill
from longcat.ops.mla_decode import _decode_impl
from longcat.ops.mla_prefill import _prefill_amx_emulated

from test_mla_decode import make_case, tolerances
from test_mla_prefill import make_inputs, tol

HAS_AMX = _C.cpu_isa_detected() == "amx"
# The hardware copy's cases are collected everywhere and skipped, with this reason, where the
# CPU has no AMX (`pytest -rs` lists it).
NEEDS_AMX = pytest.mark.skipif(not HAS_AMX, reason=f"no AMX on this CPU (best ISA: {_C.cpu_isa_detected()}): "
                                                  "the hardware TDPBF16PS copy does not run here")


class Emulated:
    @staticmethod
    def prefill(q, k, v, cq, ck, mq, mk, scale=None, causal=True, window=None):
        return _prefill_amx_emulated(q, k, v, cq, ck, mq, mk, scale, causal, window)

    @staticmethod
    def decode(q, kv, bt, sl, scale=None, causal=True, metadata=None, window=None):
        scale = 576 ** -0.5 if scale is None else scale
        return _decode_impl(q, kv, bt, sl, 512, scale, causal, metadata, window, amx_emulated=True)


class Hardware:
    @staticmethod
    def _on_amx(fn, *args, **kwargs):
        before = longcat.cpu_isa()
        longcat.set_cpu_isa("amx")
        try:
            return fn(*args, **kwargs)
        finally:
            longcat.set_cpu_isa(before)

    @classmethod
    def prefill(cls, q, k, v, cq, ck, mq, mk, scale=None, causal=True, window=None):
        if window is None:
            return cls._on_amx(mla_prefill, q, k, v, cq, ck, mq, mk, scale, causal)
        return cls._on_amx(ssa_prefill, q, k, v, cq, ck, mq, mk, scale, window=window)

    @classmethod
    def decode(cls, q, kv, bt, sl, scale=None, causal=True, metadata=None, window=None):
        if window is None:
            return cls._on_amx(mla_decode, q, kv, bt, sl, softmax_scale=scale, causal=causal, metadata=metadata)
        return cls._on_amx(ssa_decode, q, kv, bt, sl, softmax_scale=scale, causal=causal, metadata=metadata,
                           window=window)


@pytest.fixture(params=["emulated", pytest.param("hardware", marks=NEEDS_AMX)])
def amx_copy(request):
    return Emulated if request.param == "emulated" else Hardware


# ---- prefill -------------------------------------------------------------------------------

def check_prefill(run, lens_q, lens_k, h=2, h_k=None, d=64, dv=64, dtype=torch.bfloat16, causal=True, window=None,
                  seed=0, inputs=None):
    q, k, v, cq, ck = inputs if inputs is not None else make_inputs(lens_q, lens_k, h, h_k, d, dv, dtype, seed)
    mq, mk = max(lens_q, default=0), max(lens_k, default=0)
    out, lse = run.prefill(q, k, v, cq, ck, mq, mk, None, causal, window)
    ro, rl = reference.mla_prefill(q, k, v, cq, ck, q.shape[-1] ** -0.5, causal, window)
    assert out.shape == ro.shape and out.dtype == q.dtype
    torch.testing.assert_close(out.float(), ro.float(), **tol(q.dtype))
    torch.testing.assert_close(lse, rl, rtol=1e-5, atol=1e-4)
    return out, lse


PREFILL_LENGTHS = [
    ([1], [1]),
    ([17], [17]),                      # one full and one 1-row query / key tile
    ([64], [64]),
    ([65], [65]),
    ([0, 3, 0], [0, 3, 0]),            # empty sequences
    ([3, 0, 70], [10, 5, 200]),        # chunked prefill: keys before the queries; a query-less sequence
    ([70], [0]),                       # no keys at all: out 0, lse +inf
    ([100], [40]),                     # len_k < len_q: the first 60 queries see nothing
]


@pytest.mark.parametrize("lens", PREFILL_LENGTHS, ids=str)
@pytest.mark.parametrize("causal", [True, False])
def test_prefill_lengths(amx_copy, lens, causal):
    check_prefill(amx_copy, *lens, causal=causal)


# d: one 32-wide K step, a ragged tail (40 = 32 + 8), the MLA prefill shape 192, and 576.
@pytest.mark.parametrize("d,dv", [(32, 16), (40, 24), (192, 128), (576, 64)])
def test_prefill_head_dims(amx_copy, d, dv):
    check_prefill(amx_copy, [50, 33], [90, 33], h=4, h_k=2, d=d, dv=dv, seed=d)


@pytest.mark.parametrize("window", [SsaWindow(sink=1, local=2, block_size=16), SsaWindow(sink=2, local=3, block_size=50),
                                    SsaWindow(sink=4, local=10, tokens=True), SsaWindow(sink=0, local=65, tokens=True)],
                         ids=str)
def test_prefill_ssa_windows(amx_copy, window):
    check_prefill(amx_copy, [150, 1, 64], [150, 1, 64], window=window, seed=3)
    check_prefill(amx_copy, [40, 20], [300, 20], h=4, h_k=2, window=window, seed=4)  # chunked


def test_prefill_float32_runs_the_fp32_path(amx_copy):
    check_prefill(amx_copy, [40, 7], [70, 7], dtype=torch.float32)


def test_prefill_empty_batch(amx_copy):
    q, k, v, cq, ck = make_inputs([], [], h=2, d=64, dv=64, dtype=torch.bfloat16)
    out, lse = amx_copy.prefill(q, k, v, cq, ck, 0, 0)
    assert out.shape == (0, 2, 64) and lse.shape == (2, 0)


def test_prefill_nan_reaches_exactly_the_queries_that_see_it(amx_copy):
    q, k, v, cq, ck = make_inputs([80], [80], h=2, d=64, dv=64, dtype=torch.bfloat16, seed=5)
    k[30, 1, 7] = float("nan")   # head 1 only: causal queries 30.. see it
    q[10, 0, 3] = float("nan")   # query 10 of head 0
    out, lse = amx_copy.prefill(q, k, v, cq, ck, 80, 80)
    ro, rl = reference.mla_prefill(q, k, v, cq, ck, 64 ** -0.5, True, None)
    assert torch.equal(torch.isnan(lse), torch.isnan(rl))
    assert torch.isnan(lse[1, 30:]).all() and not torch.isnan(lse[1, :30]).any()
    assert torch.isnan(lse[0, 10]) and torch.isnan(lse[0]).sum() == 1
    assert torch.equal(torch.isnan(out).any(-1), torch.isnan(ro).any(-1))
    keep = ~torch.isnan(rl)
    torch.testing.assert_close(lse[keep], rl[keep], rtol=1e-5, atol=1e-4)


# ---- decode --------------------------------------------------------------------------------

def check_decode(run, q, kv, bt, sl, causal=True, window=None, metadata=None, lse_tol=1e-4):
    out, lse = run.decode(q, kv, bt, sl, None, causal, metadata, window)
    rout, rlse = reference.mla_decode(q, kv, bt, sl, 512, None, causal, window)
    b, s_q, h_q, _ = q.shape
    assert out.shape == (b, s_q, h_q, 512) and lse.shape == (b, h_q, s_q)
    assert not out.isnan().any(), "NaN in out: a page or row past the sequence (or an invisible one) was read"
    torch.testing.assert_close(out, rout, **tolerances(q.dtype))
    torch.testing.assert_close(lse, rlse, rtol=lse_tol, atol=lse_tol)
    return out, lse


# Rows per group s_q * h_q: 16 (one query tile), 20 (a ragged second tile), 64 and 128 (groups of
# several tiles); h_q 8 x s_q 2 = 16 rows too. Page size 64 keeps 16-key tiles inside a page (loaded
# in place), 100 and 24 put page boundaries inside them (copied), 16 is one page per tile.
@pytest.mark.parametrize("s_q,h_q", [(1, 16), (1, 20), (2, 8), (1, 64), (2, 64)], ids=str)
@pytest.mark.parametrize("page_size", [16, 24, 64, 100])
def test_decode_grid(amx_copy, s_q, h_q, page_size):
    q, kv, bt, sl = make_case([0, 1, 63, 65, 300], s_q, h_q, torch.bfloat16, page_size=page_size,
                              seed=s_q * 1000 + h_q + page_size)
    check_decode(amx_copy, q, kv, bt, sl)


@pytest.mark.parametrize("causal", [True, False])
def test_decode_split_plan(amx_copy, causal):
    q, kv, bt, sl = make_case([700, 64, 1], 2, 16, torch.bfloat16, seed=7)
    md = mla_decode_metadata(sl, 2, num_workers=5, causal=causal)
    assert int(md[-1, 0]) > 3  # some sequence is split
    check_decode(amx_copy, q, kv, bt, sl, causal=causal, metadata=md)


@pytest.mark.parametrize("window", [SsaWindow(sink=1, local=2, block_size=64), SsaWindow(sink=3, local=40, tokens=True)],
                         ids=str)
def test_decode_ssa(amx_copy, window):
    q, kv, bt, sl = make_case([0, 40, 400], 2, 16, torch.bfloat16, page_size=24, seed=8)
    check_decode(amx_copy, q, kv, bt, sl, window=window,
                 metadata=mla_decode_metadata(sl, 2, num_workers=3, window=window))


def test_decode_float32_and_few_rows_keep_their_paths(amx_copy):
    q, kv, bt, sl = make_case([65, 300], 1, 16, torch.float32, seed=9)
    check_decode(amx_copy, q, kv, bt, sl, lse_tol=2e-5)
    q, kv, bt, sl = make_case([65, 300], 2, 3, torch.bfloat16, seed=10)
    check_decode(amx_copy, q, kv, bt, sl)


def test_decode_empty_batch(amx_copy):
    q = torch.randn(0, 1, 16, 576).bfloat16()
    kv = torch.randn(2, 64, 1, 576).bfloat16()
    out, lse = amx_copy.decode(q, kv, torch.zeros(0, 3, dtype=torch.int32), torch.zeros(0, dtype=torch.int32))
    assert out.shape == (0, 1, 16, 512) and lse.shape == (0, 16, 1)


def test_decode_nan_reaches_exactly_the_rows_that_see_it(amx_copy):
    q, kv, bt, sl = make_case([100, 100], 1, 16, torch.bfloat16, seed=11)
    kv[bt[0, 1], 3, 0, 100] = float("nan")   # token 67 of sequence 0: every head of it
    q[1, 0, 5, 9] = float("nan")             # head 5 of sequence 1
    out, lse = amx_copy.decode(q, kv, bt, sl)
    assert torch.isnan(lse[0]).all() and torch.isnan(out[0]).all()
    assert torch.isnan(lse[1, 5]).all() and torch.isnan(lse[1]).sum() == 1
    assert torch.isnan(out[1, 0, 5]).all() and torch.isnan(out[1]).sum() == 512


# ---- the tiles really run ------------------------------------------------------------------

def denormal_case():
    """Scores that exist only without DAZ: q's first value 2e38, every key's 1.1e-38 (a bf16
    denormal): products of about 2.2 in fp32 arithmetic (lse log(64) + 2.2 at scale 1), 0 on
    TDPBF16PS, which reads denormal inputs as zero (lse log(64))."""
    q = torch.zeros(1, 1, 16, 576)
    q[..., 0] = 2e38
    kv = torch.zeros(1, 64, 1, 576)
    kv[..., 1:512] = torch.randn(1, 64, 1, 511)
    kv[..., 0] = 1.1e-38
    return q.bfloat16(), kv.bfloat16(), torch.zeros(1, 1, dtype=torch.int32), torch.tensor([64], dtype=torch.int32)


def test_decode_tiles_run_for_16_rows_and_not_for_fewer():
    q, kv, bt, sl = denormal_case()
    uniform = torch.full((1, 16, 1), torch.log(torch.tensor(64.0)).item())
    _, lse = Emulated.decode(q, kv, bt, sl, scale=1.0)
    torch.testing.assert_close(lse, uniform)          # every score 0: the tile path, DAZ
    _, lse8 = Emulated.decode(q[:, :, :8], kv, bt, sl, scale=1.0)
    assert (lse8 > uniform[:, :8] + 1).all()          # 8 rows: the scalar path sees the products


def test_prefill_tiles_run():
    q, kv, _, _ = denormal_case()
    k = kv[0, :, :, :64].contiguous()                  # 64 keys, d 64
    v = kv[0, :, :, 64:128].contiguous()
    qq = q[0, 0, :1, :64].expand(64, 64).reshape(64, 1, 64).contiguous()
    c = torch.tensor([0, 64], dtype=torch.int32)
    _, lse = Emulated.prefill(qq, k, v, c, c, 64, 64, scale=1.0, causal=False)
    torch.testing.assert_close(lse, torch.full((1, 64), torch.log(torch.tensor(64.0)).item()))


def test_bad_input_names_the_argument():
    q, k, v, cq, ck = make_inputs([8], [8], h=2, d=64, dv=64, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="cu_seqlens_k"):
        Emulated.prefill(q, k, v, cq, torch.tensor([0, 9], dtype=torch.int32), 8, 8)
    q, kv, bt, sl = make_case([100], 1, 16, torch.bfloat16)
    with pytest.raises(ValueError, match="block_table"):
        Emulated.decode(q, kv, bt[:, :1], sl)
