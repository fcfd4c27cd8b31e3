"""ops.mla_decode_layer (one MLA decode sublayer in one call) against the op-by-op composition it
replaces (bit for bit: the same kernels in the same order) and the plain-torch reference, with
permuted pages and NaN in every page a sequence does not own; SSA windows; weight, workspace and
activation checks; the model's decode steps with it against the op-by-op steps."""
import pytest
import torch

from longcat import _C, ops
from longcat.ops import SsaWindow, reference

H, R, NH, NOPE, V = 64, 48, 4, 32, 32   # hidden, q rank, heads, nope dims, value dims
EPS = 1e-6
PAGE = 16


def make_weights(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(*shape, std=0.1, mean=0.0):
        return (mean + torch.randn(*shape, generator=g) * std).to(dtype)

    inv_freq = 1.0 / (1e7 ** (torch.arange(0, 64, 2, dtype=torch.float32) / 64))
    return dict(w_a=r(R + 576, H), q_norm=r(R, mean=1.0), w_qb=r(NH * (NOPE + 64), R), kv_norm=r(512, mean=1.0),
                w_uk_t=r(NH, 512, NOPE), w_uv=r(NH, V, 512, std=0.05), w_o=r(H, NH * V), inv_freq=inv_freq)


def make_case(seq_lens, dtype, seed=1):
    """x for one new token per sequence (already counted in seq_lens), a cache with permuted
    pages holding random earlier tokens and NaN everywhere no sequence owns."""
    g = torch.Generator().manual_seed(seed)
    T = len(seq_lens)
    pages = [(L + PAGE - 1) // PAGE for L in seq_lens]
    num_pages = sum(pages) + 2
    cache = torch.full((num_pages, PAGE, 1, 576), float("nan"))
    perm = torch.randperm(num_pages, generator=g)
    table = torch.zeros(T, max(pages), dtype=torch.int32)
    at = 0
    for b, (L, n) in enumerate(zip(seq_lens, pages)):
        ids = perm[at:at + n]
        at += n
        table[b, :n] = ids.int()
        flat = torch.randn(n * PAGE, 576, generator=g)
        flat[L:] = float("nan")
        cache[ids] = flat.view(n, PAGE, 1, 576)
    x = torch.randn(T, H, generator=g).to(dtype)
    lens = torch.tensor(seq_lens, dtype=torch.int32)
    return x, cache.to(dtype), table, lens, (lens - 1).int(), torch.arange(T, dtype=torch.int32)


def composed(x, w, cache, table, lens, positions, seq_ids, scale, md, window):
    """The op-by-op decode sublayer (modeling.MLA.forward_paged + _decode for decode rows)."""
    T = x.shape[0]
    a = ops.linear(x, w["w_a"])
    q = ops.linear(ops.rms_norm(a[:, :R], w["q_norm"], EPS), w["w_qb"]).view(T, NH, NOPE + 64)
    latent = ops.rms_norm(a[:, R:R + 512], w["kv_norm"], EPS)
    k_rope = ops.rope_interleaved(a[:, R + 512:], positions.long(), inv_freq=w["inv_freq"])
    q_rope = ops.rope_interleaved(q[..., NOPE:], positions.long(), inv_freq=w["inv_freq"])
    ops.mla_append_kv(latent, k_rope, cache, table, positions, seq_ids)
    q_abs = x.new_empty(T, 1, NH, 576)
    q_abs[:, 0, :, 512:] = q_rope
    ops.linear(q[..., :NOPE].transpose(0, 1), w["w_uk_t"], out=q_abs[:, 0, :, :512].transpose(0, 1))
    if window is None:
        attn, _ = ops.mla_decode(q_abs, cache, table, lens, softmax_scale=scale, metadata=md)
    else:
        attn, _ = ops.ssa_decode(q_abs, cache, table, lens, softmax_scale=scale, metadata=md, window=window)
    o = x.new_empty(T, NH, V)
    ops.linear(attn.view(T, NH, 512).transpose(0, 1), w["w_uv"], out=o.transpose(0, 1))
    return ops.linear(o.view(T, NH * V), w["w_o"])


CASES = [((5,), None), ((3, 17, 40), None), ((1, 16, 33, 64, 65, 7, 100, 2), None),
         ((40, 70, 3), SsaWindow(sink=1, local=2, block_size=16)), ((90, 9), SsaWindow(sink=4, local=20, tokens=True))]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("seq_lens,window", CASES)
def test_equals_the_op_by_op_composition_bit_for_bit(dtype, seq_lens, window):
    w = make_weights(dtype)
    x, cache, table, lens, positions, seq_ids = make_case(seq_lens, dtype)
    scale = 192 ** -0.5
    md = ops.mla_decode_metadata(lens, 1, window=window)
    weights = ops.mla_layer_weights(*w.values(), norm_eps=EPS)
    cache_fused = cache.clone()
    with torch.inference_mode():
        got = ops.mla_decode_layer(x, weights, cache_fused, table, lens, positions, seq_ids, scale, md, window=window)
        want = composed(x, w, cache, table, lens, positions, seq_ids, scale, md, window)
    assert torch.equal(got, want)
    assert torch.equal(cache_fused.isnan(), cache.isnan())
    assert torch.equal(cache_fused.nan_to_num(), cache.nan_to_num())   # the same latents appended

    # and the plain-torch reference, within the dtype's rounding
    cache_ref = make_case(seq_lens, dtype)[1]
    want_ref = reference.mla_decode_layer(x, *w.values(), EPS, cache_ref, table, lens, positions, seq_ids, scale,
                                          window)
    tol = dict(rtol=2e-4, atol=2e-4) if dtype == torch.float32 else dict(rtol=5e-2, atol=3e-2)
    torch.testing.assert_close(got.float(), want_ref.float(), **tol)
    rows = table[seq_ids.long(), positions.long() // PAGE].long(), (positions % PAGE).long()
    torch.testing.assert_close(cache_fused[rows[0], rows[1], 0].float(), cache_ref[rows[0], rows[1], 0].float(), **tol)


def test_workspace_reused_and_out_given():
    w = make_weights(torch.bfloat16)
    weights = ops.mla_layer_weights(*w.values())
    x, cache, table, lens, positions, seq_ids = make_case((4, 20), torch.bfloat16)
    md = ops.mla_decode_metadata(lens, 1)
    ws = torch.empty(weights.workspace_size(2, _C.num_threads()), dtype=torch.uint8)
    out = torch.empty_like(x)
    with torch.inference_mode():
        first = ops.mla_decode_layer(x, weights, cache.clone(), table, lens, positions, seq_ids, 0.1, md, ws, out=out)
        again = ops.mla_decode_layer(x, weights, cache.clone(), table, lens, positions, seq_ids, 0.1, md, ws)
    assert first is out and torch.equal(first, again)


def test_bad_weights_name_the_weight():
    w = make_weights(torch.bfloat16)
    bad = dict(w, w_qb=w["w_qb"][:-1])
    with pytest.raises(ValueError, match="mla_decode_layer: argument 'w_qb'"):
        ops.mla_layer_weights(*bad.values())
    bad = dict(w, w_o=w["w_o"].float())
    with pytest.raises(TypeError, match="mla_decode_layer: argument 'w_o'"):
        ops.mla_layer_weights(*bad.values())
    bad = dict(w, w_uv=w["w_uv"].transpose(1, 2).contiguous().transpose(1, 2))
    with pytest.raises(ValueError, match="argument 'w_uv'.*contiguous"):
        ops.mla_layer_weights(*bad.values())
    bad = dict(w, inv_freq=w["inv_freq"][:16])
    with pytest.raises(ValueError, match="argument 'inv_freq'"):
        ops.mla_layer_weights(*bad.values())
    with pytest.raises(TypeError, match="argument 'w_a' must be a torch.Tensor"):
        ops.mla_layer_weights(None, *list(w.values())[1:])


def test_bad_activations_and_workspace():
    w = make_weights(torch.bfloat16)
    weights = ops.mla_layer_weights(*w.values())
    x, cache, table, lens, positions, seq_ids = make_case((4, 20), torch.bfloat16)
    md = ops.mla_decode_metadata(lens, 1)
    args = (cache, table, lens, positions, seq_ids, 0.1, md)
    with torch.inference_mode():
        with pytest.raises(ValueError, match="argument 'workspace' must hold at least"):
            ops.mla_decode_layer(x, weights, *args, torch.empty(64, dtype=torch.uint8))
        with pytest.raises(ValueError, match="argument 'x'"):
            ops.mla_decode_layer(x[:, :32].contiguous(), weights, *args)
        with pytest.raises(TypeError, match="argument 'x'"):
            ops.mla_decode_layer(x.float(), weights, *args)
        with pytest.raises(ValueError, match="argument 'out'"):
            ops.mla_decode_layer(x, weights, *args, out=x)
        with pytest.raises(TypeError, match="argument 'weights' must come from longcat.ops.mla_layer_weights"):
            ops.mla_decode_layer(x, w, *args)
        with pytest.raises(ValueError, match="argument 'block_table'|argument 'seq_ids'"):
            ops.mla_decode_layer(x, weights, cache, table, lens, positions, seq_ids + 5, 0.1, md)
    with pytest.raises(RuntimeError, match="not differentiable"):
        ops.mla_decode_layer(x.float().requires_grad_().bfloat16().detach().requires_grad_(), weights, *args)


def _spoil(md, table, lens, cache, what):
    """(metadata, block_table, cache_seqlens) with one index input made wrong."""
    md, table, lens = md.clone(), table.clone(), lens.clone()
    if what == "plan without splits":
        md[:, 1] = 0  # no keys per split: a plan that covers nothing
    elif what == "plan with too many splits":
        md[-1, 0] = 10_000
    elif what == "page past the cache":
        table[1, 0] = cache.shape[0]  # a page a visible key lives in
    else:  # more pages than the table's 2 per sequence; position 3 still fits
        lens[0] = 3 * PAGE
        md = ops.mla_decode_metadata(lens, 1)
    return md, table, lens


@pytest.mark.parametrize("spoil,match", [
    ("plan without splits", "mla_decode_layer: argument 'metadata'"),
    ("plan with too many splits", "mla_decode_layer: argument 'metadata'"),
    ("page past the cache", "mla_decode_layer: argument 'block_table' must hold page ids"),
    ("length past the table", "mla_decode_layer: argument 'block_table' has 2 pages per sequence")])
def test_refused_attention_leaves_the_cache_untouched(spoil, match):
    """The attention call's index values (plan, page ids, lengths) are checked before the new
    token's latent is appended: a refused call writes nothing."""
    w = make_weights(torch.bfloat16)
    weights = ops.mla_layer_weights(*w.values())
    x, cache, table, lens, positions, seq_ids = make_case((4, 20), torch.bfloat16)
    md, table, lens = _spoil(ops.mla_decode_metadata(lens, 1), table, lens, cache, spoil)
    before = cache.clone()
    with torch.inference_mode(), pytest.raises(ValueError, match=match):
        ops.mla_decode_layer(x, weights, cache, table, lens, positions, seq_ids, 0.1, md)
    assert torch.equal(cache.isnan(), before.isnan())
    assert torch.equal(cache.nan_to_num(), before.nan_to_num())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_model_decode_steps_equal_the_op_by_op_steps(monkeypatch, dtype):
    """The engine over bf16 and float32 tiny models (MLA, and Zig-Zag SSA sublayers): tokens and
    logprobs of decode steps through mla_decode_layer equal those of the op-by-op path."""
    from longcat.engine import LLM, SamplingParams
    from longcat.models import LongcatFlashConfig, LongcatFlashForCausalLM
    from longcat.models import modeling

    calls = []
    real = ops.mla_decode_layer

    def spy(*a, **k):
        calls.append(1)
        return real(*a, **k)

    prompts = [torch.randint(3, 4096, (n,), generator=torch.Generator().manual_seed(n)).tolist() for n in (5, 50, 17)]   # 50 + 6 tokens: past tiny-zigzag's 16 + 32 window
    params = SamplingParams(temperature=0, max_tokens=6, logprobs=3, ignore_eos=True)
    for preset in ("tiny", "tiny-zigzag"):
        torch.manual_seed(0)
        model = LongcatFlashForCausalLM(LongcatFlashConfig.from_preset(preset), dtype=dtype)
        model.reset_parameters(0.1)
        results = {}
        for fused in (True, False):
            with monkeypatch.context() as m:
                m.setattr(ops, "mla_decode_layer", spy)
                if not fused:
                    init = modeling._StepPlan.__init__

                    def unfused(self, *a, init=init):
                        init(self, *a)
                        self.fused_decode = False

                    m.setattr(modeling._StepPlan, "__init__", unfused)
                calls.clear()
                outs = LLM(model, page_size=8, max_model_len=64, max_num_seqs=4).generate(prompts, params)
                results[fused] = [(o.outputs[0].token_ids, o.outputs[0].logprobs) for o in outs]
                assert bool(calls) == fused
        assert results[True] == results[False]
