"""Plain-torch references for every longcat kernel: written for clarity, not speed.

Each function defines the semantics its kernel must reproduce; tests compare the two.
"""
from __future__ import annotations

import torch


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm as Hugging Face transformers' LongcatFlashRMSNorm / LlamaRMSNorm computes it:
    statistics in fp32, the normalised value rounded to x's dtype, then multiplied by weight."""
    dtype = x.dtype
    xf = x.float()
    variance = xf.pow(2).mean(-1, keepdim=True)
    return weight * (xf * torch.rsqrt(variance + eps)).to(dtype)


def fused_add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                       eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The decoder's residual step: s = x + residual (in x's dtype), then (rms_norm(s), s)."""
    s = x + residual
    return rms_norm(s, weight, eps), s


def linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x @ weight.T`` summed in float32, rounded once to x's dtype (``ops.linear``); with a
    3-D weight ``[G, N, K]`` and x ``[G, M, K]``, one product per group."""
    return (x.float() @ weight.float().transpose(-1, -2)).to(x.dtype)


def moe_grouped_swiglu(x_perm: torch.Tensor, offsets: torch.Tensor, w13: torch.Tensor,
                       w2: torch.Tensor) -> torch.Tensor:
    """The grouped expert MLP of the MoE layer, one expert at a time, as Hugging Face
    transformers' LongcatFlashExperts runs it: rows ``offsets[e]:offsets[e+1]`` of ``x_perm``
    (grouped by expert) go through expert e's SwiGLU MLP,
    ``gate, up = F.linear(x, w13[e]).chunk(2, -1)``; ``F.linear(F.silu(gate) * up, w2[e])``.

    w13 is ``gate_up_proj [E, 2F, H]`` (gate rows first), w2 is ``down_proj [E, H, F]``. In bf16
    every op rounds its result to bf16 (matmuls accumulate in fp32), which fixes the rounding
    the kernels reproduce."""
    bounds = [int(b) for b in offsets.tolist()]
    outs = []
    for e in range(w13.shape[0]):
        x = x_perm[bounds[e]:bounds[e + 1]]
        gate, up = torch.nn.functional.linear(x, w13[e]).chunk(2, dim=-1)
        outs.append(torch.nn.functional.linear(torch.nn.functional.silu(gate) * up, w2[e]))
    return torch.cat(outs, dim=0)


# ---- MoE: routing with zero-computation experts, dispatch, combine --------------------------

