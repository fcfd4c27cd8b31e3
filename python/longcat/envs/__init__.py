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
  cli         ``longcat envs ...``
"""
from .spec import Domain, SpecError, domain_names, load_all, load_domain

__all__ = ["Domain", "SpecError", "domain_names", "load_all", "load_domain"]
