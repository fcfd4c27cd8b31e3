"""Admission control with bounded staleness (AReaL's rule) and the sample buffer the trainer
reads from. The manager keeps metadata only (counters and prompt ids), never samples."""
from __future__ import annotations

import asyncio
from collections import Counter, deque

from longcat.rl.protocols import Group


class StalenessManager:
    """How many new groups may start now. With ``B`` groups per trainer step, ``version`` steps
    done and ``max_staleness`` = eta, at most ``(eta + version + 1) * B`` groups may ever have been
    accepted or be running, and at most ``max_concurrent`` run at once (AReaL's
    ``staleness_manager``). eta = 0 is synchronous training: exactly one batch per version.
    Filtered groups do not count (online filtering with replacement)."""

    def __init__(self, batch_groups: int, max_staleness: int, max_concurrent: int):
        for name, v, low in (("batch_groups", batch_groups, 1), ("max_staleness", max_staleness, 0),
                             ("max_concurrent", max_concurrent, 1)):
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"StalenessManager: '{name}' must be an int >= {low}, got {v!r}")
        self.batch_groups, self.max_staleness, self.max_concurrent = batch_groups, max_staleness, max_concurrent
        self.version = 0
        self.running = 0
        self.accepted = 0
        self._changed = asyncio.Condition()

    def capacity(self) -> int:
        by_staleness = (self.max_staleness + self.version + 1) * self.batch_groups - (self.accepted + self.running)
        return min(self.max_concurrent - self.running, by_staleness)

    async def admit(self) -> None:
        """Wait until one more group may start, and count it as running."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.capacity() > 0)
            self.running += 1

    async def finish(self, accepted: bool) -> None:
        async with self._changed:
            self.running -= 1
            self.accepted += int(accepted)
            self._changed.notify_all()

    async def set_version(self, version: int) -> None:
        async with self._changed:
            self.version = version
            self._changed.notify_all()

    async def forget(self, n: int) -> None:
        """``n`` accepted groups were dropped (too stale): their slots open again."""
        async with self._changed:
            self.accepted -= n
            self._changed.notify_all()


class SampleBuffer:
    """Finished, scored, non-degenerate groups in arrival order; the trainer takes the oldest."""

    def __init__(self):
        self._groups: deque[Group] = deque()
        self._changed = asyncio.Condition()

    def __len__(self) -> int:
        return len(self._groups)

    @property
    def groups(self) -> list[Group]:
        return list(self._groups)

    async def put(self, group: Group) -> None:
        async with self._changed:
            self._groups.append(group)
            self._changed.notify_all()

    async def wait_for(self, n: int) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: len(self._groups) >= n)

    def take(self, n: int) -> list[Group]:
        return [self._groups.popleft() for _ in range(min(n, len(self._groups)))]

    def restore(self, groups: list[Group]) -> None:
        self._groups.extend(groups)

    def restore_front(self, groups: list[Group]) -> None:
        self._groups.extendleft(reversed(groups))


def staleness_histogram(staleness: list[int]) -> dict[str, int]:
    return {str(k): v for k, v in sorted(Counter(staleness).items())}
