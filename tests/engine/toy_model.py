"""A small ``PagedModel`` over the real paged-cache kernels, so the engine is tested on its own.

Each "sublayer" is one absorbed-MLA-style attention: the token's latent (512) and rotated rope
key (64) go into the sublayer's paged cache with ``mla_append_kv``; queries of width 576 attend
with ``mla_decode`` (causal among a chunk's new tokens, so prefill chunks on top of a cached
prefix work too). ``forward`` is the same math without a cache (plain torch, full causal
attention), the oracle the engine's output is compared with. ``refresh_inference_weights``
derives the query weight actually used (as the real model folds scales), so an engine that
forgets to call it after a weight update produces wrong tokens.
"""
from __future__ import annotations

from types import SimpleNamespace

import torch

from longcat.models.paged import PagedBatch
from longcat.ops import mla_append_kv, mla_decode, reference, rope_interleaved

D_LATENT, D_ROPE = 512, 64
D_QK = D_LATENT + D_ROPE


class ToyPagedModel(torch.nn.Module):
    def __init__(self, vocab_size: int = 64, hidden: int = 32, heads: int = 2, num_sublayers: int = 2,
                 seed: int = 0, max_position_embeddings: int = 512, eos_token_id: int = 2):
        super().__init__()
        self.config = SimpleNamespace(vocab_size=vocab_size, hidden_size=hidden,
                                      max_position_embeddings=max_position_embeddings, eos_token_id=eos_token_id)
        self.heads = heads
        g = torch.Generator().manual_seed(seed)

        def w(*shape, scale):
            return torch.nn.Parameter(torch.randn(*shape, generator=g) * scale)

        L = num_sublayers
        self.embed = w(vocab_size, hidden, scale=1.0)
        self.w_latent = w(L, hidden, D_LATENT, scale=hidden ** -0.5)
        self.w_rope = w(L, hidden, D_ROPE, scale=hidden ** -0.5)
        self.w_q = w(L, hidden, heads * D_QK, scale=2 * hidden ** -0.5)
        self.w_o = w(L, heads * D_LATENT, hidden, scale=(heads * D_LATENT) ** -0.5)
        self.lm_head = w(hidden, vocab_size, scale=3 * hidden ** -0.5)
        self.register_buffer("w_q_used", torch.empty(0), persistent=False)
        self.refresh_inference_weights()

    def refresh_inference_weights(self) -> None:
        """The derived query weight (a folded scale of 2, as LongCat's mla_scale_q_lora)."""
        self.w_q_used = (self.w_q.detach() * 2.0).contiguous()

    def make_kv_caches(self, num_pages, page_size=64, dtype=None, device=None):
        dtype = dtype or self.embed.dtype
        device = device or self.embed.device
        return [torch.zeros(num_pages, page_size, 1, D_QK, dtype=dtype, device=device)
                for _ in range(self.w_q.shape[0])]

    def _query(self, layer, h, positions):
        q = (h @ self.w_q_used[layer]).view(h.shape[0], self.heads, D_QK)
        rot = rope_interleaved(q[..., D_LATENT:].contiguous(), positions)
        return torch.cat([q[..., :D_LATENT], rot], -1)

    @torch.inference_mode()
    def forward_paged(self, batch: PagedBatch, kv_caches):
        h = self.embed[batch.input_ids]
        cu = batch.cu_seqlens_q.tolist()
        q_lens = [b - a for a, b in zip(cu, cu[1:])]
        seq_ids = torch.repeat_interleave(torch.arange(len(q_lens), dtype=torch.int32),
                                          torch.tensor(q_lens))
        pos32 = batch.positions.to(torch.int32)
        decode_rows = [b for b, n in enumerate(q_lens) if n == 1]
        for layer, cache in enumerate(kv_caches):
            latent = h @ self.w_latent[layer]
            rope_k = rope_interleaved((h @ self.w_rope[layer]).contiguous(), batch.positions)
            mla_append_kv(latent.contiguous(), rope_k, cache, batch.block_table, pos32, seq_ids)
            q = self._query(layer, h, batch.positions)
            out = torch.empty(h.shape[0], self.heads, D_LATENT, dtype=h.dtype)
            if decode_rows:
                rows = torch.tensor([cu[b] for b in decode_rows])
                sel = torch.tensor(decode_rows)
                o, _ = mla_decode(q[rows].unsqueeze(1), cache, batch.block_table[sel], batch.seq_lens[sel])
                out[rows] = o[:, 0]
            for b, n in enumerate(q_lens):
                if n > 1:
                    o, _ = mla_decode(q[cu[b]:cu[b + 1]].unsqueeze(0), cache, batch.block_table[b:b + 1],
                                      batch.seq_lens[b:b + 1])
                    out[cu[b]:cu[b + 1]] = o[0]
            h = h + out.reshape(h.shape[0], -1) @ self.w_o[layer]
        return (h[batch.logits_indices] @ self.lm_head).float()

    @torch.inference_mode()
    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Float32 logits ``[L, vocab]`` of one sequence, no cache (the oracle)."""
        pos = torch.arange(input_ids.shape[0])
        h = self.embed[input_ids]
        causal = torch.ones(len(pos), len(pos), dtype=torch.bool).tril()
        for layer in range(self.w_q.shape[0]):
            keys = torch.cat([h @ self.w_latent[layer],
                              reference.rope_interleaved(h @ self.w_rope[layer], pos)], -1)
            q = (h @ self.w_q_used[layer]).view(len(pos), self.heads, D_QK)
            q = torch.cat([q[..., :D_LATENT], reference.rope_interleaved(q[..., D_LATENT:], pos)], -1)
            scores = torch.einsum("thd,sd->hts", q, keys) * D_QK ** -0.5
            p = scores.masked_fill(~causal, float("-inf")).softmax(-1)
            out = torch.einsum("hts,sd->thd", p, keys[:, :D_LATENT])
            h = h + out.reshape(len(pos), -1) @ self.w_o[layer]
        return (h @ self.lm_head).float()


def greedy_reference(model, prompt: list[int], max_tokens: int, eos: int | None = None) -> list[int]:
    """Plain full-forward greedy loop (no cache): the tokens the engine must reproduce."""
    ids = list(prompt)
    out = []
    for _ in range(max_tokens):
        logits = model.forward(torch.tensor(ids))
        if logits.dim() == 3:
            logits = logits[0]
        t = int(logits[-1].argmax())
        out.append(t)
        ids.append(t)
        if t == eos:
            break
    return out