def moe_route(hidden: torch.Tensor, weight: torch.Tensor, correction_bias: torch.Tensor | None,
              top_k: int, n_routed: int, n_zero: int, routed_scaling_factor: float = 1.0,
              score: str = "softmax", renormalize: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """LongCat-Flash's router, as transformers' LongcatFlashTopkRouter computes it.

    Experts 0..n_routed-1 are routed, n_routed..n_routed+n_zero-1 are zero-computation experts;
    the router does not distinguish them. Logits in fp32, scores = softmax (or sigmoid) over all
    E experts, the top-k chosen on scores + correction_bias, weights = the *unbiased* scores of
    the chosen experts (optionally renormalised to sum 1, DeepSeek style) times
    routed_scaling_factor. Returns (ids [T, k] int32, weights [T, k] float32), ids sorted by
    descending biased score, equal scores in ascending id order.
    """
    logits = torch.nn.functional.linear(hidden.float(), weight.float())
    if score == "softmax":
        scores = logits.softmax(dim=-1)
    elif score == "sigmoid":
        scores = logits.sigmoid()
    else:
        raise ValueError(f"moe_route: argument 'score' must be 'softmax' or 'sigmoid', got {score!r}")
    biased = scores if correction_bias is None else scores + correction_bias.float()
    # A stable descending sort keeps equal biased scores in ascending expert id order.
    ids = torch.sort(biased.detach(), dim=-1, descending=True, stable=True).indices[:, :top_k]
    weights = scores.gather(1, ids)
    if renormalize:
        weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
    return ids.to(torch.int32), weights * routed_scaling_factor


def moe_dispatch(x: torch.Tensor, topk_ids: torch.Tensor, n_routed: int, align: int = 1):
    """Groups token rows by routed expert: returns (x_perm [R, H], counts [n_routed],
    offsets [n_routed + 1], row_token [R], slot_row [T, k]), the index tensors int32.

    Expert e's rows are x_perm[offsets[e] : offsets[e] + counts[e]], in token order; its segment
    is padded with zero rows (row_token -1) to a multiple of `align`, so R = offsets[n_routed]
    depends on the ids. slot_row[t, j] is the row holding token t's j-th choice, -1 for a zero
    expert (id >= n_routed), which is never dispatched.
    """
    T, k = topk_ids.shape
    flat = topk_ids.reshape(-1).long()
    routed = flat < n_routed
    counts = torch.bincount(flat[routed], minlength=n_routed)[:n_routed]
    padded = (counts + align - 1) // align * align
    offsets = torch.zeros(n_routed + 1, dtype=torch.long, device=x.device)
    offsets[1:] = padded.cumsum(0)
    R = int(offsets[-1])
    # The routed entries (t * k + j) in expert order; a stable sort keeps token order per expert.
    entry = torch.arange(T * k, device=x.device)[routed]
    expert = flat[routed]
    order = torch.sort(expert, stable=True).indices
    entry, expert = entry[order], expert[order]
    first_of_expert = counts.cumsum(0) - counts            # unpadded start of each expert
    rank = torch.arange(entry.numel(), device=x.device) - first_of_expert[expert]
    rows = offsets[expert] + rank
    token = entry // k
    slot_row = torch.full((T * k,), -1, dtype=torch.long, device=x.device)
    slot_row[entry] = rows
    row_token = torch.full((R,), -1, dtype=torch.long, device=x.device)
    row_token[rows] = token
    x_perm = x.new_zeros(R, x.shape[1]).index_copy(0, rows, x[token])
    return (x_perm, counts.int(), offsets.int(), row_token.int(), slot_row.view(T, k).int())


def moe_combine(expert_out: torch.Tensor, slot_row: torch.Tensor, topk_ids: torch.Tensor,
                topk_weights: torch.Tensor, x: torch.Tensor, n_routed: int) -> torch.Tensor:
    """The weighted inverse of dispatch: y[t] = sum_j w[t, j] * (expert_out[slot_row[t, j]] for a
    routed expert, x[t] for a zero expert), summed in fp32 and rounded once to x's dtype."""
    routed = (topk_ids < n_routed)[..., None]
    xf = x.float()[:, None, :].expand(-1, topk_ids.shape[1], -1)
    if expert_out.shape[0] > 0:
        gathered = expert_out.float()[slot_row.long().clamp(min=0)]
    else:
        gathered = torch.zeros_like(xf)
    src = torch.where(routed, gathered, xf)
    return (topk_weights.float()[..., None] * src).sum(dim=1).to(x.dtype)


# ---- paged latent KV cache and RoPE (csrc/include/longcat/mla.h) -------------------------

def rope_interleaved(x: torch.Tensor, positions: torch.Tensor, base: float = 1e7,
                     half_output: bool = True, inv_freq: torch.Tensor | None = None) -> torch.Tensor:
    """Interleaved (DeepSeek / LongCat-Flash) RoPE over the last dim, fp32 math, one rounding.
    half_output: transformers' layout (rotated even elements, then rotated odd elements)."""
    d = x.shape[-1]
    if inv_freq is None:  # as transformers' default RoPE
        inv_freq = 1.0 / (base ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))
    angles = positions.float()[:, None] * inv_freq[None, :]          # [T, D/2]
    shape = (x.shape[0],) + (1,) * (x.dim() - 2) + (d // 2,)
    cos, sin = angles.cos().view(shape), angles.sin().view(shape)
    xf = x.float()
    a, b = xf[..., 0::2], xf[..., 1::2]
    ra, rb = a * cos - b * sin, b * cos + a * sin
    out = torch.cat([ra, rb], -1) if half_output else torch.stack([ra, rb], -1).flatten(-2)
    return out.to(x.dtype)


def mla_append_kv(kv_cache: torch.Tensor, latent: torch.Tensor, rope_k: torch.Tensor,
                  block_table: torch.Tensor, seq_ids: torch.Tensor, positions: torch.Tensor) -> None:
    """Write token t's [latent | rope_k] into page block_table[seq, pos // page_size], row
    pos % page_size, in place."""
    page_size = kv_cache.shape[1]
    for t in range(latent.shape[0]):
        s, p = int(seq_ids[t]), int(positions[t])
        page = int(block_table[s, p // page_size])
        kv_cache[page, p % page_size, 0] = torch.cat([latent[t], rope_k[t]])


def mla_gather(kv_cache: torch.Tensor, block_table: torch.Tensor,
               cache_seqlens: torch.Tensor) -> torch.Tensor:
    """Each sequence's cached tokens [L_b, 576], packed in batch order: [sum L_b, 576]."""
    page_size = kv_cache.shape[1]
    rows = []
    for b in range(block_table.shape[0]):
        length = int(cache_seqlens[b])
        pages = block_table[b, : (length + page_size - 1) // page_size].long()
        rows.append(kv_cache[pages, :, 0].reshape(-1, kv_cache.shape[-1])[:length])
    return torch.cat(rows) if rows else kv_cache.new_empty(0, kv_cache.shape[-1])


def kv_copy_blocks(src_pool: torch.Tensor, dst_pool: torch.Tensor, src_ids: torch.Tensor,
                   dst_ids: torch.Tensor) -> None:
    """``dst_pool[dst_ids[i]] = src_pool[src_ids[i]]``: whole pages, between pools of any page
    counts and devices (destinations distinct)."""
    pages = src_pool[src_ids.long().to(src_pool.device)]
    dst_pool[dst_ids.long().to(dst_pool.device)] = pages.to(dst_pool.device)
def attention_visible(q_pos: torch.Tensor, k_pos: torch.Tensor, causal: bool = True,
                      window=None, num_keys: int | None = None) -> torch.Tensor:
    """The visibility rule of ``csrc/include/longcat/mla.h`` as a bool mask [len(q_pos), len(k_pos)].

    A query at absolute position p sees key j iff j <= p (causal) and, with a window (an
    ``SsaWindow``), in block mode (bs = block_size): ``j // bs < sink`` or
    ``j // bs >= p // bs - local + 1``; in token mode (``window.tokens``): ``j < sink`` or
    ``j >= p - local + 1``. Without ``causal`` every key
    0 .. num_keys - 1 is visible (a window then needs causal; callers check)."""
    p = q_pos[:, None]
    j = k_pos[None, :]
    if not causal:
        return torch.ones(p.shape[0], j.shape[1], dtype=torch.bool, device=q_pos.device)
    vis = j <= p
    if window is not None:
        if not window.tokens:
            bs = window.block_size
            kb, qb = j // bs, p // bs
            vis = vis & ((kb < window.sink) | (kb >= qb - window.local + 1))
        else:
            vis = vis & ((j < window.sink) | (j >= p - window.local + 1))
    return vis


def mla_prefill(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens_q: torch.Tensor,
                cu_seqlens_k: torch.Tensor, softmax_scale: float, causal: bool = True,
                window=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Varlen prefill attention, one sequence at a time in fp32 (FlashAttention varlen layout).

    q ``[total_q, h, d_qk]``, k ``[total_k, h_k, d_qk]``, v ``[total_k, h_k, d_v]`` with
    h % h_k == 0 (query head i reads key head i // (h / h_k)); cu_seqlens int32 prefix sums.
    Causal is bottom-right aligned: query i of a sequence with len_q queries and len_k keys sits
    at position ``i + len_k - len_q``. ``window``: None (full attention) or an
    ``SsaWindow``, see ``attention_visible``. Returns ``out [total_q, h, d_v]`` in q's dtype and
    ``lse [h, total_q]`` fp32 (natural log of the softmax denominator of the scaled scores); a
    query that sees no key gets out 0 and lse +inf."""
    total_q, h, _ = q.shape
    h_k, dv = k.shape[1], v.shape[2]
    out = torch.zeros(total_q, h, dv, dtype=torch.float32, device=q.device)
    lse = torch.full((h, total_q), float("inf"), dtype=torch.float32, device=q.device)
    cq, ck = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    for b in range(len(cq) - 1):
        q0, q1, k0, k1 = cq[b], cq[b + 1], ck[b], ck[b + 1]
        len_q, len_k = q1 - q0, k1 - k0
        if len_q == 0:
            continue
        qf = q[q0:q1].float().transpose(0, 1)                                   # [h, len_q, d]
        kf = k[k0:k1].float().repeat_interleave(h // h_k, dim=1).transpose(0, 1)  # [h, len_k, d]
        vf = v[k0:k1].float().repeat_interleave(h // h_k, dim=1).transpose(0, 1)
        q_pos = torch.arange(len_q, device=q.device) + (len_k - len_q)
        vis = attention_visible(q_pos, torch.arange(len_k, device=q.device), causal, window)
        s = (qf @ kf.transpose(1, 2)) * softmax_scale
        s = s.masked_fill(~vis, float("-inf"))
        row_lse = torch.logsumexp(s, dim=-1)                                    # [h, len_q], -inf if empty
        seen = vis.any(-1)                                                      # [len_q]
        p = torch.where(seen[None, :, None], torch.exp(s - row_lse[..., None]), torch.zeros_like(s))
        out[q0:q1] = (p @ vf).transpose(0, 1)
        lse[:, q0:q1] = torch.where(seen[None, :], row_lse, torch.full_like(row_lse, float("inf")))
    return out.to(q.dtype), lse


# ---- MLA decode over the paged latent cache (with the SSA window) ----------------------------

def mla_decode(q: torch.Tensor, kv_cache: torch.Tensor, block_table: torch.Tensor,
               cache_seqlens: torch.Tensor, head_dim_v: int = 512, softmax_scale: float | None = None,
               causal: bool = True, window=None) -> tuple[torch.Tensor, torch.Tensor]:
    """MLA decode (absorbed form) as FlashMLA's test reference computes it, in fp32 per sequence:
    gather sequence b's L = cache_seqlens[b] tokens through block_table (token p: page
    block_table[b, p // page_size], row p % page_size), K = all 576 values, V = the first
    head_dim_v; query i of s_q sits at p = L - s_q + i (causal; with causal=False every query sees
    the whole cache and a window is applied at p = L - 1); softmax(scale * q K^T) V over the
    visible keys (``attention_visible``). Returns (out [b, s_q, h_q, head_dim_v] in q's dtype,
    lse [b, h_q, s_q] fp32, natural log); a query with no visible key gets out 0, lse +inf."""
    b, s_q, h_q, d = q.shape
    page_size = kv_cache.shape[1]
    scale = d ** -0.5 if softmax_scale is None else softmax_scale
    out = torch.zeros(b, s_q, h_q, head_dim_v, dtype=torch.float32)
    lse = torch.full((b, h_q, s_q), float("inf"), dtype=torch.float32)
    for i in range(b):
        L = int(cache_seqlens[i])
        if L == 0:
            continue
        pages = block_table[i, : (L + page_size - 1) // page_size].long()
        kv = kv_cache[pages].reshape(-1, kv_cache.shape[-1])[:L].float()       # [L, 576]
        q_pos = (torch.arange(s_q) + L - s_q) if causal else torch.full((s_q,), L - 1)
        vis = attention_visible(q_pos, torch.arange(L), True, window)          # [s_q, L]
        s = torch.einsum("shd,ld->hsl", q[i].float(), kv) * scale              # [h_q, s_q, L]
        s = s.masked_fill(~vis[None], float("-inf"))
        l = torch.logsumexp(s, dim=-1)                                          # [h_q, s_q]
        seen = vis.any(-1)[None].expand_as(l)
        p = torch.where(seen[..., None], torch.exp(s - l[..., None]), torch.zeros(()))
        o = torch.einsum("hsl,lv->shv", p, kv[:, :head_dim_v])
        out[i] = o
        lse[i] = torch.where(seen, l, torch.full((), float("inf")))
    return out.to(q.dtype), lse


# ---- one MLA decode sublayer (csrc/include/longcat/mla_layer.h) ------------------------------

def mla_decode_layer(x: torch.Tensor, w_a: torch.Tensor, q_norm: torch.Tensor, w_qb: torch.Tensor,
                     kv_norm: torch.Tensor, w_uk_t: torch.Tensor, w_uv: torch.Tensor, w_o: torch.Tensor,
                     inv_freq: torch.Tensor, norm_eps: float, kv_cache: torch.Tensor, block_table: torch.Tensor,
                     cache_seqlens: torch.Tensor, positions: torch.Tensor, seq_ids: torch.Tensor,
                     softmax_scale: float, window=None) -> torch.Tensor:
    """One MLA decode sublayer as the composition of the references above (``ops.mla_decode_layer``):
    projections, latent RMSNorms, RoPE, the cache append (in place), the absorbed query,
    attention over the cache, the per-head value projection and the output projection.
    Returns ``[T, H]`` in x's dtype; every intermediate is rounded to x's dtype as the kernels do."""
    T = x.shape[0]
    heads, nope = w_uk_t.shape[0], w_uk_t.shape[2]
    q_rank = q_norm.shape[0]
    a = linear(x, w_a)
    q = linear(rms_norm(a[:, :q_rank], q_norm, norm_eps), w_qb).view(T, heads, nope + 64)
    latent = rms_norm(a[:, q_rank:q_rank + 512], kv_norm, norm_eps)
    k_rope = rope_interleaved(a[:, q_rank + 512:], positions, inv_freq=inv_freq)
    mla_append_kv(kv_cache, latent, k_rope, block_table, seq_ids, positions)
    q_abs = torch.cat([linear(q[..., :nope].transpose(0, 1), w_uk_t).transpose(0, 1),
                       rope_interleaved(q[..., nope:], positions, inv_freq=inv_freq)], -1)
    attn, _ = mla_decode(q_abs[:, None], kv_cache, block_table, cache_seqlens, 512, softmax_scale, True, window)
    o = linear(attn[:, 0].transpose(0, 1), w_uv).transpose(0, 1)
    return linear(o.reshape(T, -1), w_o)
