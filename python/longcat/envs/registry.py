"""The hook registry: custom tool implementations by name, and the error they raise.

Dependency-free on purpose: domain specs (``spec``) check that a custom tool's hook exists, the
tool runtime (``toolgen``) calls it, and the per-domain hook modules (``hooks/<domain>.py``)
register into it; none of them needs to import another to do so (this broke the
spec -> toolgen -> db -> spec import cycle).
"""
from __future__ import annotations

from typing import Callable

__all__ = ["HOOKS", "ToolError", "register_hook"]

HOOKS: dict[str, Callable] = {}


class ToolError(Exception):
    """A user-facing tool error (bad id, violated rule): becomes an ``isError`` result."""


def register_hook(name: str):
    """Registers ``fn(ctx, args)`` as the implementation of custom tools with ``hook: name``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"hook name must be a non-empty string, got {name!r}")

    def deco(fn):
        old = HOOKS.get(name)
        if old is not None and getattr(old, "__qualname__", None) != getattr(fn, "__qualname__", None):
            raise ValueError(f"hook {name!r} is already registered to {old!r}")
        HOOKS[name] = fn
        return fn
    return deco
