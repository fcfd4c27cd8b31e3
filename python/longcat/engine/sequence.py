"""The engine's bookkeeping for one request and its samples (a request with ``n`` samples has
``n`` sequences once its prompt is computed; before that only sample 0 exists and the others
fork from it, sharing the prompt's pages)."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Optional

import torch

from longcat.engine.types import CompletionOutput, SamplingParams


class SeqStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    SWAPPED = "swapped"              # its latents wait in the host tier (engine/kv_swap.py)
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    """One sample: the tokens so far (prompt + output), how many are in the cache, its pages."""

    seq_id: int
    request: "Request"
    index: int
    token_ids: list[int]
    generator: Optional[torch.Generator]
    output: CompletionOutput
    status: SeqStatus = SeqStatus.WAITING
    num_computed: int = 0            # tokens whose latents are in the cache
    pages: list[int] = field(default_factory=list)
    page_keys: list[int] = field(default_factory=list)  # prefix-cache keys of the leading full pages
    host_pages: list[int] = field(default_factory=list)  # its pages in the host tier (swapped / prefetching)
    last_scheduled: int = -1         # the scheduler step that last ran it (swap-out picks the oldest)
    kv_epoch: int = 0                # weights epoch of the cached latents (stale ones are never shared)
    full_text: str = ""              # detokenized output, before stop-string cutting
    prefix_offset: int = 0           # incremental detokenizer window (indices into token_ids)
    read_offset: int = 0

    @property
    def num_prompt(self) -> int:
        return len(self.request.prompt_token_ids)

    @property
    def num_uncomputed(self) -> int:
        return len(self.token_ids) - self.num_computed

    @property
    def finished(self) -> bool:
        return self.status is SeqStatus.FINISHED


@dataclass(eq=False)
class Request:
    request_id: str
    prompt: Optional[str]
    prompt_token_ids: list[int]
    params: SamplingParams
    arrival: int
    outputs: list[CompletionOutput] = field(default_factory=list)  # one per sample, from the start
    seqs: list[Sequence] = field(default_factory=list)
    forked: bool = False             # the n - 1 other samples exist
    error: Optional[str] = None

    @property
    def finished(self) -> bool:
        return self.error is not None or all(o.finish_reason is not None for o in self.outputs)
