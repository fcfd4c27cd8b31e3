"""LongcatFlashForCausalLM against transformers' LongcatFlashForCausalLM (same random weights,
saved by transformers and loaded by us): training forward, loss, gradients, paged prefill /
chunked prefill / decode / mixed batches through a permuted, NaN-poisoned page table, Zig-Zag
SSA layers against transformers with a masked attention, bf16, checkpoints and configs."""
import json
import math
import os
import warnings

import pytest
import torch

from longcat.models import PRESETS, LongcatFlashConfig, LongcatFlashForCausalLM, PagedBatch, count_parameters
from longcat.ops import SsaWindow, reference
from longcat.models.weights import transformers_pads_zero_experts

transformers = pytest.importorskip("transformers")
from transformers import AttentionInterface  # noqa: E402
from transformers import LongcatFlashConfig as HFConfig  # noqa: E402
from transformers import LongcatFlashForCausalLM as HFModel  # noqa: E402
from transformers.models.longcat_flash import modeling_longcat_flash as hf_modeling  # noqa: E402

HF_SHAPE = dict(vocab_size=256, hidden_size=96, num_layers=2, num_attention_heads=2, ffn_hidden_size=128,
                q_lora_rank=48, kv_lora_rank=512, qk_nope_head_dim=32, qk_rope_head_dim=64, head_dim=64,
                v_head_dim=32, n_routed_experts=4, zero_expert_num=2, moe_topk=3, expert_ffn_hidden_size=32)


