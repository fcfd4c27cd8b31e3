"""A randomly initialised checkpoint of a preset, with the trained tokenizer: a folder that
``LLM``, ``AsyncEngine``, ``longcat serve`` and ``longcat generate`` load as they would a real one."""
from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["init_checkpoint", "DTYPES"]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def init_checkpoint(out_dir: str | Path, preset: str = "tiny", seed: int = 0, dtype: str = "float32",
                    max_position_embeddings: int | None = None) -> Path:
    """Writes ``config.json`` + safetensors (``save_pretrained``) of ``preset`` initialised under
    ``seed`` (the global torch RNG is left as it was) and the tokenizer trained with the same
    seed into ``out_dir``; returns it. The preset's vocabulary must match the tokenizer's."""
    from longcat.models.config import PRESETS, LongcatFlashConfig
    from longcat.models.modeling import LongcatFlashForCausalLM
    from longcat.models.tokenizer import VOCAB_SIZE, train_tokenizer

    if preset not in PRESETS:
        raise ValueError(f"preset: expected one of {sorted(PRESETS)}, got {preset!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype: expected one of {sorted(DTYPES)}, got {dtype!r}")
    overrides = {}
    if max_position_embeddings is not None:
        if isinstance(max_position_embeddings, bool) or not isinstance(max_position_embeddings, int) \
                or max_position_embeddings < 2:
            raise ValueError(f"max_position_embeddings: expected an int >= 2, got {max_position_embeddings!r}")
        overrides["max_position_embeddings"] = max_position_embeddings
    config = LongcatFlashConfig.from_preset(preset, **overrides)
    if config.vocab_size != VOCAB_SIZE:
        raise ValueError(f"preset: {preset!r} has vocab_size {config.vocab_size}; the longcat tokenizer has "
                         f"{VOCAB_SIZE} ids (use a small preset such as 'tiny' or 'small')")
    out = Path(out_dir)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LongcatFlashForCausalLM(config, dtype=DTYPES[dtype])
    model.save_pretrained(out)
    train_tokenizer(out, seed=seed, model_max_length=config.max_position_embeddings)
    return out
