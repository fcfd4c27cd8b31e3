"""Environment scaling (report section 3): domain specs -> SQLite databases and generated tools ->
tool dependency graphs -> environments and tasks.

Modules (each documents its stable API in its docstring):
  spec        the YAML domain format, validation (``SpecError``), expanded tool definitions
  conditions  the machine-checkable pre/postcondition language
  db          schema -> SQLite DDL, row I/O, snapshot/restore, stable table hashes
  toolgen     ``ToolRuntime``: generated tool implementations, hooks, MCP-style results
  schemas     tool schemas for OpenAI function calling and MCP ``inputSchema``
  graph       the tool dependency graph (networkx)
  check       generated per-tool unit tests and the conversion report
  registry    the dependency-free hook registry (``register_hook``, ``ToolError``)
  invariants  cross-table invariants: declared in the specs, enforced, checked
  growth      controlled growth of environments; ``build`` many at once
  tasks       goal-level task synthesis and self-verification; ``policy`` the policy documents
  records     typed ``EnvRecord`` / ``Task``; ``episodes`` typed ``Episode``, JSONL logs, pass^k
  runtime     ``Environment`` (reset / step / evaluate); ``users`` the user simulators;
              ``agents`` the reference agents; ``protocols`` ``Agent`` / ``UserSimulator``
  noise       instruction, tool, state and user-turn noise (``NoiseConfig``)
  chat_api    the OpenAI-compatible client of the LLM user and ``OpenAIAgent``
  tau2_export tau2-bench domain folders
  cli         ``longcat envs ...``

Importing the package loads neither torch nor the compiled kernels.
"""
from .spec import Domain, SpecError, domain_names, load_all, load_domain

__all__ = ["Domain", "SpecError", "domain_names", "load_all", "load_domain"]
