"""New policy weights for a live model: read (a state dict, a safetensors file or a checkpoint
folder), check every name and shape against the model, and only then copy them in place.

A bad update raises before any live tensor is touched, so the old weights keep serving. After the
copy the model's derived inference weights (e.g. absorbed MLA projections) are recomputed through
its ``refresh_inference_weights()`` hook (``LongcatFlashForCausalLM.load_weights`` calls it itself).
"""
from __future__ import annotations

import os
from typing import Mapping, Union

import torch

WeightsSource = Union[Mapping[str, torch.Tensor], str, os.PathLike]


def read_weights(source: WeightsSource) -> dict[str, torch.Tensor]:
    """A state dict from a mapping, a ``.safetensors`` file or a folder of them."""
    if isinstance(source, Mapping):
        return dict(source)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"update_weights: argument 'state_dict_or_path' must be a mapping of tensors or a path, "
                        f"got {type(source).__name__}")
    from safetensors.torch import load_file

    path = os.fspath(source)
    if os.path.isdir(path):
        files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
        if not files:
            raise ValueError(f"update_weights: folder {path!r} holds no .safetensors file")
        out: dict[str, torch.Tensor] = {}
        for f in files:
            out.update(load_file(os.path.join(path, f)))
        return out
    if not os.path.isfile(path):
        raise ValueError(f"update_weights: argument 'state_dict_or_path' {path!r} is neither a file nor a folder")
    return load_file(path)


def _check_values(weights: Mapping[str, torch.Tensor]) -> None:
    for name, t in weights.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"update_weights: tensor {name!r} must be a torch.Tensor, got {type(t).__name__}")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ValueError(f"update_weights: tensor {name!r} holds NaN or inf")


def _apply_generic(model: torch.nn.Module, weights: dict[str, torch.Tensor], strict: bool) -> None:
    """Names as the model's state dict; all checked before the first copy."""
    live = dict(model.state_dict(keep_vars=True))
    unexpected = sorted(k for k in weights if k not in live)
    if unexpected:
        raise ValueError(f"update_weights: unexpected tensor(s) not in the model: {unexpected[:5]}"
                         + (f" (+{len(unexpected) - 5} more)" if len(unexpected) > 5 else ""))
    if strict:
        missing = sorted(k for k in live if k not in weights)
        if missing:
            raise ValueError(f"update_weights: missing tensor(s) (pass strict=False for a partial update): "
                             f"{missing[:5]}" + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else ""))
    for name, t in weights.items():
        if tuple(t.shape) != tuple(live[name].shape):
            raise ValueError(f"update_weights: tensor {name!r} must have shape {list(live[name].shape)}, "
                             f"got {list(t.shape)}")
        if t.is_floating_point() != live[name].is_floating_point():
            raise TypeError(f"update_weights: tensor {name!r} must be {live[name].dtype}-compatible, got {t.dtype}")
    with torch.no_grad():
        for name, t in weights.items():
            live[name].copy_(t)
    refresh = getattr(model, "refresh_inference_weights", None)
    if callable(refresh):
        refresh()


def _apply_with_loader(model: torch.nn.Module, weights: dict[str, torch.Tensor], strict: bool) -> None:
    """A model with its own checkpoint-name loader (``LongcatFlashForCausalLM.load_weights``,
    which copies as it goes): dry-run it first on a meta-device twin, which checks every name
    and shape without touching memory, then load for real (it refreshes the derived weights)."""
    twin = type(model)(model.config, dtype=model.dtype, device="meta")
    try:
        twin.load_weights(weights, strict=strict)
    except KeyError as e:  # unexpected name: one exception type for every bad update
        raise ValueError(f"update_weights: {e.args[0]}") from None
    except ValueError as e:
        raise ValueError(f"update_weights: {e}") from None
    model.load_weights(weights, strict=strict)


def apply_weights(model: torch.nn.Module, source: WeightsSource, strict: bool = True) -> int:
    """Validate, then copy ``source`` into ``model`` in place, then recompute its derived
    inference weights; returns the number of tensors given. A bad name, shape or value raises
    ValueError / TypeError before any live tensor changes.

    strict: every tensor of the model must be given (a partial update otherwise leaves old
    tensors serving silently); ``strict=False`` updates a subset.
    """
    weights = read_weights(source)
    _check_values(weights)
    if callable(getattr(model, "load_weights", None)):
        _apply_with_loader(model, weights, strict)
    else:
        _apply_generic(model, weights, strict)
    return len(weights)
