"""Paged latent KV cache writes/reads and interleaved RoPE against the plain-torch reference
and transformers' LongcatFlash RoPE: shape grid, every ISA copy, in place, autograd, compile,
bad input."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from longcat.ops import mla_append_kv, mla_gather, reference, rope_interleaved

DTYPES = [torch.float32, torch.bfloat16]


def make(shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g).to(dtype)


# ---- RoPE --------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(0, 64), (1, 64), (5, 64), (9, 3, 64), (4, 64, 64), (3, 2, 2), (2, 130)])
@pytest.mark.parametrize("half_output", [True, False])
def test_rope_grid(cpu_isa, dtype, shape, half_output):
    x = make(shape, dtype, 1)
    pos = torch.randint(0, 1 << 20, (shape[0],), generator=torch.Generator().manual_seed(2))
    got = rope_interleaved(x, pos, half_output=half_output)
    want = reference.rope_interleaved(x, pos, 1e7, half_output)
    # Same fp32 formula; cos/sin libraries may differ by an ulp, so bf16 can move by one unit.
    torch.testing.assert_close(got, want, atol=1e-5 if dtype == torch.float32 else 1e-2, rtol=1e-5 if dtype == torch.float32 else 1e-2)


def test_rope_matches_transformers():
    from transformers.models.longcat_flash import modeling_longcat_flash as m

    cfg = m.LongcatFlashConfig(num_attention_heads=4, qk_rope_head_dim=64, qk_nope_head_dim=128,
                               kv_lora_rank=512, v_head_dim=128)
    rotary = m.LongcatFlashRotaryEmbedding(cfg)
    assert cfg.rope_parameters["rope_theta"] == 1e7  # LongCat-Flash's base, our default
    T, H = 33, 4
    pos = torch.arange(1000, 1000 + T)[None]
    q = make((1, H, T, 64), torch.float32, 3)
    k = make((1, 1, T, 64), torch.float32, 4)
    cos, sin = rotary(q, pos)
    q_hf, k_hf = m.apply_rotary_pos_emb_interleave(q, k, cos, sin)
    q_ours = rope_interleaved(q[0].transpose(0, 1), pos[0])       # [T, H, 64]
    k_ours = rope_interleaved(k[0, 0], pos[0])                     # [T, 64]
    torch.testing.assert_close(q_ours, q_hf[0].transpose(0, 1), atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(k_ours, k_hf[0, 0], atol=2e-5, rtol=1e-5)


def test_rope_strided_in_place_and_out():
    q = make((6, 4, 192), torch.bfloat16, 5)
    pos = torch.arange(6, dtype=torch.int32)
    want = reference.rope_interleaved(q[..., 128:], pos)
    torch.testing.assert_close(rope_interleaved(q[..., 128:], pos), want, atol=1e-2, rtol=1e-2)
    x = q[..., 128:].contiguous()
    rope_interleaved(x, pos, out=x)  # in place with half_output: reads the row before writing
    torch.testing.assert_close(x, want, atol=1e-2, rtol=1e-2)
    with pytest.raises(ValueError, match="overlaps"):
        y = q[..., 128:].contiguous()
        rope_interleaved(y[1:], pos[1:], out=y[:-1])


def test_rope_is_a_rotation_and_differentiable():
    x = make((5, 2, 64), torch.float32, 6).requires_grad_()
    pos = torch.tensor([0, 1, 7, 100, 65535])
    y = rope_interleaved(x, pos)
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(y[0], torch.cat([x[0, :, 0::2], x[0, :, 1::2]], -1))  # position 0
    g = make(y.shape, torch.float32, 7)
    (y * g).sum().backward()
    xr = x.detach().clone().requires_grad_()
    (reference.rope_interleaved(xr, pos) * g).sum().backward()
    torch.testing.assert_close(x.grad, xr.grad)


def test_rope_compiles():
    f = torch.compile(lambda x, p: rope_interleaved(x, p) * 2, fullgraph=True)
    x, pos = make((4, 64), torch.float32, 8), torch.arange(4)
    torch.testing.assert_close(f(x, pos), reference.rope_interleaved(x, pos) * 2, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(x=make((4, 63), torch.float32)), ValueError, "even last dim"),
    (dict(x=make((4,), torch.float32)), ValueError, r"\[T, D\]"),
    (dict(x=make((4, 64), torch.float32).to(torch.int32)), TypeError, "'x'"),
    (dict(positions=torch.arange(3)), ValueError, "'positions'"),
    (dict(positions=torch.tensor([0, 1, -1, 2])), ValueError, ">= 0"),
    (dict(positions=torch.arange(4.0)), TypeError, "'positions' must be int32 or int64"),
    (dict(base=1.0), ValueError, "'base'"),
])
def test_rope_bad_input(kwargs, exc, match):
    args = dict(x=make((4, 64), torch.float32), positions=torch.arange(4), base=1e7)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        rope_interleaved(args["x"], args["positions"], args["base"])


# ---- append / gather ---------------------------------------------------------------------------

def paged_cache(lengths, page_size, dtype, seed=0, extra_pages=3):
    """A NaN-poisoned cache with a permuted block table, filled through mla_append_kv."""
    g = torch.Generator().manual_seed(seed)
    pages_per = [(n + page_size - 1) // page_size for n in lengths]
    max_pages = max(pages_per + [1]) + 1
    num_pages = sum(pages_per) + extra_pages
    kv = torch.full((num_pages, page_size, 1, 576), float("nan"), dtype=dtype)
    perm = torch.randperm(num_pages, generator=g).to(torch.int32)
    table = torch.full((len(lengths), max_pages), -1, dtype=torch.int32)
    i = 0
    for b, n in enumerate(pages_per):
        table[b, :n] = perm[i:i + n]
        i += n
    seq_ids = torch.cat([torch.full((n,), b, dtype=torch.int32) for b, n in enumerate(lengths)] + [torch.zeros(0, dtype=torch.int32)])
    positions = torch.cat([torch.arange(n, dtype=torch.int32) for n in lengths] + [torch.zeros(0, dtype=torch.int32)])
    shuffle = torch.randperm(len(positions), generator=g)  # write order does not matter
    seq_ids, positions = seq_ids[shuffle], positions[shuffle]
    latent = torch.randn(len(positions), 512, generator=g).to(dtype)
    rope = torch.randn(len(positions), 64, generator=g).to(dtype)
    mla_append_kv(latent, rope, kv, table, positions, seq_ids=seq_ids)
    return kv, table, torch.tensor(lengths, dtype=torch.int32), (latent, rope, seq_ids, positions)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lengths,page_size", [([0], 64), ([1], 64), ([63, 64, 65], 64), ([1000, 0, 3], 64),
                                               ([5, 17], 1), ([129, 7], 16)])
def test_append_then_gather(dtype, lengths, page_size):
    kv, table, lens, (latent, rope, seq_ids, positions) = paged_cache(lengths, page_size, dtype)
    got, cu = mla_gather(kv, table, lens)
    assert cu.tolist() == [0] + torch.tensor(lengths).cumsum(0).tolist()
    torch.testing.assert_close(got, reference.mla_gather(kv, table, lens), equal_nan=False)
    # Row cu[b] + p of the gather is what was appended for (b, p).
    want = torch.empty(int(cu[-1]), 576, dtype=dtype)
    want[cu[seq_ids.long()].long() + positions.long()] = torch.cat([latent, rope], 1)
    assert torch.equal(got, want)
    # Unused rows stay NaN: append wrote exactly the token rows.
    assert int((~kv.isnan()).any(-1).sum()) == sum(lengths)


def test_append_decode_shorthand_and_reference():
    kv, table, lens, _ = paged_cache([10, 70], 64, torch.float32, seed=1)
    ref = kv.clone()
    latent, rope = make((2, 512), torch.float32, 9), make((2, 64), torch.float32, 10)
    positions = lens.view(2, 1)  # one new token per sequence, at its end
    mla_append_kv(latent, rope, kv, table, positions)
    reference.mla_append_kv(ref, latent, rope, table, torch.arange(2, dtype=torch.int32), lens)
    assert torch.equal(kv.nan_to_num(7.0), ref.nan_to_num(7.0))


@settings(max_examples=25, deadline=None)
@given(lengths=st.lists(st.integers(0, 200), min_size=1, max_size=5), page_size=st.sampled_from([1, 8, 64]),
       seed=st.integers(0, 1000))
def test_append_gather_property(lengths, page_size, seed):
    kv, table, lens, _ = paged_cache(lengths, page_size, torch.bfloat16, seed)
    got, _ = mla_gather(kv, table, lens)
    assert not got.isnan().any()
    assert torch.equal(got, reference.mla_gather(kv, table, lens))


def test_append_bad_input_leaves_cache_unchanged():
    kv, table, lens, _ = paged_cache([10, 70], 64, torch.float32, seed=2)
    before = kv.clone()
    latent, rope = make((2, 512), torch.float32), make((2, 64), torch.float32)
    cases = [
        (dict(seq_ids=torch.tensor([0, 2], dtype=torch.int32)), ValueError, "'seq_ids' must be in"),
        (dict(positions=torch.tensor([1, 64 * table.shape[1]], dtype=torch.int32)), ValueError, "'positions' must be in"),
        (dict(positions=torch.tensor([1, -1], dtype=torch.int32)), ValueError, "'positions' must be in"),
        (dict(positions=torch.tensor([1, 2], dtype=torch.int32), seq_ids=torch.tensor([0, 0], dtype=torch.int32),
              table=torch.full_like(table, 999)), ValueError, "not a page"),
        (dict(latent=make((2, 256), torch.float32)), ValueError, "'latent'"),
        (dict(rope=make((3, 64), torch.float32)), ValueError, "'rope_k'"),
        (dict(latent=latent.bfloat16()), (TypeError, ValueError), "'latent'"),
        (dict(positions=torch.tensor([1, 2])), TypeError, "'positions' must be int32"),
    ]
    for kwargs, exc, match in cases:
        a = dict(latent=latent, rope=rope, table=table, positions=torch.tensor([11, 71], dtype=torch.int32),
                 seq_ids=torch.tensor([0, 1], dtype=torch.int32))
        a.update(kwargs)
        with pytest.raises(exc, match=match):
            mla_append_kv(a["latent"], a["rope"], kv, a["table"], a["positions"], seq_ids=a["seq_ids"])
        assert torch.equal(kv.nan_to_num(7.0), before.nan_to_num(7.0))


def test_gather_bad_input():
    kv, table, lens, _ = paged_cache([10, 70], 64, torch.float32, seed=3)
    with pytest.raises(ValueError, match="too few"):
        mla_gather(kv, table[:, :1], lens)
    with pytest.raises(ValueError, match=">= 0"):
        mla_gather(kv, table, torch.tensor([-1, 3], dtype=torch.int32))
    with pytest.raises(ValueError, match="block_table.shape\\[0\\]"):
        mla_gather(kv, table, torch.tensor([1, 2, 3], dtype=torch.int32))
    with pytest.raises(ValueError, match="576"):
        mla_gather(kv[..., :512], table, lens)


def test_rope_trains_after_a_first_call_under_inference_mode():
    # The engine decodes under inference_mode, then RL trains in the same process: the cached
    # frequency table must not be an inference tensor.
    from longcat.ops.kv_cache import _cached_inv_freq

    _cached_inv_freq.cache_clear()
    with torch.inference_mode():
        rope_interleaved(torch.randn(3, 2, 64), torch.arange(3))
    x = torch.randn(3, 2, 64, requires_grad=True)
    rope_interleaved(x, torch.arange(3)).square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
