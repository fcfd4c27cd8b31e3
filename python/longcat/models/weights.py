"""LongCat-Flash checkpoints in Hugging Face's layout: ``config.json`` plus safetensors (sharded
with ``model.safetensors.index.json`` when large), under transformers' parameter names.

Names read (layer L, expert e; everything else is named as in this package's modules):

- ``model.layers.L.mlp.router.classifier.weight`` / ``...router.e_score_correction_bias``
  -> ``MoE.router_weight`` (kept float32) / ``MoE.e_score_correction_bias``;
- per-expert ``model.layers.L.mlp.experts.e.{gate,up,down}_proj.weight`` (original checkpoints
  and transformers' ``save_pretrained``) or packed ``...experts.gate_up_proj`` /
  ``...experts.down_proj`` (transformers' in-memory layout) -> ``MoE.w13`` / ``MoE.w2``;
- ignored: ``model.mtp.*`` (the multi-token-prediction head) and the gate/up slots transformers
  allocates for zero experts (``experts.e`` with ``n_routed <= e < n_routed + n_zero``: an
  identity expert has no weights, transformers writes them anyway).

Anything else is an unexpected key; a missing tensor or a wrong shape is an error naming it.
``save_pretrained`` writes the per-expert names (what transformers and the original checkpoints
use), the router in float32.
"""
from __future__ import annotations

import functools
import json
import os
import re
from typing import Iterable, Mapping

import torch

from longcat.models.config import LongcatFlashConfig

_INDEX = "model.safetensors.index.json"
_SINGLE = "model.safetensors"
_IGNORED = re.compile(r"^model\.mtp\.")
_ROUTER = re.compile(r"^model\.layers\.(\d+)\.mlp\.router\.(classifier\.weight|e_score_correction_bias)$")
_EXPERT = re.compile(r"^model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight$")
_PACKED = re.compile(r"^model\.layers\.(\d+)\.mlp\.experts\.(gate_up_proj|down_proj)$")
_OURS_EXPERTS = re.compile(r"^model\.layers\.(\d+)\.mlp\.(w13|w2)$")
_OURS_ROUTER = re.compile(r"^model\.layers\.(\d+)\.mlp\.(router_weight|e_score_correction_bias)$")


def _expert_name(layer: int, e: int, part: str) -> str:
    return f"model.layers.{layer}.mlp.experts.{e}.{part}.weight"


def _targets(model) -> dict[str, torch.Tensor]:
    """This module's tensors by name (tied parameters once, the correction-bias buffers too)."""
    out = dict(model.named_parameters())
    for name, buf in model.named_buffers():
        out[name] = buf
    return out


def _required(model) -> list[str]:
    """Every tensor a full checkpoint must provide, by its Hugging Face name."""
    return list(hf_state_dict(model, materialize=False))


def hf_state_dict(model, materialize: bool = True) -> dict[str, torch.Tensor]:
    """The parameters under transformers' / the checkpoints' names, expert weights per expert
    (views of ``w13`` / ``w2``; ``materialize=False`` returns the same keys, values unspecified)."""
    c = model.config
    F = c.expert_ffn_hidden_size
    out: dict[str, torch.Tensor] = {}
    for name, t in _targets(model).items():
        m = _OURS_ROUTER.match(name)
        if m:
            suffix = "classifier.weight" if m.group(2) == "router_weight" else "e_score_correction_bias"
            out[f"model.layers.{m.group(1)}.mlp.router.{suffix}"] = t
            continue
        m = _OURS_EXPERTS.match(name)
        if m:
            layer = int(m.group(1))
            for e in range(t.shape[0]):
                if m.group(2) == "w13":
                    out[_expert_name(layer, e, "gate_proj")] = t[e, :F] if materialize else t
                    out[_expert_name(layer, e, "up_proj")] = t[e, F:] if materialize else t
                else:
                    out[_expert_name(layer, e, "down_proj")] = t[e] if materialize else t
            continue
        out[name] = t
    return out


