"""Zig-Zag attention schedule: which attention sublayers use streaming sparse attention (SSA).

LongCat-Flash-Thinking-ZigZag turns about half of the attention sublayers into SSA (each query
sees ``sink_size`` tokens at the start and the ``recent_size`` most recent tokens, block-granular
with 128-token blocks), chosen by calibration: the least important layers become sparse. The
config is the ``streaming_sparse_attention`` dict SGLang reads::

    {"sink_size": 128, "recent_size": 896, "sparsity": 0.5, "layer_type": "0101..."}

with one character per attention sublayer (LongCat-Flash has two per decoder layer, so 56 for 28
layers) and ``'1'`` marking an SSA sublayer.

Calibration (``layer_importance``): a sublayer's importance is how much its output changes when
its attention is made sparse, ``||full - sparse|| / ||full||`` averaged over sample inputs; the
layers that change least lose least by becoming SSA (``select_ssa_layers``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch

_KEYS = ("sink_size", "recent_size", "sparsity", "layer_type")


@dataclass(frozen=True)
class ZigZagConfig:
    """The Zig-Zag schedule. ``sink_size`` / ``recent_size`` are in tokens; with ``block_size``
    (128, as the published kernels) they must be whole blocks for the block-granular kernels,
    otherwise ``window_kwargs`` selects the token-exact mode."""

    sink_size: int = 128
    recent_size: int = 896
    sparsity: float = 0.5
    layer_type: str = ""
    block_size: int = 128

    def __post_init__(self):
        for name in ("sink_size", "recent_size", "block_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"ZigZagConfig: '{name}' must be an int, got {type(value).__name__} {value!r}")
        if self.sink_size < 0:
            raise ValueError(f"ZigZagConfig: 'sink_size' must be >= 0 tokens, got {self.sink_size}")
        if self.recent_size < 1:
            raise ValueError(f"ZigZagConfig: 'recent_size' must be >= 1 token, got {self.recent_size}")
        if self.block_size < 1:
            raise ValueError(f"ZigZagConfig: 'block_size' must be >= 1, got {self.block_size}")
        if isinstance(self.sparsity, bool) or not isinstance(self.sparsity, (int, float)) \
                or not 0.0 <= float(self.sparsity) <= 1.0:
            raise ValueError(f"ZigZagConfig: 'sparsity' must be a number in [0, 1], got {self.sparsity!r}")
        if not isinstance(self.layer_type, str):
            raise TypeError(f"ZigZagConfig: 'layer_type' must be a string of '0'/'1', got "
                            f"{type(self.layer_type).__name__}")
        bad = sorted(set(self.layer_type) - {"0", "1"})
        if bad:
            pos = next(i for i, c in enumerate(self.layer_type) if c not in "01")
            raise ValueError(f"ZigZagConfig: 'layer_type' may hold only '0' (full MLA) and '1' (SSA); "
                             f"found {bad[0]!r} at index {pos}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], num_attention_sublayers: int | None = None,
                  block_size: int = 128) -> "ZigZagConfig":
        """Parse a ``streaming_sparse_attention`` dict. ``num_attention_sublayers`` (e.g.
        ``2 * num_layers`` for LongCat-Flash) checks the length of ``layer_type``."""
        if not isinstance(d, Mapping):
            raise TypeError(f"streaming_sparse_attention must be a dict, got {type(d).__name__}")
        unknown = sorted(set(d) - set(_KEYS))
        if unknown:
            raise ValueError(f"streaming_sparse_attention: unknown key {unknown[0]!r}; expected {list(_KEYS)}")
        missing = [k for k in _KEYS if k not in d]
        if missing:
            raise ValueError(f"streaming_sparse_attention: missing key {missing[0]!r}")
        cfg = cls(sink_size=d["sink_size"], recent_size=d["recent_size"], sparsity=d["sparsity"],
                  layer_type=d["layer_type"], block_size=block_size)
        if num_attention_sublayers is not None and len(cfg.layer_type) != num_attention_sublayers:
            raise ValueError(f"streaming_sparse_attention: 'layer_type' must have one character per "
                             f"attention sublayer ({num_attention_sublayers}), got {len(cfg.layer_type)}")
        return cfg

    @classmethod
    def from_hf_config(cls, config: Any) -> "ZigZagConfig | None":
        """From a transformers LongcatFlash config carrying ``streaming_sparse_attention`` (None
        when it has none). LongCat-Flash has two attention sublayers per decoder layer: there
        ``num_layers`` counts decoder layers and ``num_hidden_layers`` (= 2 * num_layers)
        attention sublayers."""
        d = getattr(config, "streaming_sparse_attention", None)
        if d is None:
            return None
        n = 2 * int(config.num_layers) if hasattr(config, "num_layers") else int(config.num_hidden_layers)
        return cls.from_dict(d, num_attention_sublayers=n)

    def to_dict(self) -> dict:
        return {"sink_size": self.sink_size, "recent_size": self.recent_size,
                "sparsity": self.sparsity, "layer_type": self.layer_type}

    @property
    def num_layers(self) -> int:
        return len(self.layer_type)

    @property
    def ssa_layers(self) -> list[int]:
        return [i for i, c in enumerate(self.layer_type) if c == "1"]

    def is_ssa(self, layer: int) -> bool:
        if not 0 <= layer < len(self.layer_type):
            raise IndexError(f"ZigZagConfig: layer {layer} outside [0, {len(self.layer_type)})")
        return self.layer_type[layer] == "1"

    def window(self) -> "SsaWindow":
        """The ``longcat.ops.SsaWindow`` of the SSA layers: whole blocks use the block-granular
        mode, anything else the token-exact mode."""
        from longcat.ops import SsaWindow  # the kernels' type; imported here so configs load without them

        bs = self.block_size
        if self.sink_size % bs == 0 and self.recent_size % bs == 0:
            return SsaWindow(sink=self.sink_size // bs, local=self.recent_size // bs, block_size=bs)
        return SsaWindow(sink=self.sink_size, local=self.recent_size, tokens=True)

    def window_kwargs(self) -> dict:
        """Keyword arguments for ``longcat.ops.ssa_prefill`` / ``ssa_decode``: ``{"window": ...}``."""
        return {"window": self.window()}

    def visible_keys(self, context: int) -> int:
        """Keys an SSA query at the end of a ``context``-token sequence attends to (at most
        sink + recent (+ the partial current block)), for cost estimates."""
        if context <= 0:
            return 0
        bs = self.block_size
        if not self.window().tokens:
            p = context - 1
            local_begin = max(0, (p // bs - self.recent_size // bs + 1) * bs)
            return min(self.sink_size, local_begin) + (context - local_begin)
        local_begin = max(0, context - self.recent_size)
        return min(self.sink_size, local_begin) + (context - local_begin)


def select_ssa_layers(importance_scores: Sequence[float] | torch.Tensor, sparsity: float) -> str:
    """``layer_type`` with the ``round(sparsity * n)`` least important layers as SSA ('1').

    Ties go to the lower layer index (deterministic). NaN scores are rejected: a layer whose
    importance could not be measured must not silently become sparse."""
    scores = [float(s) for s in (importance_scores.tolist() if isinstance(importance_scores, torch.Tensor)
                                 else importance_scores)]
    if not 0.0 <= float(sparsity) <= 1.0:
        raise ValueError(f"select_ssa_layers: 'sparsity' must be in [0, 1], got {sparsity}")
    for i, s in enumerate(scores):
        if math.isnan(s):
            raise ValueError(f"select_ssa_layers: 'importance_scores' has NaN at layer {i}")
    n_sparse = int(math.floor(float(sparsity) * len(scores) + 0.5))
    order = sorted(range(len(scores)), key=lambda i: (scores[i], i))
    chosen = set(order[:n_sparse])
    return "".join("1" if i in chosen else "0" for i in range(len(scores)))


def layer_importance(samples: Iterable[Sequence[tuple]],
                     full: Callable[..., torch.Tensor] | None = None,
                     sparse: Callable[..., torch.Tensor] | None = None,
                     **window: Any) -> torch.Tensor:
    """Per-layer importance for Zig-Zag calibration: the relative change of the attention output
    when the layer is made sparse, ``||full - sparse||_F / ||full||_F``, averaged over samples.

    ``samples`` yields, per calibration input, one tuple of attention arguments per layer,
    ``(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k)`` as ``mla_prefill``
    takes them (recorded from a model's forward pass). ``full`` / ``sparse`` default to
    ``longcat.ops.mla_prefill`` and ``longcat.ops.ssa_prefill`` (with ``window`` keyword
    arguments, e.g. ``ZigZagConfig.window_kwargs()``); any callables returning the output (or
    ``(out, lse)``) work. Returns a float32 tensor ``[num_layers]``.
    """
    if full is None or sparse is None:
        from longcat import ops

        full = full or ops.mla_prefill
        sparse = sparse or ops.ssa_prefill
    total: torch.Tensor | None = None
    count = 0
    for layers in samples:
        vals = []
        for args in layers:
            a = full(*args)
            b = sparse(*args, **window)
            a = (a[0] if isinstance(a, tuple) else a).float()
            b = (b[0] if isinstance(b, tuple) else b).float()
            vals.append(float((a - b).norm() / a.norm().clamp_min(1e-30)))
        v = torch.tensor(vals, dtype=torch.float32)
        if total is not None and v.shape != total.shape:
            raise ValueError(f"layer_importance: every sample must have the same number of layers; "
                             f"got {v.numel()} after {total.numel()}")
        total = v if total is None else total + v
        count += 1
    if total is None:
        raise ValueError("layer_importance: 'samples' is empty")
    return total / count