def randomize(model, seed):
    """Weights large enough that attention, routing and zero experts all matter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:       # norms
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                fan_in = p.shape[-1]
                std = 1.0 if "embed" in name else 1.5 / math.sqrt(fan_in)
                p.copy_(std * torch.randn(p.shape, generator=g))
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.copy_(0.05 * torch.randn(b.shape, generator=g))


def hf_checkpoint(path, seed=0, **overrides):
    cfg = HFConfig(**{**HF_SHAPE, **overrides})
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    hf = HFModel(cfg).eval()
    randomize(hf, seed)
    hf.save_pretrained(path)
    return hf


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    path = tmp_path_factory.mktemp("hf_tiny")
    hf = hf_checkpoint(path)
    ours = LongcatFlashForCausalLM.from_pretrained(path).eval()
    return hf, ours, path


def hf_logits(hf, ids, attention_mask=None):
    with torch.no_grad():
        return hf(input_ids=ids, attention_mask=attention_mask).logits.float()


def assert_logits_close(got, want, rel=1e-4):
    err = (got.float() - want.float()).abs().max().item()
    scale = want.abs().max().item()
    assert err <= rel * scale, f"max abs error {err:.3g} > {rel} x logits scale {scale:.3g}"


class Pages:
    """A paged cache for a few sequences: permuted, non-contiguous page ids, small pages (so
    boundaries are crossed), every page poisoned with NaN before use (a read of a page or row a
    sequence does not own shows up as NaN)."""

    def __init__(self, model, num_seqs, max_len, page_size=4, seed=0):
        g = torch.Generator().manual_seed(seed)
        per_seq = -(-max_len // page_size)
        self.pages = torch.randperm(num_seqs * per_seq + 3, generator=g)[: num_seqs * per_seq]
        self.block_table = self.pages.view(num_seqs, per_seq).to(torch.int32)
        self.caches = model.make_kv_caches(num_seqs * per_seq + 3, page_size)
        for c in self.caches:
            c.fill_(float("nan"))
        self.lens = [0] * num_seqs
        self.model = model

    def step(self, chunks):
        """chunks: [(seq, tokens 1-D)], in batch order; returns logits of every new token."""
        ids, pos, cu, seq_lens = [], [], [0], []
        for seq, toks in chunks:
            n = toks.shape[0]
            ids.append(toks)
            pos.append(torch.arange(self.lens[seq], self.lens[seq] + n))
            self.lens[seq] += n
            cu.append(cu[-1] + n)
            seq_lens.append(self.lens[seq])
        batch = PagedBatch(input_ids=torch.cat(ids), positions=torch.cat(pos),
                           cu_seqlens_q=torch.tensor(cu, dtype=torch.int32),
                           seq_lens=torch.tensor(seq_lens, dtype=torch.int32),
                           block_table=self.block_table[[s for s, _ in chunks]],
                           logits_indices=torch.arange(cu[-1]), max_q_len=max(c[1].shape[0] for c in chunks))
        out = self.model.forward_paged(batch, self.caches)
        assert out.dtype == torch.float32 and out.shape == (cu[-1], self.model.config.vocab_size)
        return [out[cu[i]:cu[i + 1]] for i in range(len(chunks))]


# ---- training forward --------------------------------------------------------------------------

def test_training_forward_equals_transformers(pair):
    hf, ours, _ = pair
    ids = torch.randint(0, 256, (3, 37), generator=torch.Generator().manual_seed(1))
    want = hf_logits(hf, ids)
    with torch.no_grad():
        got = ours(ids)
    assert got.shape == want.shape
    assert_logits_close(got, want)


def test_padding_mask_equals_transformers(pair):
    hf, ours, _ = pair
    ids = torch.randint(0, 256, (2, 20), generator=torch.Generator().manual_seed(2))
    mask = torch.ones(2, 20, dtype=torch.long)
    mask[0, 15:] = 0      # right padding
    mask[1, :4] = 0       # left padding
    want = hf_logits(hf, ids, mask)
    with torch.no_grad():
        got = ours(ids, attention_mask=mask)
    valid = mask.bool()
    assert torch.isfinite(got).all()
    assert_logits_close(got[valid], want[valid])


def test_loss_and_gradients_equal_transformers(pair):
    hf, ours, _ = pair
    ids = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(3))
    labels = ids.clone()
    labels[0, :5] = -100
    hf.zero_grad()
    ours.zero_grad()
    want = hf(input_ids=ids, labels=labels).loss
    got = ours(ids, labels=labels)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    want.backward()
    got.backward()
    # Every parameter gets a finite, non-zero gradient ...
    for name, p in ours.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    # ... equal to transformers' (experts compared through the checkpoint names).
    hf_grads = {n: p.grad for n, p in hf.named_parameters() if p.grad is not None}
    n_routed, F = HF_SHAPE["n_routed_experts"], HF_SHAPE["expert_ffn_hidden_size"]
    for name, p in ours.named_parameters():
        if name.endswith("mlp.w13"):
            want_g = hf_grads[name.replace("mlp.w13", "mlp.experts.gate_up_proj")][:n_routed]
        elif name.endswith("mlp.w2"):
            want_g = hf_grads[name.replace("mlp.w2", "mlp.experts.down_proj")]
        elif name.endswith("mlp.router_weight"):
            want_g = hf_grads[name.replace("mlp.router_weight", "mlp.router.classifier.weight")]
        else:
            want_g = hf_grads[name]
        torch.testing.assert_close(p.grad, want_g, rtol=1e-3, atol=1e-5 * want_g.abs().max().item() + 1e-7,
                                   msg=lambda m: f"{name}: {m}")
    del F


# ---- paged inference -----------------------------------------------------------------------------

def test_paged_prefill_batch_equals_transformers(pair):
    hf, ours, _ = pair
    g = torch.Generator().manual_seed(4)
    seqs = [torch.randint(0, 256, (n,), generator=g) for n in (13, 1, 30)]
    pages = Pages(ours, 3, 32)
    outs = pages.step(list(enumerate(seqs)))
    for s, out in zip(seqs, outs):
        assert_logits_close(out, hf_logits(hf, s[None])[0])


def test_decode_token_by_token_equals_full_forward(pair):
    hf, ours, _ = pair
    g = torch.Generator().manual_seed(5)
    seqs = [torch.randint(0, 256, (n,), generator=g) for n in (15, 10)]
    want = [hf_logits(hf, s[None])[0] for s in seqs]
    pages = Pages(ours, 2, 16, page_size=4)
    pages.step([(0, seqs[0][:3]), (1, seqs[1][:2])])
    for t in range(3, 15):  # both decode together while both have tokens left, then seq 0 alone
        chunks = [(0, seqs[0][t:t + 1])] + ([(1, seqs[1][t - 1:t])] if t - 1 < 10 else [])
        outs = pages.step(chunks)
        assert_logits_close(outs[0][0], want[0][t])
        if len(outs) > 1:
            assert_logits_close(outs[1][0], want[1][t - 1])


def test_chunked_prefill_on_cached_prefix_equals_full_forward(pair):
    hf, ours, _ = pair
    s = torch.randint(0, 256, (41,), generator=torch.Generator().manual_seed(6))
    want = hf_logits(hf, s[None])[0]
    pages = Pages(ours, 1, 41, page_size=8)
    start = 0
    for n in (9, 1, 14, 17):   # chunk, one decode, chunks crossing pages
        (out,) = pages.step([(0, s[start:start + n])])
        assert_logits_close(out, want[start:start + n])
        start += n


def test_mixed_batch_equals_per_sequence(pair):
    hf, ours, _ = pair
    g = torch.Generator().manual_seed(7)
    seqs = [torch.randint(0, 256, (n,), generator=g) for n in (20, 25, 31, 12)]
    want = [hf_logits(hf, s[None])[0] for s in seqs]
    pages = Pages(ours, 4, 32, page_size=4)
    pages.step([(0, seqs[0][:10]), (2, seqs[2][:7])])              # cache two prefixes
    pages.step([(1, seqs[1][:5])])
    # decode, fresh prefill, chunk onto a prefix, decode: any order in one step
    outs = pages.step([(0, seqs[0][10:11]), (3, seqs[3][:12]), (2, seqs[2][7:31]), (1, seqs[1][5:6])])
    assert_logits_close(outs[0], want[0][10:11])
    assert_logits_close(outs[1], want[3][:12])
    assert_logits_close(outs[2], want[2][7:31])
    assert_logits_close(outs[3], want[1][5:6])


def test_logits_indices_select_rows(pair):
    _, ours, _ = pair
    s = torch.randint(0, 256, (10,), generator=torch.Generator().manual_seed(8))
    pages = Pages(ours, 1, 10)
    batch = PagedBatch(input_ids=s, positions=torch.arange(10), cu_seqlens_q=torch.tensor([0, 10], dtype=torch.int32),
                       seq_lens=torch.tensor([10], dtype=torch.int32), block_table=pages.block_table,
                       logits_indices=torch.tensor([9, 2]), max_q_len=10)
    out = ours.forward_paged(batch, pages.caches)
    with torch.no_grad():
        full = ours(s[None])[0]
    assert_logits_close(out, full[[9, 2]])


def test_weight_update_is_seen_and_refresh_is_idempotent(pair, tmp_path):
    hf, _, path = pair
    ours = LongcatFlashForCausalLM.from_pretrained(path)
    s = torch.randint(0, 256, (6,), generator=torch.Generator().manual_seed(9))

    def decode_logits():
        pages = Pages(ours, 1, 8)
        pages.step([(0, s[:5])])
        return pages.step([(0, s[5:6])])[0][0]

    before = decode_logits()
    ours.refresh_inference_weights()
    ours.refresh_inference_weights()     # twice: no scale is folded twice
    torch.testing.assert_close(decode_logits(), before, rtol=0, atol=0)
    new = {k: v * 1.1 for k, v in ours.hf_state_dict().items() if "kv_b_proj" in k or "kv_a_layernorm" in k}
    ours.load_weights(new, strict=False)
    with torch.no_grad():
        want = ours(s[None])[0, 5]
    after = decode_logits()
    assert (after - before).abs().max() > 1e-3
    assert_logits_close(after, want)
    with torch.no_grad():   # an in-place optimizer-style update, without any call
        ours.model.layers[0].self_attn[1].kv_b_proj.weight.mul_(0.9)
        want = ours(s[None])[0, 5]
    assert_logits_close(decode_logits(), want)
    # The norm weights forward_paged keeps detached: an in-place update shows through, and a
    # weight given new memory (.data =) is picked up too, without any call.
    for norm in (ours.model.layers[0].post_attention_layernorm[1], ours.model.norm):
        with torch.no_grad():
            norm.weight.mul_(1.5)
            want = ours(s[None])[0, 5]
        assert_logits_close(decode_logits(), want)
        norm.weight.data = norm.weight.data * 0.5
        with torch.no_grad():
            want = ours(s[None])[0, 5]
        assert_logits_close(decode_logits(), want)


# ---- Zig-Zag: SSA sublayers against transformers with a masked attention -------------------------

def _ssa_eager(layer_type, window):
    """transformers' eager attention with our own additive mask: causal on full sublayers, the
    kernels' SSA visibility rule on the sublayers layer_type marks '1'."""
    def attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
        S = query.shape[2]
        ar = torch.arange(S)
        vis = reference.attention_visible(ar, ar, True, window if layer_type[module.layer_idx] == "1" else None)
        attention_mask = torch.zeros(S, S).masked_fill(~vis, float("-inf"))[None, None]
        return hf_modeling.eager_attention_forward(module, query, key, value, attention_mask, scaling, dropout)
    return attention