class _Resolver:
    """Maps a checkpoint name to the destination view(s) in the model and the required names it
    covers; raises for unexpected names and wrong shapes."""

    def __init__(self, model):
        self.model = model
        self.config: LongcatFlashConfig = model.config
        self.targets = _targets(model)

    def resolve(self, name: str, shape: torch.Size) -> tuple[list[tuple[torch.Tensor, slice]], list[str]] | None:
        """Returns ``([(dest, src_rows)], covered_names)``, or None for an ignored tensor."""
        c = self.config
        n, F = c.n_routed_experts, c.expert_ffn_hidden_size
        if _IGNORED.match(name):
            return None
        m = _ROUTER.match(name)
        if m:
            ours = "router_weight" if m.group(2) == "classifier.weight" else "e_score_correction_bias"
            return self._whole(f"model.layers.{m.group(1)}.mlp.{ours}", name, shape, [name])
        m = _EXPERT.match(name)
        if m:
            layer, e, part = int(m.group(1)), int(m.group(2)), m.group(3)
            if layer >= c.num_layers:
                raise KeyError(f"unexpected tensor {name!r}: the model has {c.num_layers} layers")
            if n <= e < n + c.zero_expert_num and part != "down_proj":
                return None  # transformers' unused gate/up slots of zero experts
            if e >= n:
                raise KeyError(f"unexpected tensor {name!r}: expert {e} is not a routed expert (n_routed_experts={n})")
            mlp = f"model.layers.{layer}.mlp"
            dest = {"gate_proj": self.targets[f"{mlp}.w13"][e, :F], "up_proj": self.targets[f"{mlp}.w13"][e, F:],
                    "down_proj": self.targets[f"{mlp}.w2"][e]}[part]
            self._check_shape(name, dest.shape, shape)
            return [(dest, slice(None))], [name]
        m = _PACKED.match(name)
        if m:
            layer, kind = int(m.group(1)), m.group(2)
            ours = f"model.layers.{layer}.mlp.{'w13' if kind == 'gate_up_proj' else 'w2'}"
            if ours not in self.targets:
                raise KeyError(f"unexpected tensor {name!r}: the model has {c.num_layers} layers")
            dest = self.targets[ours]
            # transformers allocates gate_up_proj for routed + zero experts; the zero rows are unused.
            rows = n if (kind == "gate_up_proj" and len(shape) == 3 and shape[0] == n + c.zero_expert_num) else None
            got = torch.Size([n, *shape[1:]]) if rows else shape
            self._check_shape(name, dest.shape, got)
            parts = ("gate_proj", "up_proj") if kind == "gate_up_proj" else ("down_proj",)
            return [(dest, slice(0, rows))], [_expert_name(layer, e, p) for e in range(n) for p in parts]
        m = _OURS_EXPERTS.match(name)
        if m and name in self.targets:
            layer = int(m.group(1))
            parts = ("gate_proj", "up_proj") if m.group(2) == "w13" else ("down_proj",)
            return self._whole(name, name, shape, [_expert_name(layer, e, p) for e in range(n) for p in parts])
        m = _OURS_ROUTER.match(name)
        if m and name in self.targets:
            suffix = "classifier.weight" if m.group(2) == "router_weight" else "e_score_correction_bias"
            return self._whole(name, name, shape, [f"model.layers.{m.group(1)}.mlp.router.{suffix}"])
        if name in self.targets:
            return self._whole(name, name, shape, [name])
        if name == "lm_head.weight" and c.tie_word_embeddings:
            return self._whole("model.embed_tokens.weight", name, shape, ["model.embed_tokens.weight"])
        raise KeyError(f"unexpected tensor {name!r}: no parameter of LongcatFlashForCausalLM has this name")

    def _whole(self, ours, name, shape, covered):
        dest = self.targets[ours]
        self._check_shape(name, dest.shape, shape)
        return [(dest, slice(None))], covered

    @staticmethod
    def _check_shape(name, expected, got):
        if tuple(expected) != tuple(got):
            raise ValueError(f"tensor {name!r} has shape {list(got)}, expected {list(expected)} for this config")


