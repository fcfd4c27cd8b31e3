"""Typed records of environments and tasks: ``EnvRecord`` (a line of ``environments.jsonl``,
``growth.build_environment``'s output) and ``Task`` (a line of ``tasks.jsonl``,
``tasks.synthesize_task``'s output). ``episodes.Episode`` is the third.

Compatibility: the builders still produce and the files still hold plain dicts. ``from_dict``
checks and types one (clear errors name the missing keys), ``to_dict`` gives it back, and both
classes are read-only ``Mapping``s over their fields, so code written for the dicts
(``task["gold_actions"]``, ``task.get("auth")``, ``dict(task)``) works on them unchanged;
``Environment``, the agents and the user simulators accept either form.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, Iterator

__all__ = ["EnvRecord", "Task"]


class _MappingRecord(Mapping):
    """Read-only mapping access to a dataclass's fields (plus the ``extra`` dict)."""

    def __getitem__(self, key: str) -> Any:
        if key in self._names():
            return getattr(self, key)
        extra = getattr(self, "extra", {})
        if key in extra:
            return extra[key]
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        yield from (n for n in self._names() if n != "extra")
        yield from getattr(self, "extra", {})

    def __len__(self) -> int:
        return sum(1 for _ in self)

    @classmethod
    def _names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]):
        if isinstance(d, cls):
            return d
        if not isinstance(d, Mapping):
            raise ValueError(f"{cls.__name__}: expected a mapping, got {type(d).__name__}")
        required = [f.name for f in fields(cls)
                    if f.default is MISSING and f.default_factory is MISSING]
        missing = [k for k in required if k not in d]
        if missing:
            raise ValueError(f"{cls.__name__}: missing keys {missing}; got keys {sorted(d)}")
        names = set(cls._names())
        kw = {k: v for k, v in d.items() if k in names and k != "extra"}
        return cls(**kw, extra={k: v for k, v in d.items() if k not in names})

    def to_dict(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k != "extra"}
        out.update(getattr(self, "extra", {}))
        return out


@dataclass(frozen=True, eq=True)
class EnvRecord(_MappingRecord):
    env_id: str
    domain: str
    tools: list
    template_seed: int
    verified: bool
    chain_calls: list
    patch: list = field(default_factory=list)
    rows: int = 6
    seed: int = 0
    index: int = 0
    extra: dict = field(default_factory=dict)   # any other key of the record (trace, checks, ...)


@dataclass(frozen=True, eq=True)
class Task(_MappingRecord):
    task_id: str
    env_id: str
    domain: str
    instruction: str
    gold_actions: list
    expected_db_hash: str
    user_profile: dict = field(default_factory=dict)
    known_info: dict = field(default_factory=dict)
    hidden_info: dict = field(default_factory=dict)
    requested_actions: list = field(default_factory=list)
    expected_table_hashes: dict = field(default_factory=dict)
    initial_db_hash: str = ""
    affected_tables: list = field(default_factory=list)
    rubrics: list = field(default_factory=list)
    auth: dict | None = None
    refusal: dict | None = None
    chains: list = field(default_factory=list)
    reward_basis: list = field(default_factory=lambda: ["DB"])
    verification: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
