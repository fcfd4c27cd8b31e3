"""The small typed contracts the loop is built against, so each part is tested alone and can be
swapped: a ``Policy`` that generates with logprobs and a version, a ``RewardFn`` (a checkable
task, an environment episode, a judge) and a ``PromptSource``. The data records that flow through
the pipeline (``Sample``, ``Group``) live here too."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Protocol, runtime_checkable


@dataclass
class Sample:
    """One generated answer. ``logprobs[i]`` is the rollout engine's logprob of ``completion_ids[i]``
    and ``versions[i]`` the policy version that produced it (one value: a trajectory never mixes
    versions). ``reward`` is None until scored; ``error`` names why a sample was dropped.
    A multi-turn trajectory (``longcat.rl.agent``) sets ``loss_mask`` (1 on the policy's own
    tokens, 0 on tool results and user turns inside the completion; None: every token is trained)
    and ``trajectory``: the segments of one episode share it, and one advantage."""

    prompt_ids: list[int]
    completion_ids: list[int]
    logprobs: list[float]
    versions: list[int]
    text: str = ""
    finish_reason: Optional[str] = None
    reward: Optional[float] = None
    error: Optional[str] = None
    loss_mask: Optional[list[int]] = None
    trajectory: Optional[int] = None

    @property
    def version(self) -> int:
        return self.versions[0] if self.versions else -1


@dataclass
class Group:
    """The ``group_size`` samples of one prompt (the unit of group-relative advantages), with the
    prompt's id ``uid`` (unique over the whole run, the unit of the lossless-resume ledger)."""

    uid: int
    version: int
    samples: list[Sample]
    task: Any = None
    meta: dict = field(default_factory=dict)

    @property
    def rewards(self) -> list[float]:
        return [s.reward for s in self.samples]


class RolloutLost(RuntimeError):
    """The generator of a trajectory died mid-flight (a killed actor or process): the loop
    re-queues the prompt; nothing of it is kept."""


@runtime_checkable
class Policy(Protocol):
    """Generates ``n`` samples for a prompt with one policy version, and takes new weights."""

    @property
    def version(self) -> int: ...

    def acquire_version(self) -> int:
        """Pin the newest version for a trajectory (its weights stay live until released)."""

    def release_version(self, version: int) -> None: ...

    async def generate(self, prompt_ids: list[int], n: int, version: int) -> list[Sample]: ...

    async def update_weights(self, state_dict, version: int) -> None: ...


@runtime_checkable
class RewardFn(Protocol):
    """Scores one sample of a task (may be slow: an environment episode, a sandbox, a judge)."""

    async def __call__(self, task: Any, sample: Sample) -> float: ...


@runtime_checkable
class PromptSource(Protocol):
    """Task ``uid`` -> (task, prompt token ids); deterministic, so a resumed run regenerates a
    re-queued prompt exactly."""

    def get(self, uid: int) -> tuple[Any, list[int]]: ...


class PinnedVersions:
    """Version pinning for policies whose new trajectories start on the newest weights: a
    trajectory pins the live version, or the one being pushed while a push runs (``_next``).
    Subclasses set ``_version``, ``_next`` and ``_pins`` (a Counter)."""

    def acquire_version(self) -> int:
        v = self._version if self._next is None else self._next
        self._pins[v] += 1
        return v

    def release_version(self, version: int) -> None:
        if self._pins[version] <= 0:
            raise ValueError(f"release_version: version {version} is not pinned")
        self._pins[version] -= 1
        self._released(version)

    def _released(self, version: int) -> None:
        """Called after each release (a push may be waiting for the old version to drain)."""