def load_weights(model, weights: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]],
                 strict: bool = True) -> None:
    """Copy named tensors into ``model`` in place (see the module docstring for the names).
    ``strict``: every required tensor must be among them (otherwise ValueError naming the first
    missing ones). Refreshes the derived inference weights."""
    items = weights.items() if isinstance(weights, Mapping) else weights
    _load(model, ((name, lambda t=t: t) for name, t in items), strict, what="weights")


def _load(model, named_loaders: Iterable[tuple[str, object]], strict: bool, what: str) -> None:
    resolver = _Resolver(model)
    covered: set[str] = set()
    with torch.no_grad():
        for name, get in named_loaders:
            tensor = get()
            if not isinstance(tensor, torch.Tensor):
                raise TypeError(f"{what}: {name!r} must be a torch.Tensor, got {type(tensor).__name__}")
            try:
                hit = resolver.resolve(name, tensor.shape)
            except KeyError as e:
                raise KeyError(f"{what}: {e.args[0]}") from None
            except ValueError as e:
                raise ValueError(f"{what}: {e}") from None
            if hit is None:
                continue
            dests, names = hit
            for dest, rows in dests:
                dest.copy_(tensor[rows])
            covered.update(names)
    if strict:
        missing = [n for n in _required(model) if n not in covered]
        if missing:
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise ValueError(f"{what}: missing tensor(s) {missing[:5]}{more}")
    model.refresh_inference_weights()


