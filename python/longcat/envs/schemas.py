"""Tool schemas for agents: OpenAI function calling and MCP ``tools/list`` entries.

OpenAI: ``{"type": "function", "function": {"name", "description", "parameters"}}`` where
``parameters`` is the JSON Schema object of the arguments (``additionalProperties: false``).
With ``strict=True`` the schema follows OpenAI's strict mode: every property is listed in
``required`` and optional ones accept null instead (the runtime treats null as left out).

MCP (2025-06-18 schema): ``{"name", "description", "inputSchema", "outputSchema"?,
"annotations": {"readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint"}}``;
``outputSchema`` is given only for object results, as MCP requires.

The description carries the preconditions in words (the agent must respect them; the runtime
enforces them), as VitaBench renders its tool docstrings.

API (stable): ``openai_tool(tool, strict=False)``, ``openai_tools(domain, names=None,
strict=False)``, ``mcp_tool(tool)``, ``mcp_tools(domain, names=None)``, ``tool_description(tool)``.
"""
from __future__ import annotations

import copy

from .spec import Domain, Tool

__all__ = ["openai_tool", "openai_tools", "mcp_tool", "mcp_tools", "tool_description"]


def tool_description(tool: Tool) -> str:
    rules = [c.message for c in tool.pre if c.message and "not found" not in c.message]
    text = tool.description
    if rules:
        text += " Fails when: " + "; ".join(rules) + "."
    return text


def _strict(schema: dict) -> dict:
    s = copy.deepcopy(schema)
    req = set(s.get("required", []))
    for name, p in s.get("properties", {}).items():
        if name not in req:
            t = p.get("type")
            if isinstance(t, str):
                p["type"] = [t, "null"]
            elif isinstance(t, list) and "null" not in t:
                p["type"] = t + ["null"]
            if "enum" in p and None not in p["enum"]:
                p["enum"] = p["enum"] + [None]
    s["required"] = list(s.get("properties", {}))
    s["additionalProperties"] = False
    return s


def openai_tool(tool: Tool, strict: bool = False) -> dict:
    params = tool.parameters_schema
    fn = {"name": tool.name, "description": tool_description(tool),
          "parameters": _strict(params) if strict else params}
    if strict:
        fn["strict"] = True
    return {"type": "function", "function": fn}


def _select(domain: Domain, names) -> list[Tool]:
    if names is None:
        return list(domain.tools.values())
    return [domain.tool(n) for n in names]


def openai_tools(domain: Domain, names=None, strict: bool = False) -> list[dict]:
    return [openai_tool(t, strict) for t in _select(domain, names)]


def mcp_tool(tool: Tool) -> dict:
    read = tool.mode == "read"
    out = {"name": tool.name, "description": tool_description(tool),
           "inputSchema": tool.parameters_schema,
           "annotations": {"readOnlyHint": read, "destructiveHint": tool.kind == "delete",
                           "idempotentHint": read or tool.kind in ("set_status", "cancel", "update_fields"),
                           "openWorldHint": False}}
    if tool.returns.get("type") == "object":
        out["outputSchema"] = tool.returns
    return out


def mcp_tools(domain: Domain, names=None) -> list[dict]:
    return [mcp_tool(t) for t in _select(domain, names)]
