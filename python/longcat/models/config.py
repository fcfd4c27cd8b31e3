"""``LongcatFlashConfig``: the LongCat-Flash model shape, field-compatible with Hugging Face
transformers' ``LongcatFlashConfig`` (reads a checkpoint's ``config.json`` as is), plus presets
and the parameter accounting (total and active parameters per token).

Field names are transformers' (and the original checkpoints'); the aliases transformers accepts
(``num_local_experts``, ``num_experts_per_tok``, ``intermediate_size``, ``moe_intermediate_size``,
``num_hidden_layers`` = 2 x ``num_layers``) are read too. RoPE comes either as transformers 5's
``rope_parameters`` dict or as the older top-level ``rope_theta`` / ``rope_scaling``; the default
RoPE and YaRN are supported. Fields the model does not use are kept so they round-trip; unknown
ones also warn.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping

from longcat.models.zigzag import ZigZagConfig

# What the paged-cache kernels fix: 512 latent + 64 rope values per token.
CACHE_LATENT_DIM = 512
CACHE_ROPE_DIM = 64

_ALIASES = {
    "num_local_experts": "n_routed_experts",
    "num_experts_per_tok": "moe_topk",
    "intermediate_size": "ffn_hidden_size",
    "moe_intermediate_size": "expert_ffn_hidden_size",
}
_WRITTEN = {"architectures": ["LongcatFlashForCausalLM"], "model_type": "longcat_flash"}
# Fields real configs carry that the model does not read: kept verbatim, without a warning.
_PASSTHROUGH = {"architectures", "auto_map", "model_type", "transformers_version", "torch_dtype", "dtype",
                "use_cache", "output_router_logits", "attention_method", "_name_or_path", "ep_size"}


@dataclass
class LongcatFlashConfig:
    """LongCat-Flash's shape. Defaults are the 560B model (``PRESETS['longcat-flash']``).

    ``num_layers`` counts decoder layers; each holds two MLA attention sublayers, two dense SwiGLU
    MLPs and one MoE, so there are ``num_hidden_layers = 2 * num_layers`` attention sublayers (and
    KV caches). ``streaming_sparse_attention`` (Zig-Zag) marks SSA sublayers with '1' in its
    ``layer_type``, one character per attention sublayer. ``extra`` keeps fields this class does
    not model, so ``from_dict(to_dict())`` is lossless.
    """

    vocab_size: int = 131072
    hidden_size: int = 6144
    num_layers: int = 28
    num_attention_heads: int = 64
    num_key_value_heads: int | None = None
    hidden_act: str = "silu"
    max_position_embeddings: int = 131072
    initializer_range: float = 0.02
    # "normal": transformers' init, every matrix ~ N(0, initializer_range). "fan_in": embeddings
    # and the router ~ N(0, initializer_range), every other matrix ~ N(0, 1 / (3 * fan_in))
    # (torch's nn.Linear std): at 128 wide, 0.02 makes q.k and the attention outputs so small that
    # the tiny preset never learned to copy (longcat bench copy_learning).
    init_scheme: str = "normal"
    rms_norm_eps: float = 1e-5
    pad_token_id: int | None = None
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    tie_word_embeddings: bool = False
    rope_theta: float = 1e7
    rope_scaling: dict | None = None
    attention_bias: bool = False
    attention_dropout: float = 0.0
    ffn_hidden_size: int = 12288
    q_lora_rank: int = 1536
    kv_lora_rank: int = 512
    qk_nope_head_dim: int = 128
    qk_rope_head_dim: int = 64
    head_dim: int | None = None
    v_head_dim: int = 128
    qk_head_dim: int | None = None
    moe_topk: int = 12
    n_routed_experts: int = 512
    zero_expert_num: int = 256
    zero_expert_type: str = "identity"
    expert_ffn_hidden_size: int = 2048
    routed_scaling_factor: float = 6.0
    router_bias: bool = False
    norm_topk_prob: bool = False
    mla_scale_q_lora: bool = True
    mla_scale_kv_lora: bool = True
    streaming_sparse_attention: dict | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None:
            self.head_dim = self.qk_rope_head_dim
        if self.qk_head_dim is None:
            self.qk_head_dim = self.qk_nope_head_dim + self.qk_rope_head_dim
        self.validate()

    # ---- derived ---------------------------------------------------------------------------

    @property
    def num_hidden_layers(self) -> int:
        """Attention sublayers (= KV caches): two per decoder layer."""
        return 2 * self.num_layers

    @property
    def zigzag(self) -> ZigZagConfig | None:
        """The Zig-Zag schedule, or None when every sublayer is full MLA."""
        if self.streaming_sparse_attention is None:
            return None
        return ZigZagConfig.from_dict(self.streaming_sparse_attention, num_attention_sublayers=self.num_hidden_layers)

    @property
    def rope_type(self) -> str:
        return (self.rope_scaling or {}).get("rope_type", (self.rope_scaling or {}).get("type", "default"))

    @property
    def softmax_scale(self) -> float:
        """192^-0.5, times YaRN's mscale(factor, mscale_all_dim)^2 when that is set (as transformers)."""
        scale = self.qk_head_dim ** -0.5
        r = self.rope_scaling or {}
        if self.rope_type == "yarn" and r.get("mscale_all_dim"):
            m = _yarn_mscale(self._yarn_factor(), r["mscale_all_dim"])
            scale *= m * m
        return scale

    def _yarn_factor(self) -> float:
        r = self.rope_scaling or {}
        if r.get("factor") is not None:
            return float(r["factor"])
        return self.max_position_embeddings / r.get("original_max_position_embeddings", self.max_position_embeddings)

    def rope_parameters(self) -> tuple[list[float], float]:
        """``(inv_freq, attention_factor)`` of the RoPE over the ``qk_rope_head_dim`` dims, as
        transformers computes them (default RoPE, or YaRN when ``rope_scaling`` says so): the
        rotation angle of pair i at position p is ``p * inv_freq[i]``, and the rotated q / k
        values are multiplied by ``attention_factor`` (1 without YaRN)."""
        import torch

        dim, base = self.qk_rope_head_dim, float(self.rope_theta)
        pos_freqs = base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim)
        if self.rope_type == "default":
            return (1.0 / pos_freqs).tolist(), 1.0
        r = self.rope_scaling
        factor = self._yarn_factor()
        original = r.get("original_max_position_embeddings", self.max_position_embeddings)
        attention_factor = r.get("attention_factor")
        if attention_factor is None:
            if r.get("mscale") and r.get("mscale_all_dim"):
                attention_factor = _yarn_mscale(factor, r["mscale"]) / _yarn_mscale(factor, r["mscale_all_dim"])
            else:
                attention_factor = _yarn_mscale(factor)
        beta_fast, beta_slow = r.get("beta_fast") or 32, r.get("beta_slow") or 1

        def correction_dim(rotations):
            return dim * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(base))

        low, high = correction_dim(beta_fast), correction_dim(beta_slow)
        if r.get("truncate", True):
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, dim - 1)
        if low == high:
            high += 0.001
        ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
        extrapolation = 1 - ramp
        inv_freq = (1.0 / (factor * pos_freqs)) * (1 - extrapolation) + (1.0 / pos_freqs) * extrapolation
        return inv_freq.tolist(), float(attention_factor)

    @property
    def q_lora_scale(self) -> float:
        return (self.hidden_size / self.q_lora_rank) ** 0.5 if self.mla_scale_q_lora else 1.0

    @property
    def kv_lora_scale(self) -> float:
        return (self.hidden_size / self.kv_lora_rank) ** 0.5 if self.mla_scale_kv_lora else 1.0

    # ---- validation ------------------------------------------------------------------------

    def validate(self) -> None:
        """Raise ValueError / TypeError naming the field for a shape the model cannot run."""
        def bad(name, expected):
            raise ValueError(f"LongcatFlashConfig: '{name}' must be {expected}, got {getattr(self, name)!r}")

        for name in ("vocab_size", "hidden_size", "num_layers", "num_attention_heads", "ffn_hidden_size",
                     "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim",
                     "moe_topk", "n_routed_experts", "expert_ffn_hidden_size", "max_position_embeddings"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"LongcatFlashConfig: '{name}' must be an int, got {type(v).__name__} {v!r}")
            if v < 1:
                bad(name, ">= 1")
        if isinstance(self.zero_expert_num, bool) or not isinstance(self.zero_expert_num, int) \
                or self.zero_expert_num < 0:
            bad("zero_expert_num", "an int >= 0")
        if self.kv_lora_rank != CACHE_LATENT_DIM:
            bad("kv_lora_rank", f"{CACHE_LATENT_DIM} (the paged latent cache holds 512 latent + 64 rope values)")
        if self.qk_rope_head_dim != CACHE_ROPE_DIM:
            bad("qk_rope_head_dim", f"{CACHE_ROPE_DIM} (the paged latent cache holds 512 latent + 64 rope values)")
        if self.head_dim != self.qk_rope_head_dim:
            bad("head_dim", f"qk_rope_head_dim = {self.qk_rope_head_dim} (transformers uses it as the RoPE dim)")
        if self.qk_head_dim != self.qk_nope_head_dim + self.qk_rope_head_dim:
            bad("qk_head_dim", f"qk_nope_head_dim + qk_rope_head_dim = {self.qk_nope_head_dim + self.qk_rope_head_dim}")
        for name in ("qk_nope_head_dim", "v_head_dim"):
            if getattr(self, name) % 8:
                bad(name, "a multiple of 8 (the attention kernels' head-dim granularity)")
        if self.num_key_value_heads != self.num_attention_heads:
            bad("num_key_value_heads", f"num_attention_heads = {self.num_attention_heads} (MLA has one KV head per head)")
        if self.moe_topk > self.n_routed_experts + self.zero_expert_num:
            bad("moe_topk", f"<= n_routed_experts + zero_expert_num = {self.n_routed_experts + self.zero_expert_num}")
        if self.init_scheme not in ("normal", "fan_in"):
            bad("init_scheme", "'normal' or 'fan_in'")
        if not self.initializer_range > 0:
            bad("initializer_range", "> 0")
        if self.zero_expert_type != "identity":
            bad("zero_expert_type", "'identity'")
        if self.hidden_act != "silu":
            bad("hidden_act", "'silu'")
        if self.router_bias:
            bad("router_bias", "False (LongCat-Flash's router has no bias)")
        if self.norm_topk_prob:
            bad("norm_topk_prob", "False (LongCat-Flash does not renormalise the top-k weights)")
        if self.attention_bias:
            bad("attention_bias", "False")
        if not self.rms_norm_eps > 0:
            bad("rms_norm_eps", "> 0")
        if not float(self.rope_theta) > 1.0:
            bad("rope_theta", "> 1")
        if self.rope_type not in ("default", "yarn"):
            # LongCat-Flash ships plain RoPE; YaRN is the long-context scaling its family uses.
            raise ValueError(f"LongcatFlashConfig: rope type {self.rope_type!r} (rope_scaling) is not one this "
                             f"model takes: 'default' or 'yarn'")
        if self.rope_type == "yarn" and self.rope_scaling.get("factor") is None \
                and "original_max_position_embeddings" not in self.rope_scaling:
            raise ValueError("LongcatFlashConfig: YaRN 'rope_scaling' needs 'factor' or "
                             "'original_max_position_embeddings'")
        if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
            bad("pad_token_id", f"None or in [0, vocab_size = {self.vocab_size})")
        if self.streaming_sparse_attention is not None:
            try:
                self.zigzag
            except (TypeError, ValueError) as e:
                raise ValueError(f"LongcatFlashConfig: 'streaming_sparse_attention' is invalid: {e}") from None

    # ---- dict / JSON -----------------------------------------------------------------------

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "LongcatFlashConfig":
        """From a ``config.json`` dict (transformers' or the original checkpoints'). Aliases are
        resolved (a conflict between an alias and its field is an error); unknown fields warn and
        are kept in ``extra``."""
        if not isinstance(d, Mapping):
            raise TypeError(f"LongcatFlashConfig.from_dict: expected a dict, got {type(d).__name__}")
        d = dict(d)
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kwargs: dict[str, Any] = {}
        extra: dict[str, Any] = dict(d.pop("extra", None) or {})
        for alias, name in _ALIASES.items():
            if alias in d:
                value = d.pop(alias)
                if name in d and d[name] != value:
                    raise ValueError(f"LongcatFlashConfig: '{alias}' ({value!r}) conflicts with '{name}' ({d[name]!r})")
                d.setdefault(name, value)
        if "num_hidden_layers" in d:
            # num_layers decides when present: some transformers versions wrote num_hidden_layers
            # as an independent field left at its default (56) whatever num_layers was.
            n = d.pop("num_hidden_layers")
            if "num_layers" in d:
                if 2 * d["num_layers"] != n:
                    warnings.warn(f"LongcatFlashConfig: 'num_hidden_layers' ({n}) is not 2 * num_layers "
                                  f"({2 * d['num_layers']}); using num_layers", stacklevel=2)
            elif isinstance(n, bool) or not isinstance(n, int) or n < 2 or n % 2:
                raise ValueError(f"LongcatFlashConfig: 'num_hidden_layers' must be an even int >= 2 (two "
                                 f"attention sublayers per decoder layer), got {n!r}")
            else:
                d["num_layers"] = n // 2
        rope = d.pop("rope_parameters", None)
        if rope is not None:
            rope = dict(rope)
            if "rope_theta" in rope:
                d.setdefault("rope_theta", rope.pop("rope_theta"))
            if rope.get("rope_type", "default") != "default":
                d.setdefault("rope_scaling", rope)
        for key, value in _WRITTEN.items():   # to_dict writes these: not extra when unchanged
            if d.get(key) == value:
                del d[key]
        unknown = []
        for key, value in d.items():
            if key in names:
                kwargs[key] = value
            else:
                extra[key] = value
                if key not in _PASSTHROUGH:
                    unknown.append(key)
        if unknown:
            warnings.warn(f"LongcatFlashConfig: unknown field(s) {sorted(unknown)} kept as is (not used by the model)",
                          stacklevel=2)
        return cls(**kwargs, extra=extra)

    def to_dict(self) -> dict:
        """A ``config.json`` dict transformers reads (``model_type`` longcat_flash, RoPE written both
        as transformers 5's ``rope_parameters`` and as the older top-level ``rope_theta``)."""
        out = copy.deepcopy(_WRITTEN)
        out.update(copy.deepcopy(self.extra))
        for f in dataclasses.fields(self):
            if f.name != "extra":
                out[f.name] = copy.deepcopy(getattr(self, f.name))
        if out["streaming_sparse_attention"] is None:
            del out["streaming_sparse_attention"]
        out["num_hidden_layers"] = self.num_hidden_layers   # for readers that size caches by it
        rope = {"rope_theta": float(self.rope_theta), "rope_type": "default"}
        if self.rope_scaling:
            rope.update(self.rope_scaling)
        out["rope_parameters"] = rope
        return out

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> "LongcatFlashConfig":
        """Read a ``config.json`` (or a checkpoint folder holding one)."""
        path = os.fspath(path)
        if os.path.isdir(path):
            path = os.path.join(path, "config.json")
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))

    def save(self, path: str | os.PathLike) -> str:
        """Write ``config.json`` (``path`` is a folder or a file name); returns the file written."""
        path = os.fspath(path)
        if os.path.isdir(path) or not path.endswith(".json"):
            os.makedirs(path, exist_ok=True)
            path = os.path.join(path, "config.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2, sort_keys=True)
            f.write("\n")
        return path

    # ---- presets and parameter accounting --------------------------------------------------

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "LongcatFlashConfig":
        """One of ``PRESETS`` (a fresh copy), with fields overridden by keyword."""
        if name not in PRESETS:
            raise ValueError(f"LongcatFlashConfig.from_preset: unknown preset {name!r}; expected one of {sorted(PRESETS)}")
        d = PRESETS[name].to_dict()
        # Derived fields follow their sources unless overridden themselves.
        for derived, sources in (("qk_head_dim", ("qk_nope_head_dim", "qk_rope_head_dim")),
                                 ("head_dim", ("qk_rope_head_dim",)), ("num_key_value_heads", ("num_attention_heads",)),
                                 ("num_hidden_layers", ("num_layers",))):
            if derived not in overrides and any(s in overrides for s in sources):
                del d[derived]
        d.update(overrides)
        return cls.from_dict(d)

    def parameter_counts(self) -> dict:
        """See ``count_parameters``."""
        return count_parameters(self)


def _yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def count_parameters(config: LongcatFlashConfig) -> dict:
    """Total and active parameters of a config (computed from the shapes; the tests check them
    against the model built on the meta device).

    Active parameters per token follow the LongCat-Flash report's definition: every weight a token
    multiplies (attention, dense MLPs, routers, the FFN experts it is routed to, the final norm and
    ``lm_head``), not the input embedding (a table lookup). A token's top-k slots may land on
    zero-computation experts, which cost nothing, so the count depends on how many of its
    ``moe_topk`` slots hit FFN experts, per layer: ``active_min`` with none (every slot on a zero
    expert), ``active_max`` with all ``moe_topk``. ``active_expected`` assumes the slots fall on FFN
    experts in proportion to their share of the experts (n_routed / (n_routed + n_zero), 8 of 12
    for LongCat-Flash, which gives the report's ~27B average).

    Returns ``{"total", "embedding", "per_expert", "active_min", "active_max",
    "active_expected", "ffn_experts_per_token_expected"}``.
    """
    c = config
    H, nh = c.hidden_size, c.num_attention_heads
    mla = (H * c.q_lora_rank + c.q_lora_rank + c.q_lora_rank * nh * c.qk_head_dim
           + H * (c.kv_lora_rank + c.qk_rope_head_dim) + c.kv_lora_rank
           + c.kv_lora_rank * nh * (c.qk_nope_head_dim + c.v_head_dim) + nh * c.v_head_dim * H)
    dense = 3 * H * c.ffn_hidden_size
    n_experts = c.n_routed_experts + c.zero_expert_num
    router = n_experts * H + n_experts          # weight + e_score_correction_bias
    per_expert = 3 * H * c.expert_ffn_hidden_size
    norms = 4 * H
    layer_shared = 2 * mla + 2 * dense + router + norms
    embedding = c.vocab_size * H
    head = 0 if c.tie_word_embeddings else c.vocab_size * H
    total = embedding + head + H + c.num_layers * (layer_shared + c.n_routed_experts * per_expert)
    active_base = head + H + c.num_layers * layer_shared
    if c.tie_word_embeddings:
        active_base += embedding  # the tied table is multiplied by lm_head
    k_expected = c.moe_topk * c.n_routed_experts / n_experts
    return {
        "total": total,
        "embedding": embedding,
        "per_expert": per_expert,
        "active_min": active_base,
        "active_max": active_base + c.num_layers * min(c.moe_topk, c.n_routed_experts) * per_expert,
        "active_expected": int(round(active_base + c.num_layers * k_expected * per_expert)),
        "ffn_experts_per_token_expected": k_expected,
    }


def _presets() -> dict[str, LongcatFlashConfig]:
    flash = LongcatFlashConfig()
    zigzag_rule = {"sink_size": 128, "recent_size": 896, "sparsity": 0.5,
                   # The released layer choice comes from calibration and is not public here;
                   # every second sublayer keeps the 50% share (replace from the checkpoint).
                   "layer_type": "01" * flash.num_layers}
    flash_zz = dataclasses.replace(flash, streaming_sparse_attention=zigzag_rule)
    small_vocab = dict(vocab_size=4096, pad_token_id=0, bos_token_id=1, eos_token_id=2, max_position_embeddings=8192)
    # Our own small presets initialise by fan-in (see init_scheme): with transformers' 0.02 they
    # did not learn the copy task in 300 steps.
    small_vocab["init_scheme"] = "fan_in"
    tiny = LongcatFlashConfig(hidden_size=128, num_layers=2, num_attention_heads=2, ffn_hidden_size=256,
                              q_lora_rank=64, qk_nope_head_dim=32, v_head_dim=32, moe_topk=2,
                              n_routed_experts=4, zero_expert_num=2, expert_ffn_hidden_size=64, **small_vocab)
    # Token-exact SSA window (16 sink + 32 recent tokens): sparse already at test lengths.
    tiny_zz = dataclasses.replace(tiny, streaming_sparse_attention={
        "sink_size": 16, "recent_size": 32, "sparsity": 0.5, "layer_type": "01" * tiny.num_layers})
    small = LongcatFlashConfig(hidden_size=512, num_layers=6, num_attention_heads=4, ffn_hidden_size=1024,
                               q_lora_rank=256, qk_nope_head_dim=64, v_head_dim=64, moe_topk=4,
                               n_routed_experts=16, zero_expert_num=8, expert_ffn_hidden_size=256, **small_vocab)
    return {"longcat-flash": flash, "longcat-flash-zigzag": flash_zz, "tiny": tiny, "tiny-zigzag": tiny_zz,
            "small": small}


PRESETS: dict[str, LongcatFlashConfig] = _presets()
