"""A repetition guard for greedy decoding: ``NoRepeatNGram(n)`` is a logits processor
(``SamplingParams.logits_processors``) that forbids any token which would repeat an n-gram
already in the generated tokens (transformers' ``no_repeat_ngram_size``, restricted to the
output so a copied id from the prompt stays allowed). A small model decoding greedily falls into
loops (``"arguments": "arguments": ...``, ``Could your code. Could your code.``); the guard turns
a loop into the model's next-best continuation."""
from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["NoRepeatNGram"]


class NoRepeatNGram:
    def __init__(self, n: int):
        if isinstance(n, bool) or not isinstance(n, int) or n < 2:
            raise ValueError(f"n: expected an int >= 2 (the n-gram length that may not repeat), got {n!r}")
        self.n = n

    def banned(self, generated: Sequence[int]) -> list[int]:
        """Tokens that would complete an n-gram already present in ``generated``."""
        n = self.n
        if len(generated) < n:
            return []
        tail = tuple(generated[len(generated) - n + 1:])
        return sorted({generated[i + n - 1] for i in range(len(generated) - n + 1)
                       if tuple(generated[i:i + n - 1]) == tail})

    def __call__(self, generated: Sequence[int], logits: torch.Tensor) -> torch.Tensor:
        ban = self.banned(generated)
        if not ban:
            return logits
        out = logits.clone()
        out[torch.tensor(ban, device=logits.device)] = float("-inf")
        if not torch.isfinite(out).any():      # every token banned: leave the choice to the model
            return logits
        return out
