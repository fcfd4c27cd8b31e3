"""Supervised fine-tuning of a longcat checkpoint on chat trajectories (``longcat sft``).

* **Data**: JSON lines in OpenAI chat format (``longcat data synth``'s ``train.jsonl``), rendered
  with ``longcat.data.format.encode`` (the prompt format evaluation uses too); the loss is taken
  on assistant tokens only. Conversations longer than ``seq_len`` are dropped (counted), or with
  ``truncate=True`` cut after the last assistant turn that ends within ``seq_len`` (a long
  conversation's first turns -- look up the user, copy an id into the next call -- are the
  same skills a short task needs; only those with no complete assistant turn inside are dropped).
  ``max_tier`` keeps only the trajectories of the easiest tiers (``tier``: the task's gold tool
  calls), a curriculum's first stage.
* **Packing**: conversations are packed first-fit-decreasing into rows of ``seq_len`` tokens; a
  block-diagonal causal mask keeps each conversation from seeing its row neighbours (RoPE is
  relative, so a packed conversation computes exactly what it would alone).
* **Precision**: the model runs in bfloat16 (or float32); AdamW updates float32 master copies of
  the weights, which are cast back into the model after every step. ``dtype="auto"`` (the
  default) takes bfloat16 only where the CPU multiplies it natively (AVX512-BF16 / AMX): on an
  AVX2-only CPU a bfloat16 matmul is emulated, about 80x slower than float32 (measured on a
  2-core AVX2 EPYC: 3.5 s against 44 ms for [1710, 128] x [128, 4096]).
* **Schedule**: linear warm-up then cosine decay to ``min_lr_ratio * lr``; ``grad_accum``
  micro-batches per step; gradient clipping on the float32 gradients.
* **Checkpoints**: ``out/checkpoint-<step>`` in the Hugging Face layout (config.json +
  safetensors + tokenizer files) plus ``trainer_state.pt`` (master weights, optimizer, step);
  each is written under a temporary name and renamed into place, so an interrupted or failed
  save leaves the previous checkpoint valid. ``out/final`` is the last one.
* **Resume**: a run in a folder with checkpoints continues from the newest complete one; the data
  order depends only on the seed, so no batch is trained twice. A checkpoint of another model
  shape is a ``ValueError``.
* **Data parallel**: under ``torchrun`` (``WORLD_SIZE`` > 1) each rank takes its share of every
  step's rows and the float32 gradients are summed with ``all_reduce`` (gloo on CPU, NCCL on
  CUDA); rank 0 writes the checkpoints.
"""
from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ["SFTConfig", "SFTResult", "train", "load_dataset", "truncate_at_turn", "pack", "lr_at",
           "latest_checkpoint", "resolve_dtype"]

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model")
STATE = "trainer_state.pt"
META = "sft_meta.json"