def _shard_files(path: str) -> list[str]:
    index = os.path.join(path, _INDEX)
    if os.path.exists(index):
        with open(index, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
        return sorted(set(weight_map.values()))
    if os.path.exists(os.path.join(path, _SINGLE)):
        return [_SINGLE]
    raise FileNotFoundError(f"from_pretrained: no {_SINGLE} or {_INDEX} in {path!r}")


def _dtype_of(config: LongcatFlashConfig) -> torch.dtype:
    name = config.extra.get("dtype") or config.extra.get("torch_dtype") or "float32"
    dtype = getattr(torch, str(name).replace("torch.", ""), None)
    return dtype if dtype in (torch.float32, torch.bfloat16, torch.float16) else torch.float32


def load_pretrained(cls, path, dtype: torch.dtype | None = None, device=None):
    """Build the model from ``path/config.json`` and load its safetensors (strict). dtype None:
    the checkpoint's ``dtype`` / ``torch_dtype`` (float32 when absent)."""
    from safetensors import safe_open

    path = os.fspath(path)
    config = LongcatFlashConfig.from_json_file(path)
    model = cls(config, dtype=dtype or _dtype_of(config), device="meta")
    model.to_empty(device=device or "cpu")

    def named_loaders():
        for file in _shard_files(path):
            with safe_open(os.path.join(path, file), framework="pt", device="cpu") as f:
                for name in f.keys():
                    yield name, (lambda f=f, name=name: f.get_tensor(name))

    _load(model, named_loaders(), strict=True, what=f"from_pretrained({path!r})")
    return model


def _parse_size(size: int | str) -> int:
    if isinstance(size, int) and not isinstance(size, bool):
        return size
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*", str(size))
    if not m:
        raise ValueError(f"save_pretrained: 'max_shard_size' must be bytes (int) or like '5GB' / '500MiB', got {size!r}")
    unit = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
            "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}[m.group(2)]
    return int(float(m.group(1)) * unit)


@functools.lru_cache(maxsize=1)
def transformers_pads_zero_experts() -> bool:
    """Whether the installed transformers gives LongCat-Flash's zero experts gate/up rows of their
    own (``LongcatFlashExperts.gate_up_proj`` of routed + zero experts: transformers up to 5.24)
    and so wants them in a checkpoint; False from 5.25 (routed experts only) or without it."""
    try:
        from transformers import LongcatFlashConfig as HFConfig
        from transformers.models.longcat_flash.modeling_longcat_flash import LongcatFlashExperts
    except ImportError:
        return False
    probe = HFConfig(hidden_size=4, expert_ffn_hidden_size=2, n_routed_experts=1, zero_expert_num=1)
    return LongcatFlashExperts(probe).gate_up_proj.shape[0] == 2


def save_pretrained(model, path, max_shard_size: int | str = "5GB", zero_expert_slots: bool | str = False) -> None:
    """Write ``config.json`` and the weights (``model.safetensors``, or shards of at most
    ``max_shard_size`` bytes plus ``model.safetensors.index.json``). Every file is written under a
    temporary name and renamed into place only when all are complete, then the previous
    checkpoint's stale shards are removed: a save that fails part-way (disk full, a crash) leaves
    the previous checkpoint in ``path`` loadable, and a folder never mixes two checkpoints.

    ``zero_expert_slots``: also write zero ``experts.e.{gate,up}_proj`` tensors for the zero
    experts. transformers 5.0-5.24 allocates gate/up weights for them and refuses a checkpoint
    without; 5.25 has none and refuses one with them; ``"auto"`` writes them when the installed
    transformers wants them (``transformers_pads_zero_experts``). The original LongCat-Flash
    checkpoints have none, and for the 560B shape they would add ~360 GB, so this is off by
    default."""
    if zero_expert_slots == "auto":
        zero_expert_slots = transformers_pads_zero_experts()
    elif not isinstance(zero_expert_slots, bool):
        raise ValueError(f"zero_expert_slots: expected True, False or 'auto', got {zero_expert_slots!r}")
    from safetensors.torch import save_file

    limit = _parse_size(max_shard_size)
    path = os.fspath(path)
    os.makedirs(path, exist_ok=True)
    written: list[str] = []          # final names, each complete under ".tmp-" + name

    def tmp(name: str) -> str:
        return os.path.join(path, ".tmp-" + name)

    def write_json(name: str, obj) -> None:
        with open(tmp(name), "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
            f.write("\n")
        written.append(name)

    d = model.config.to_dict()
    d["dtype"] = str(model.dtype).replace("torch.", "")
    d.pop("torch_dtype", None)
    write_json("config.json", d)

    tensors = hf_state_dict(model)
    if zero_expert_slots:
        c = model.config
        F, H = c.expert_ffn_hidden_size, c.hidden_size
        zeros = torch.zeros(F, H, dtype=model.dtype)
        for layer in range(c.num_layers):
            for e in range(c.n_routed_experts, c.n_routed_experts + c.zero_expert_num):
                for part in ("gate_proj", "up_proj"):
                    tensors[_expert_name(layer, e, part)] = zeros
    shards: list[list[str]] = [[]]
    size = 0
    for name, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > limit:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    n = len(shards)
    weight_map = {}
    for i, names in enumerate(shards):
        file = _SINGLE if n == 1 else f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        # Clones: the expert tensors are views of w13 / w2, and safetensors refuses shared storage.
        save_file({k: tensors[k].detach().to("cpu").clone().contiguous() for k in names},
                  tmp(file), metadata={"format": "pt"})
        written.append(file)
        weight_map.update({k: file for k in names})
    if n > 1:
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        write_json(_INDEX, {"metadata": {"total_size": total}, "weight_map": weight_map})
    mode = 0o666 & ~_umask()         # safetensors creates 0600 files; use the usual permissions
    for name in written:
        os.chmod(tmp(name), mode)
        os.replace(tmp(name), os.path.join(path, name))
    for f in os.listdir(path):       # shards of a previous checkpoint that this one does not have
        if f not in written and (f == _INDEX or (f.startswith("model") and f.endswith(".safetensors"))):
            os.remove(os.path.join(path, f))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
