"""The environment service (issue 12): ``EnvService``, an asyncio API over many environments
hosted by worker processes (or Ray actors), with hibernation to action logs, crash recovery,
admission limits and metrics; and the code sandbox of the ``python`` / ``calculator`` tools.

It lives under ``longcat.envs`` because it is a runtime for those environments: it drives them
only through the public ``Environment`` API (constructor, ``reset``, ``step``, ``db_hash``), so
any environment with that API plugs in (``env_factory``). The sandbox is here as well because
its only user is the service's code tools.

Modules: ``api`` (EnvService), ``host`` (the environments of one worker), ``workers`` (local
processes, Ray actors), ``sandbox`` (run_python, calculator), ``cli`` (``longcat envs serve``).
"""
from .api import (CODE_TOOLS, EnvService, EnvServiceError, EpisodeStateError, HandleBusy,
                  Overloaded, UnknownHandle, WorkerLost)
from .sandbox import SandboxLimits, SandboxUnavailable, calculator, run_python

__all__ = ["EnvService", "EnvServiceError", "EpisodeStateError", "HandleBusy", "Overloaded",
           "UnknownHandle", "WorkerLost", "CODE_TOOLS", "SandboxLimits", "SandboxUnavailable",
           "calculator", "run_python"]