@dataclass
class SFTConfig:
    seq_len: int = 2048
    micro_batch: int = 1          # packed rows per micro-batch (per rank)
    grad_accum: int = 4
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 10
    epochs: float = 1.0
    max_steps: int | None = None
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.95)
    clip: float = 1.0
    dtype: str = "auto"               # "bfloat16", "float32", or "auto" (resolve_dtype)
    save_every: int = 50
    keep: int = 2
    seed: int = 0
    tool_format: str = "compact"
    max_seconds: float | None = None   # stop (and save) after this much training time
    max_examples: int | None = None
    truncate: bool = False             # cut long conversations at an assistant turn instead of dropping them
    # Weight of the loss on the other tokens (system, user, tool results) next to the assistant
    # tokens' 1. 0 (the default) trains on assistant tokens only; a small weight also teaches
    # the formats and the copying the tool results show (an id called for comes back in the
    # result) from the ~80% of each conversation that is not the assistant's, at the cost of
    # the vocabulary projection on those tokens. The logged loss stays the assistant tokens'.
    context_weight: float = 0.0
    # Train only on trajectories whose ``tier`` (gold tool calls, as ``longcat data synth`` writes
    # it) is at most this; None keeps every tier. Each trajectory must then carry an int tier.
    max_tier: int | None = None
    # Train a ``CopyHead`` beside the model (``longcat.models.copy_head``): a pointer from the
    # token that opens a string argument to the tokens of the user's or tools' messages where the
    # value starts and ends, with ``copy_weight`` times its cross entropy added to the loss. It is
    # saved beside each checkpoint and ranks the spans of ``longcat eval --copy-values``.
    copy_head: bool = False
    copy_head_dim: int = 64
    copy_weight: float = 1.0

    def __post_init__(self) -> None:
        for name in ("seq_len", "micro_batch", "grad_accum", "save_every", "keep"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"SFTConfig.{name}: expected an int >= 1, got {v!r}")
        if self.dtype not in ("auto", "bfloat16", "float32"):
            raise ValueError(f"SFTConfig.dtype: expected 'auto', 'bfloat16' or 'float32', got {self.dtype!r}")
        if not (self.lr > 0 and 0 <= self.min_lr_ratio <= 1):
            raise ValueError(f"SFTConfig.lr / min_lr_ratio: expected lr > 0 and ratio in [0, 1], got "
                             f"{self.lr!r} / {self.min_lr_ratio!r}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"SFTConfig.max_steps: expected None or >= 1, got {self.max_steps!r}")
        if not 0.0 <= self.context_weight <= 1.0:
            raise ValueError(f"SFTConfig.context_weight: expected a number in [0, 1], got {self.context_weight!r}")
        if isinstance(self.copy_head_dim, bool) or not isinstance(self.copy_head_dim, int) or self.copy_head_dim < 1:
            raise ValueError(f"SFTConfig.copy_head_dim: expected an int >= 1, got {self.copy_head_dim!r}")
        if not 0.0 <= self.copy_weight <= 100.0:
            raise ValueError(f"SFTConfig.copy_weight: expected a number in [0, 100], got {self.copy_weight!r}")
        if self.copy_head and self.context_weight > 0:
            raise ValueError("SFTConfig.copy_head / context_weight: the copy head trains with the assistant "
                             f"tokens' loss only, got context_weight {self.context_weight!r}")
        if self.epochs <= 0:
            raise ValueError(f"SFTConfig.epochs: expected > 0, got {self.epochs!r}")
        if self.max_tier is not None and (isinstance(self.max_tier, bool) or not isinstance(self.max_tier, int)
                                          or self.max_tier < 1):
            raise ValueError(f"SFTConfig.max_tier: expected None or an int >= 1, got {self.max_tier!r}")


@dataclass
class SFTResult:
    checkpoint_dir: Path
    metrics_path: Path
    steps: int
    resumed_from: int
    examples: int
    dropped_too_long: int
    tokens_trained: int
    seconds: float
    final_loss: float | None
    history: list[dict] = field(default_factory=list)


def lr_at(step: int, total: int, cfg: SFTConfig, elapsed: float | None = None) -> float:
    """Learning rate of optimizer step ``step`` (0-based) of ``total``. Under a time budget
    (``cfg.max_seconds``, ``elapsed`` seconds trained so far) the cosine follows whichever of
    the step or the time fraction is further along, so a run the clock stops still ends at the
    low end of its schedule instead of at full rate."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, total - cfg.warmup_steps)
    t = min(1.0, (step - cfg.warmup_steps) / span)
    if cfg.max_seconds is not None and elapsed is not None:
        t = max(t, min(1.0, elapsed / cfg.max_seconds))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def resolve_dtype(name: str) -> torch.dtype:
    """The training dtype of ``SFTConfig.dtype``: "auto" is bfloat16 where the CPU has native
    bfloat16 matmuls (oneDNN reports it), float32 elsewhere."""
    if name == "auto":
        probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
        native = torch.backends.mkldnn.is_available() and probe is not None and bool(probe())
        return torch.bfloat16 if native else torch.float32
    return torch.bfloat16 if name == "bfloat16" else torch.float32


def truncate_at_turn(ids: Sequence[int], mask: Sequence[int], limit: int) -> tuple[list, list] | None:
    """``(ids, mask)`` cut after the last assistant span (mask run of 1s, which ends with the
    turn's ``<|im_end|>``) that ends within ``limit`` tokens; None when no span does."""
    if len(ids) <= limit:
        return list(ids), list(mask)
    for end in range(limit, 0, -1):
        if mask[end - 1] and not mask[end]:
            return list(ids[:end]), list(mask[:end])
    return None


def load_dataset(paths: Sequence[str | os.PathLike], tokenizer, cfg: SFTConfig) -> tuple[list, int, int, int]:
    """[(ids, mask)] (with ``cfg.copy_head``: [(ids, mask, copy events, source tokens)], see
    ``longcat.models.copy_head.copy_events``) of every trajectory in ``paths`` of tier at most
    ``cfg.max_tier`` that fits
    ``seq_len`` (or, with ``cfg.truncate``, of its longest prefix ending with an assistant turn
    that does); how many were dropped as too long; how many of those kept were cut; how many
    were left out for their tier."""
    from longcat.data.format import check_trajectory, encode, read_jsonl

    def check(obj, where: str) -> None:
        check_trajectory(obj, where)
        tier = obj.get("tier")
        if cfg.max_tier is not None and (isinstance(tier, bool) or not isinstance(tier, int)):
            raise ValueError(f"{where}: max_tier={cfg.max_tier} needs each trajectory's 'tier' (an int: its gold "
                             f"tool calls, as `longcat data synth` writes it), got {tier!r}")

    docs, dropped, cut_count, above_tier = [], 0, 0, 0
    for p in paths:
        for obj in read_jsonl(p, check):
            if cfg.max_tier is not None and obj["tier"] > cfg.max_tier:
                above_tier += 1
                continue
            if cfg.copy_head:
                from longcat.models.copy_head import copy_events

                ids, mask, events, sources = copy_events(tokenizer, obj["messages"], obj.get("tools"), cfg.tool_format)
            else:
                ids, mask = encode(tokenizer, obj["messages"], obj.get("tools"), cfg.tool_format)
            if len(ids) > cfg.seq_len:
                cut = truncate_at_turn(ids, mask, cfg.seq_len) if cfg.truncate else None
                if cut is None:
                    dropped += 1
                    continue
                ids, mask = cut
                cut_count += 1
            if sum(mask) and cfg.copy_head:
                # an event's query must stay in the (possibly cut) conversation
                docs.append((ids, mask, [e for e in events if e[0] < len(ids)], [t for t in sources if t < len(ids)]))
            elif sum(mask):
                docs.append((ids, mask))
            if cfg.max_examples is not None and len(docs) >= cfg.max_examples:
                return docs, dropped, cut_count, above_tier
    return docs, dropped, cut_count, above_tier


def pack(docs: Sequence[tuple[list, list]], seq_len: int) -> list[list[int]]:
    """Rows of doc indices, first-fit decreasing by length (deterministic)."""
    order = sorted(range(len(docs)), key=lambda i: (-len(docs[i][0]), i))
    rows: list[list[int]] = []
    free: list[int] = []
    for i in order:
        n = len(docs[i][0])
        for r, f in enumerate(free):
            if f >= n:
                rows[r].append(i)
                free[r] -= n
                break
        else:
            rows.append([i])
            free.append(seq_len - n)
    return rows


def _batch(docs, rows: Sequence[Sequence[int]], seq_len: int, pad_id: int, context: bool = False):
    """input ids, labels (-100 off the assistant tokens) and per-token doc ids (-1 = padding);
    with ``context``, also the labels of the other tokens (-100 on the assistant ones)."""
    B = len(rows)
    ids = torch.full((B, seq_len), pad_id, dtype=torch.long)
    labels = torch.full((B, seq_len), -100, dtype=torch.long)
    ctx = torch.full((B, seq_len), -100, dtype=torch.long)
    doc = torch.full((B, seq_len), -1, dtype=torch.long)
    for b, row in enumerate(rows):
        at = 0
        for k, i in enumerate(row):
            t, m = docs[i][0], docs[i][1]
            n = len(t)
            ids[b, at:at + n] = torch.tensor(t)
            lab, other = torch.tensor(t), torch.tensor(t)
            on = torch.tensor(m) == 1
            lab[~on] = -100
            other[on] = -100
            lab[0] = other[0] = -100          # never predicted across a document boundary
            labels[b, at:at + n] = lab
            ctx[b, at:at + n] = other
            doc[b, at:at + n] = k
            at += n
    return (ids, labels, doc, ctx) if context else (ids, labels, doc)


def _segments(doc: torch.Tensor) -> list[tuple[int, int, int]]:
    """(row, start, end) of every document of a packed batch (padding, doc id -1, left out)."""
    out = []
    for b, row in enumerate(doc.tolist()):
        start = 0
        for t in range(1, len(row) + 1):
            if t == len(row) or row[t] != row[start]:
                if row[start] >= 0:
                    out.append((b, start, t))
                start = t
    return out


def _copy_loss(head, hidden: torch.Tensor, bounds: Sequence[tuple[int, int]],
               copies: Sequence) -> tuple[torch.Tensor, int]:
    """Summed cross entropy of ``CopyHead``'s start and end pointers over a packed batch's copy
    events, and their count. ``hidden``: the final normed states ``[T, H]`` of the flattened
    documents laid out at ``bounds``; ``copies``: per document its ``(events, sources)``."""
    cols: list[int] = []          # flat positions of every source token of the batch
    col_doc: list[int] = []
    col_pos: list[int] = []
    queries, rows = [], []
    for j, ((off, _), (events, sources)) in enumerate(zip(bounds, copies)):
        at = {}
        for t in sources:
            at[t] = len(cols)
            cols.append(off + t)
            col_doc.append(j)
            col_pos.append(t)
        for q, starts, ends in events:
            if all(s in at for s in starts) and all(e in at for e in ends):
                queries.append(off + q)
                rows.append((j, q, [at[s] for s in starts], [at[e] for e in ends]))
    if not rows:
        return hidden.new_zeros(()).float(), 0
    start, end = head(hidden[queries], hidden[cols])
    doc_of = torch.tensor(col_doc, device=hidden.device)
    pos_of = torch.tensor(col_pos, device=hidden.device)
    valid = torch.stack([(doc_of == j) & (pos_of < q) for j, q, _, _ in rows])
    gold_s = torch.zeros_like(valid)
    gold_e = torch.zeros_like(valid)
    for r, (_, _, gs, ge) in enumerate(rows):
        gold_s[r, gs] = True
        gold_e[r, ge] = True
    total = hidden.new_zeros(()).float()
    for logits, gold in ((start, gold_s), (end, gold_e)):
        logp = torch.log_softmax(logits.masked_fill(~valid, float("-inf")), dim=-1)
        total = total - torch.logsumexp(logp.masked_fill(~gold, float("-inf")), dim=-1).sum()
    return total, len(rows)


def _loss_sum(model, ids, labels, doc, context=None, context_weight: float = 0.0, copy=None):
    """Summed next-token cross entropy over labelled tokens of a packed batch. With ``context``
    (the labels of the other tokens, from ``_batch(..., context=True)``) it returns
    ``(assistant sum + context_weight * context sum, assistant sum)``.

    Packed documents are laid end to end without their padding and attention runs on each
    document alone (causal, from position 0), which is what a block-diagonal causal mask over
    the row computes, without the [S, S] mask or the padding: the quadratic part shrinks from
    S^2 to the sum of the squared document lengths and uses the causal kernel. The vocabulary
    projection runs only where a label is taken (assistant tokens, about a tenth of a row).

    With ``copy = (head, copies, weight)`` (``copies``: each document's events and sources, in
    the order of the batch's documents) it returns ``(loss + weight * copy loss, loss, copy loss,
    events)``."""
    segs = _segments(doc)
    flat = torch.cat([ids[b, a:e] for b, a, e in segs])[None]
    targets = torch.cat([torch.cat([labels[b, a + 1:e], labels.new_full((1,), -100)]) for b, a, e in segs])
    bounds, at = [], 0
    for _, a, e in segs:
        bounds.append((at, at + e - a))
        at += e - a

    def attend(attn, x):
        return torch.cat([attn(x[:, a:e], torch.arange(e - a, device=x.device), None) for a, e in bounds], 1)

    h = model.model.embed_tokens(flat)
    for layer in model.model.layers:
        h = layer(h, lambda i, x, layer=layer: attend(layer.self_attn[i], x))
    keep = targets != -100
    if copy is not None:
        head, copies, weight = copy
        normed = model.model.norm(h[0])
        lm = F.cross_entropy(model.lm_head(normed[keep]).float(), targets[keep], reduction="sum")
        pointer, n = _copy_loss(head, normed, bounds, copies)
        return lm + weight * pointer, lm, pointer, n
    if context is None:
        logits = model.lm_head(model.model.norm(h[0, keep]))
        return F.cross_entropy(logits.float(), targets[keep], reduction="sum")
    other = torch.cat([torch.cat([context[b, a + 1:e], context.new_full((1,), -100)]) for b, a, e in segs])
    both = torch.where(keep, targets, other)
    sel = both != -100
    per = F.cross_entropy(model.lm_head(model.model.norm(h[0, sel])).float(), both[sel], reduction="none")
    mine = keep[sel]
    assistant = per[mine].sum()
    return assistant + context_weight * per[~mine].sum(), assistant


def latest_checkpoint(out: str | os.PathLike) -> Path | None:
    """The newest complete ``checkpoint-<step>`` folder in ``out`` (None when there is none)."""
    out = Path(out)
    best = None
    for p in out.glob("checkpoint-*") if out.is_dir() else ():
        try:
            step = int(p.name.split("-", 1)[1])
        except ValueError:
            continue
        if (p / STATE).is_file() and (best is None or step > best[0]):
            best = (step, p)
    return best[1] if best else None


def _shape(config) -> dict:
    d = config.to_dict()
    return {k: v for k, v in d.items() if k not in ("dtype", "torch_dtype", "transformers_version")}


def _check_same_shape(base_cfg, ckpt: Path) -> None:
    other_d = json.loads((ckpt / "config.json").read_text())
    a = _shape(base_cfg)
    diff = {k: (a.get(k), other_d.get(k)) for k in a if k in other_d and a.get(k) != other_d.get(k)}
    if diff:
        shown = ", ".join(f"{k}: model {x!r} vs checkpoint {y!r}" for k, (x, y) in list(diff.items())[:6])
        raise ValueError(f"resume: checkpoint {str(ckpt)!r} is of another model shape ({shown}); use a new "
                         f"--out folder or the matching --model")


def _dist():
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("gloo" if not torch.cuda.is_available() else "nccl")
    if dist.is_available() and dist.is_initialized():
        return dist, dist.get_rank(), dist.get_world_size()
    return None, 0, 1


def _save(out: Path, step: int, model, tokenizer_dir: Path, masters, opt, cfg: SFTConfig, meta: dict,
          head=None) -> Path:
    final = out / f"checkpoint-{step:06d}"
    tmp = out / f".tmp-checkpoint-{step:06d}"
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    if head is not None:
        head.save(tmp)
    for f in _TOKENIZER_FILES:
        if (tokenizer_dir / f).is_file():
            shutil.copy2(tokenizer_dir / f, tmp / f)
    torch.save({"step": step, "masters": [m.detach().clone() for m in masters], "optimizer": opt.state_dict(),
                "config": asdict(cfg)}, tmp / STATE)
    (tmp / META).write_text(json.dumps({**meta, "step": step, "tool_format": cfg.tool_format}, indent=2))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    olds = sorted((p for p in out.glob("checkpoint-*") if p != final), key=lambda p: p.name)
    for p in olds[:max(0, len(olds) - (cfg.keep - 1))]:
        shutil.rmtree(p, ignore_errors=True)
    return final


def _publish_final(out: Path, ckpt: Path) -> Path:
    tmp, final = out / ".tmp-final", out / "final"
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(ckpt, tmp, ignore=shutil.ignore_patterns(STATE))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def train(data: str | os.PathLike | Sequence[str | os.PathLike], model: str | os.PathLike, out: str | os.PathLike,
          cfg: SFTConfig | None = None, progress: bool = True) -> SFTResult:
    """Fine-tunes the checkpoint folder ``model`` on ``data`` into ``out`` (see the module
    docstring); resumes from ``out``'s newest checkpoint when there is one."""
    from longcat.engine.llm import load_tokenizer
    from longcat.models import LongcatFlashForCausalLM

    cfg = cfg or SFTConfig()
    paths = [data] if isinstance(data, (str, os.PathLike)) else list(data)
    model_dir, out = Path(model), Path(out)
    if not (model_dir / "config.json").is_file():
        raise ValueError(f"model: expected a checkpoint folder with config.json, got {str(model_dir)!r}")
    tokenizer = load_tokenizer(None, str(model_dir))
    if tokenizer is None:
        raise ValueError(f"model: {str(model_dir)!r} has no tokenizer files (make one with `longcat models init`)")
    dist, rank, world = _dist()
    torch.manual_seed(cfg.seed)
    t_start = time.perf_counter()
    docs, dropped, cut_count, above_tier = load_dataset(paths, tokenizer, cfg)
    if not docs:
        tiers = f", {above_tier} above max_tier={cfg.max_tier}" if cfg.max_tier is not None else ""
        raise ValueError(f"data: no trajectory of {[str(p) for p in paths]} fits seq_len={cfg.seq_len} "
                         f"({dropped} longer{tiers})")
    rows = pack(docs, cfg.seq_len)
    per_step = cfg.micro_batch * cfg.grad_accum * world
    steps_per_epoch = max(1, len(rows) // per_step)
    total = cfg.max_steps or max(1, int(round(steps_per_epoch * cfg.epochs)))

    dtype = resolve_dtype(cfg.dtype)
    net = LongcatFlashForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    base_config = net.config
    out.mkdir(parents=True, exist_ok=True)
    resume = latest_checkpoint(out)
    start = 0
    state = None
    if resume is not None:
        _check_same_shape(base_config, resume)
        state = torch.load(resume / STATE, map_location="cpu", weights_only=False)
        start = int(state["step"])
    head = None
    if cfg.copy_head:   # the pointer of --copy-values, trained beside the model (kept when the base has one)
        from longcat.models.copy_head import CopyHead

        head = CopyHead.load(model_dir, base_config.hidden_size) or CopyHead(base_config.hidden_size, cfg.copy_head_dim)
    modules = [net] + ([head] if head is not None else [])
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    masters = [p.detach().float().clone() for p in params]
    if state is not None:
        if len(state["masters"]) != len(masters) or any(a.shape != b.shape for a, b in zip(state["masters"], masters)):
            raise ValueError(f"resume: {str(resume)!r} holds weights of another shape than --model {str(model_dir)!r}")
        masters = [m.float() for m in state["masters"]]
    for m in masters:
        m.requires_grad_(True)
    net = net.to(dtype)
    if head is not None:
        head = head.to(dtype)
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    with torch.no_grad():
        for p, m in zip(params, masters):
            p.copy_(m)
    decay = [m for m in masters if m.dim() >= 2]
    no_decay = [m for m in masters if m.dim() < 2]
    # fused: one kernel over every master instead of a dozen foreach passes (tiny preset on a
    # Sapphire Rapids core: 1.6 ms a step against 7.1 ms); the same update, the same state dict.
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=cfg.betas,
                            fused=all(m.device.type in ("cpu", "cuda") for m in masters))
    if state is not None:
        opt.load_state_dict(state["optimizer"])
    # Every master's gradient is a view of one buffer (plus two slots: the loss, the clock):
    # data-parallel ranks sum it with one all_reduce instead of one per tensor (gloo on the
    # tiny preset's ~100 tensors: 0.29 s a step of two rows against 0.17 s for one row alone).
    grad_buf = torch.zeros(sum(m.numel() for m in masters) + 2, device=masters[0].device)
    grad_views, at = [], 0
    for m in masters:
        grad_views.append(grad_buf[at:at + m.numel()].view_as(m))
        at += m.numel()
    net.train()
    if head is not None:
        head.train()

    metrics_path = out / "metrics.jsonl"
    history: list[dict] = []
    if rank == 0 and metrics_path.exists():
        history = [json.loads(l) for l in metrics_path.read_text().splitlines() if l.strip()]
        history = [h for h in history if h["step"] <= start]       # drop lines past the checkpoint
        metrics_path.write_text("".join(json.dumps(h) + "\n" for h in history))
    meta = {"base_model": str(model_dir), "data": [str(p) for p in paths], "examples": len(docs),
            "dropped_too_long": dropped, "truncated": cut_count, "above_max_tier": above_tier,
            "max_tier": cfg.max_tier, "seq_len": cfg.seq_len, "copy_head": cfg.copy_head,
            "rows": len(rows), "total_steps": total, "world_size": world}
    bar = None
    if progress and rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=start, desc="sft", unit="step")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    tokens_trained = 0
    last_ckpt = resume
    loss_val = None
    step = start
    t_train = time.perf_counter()
    timed_out = False
    try:
        for step in range(start, total):
            epoch, k = divmod(step, steps_per_epoch)
            order = list(range(len(rows)))
            random.Random(cfg.seed * 1000003 + epoch).shuffle(order)
            step_rows = order[k * per_step:(k + 1) * per_step]
            mine = step_rows[rank::world]
            # the step's assistant tokens over all ranks: every rank knows every row
            n_tok = sum(sum(docs[i][1][1:]) for r in step_rows for i in rows[r])
            denom = max(1.0, float(n_tok))
            grad_buf.zero_()
            for m, g in zip(masters, grad_views):
                m.grad = g
            loss_sum = 0.0
            copy_sum, n_copy = 0.0, 0
            for j in range(0, len(mine), cfg.micro_batch):
                part = [rows[r] for r in mine[j:j + cfg.micro_batch]]
                if head is not None:
                    ids, labels, doc = _batch(docs, part, cfg.seq_len, pad)
                    copies = [(docs[i][2], docs[i][3]) for row in part for i in row]
                    total_loss, lm, pointer, n_events = _loss_sum(net, ids, labels, doc,
                                                                  copy=(head, copies, cfg.copy_weight))
                    (total_loss / denom).backward()
                    loss_sum += float(lm.detach())
                    copy_sum += float(pointer.detach())
                    n_copy += n_events
                elif cfg.context_weight > 0:
                    ids, labels, doc, ctx = _batch(docs, part, cfg.seq_len, pad, context=True)
                    weighted, assistant = _loss_sum(net, ids, labels, doc, ctx, cfg.context_weight)
                    (weighted / denom).backward()
                    loss_sum += float(assistant.detach())
                else:
                    ids, labels, doc = _batch(docs, part, cfg.seq_len, pad)
                    loss = _loss_sum(net, ids, labels, doc) / denom
                    loss.backward()
                    loss_sum += float(loss.detach()) * denom
                for p, m in zip(params, masters):
                    if p.grad is not None:
                        m.grad += p.grad.float()
                        p.grad = None
                tokens_trained += int((labels != -100).sum())
            if dist is not None:
                # one all_reduce a step: the gradients, the loss and the ranks' clocks. The mean
                # clock sets the learning rate and the time-out, so every rank takes the same
                # update and stops after the same step.
                grad_buf[-2] = loss_sum
                grad_buf[-1] = time.perf_counter() - t_train
                dist.all_reduce(grad_buf)
                loss_sum = float(grad_buf[-2])
                elapsed = float(grad_buf[-1]) / world
            else:
                elapsed = time.perf_counter() - t_train
            gnorm = float(torch.nn.utils.clip_grad_norm_(masters, cfg.clip))
            lr = lr_at(step, total, cfg, elapsed)
            for g in opt.param_groups:
                g["lr"] = lr
            opt.step()
            with torch.no_grad():
                for p, m in zip(params, masters):
                    p.copy_(m)
            loss_val = loss_sum / denom
            rec = {"step": step + 1, "loss": loss_val, "lr": lr, "grad_norm": gnorm, "tokens": int(n_tok),
                   "seconds": time.perf_counter() - t_start}
            if head is not None:    # mean start + end cross entropy per copy event (this rank's)
                rec["copy_loss"] = copy_sum / n_copy if n_copy else None
            if rank == 0:
                history.append(rec)
                with open(metrics_path, "a") as f:
                    f.write(json.dumps(rec) + "\n")
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss_val:.3f}", lr=f"{lr:.1e}")
            done = step + 1 == total
            timed_out = cfg.max_seconds is not None and elapsed > cfg.max_seconds
            if (step + 1) % cfg.save_every == 0 or done or timed_out:
                if rank == 0:
                    last_ckpt = _save(out, step + 1, net, model_dir, masters, opt, cfg, meta, head)
                if dist is not None:
                    dist.barrier()
            if timed_out:
                step += 1
                break
        else:
            step = total
    finally:
        if bar is not None:
            bar.close()
    if last_ckpt is None:
        last_ckpt = latest_checkpoint(out)
    final = out / "final"
    if rank == 0 and last_ckpt is not None:
        final = _publish_final(out, last_ckpt)
    if dist is not None:
        dist.barrier()
    return SFTResult(checkpoint_dir=final, metrics_path=metrics_path, steps=step, resumed_from=start,
                     examples=len(docs), dropped_too_long=dropped, tokens_trained=tokens_trained,
                     seconds=time.perf_counter() - t_start, final_loss=loss_val, history=history)