@pytest.mark.parametrize("ssa,window,length", [
    ({"sink_size": 8, "recent_size": 16, "sparsity": 0.5, "layer_type": "0110"},
     SsaWindow(sink=8, local=16, tokens=True), 70),
    ({"sink_size": 128, "recent_size": 128, "sparsity": 0.5, "layer_type": "1001"},
     SsaWindow(sink=1, local=1, block_size=128), 300),
])
def test_zigzag_equals_masked_transformers(tmp_path, ssa, window, length):
    hf = hf_checkpoint(tmp_path, seed=1)
    with open(tmp_path / "config.json") as f:
        d = json.load(f)
    d["streaming_sparse_attention"] = ssa
    with open(tmp_path / "config.json", "w") as f:
        json.dump(d, f)
    name = f"ssa_eager_{ssa['layer_type']}"
    AttentionInterface.register(name, _ssa_eager(ssa["layer_type"], window))
    hf.config._attn_implementation = name
    ours = LongcatFlashForCausalLM.from_pretrained(tmp_path)
    assert ours.config.zigzag.ssa_layers == [i for i, c in enumerate(ssa["layer_type"]) if c == "1"]
    s = torch.randint(0, 256, (length,), generator=torch.Generator().manual_seed(10))
    want = hf_logits(hf, s[None])[0]
    hf.config._attn_implementation = "eager"
    full_attention = hf_logits(hf, s[None])[0]
    assert (want - full_attention).abs().max() > 1e-2 * want.abs().max()   # the window matters here
    with torch.no_grad():
        assert_logits_close(ours(s[None])[0], want)
    pages = Pages(ours, 1, length, page_size=16)
    split = length - 6
    (out,) = pages.step([(0, s[: split // 2])])
    assert_logits_close(out, want[: split // 2])
    (out,) = pages.step([(0, s[split // 2: split])])
    assert_logits_close(out, want[split // 2: split])
    for t in range(split, length):
        (out,) = pages.step([(0, s[t:t + 1])])
        assert_logits_close(out[0], want[t])


# ---- YaRN RoPE ----------------------------------------------------------------------------------

@pytest.mark.parametrize("yarn", [
    {"factor": 4.0, "original_max_position_embeddings": 16},                                   # attention factor
    {"factor": 8.0, "original_max_position_embeddings": 16, "mscale": 1.0, "mscale_all_dim": 1.0},  # softmax mscale
])
def test_yarn_rope_equals_transformers(tmp_path, yarn):
    hf = hf_checkpoint(tmp_path, seed=2, rope_parameters={"rope_type": "yarn", "rope_theta": 1e7, **yarn})
    ours = LongcatFlashForCausalLM.from_pretrained(tmp_path)
    assert ours.config.rope_type == "yarn"
    s = torch.randint(0, 256, (40,), generator=torch.Generator().manual_seed(14))
    want = hf_logits(hf, s[None])[0]
    with torch.no_grad():
        assert_logits_close(ours(s[None])[0], want)
    pages = Pages(ours, 1, 40)
    (out,) = pages.step([(0, s[:36])])
    assert_logits_close(out, want[:36])
    for t in range(36, 40):
        (out,) = pages.step([(0, s[t:t + 1])])
        assert_logits_close(out[0], want[t])


# ---- bf16 ------------------------------------------------------------------------------------------

def test_bf16_within_bf16_tolerance(pair):
    hf, _, path = pair
    ours = LongcatFlashForCausalLM.from_pretrained(path, dtype=torch.bfloat16)
    assert ours.dtype == torch.bfloat16
    assert ours.model.layers[0].mlp.router_weight.dtype == torch.float32
    s = torch.randint(0, 256, (24,), generator=torch.Generator().manual_seed(11))
    want = hf_logits(hf, s[None])[0]
    with torch.no_grad():
        train = ours(s[None])[0]
    pages = Pages(ours, 1, 24)
    (pre,) = pages.step([(0, s[:20])])
    dec = torch.cat([pages.step([(0, s[t:t + 1])])[0] for t in range(20, 24)])
    paged = torch.cat([pre, dec])
    scale = want.abs().max().item()
    for got in (train, paged):
        assert torch.isfinite(got).all()
        # bf16 keeps 8 bits of mantissa; through 2 layers the logits stay within a few percent.
        assert (got.float() - want).abs().mean() <= 0.02 * scale
        # A bf16 router input can flip a near-tie top-k choice (transformers' own bf16 does the
        # same), which moves that one token's logits: every other position stays within 10%.
        per_token = (got.float() - want).abs().amax(dim=-1)
        assert (per_token > 0.1 * scale).sum() <= 1, per_token / scale
    # the paged path and the training forward agree with each other as closely
    assert (paged - train.float()).abs().mean() <= 0.02 * scale


# ---- checkpoints -----------------------------------------------------------------------------------

def test_save_load_round_trip_sharded_and_transformers_reads_it(pair, tmp_path):
    hf, ours, _ = pair
    ours.save_pretrained(tmp_path, max_shard_size="200KB", zero_expert_slots="auto")
    files = sorted(os.listdir(tmp_path))
    assert "model.safetensors.index.json" in files and sum(f.endswith(".safetensors") for f in files) > 1
    back = LongcatFlashForCausalLM.from_pretrained(tmp_path)
    sd, sd2 = ours.state_dict(), back.state_dict()
    assert sd.keys() == sd2.keys()
    for k in sd:
        assert torch.equal(sd[k], sd2[k]), k
    ids = torch.randint(0, 256, (1, 12), generator=torch.Generator().manual_seed(12))
    hf2 = HFModel.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert_logits_close(hf_logits(hf2, ids), hf_logits(hf, ids))
    ours.save_pretrained(tmp_path)           # a single file replaces the shards
    assert sorted(f for f in os.listdir(tmp_path) if "safetensors" in f) == ["model.safetensors"]


def test_packed_expert_names_and_mtp_load(pair):
    hf, ours, path = pair
    back = LongcatFlashForCausalLM.from_pretrained(path)
    with torch.no_grad():
        for p in back.parameters():
            p.zero_()
    state = dict(hf.state_dict())  # transformers' in-memory names: packed experts with zero-expert rows
    # transformers up to 5.24 gives the zero experts rows of their own; 5.25 only the routed ones
    assert state["model.layers.0.mlp.experts.gate_up_proj"].shape[0] == (6 if transformers_pads_zero_experts() else 4)
    state["model.mtp.layers.0.weight"] = torch.zeros(3)
    back.load_weights(state)
    for k, v in ours.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k


def _edit_checkpoint(src, dst, edit):
    from safetensors.torch import load_file, save_file
    os.makedirs(dst, exist_ok=True)
    tensors = load_file(os.path.join(src, "model.safetensors"))
    edit(tensors)
    save_file(tensors, os.path.join(dst, "model.safetensors"))
    with open(os.path.join(src, "config.json")) as f, open(os.path.join(dst, "config.json"), "w") as g:
        g.write(f.read())


@pytest.mark.parametrize("edit,error,match", [
    (lambda t: t.__setitem__("model.layers.1.self_attn.0.q_b_proj.weight", torch.zeros(3, 48)), ValueError,
     r"'model.layers.1.self_attn.0.q_b_proj.weight' has shape \[3, 48\], expected \[192, 48\]"),
    (lambda t: t.pop("model.layers.0.mlp.experts.2.up_proj.weight"), ValueError,
     r"missing tensor\(s\) \['model.layers.0.mlp.experts.2.up_proj.weight'\]"),
    (lambda t: t.pop("model.norm.weight"), ValueError, r"missing tensor\(s\) \['model.norm.weight'\]"),
    (lambda t: t.__setitem__("model.layers.0.bogus.weight", torch.zeros(2)), KeyError,
     r"unexpected tensor 'model.layers.0.bogus.weight'"),
    (lambda t: t.__setitem__("model.layers.0.mlp.experts.9.down_proj.weight", torch.zeros(96, 32)), KeyError,
     r"unexpected tensor 'model.layers.0.mlp.experts.9.down_proj.weight'"),
])
def test_bad_checkpoints_name_the_tensor(pair, tmp_path, edit, error, match):
    _, _, path = pair
    _edit_checkpoint(path, tmp_path, edit)
    with pytest.raises(error, match=match):
        LongcatFlashForCausalLM.from_pretrained(tmp_path)


# ---- configs -------------------------------------------------------------------------------------

def test_reads_transformers_config_json(pair):
    _, ours, path = pair
    with open(os.path.join(path, "config.json")) as f:
        d = json.load(f)
    assert "rope_parameters" in d
    c = ours.config
    assert (c.hidden_size, c.num_layers, c.num_hidden_layers, c.moe_topk, c.zero_expert_num) == (96, 2, 4, 3, 2)
    assert c.rope_theta == 1e7 and c.pad_token_id is None and c.streaming_sparse_attention is None
    assert c.extra["transformers_version"] == d["transformers_version"]


def test_original_checkpoint_style_config_aliases_and_unknown_fields():
    d = PRESETS["tiny"].to_dict()
    for k in ("n_routed_experts", "moe_topk", "ffn_hidden_size", "num_layers", "rope_parameters"):
        d.pop(k)
    d.update(num_local_experts=4, num_experts_per_tok=2, intermediate_size=256, num_hidden_layers=4,
             rope_theta=1e7, attention_method="MLA", zero_expert_type="identity", mystery_knob=[1, 2])
    with pytest.warns(UserWarning, match=r"unknown field\(s\) \['mystery_knob'\]"):
        c = LongcatFlashConfig.from_dict(d)
    assert (c.n_routed_experts, c.moe_topk, c.ffn_hidden_size, c.num_layers) == (4, 2, 256, 2)
    out = c.to_dict()
    assert out["mystery_knob"] == [1, 2] and out["attention_method"] == "MLA"
    with warnings.catch_warnings(record=True):
        assert LongcatFlashConfig.from_dict(out) == c
    with pytest.warns(UserWarning, match="'num_hidden_layers' \\(56\\) is not 2 \\* num_layers \\(4\\)"):
        assert LongcatFlashConfig.from_dict({**PRESETS["tiny"].to_dict(), "num_hidden_layers": 56}).num_layers == 2
    with pytest.raises(ValueError, match="'num_local_experts' \\(5\\) conflicts with 'n_routed_experts' \\(4\\)"):
        LongcatFlashConfig.from_dict({**PRESETS["tiny"].to_dict(), "num_local_experts": 5})


def test_config_save_and_json_round_trip(tmp_path):
    c = PRESETS["tiny-zigzag"]
    c.save(tmp_path)
    back = LongcatFlashConfig.from_json_file(tmp_path)
    assert back == c and back.zigzag.window() == SsaWindow(sink=16, local=32, tokens=True)


@pytest.mark.parametrize("change,error,match", [
    ({"kv_lora_rank": 256}, ValueError, "'kv_lora_rank' must be 512"),
    ({"qk_rope_head_dim": 32, "head_dim": 32}, ValueError, "'qk_rope_head_dim' must be 64"),
    ({"moe_topk": 9}, ValueError, "'moe_topk' must be <= n_routed_experts \\+ zero_expert_num = 6"),
    ({"hidden_size": 0}, ValueError, "'hidden_size' must be >= 1"),
    ({"num_layers": 2.5}, TypeError, "'num_layers' must be an int"),
    ({"num_key_value_heads": 1}, ValueError, "'num_key_value_heads' must be num_attention_heads"),
    ({"streaming_sparse_attention": {"sink_size": 1, "recent_size": 4, "sparsity": 0.5, "layer_type": "01"}},
     ValueError, "one character per attention sublayer \\(4\\), got 2"),
    ({"rope_scaling": {"rope_type": "longrope", "factor": 4.0}}, ValueError, "rope type 'longrope'"),
    ({"rope_scaling": {"rope_type": "yarn"}}, ValueError, "YaRN 'rope_scaling' needs 'factor'"),
    ({"zero_expert_type": "const"}, ValueError, "'zero_expert_type' must be 'identity'"),
])
def test_config_validation_names_the_field(change, error, match):
    with pytest.raises(error, match=match):
        LongcatFlashConfig.from_preset("tiny", **change)


def test_presets_and_parameter_counts():
    assert set(PRESETS) >= {"longcat-flash", "longcat-flash-zigzag", "tiny", "tiny-zigzag", "small"}
    for name in ("tiny", "tiny-zigzag", "small"):
        c = PRESETS[name]
        assert (c.vocab_size, c.pad_token_id, c.bos_token_id, c.eos_token_id) == (4096, 0, 1, 2)
        assert c.zero_expert_num > 0
        assert count_parameters(c)["total"] == LongcatFlashForCausalLM(c).num_parameters()
    assert 1e6 <= count_parameters(PRESETS["tiny"])["total"] <= 5e6
    assert 50e6 <= count_parameters(PRESETS["small"])["total"] <= 100e6
    assert PRESETS["longcat-flash-zigzag"].zigzag.layer_type.count("1") == 28
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        LongcatFlashConfig.from_preset("huge")


def test_560b_counts_on_meta_device():
    c = PRESETS["longcat-flash"]
    model = LongcatFlashForCausalLM(c, device="meta")
    counts = count_parameters(c)
    assert model.num_parameters() == counts["total"]
    assert 560e9 <= counts["total"] <= 561e9
    # the report: 18.6B-31.3B active, ~27B on average (input embedding excluded)
    assert 18.6e9 <= counts["active_min"] <= 18.8e9
    assert 31.3e9 <= counts["active_max"] <= 31.5e9
    assert 26.5e9 <= counts["active_expected"] <= 27.5e9 and counts["ffn_experts_per_token_expected"] == 8
    assert model.make_kv_caches.__self__ is model and c.num_hidden_layers == 56


def test_poisoned_page_read_shows_up(pair):
    # The NaN poisoning above would catch a stray read: a poisoned row the sequence owns does show up.
    _, ours, _ = pair
    s = torch.randint(0, 256, (9,), generator=torch.Generator().manual_seed(13))
    pages = Pages(ours, 1, 12, page_size=4)
    pages.step([(0, s[:8])])
    pages.caches[1][pages.block_table[0, 1], 2] = float("nan")    # token 6 of sublayer 1
    (out,) = pages.step([(0, s[8:9])])
    assert torch.isnan(out).all()


def test_paged_model_contract_and_bad_batches(pair):
    from longcat.models import PagedModel

    _, ours, _ = pair
    assert isinstance(ours, PagedModel)
    caches = ours.make_kv_caches(4, 4)
    assert len(caches) == 4 and caches[0].shape == (4, 4, 1, 576) and caches[0].dtype == torch.float32
    good = dict(input_ids=torch.tensor([5, 6]), positions=torch.tensor([0, 0]),
                cu_seqlens_q=torch.tensor([0, 1, 2], dtype=torch.int32), seq_lens=torch.tensor([1, 1], dtype=torch.int32),
                block_table=torch.tensor([[0], [1]], dtype=torch.int32), logits_indices=torch.tensor([0, 1]), max_q_len=1)
    assert ours.forward_paged(PagedBatch(**good), caches).shape == (2, 256)
    for change, error, match in [
        (dict(max_q_len=1, input_ids=torch.tensor([5, 6, 7]), positions=torch.tensor([0, 0, 1])), ValueError,
         "'max_q_len' is 1 but the batch has 3 new tokens for 2 sequences"),
        (dict(seq_lens=torch.tensor([1, 1])), TypeError, "'seq_lens' must be int32"),
        (dict(block_table=torch.tensor([[0]], dtype=torch.int32)), ValueError, "'block_table' \\[B, max_pages\\]"),
    ]:
        with pytest.raises(error, match=match):
            ours.forward_paged(PagedBatch(**{**good, **change}), caches)
    with pytest.raises(ValueError, match="one cache per attention sublayer \\(4\\), got 3"):
        ours.forward_paged(PagedBatch(**good), caches[:3])


def test_tied_embeddings(tmp_path):
    c = LongcatFlashConfig.from_preset("tiny", tie_word_embeddings=True)
    model = LongcatFlashForCausalLM(c)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert model.num_parameters() == count_parameters(c)["total"]
    model.save_pretrained(tmp_path)
    back = LongcatFlashForCausalLM.from_pretrained(tmp_path)
    ids = torch.randint(3, 4096, (1, 8))
    with torch.no_grad():
        torch.testing.assert_close(back(ids), model(ids), rtol=0, atol=0)


def test_save_pretrained_failing_part_way_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    import safetensors.torch as st

    torch.manual_seed(0)
    first = LongcatFlashForCausalLM(LongcatFlashConfig.from_preset("tiny"))
    first.save_pretrained(tmp_path)
    assert oct(os.stat(tmp_path / "model.safetensors").st_mode & 0o777) != oct(0o600)
    second = LongcatFlashForCausalLM(LongcatFlashConfig.from_preset("tiny"))

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(st, "save_file", disk_full)
    with pytest.raises(OSError, match="No space"):
        second.save_pretrained(tmp_path)
    monkeypatch.undo()
    again = LongcatFlashForCausalLM.from_pretrained(tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))
    # A sharded save over a single-file checkpoint leaves only the shards and the index.
    second.save_pretrained(tmp_path, max_shard_size=2_000_000)
    names = sorted(f for f in os.listdir(tmp_path) if f.endswith(".safetensors"))
    assert names and all(f.startswith("model-") for f in names)
    loaded = LongcatFlashForCausalLM.from_pretrained(tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(second.state_dict().values(), loaded.state_dict().values()))
