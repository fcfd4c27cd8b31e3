"""Tool implementations generated from a domain spec over SQLite, and the hook registry.

``ToolRuntime(domain, conn).call(name, arguments)`` runs one tool call and returns a ``ToolResult``
in the MCP ``CallToolResult`` shape; it never raises for anything a caller (an agent) can get
wrong. The order of a call:

1. the tool must exist; ``arguments`` must be a JSON object of at most ``MAX_ARGUMENT_BYTES``;
2. the arguments are validated against the tool's JSON Schema (types, enums, ranges, lengths,
   formats, required and unknown names);
3. inside a SAVEPOINT: preconditions are evaluated (the first that fails is the error), the
   ``before.`` values of the postconditions are read, the implementation runs (generated from the
   kind, or a registered hook), and the postconditions are checked (``check_post``);
4. any error rolls the SAVEPOINT back, so a failed call leaves the database as it was; a READ tool
   that changed the database is an error too.

All values reach SQLite as bound parameters; identifiers come from the validated spec only.

Hooks (custom tools): ``@register_hook("retail.exchange_items")`` on ``fn(ctx: ToolContext, args:
dict) -> JSON-able``; raise ``ToolError("message")`` for a user-facing error. ``ToolContext`` gives
``conn``, ``domain``, ``tool``, ``now``, ``state`` (``db.DbState``) and helpers ``get``, ``select``,
``insert``, ``update``, ``delete``, ``new_id``.

API (stable): ``ToolRuntime(domain, conn, *, check_post=True, hooks=None)`` with ``call``,
``check_preconditions``, ``tool_names``, ``stats``; ``ToolResult`` (``content``, ``is_error``,
``data``, ``error``, ``to_dict()``, ``text``; also ``result["content"]`` / ``result["isError"]``);
``ToolError``; ``register_hook``; ``HOOKS``; ``validate_arguments(schema, args) -> list[str]``;
``MAX_ARGUMENT_BYTES``.
"""
from __future__ import annotations

import json
import math
import re
import sqlite3
from dataclasses import dataclass, field as dc_field
from datetime import date, datetime
from typing import Any, Callable

from . import conditions as C
from .db import DbState, new_id, q, row_from_db, value_to_db
from .registry import HOOKS, ToolError, register_hook  # noqa: F401  (re-exported)
from .spec import Domain, Tool

__all__ = ["ToolRuntime", "ToolResult", "ToolError", "ToolContext", "register_hook", "HOOKS",
           "validate_arguments", "MAX_ARGUMENT_BYTES"]

MAX_ARGUMENT_BYTES = 16384


@dataclass
class ToolResult:
    """MCP CallToolResult: ``content`` (text blocks), ``isError``; ``data`` is the structured value."""
    content: list
    is_error: bool
    data: Any = None
    error: str | None = None

    @classmethod
    def ok(cls, data) -> "ToolResult":
        return cls([{"type": "text", "text": json.dumps(data, sort_keys=True, default=str)}], False, data)

    @classmethod
    def fail(cls, message: str) -> "ToolResult":
        return cls([{"type": "text", "text": f"Error: {message}"}], True, None, message)

    @property
    def text(self) -> str:
        return "".join(b.get("text", "") for b in self.content)

    def to_dict(self) -> dict:
        d = {"content": self.content, "isError": self.is_error}
        if not self.is_error:
            d["structuredContent"] = self.data if isinstance(self.data, dict) else {"result": self.data}
        return d

    def __getitem__(self, key):
        return self.to_dict()[key]


# ---------------------------------------------------------------------------- argument checks
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$")
_JSON_TYPES = {"string": str, "integer": int, "number": (int, float), "boolean": bool, "null": type(None),
               "array": list, "object": dict}


def _type_ok(v, t: str) -> bool:
    if t in ("integer", "number") and isinstance(v, bool):
        return False
    if t == "integer" and isinstance(v, float):
        return v.is_integer() and math.isfinite(v)
    if t == "number" and isinstance(v, float) and not math.isfinite(v):
        return False
    return isinstance(v, _JSON_TYPES[t])


def _validate(schema: dict, v, path: str, errs: list):
    types = schema.get("type")
    if types is not None:
        tl = types if isinstance(types, list) else [types]
        if not any(_type_ok(v, t) for t in tl):
            errs.append(f"{path}: expected {' or '.join(tl)}, got {_json_type(v)} {_short(v)}")
            return
    if "enum" in schema and v not in schema["enum"]:
        errs.append(f"{path}: expected one of {schema['enum']}, got {_short(v)}")
        return
    if isinstance(v, str):
        if "\x00" in v:   # SQLite's LIKE and text functions stop at NUL
            errs.append(f"{path}: strings may not contain NUL characters")
        if "maxLength" in schema and len(v) > schema["maxLength"]:
            errs.append(f"{path}: string of {len(v)} characters exceeds maxLength {schema['maxLength']}")
        fmt = schema.get("format")
        if fmt == "date" and not _valid_date(v):
            errs.append(f"{path}: expected a date YYYY-MM-DD, got {_short(v)}")
        if fmt == "date-time" and not _valid_datetime(v):
            errs.append(f"{path}: expected a datetime YYYY-MM-DDTHH:MM:SS, got {_short(v)}")
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        if "minimum" in schema and v < schema["minimum"]:
            errs.append(f"{path}: {v} is below the minimum {schema['minimum']}")
        if "maximum" in schema and v > schema["maximum"]:
            errs.append(f"{path}: {v} is above the maximum {schema['maximum']}")
    if isinstance(v, list):
        if "maxItems" in schema and len(v) > schema["maxItems"]:
            errs.append(f"{path}: {len(v)} items exceed maxItems {schema['maxItems']}")
        if "items" in schema:
            for i, x in enumerate(v):
                _validate(schema["items"], x, f"{path}[{i}]", errs)
    if isinstance(v, dict):
        props = schema.get("properties", {})
        top = path == "arguments"   # top-level names are written bare: "order_id: ..."
        for r in schema.get("required", []):
            if r not in v:
                errs.append(f"{r}: missing required argument" if top else f"{path}.{r}: missing")
        if schema.get("additionalProperties") is False:
            for k in v:
                if k not in props:
                    errs.append(f"{_clip(k)}: unknown argument (expected: {sorted(props)})" if top
                                else f"{path}.{_clip(k)}: unknown field")
        for k, x in v.items():
            if k in props:
                _validate(props[k], x, k if top else f"{path}.{k}", errs)


def _valid_date(v: str) -> bool:
    if not _DATE.match(v):
        return False
    try:
        date.fromisoformat(v)
        return True
    except ValueError:
        return False


def _valid_datetime(v: str) -> bool:
    if not _DATETIME.match(v):
        return False
    try:
        datetime.fromisoformat(v)
        return True
    except ValueError:
        return False


def _json_type(v) -> str:
    for n, t in (("null", type(None)), ("boolean", bool), ("integer", int), ("number", float),
                 ("string", str), ("array", list), ("object", dict)):
        if isinstance(v, t):
            return n
    return type(v).__name__


def _clip(name: str) -> str:
    return name if len(name) <= 60 else name[:57] + "..."


def _short(v) -> str:
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def validate_arguments(schema: dict, args) -> list[str]:
    """Problems of ``args`` against a tool's parameters schema (empty when valid)."""
    errs: list[str] = []
    if not isinstance(args, dict):
        return [f"arguments: expected a JSON object, got {_json_type(args)}"]
    _validate(schema, args, "arguments", errs)
    return errs


# -------------------------------------------------------------------------------------- runtime
class ToolContext:
    """What a hook sees: the connection, the domain, the tool and row helpers (all bound SQL)."""

    def __init__(self, runtime: "ToolRuntime", tool: Tool):
        self.runtime, self.tool = runtime, tool
        self.conn, self.domain, self.now = runtime.conn, runtime.domain, runtime.domain.now
        self.state = runtime.state

    def get(self, entity: str, key) -> dict | None:
        return self.state.get(entity, key)

    def require(self, entity: str, key) -> dict:
        row = self.state.get(entity, key)
        if row is None:
            raise ToolError(f"{entity} {key!r} not found")
        return row

    def select(self, entity: str, where: dict | None = None, limit: int | None = None) -> list[dict]:
        e = self.domain.entity(entity)
        w, a = _where(e, where or {})
        sql = f"SELECT {', '.join(map(q, e.fields))} FROM {q(entity)}{w} ORDER BY {q(e.primary_key)}"
        if limit is not None:
            sql += " LIMIT ?"
            a.append(int(limit))
        return [row_from_db(e, r) for r in self.conn.execute(sql, a)]

    def new_id(self, entity: str):
        return new_id(self.conn, self.domain, entity)

    def insert(self, entity: str, values: dict) -> dict:
        e = self.domain.entity(entity)
        row = {n: values.get(n, f.default) for n, f in e.fields.items()}
        if row.get(e.primary_key) is None:
            row[e.primary_key] = self.new_id(entity)
        unknown = set(values) - set(e.fields)
        if unknown:
            raise ValueError(f"{entity} has no fields {sorted(unknown)}")
        self.conn.execute(f"INSERT INTO {q(entity)} ({', '.join(map(q, row))}) VALUES "
                          f"({', '.join('?' * len(row))})", [value_to_db(e.fields[n], v) for n, v in row.items()])
        return self.state.get(entity, row[e.primary_key])

    def update(self, entity: str, key, values: dict) -> dict:
        e = self.domain.entity(entity)
        if values:
            sets = ", ".join(f"{q(n)} = ?" for n in values)
            self.conn.execute(f"UPDATE {q(entity)} SET {sets} WHERE {q(e.primary_key)} = ?",
                              [value_to_db(e.fields[n], v) for n, v in values.items()] + [key])
        return self.state.get(entity, key)

    def delete(self, entity: str, key) -> None:
        e = self.domain.entity(entity)
        self.conn.execute(f"DELETE FROM {q(entity)} WHERE {q(e.primary_key)} = ?", [key])


def _where(e, filters: dict) -> tuple[str, list]:
    parts, args = [], []
    for k, v in filters.items():
        if v is None:
            parts.append(f"{q(k)} IS NULL")
        else:
            parts.append(f"{q(k)} = ?")
            args.append(value_to_db(e.fields[k], v))
    return (" WHERE " + " AND ".join(parts) if parts else ""), args


def _like_escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@dataclass
class RuntimeStats:
    calls: int = 0
    errors: int = 0
    internal_errors: int = 0        # hook exceptions, postcondition violations: bugs, not agent errors
    post_failures: list = dc_field(default_factory=list)


class ToolRuntime:
    """Runs a domain's tools against one SQLite connection (see the module docstring)."""

    def __init__(self, domain: Domain, conn: sqlite3.Connection, *, check_post: bool = True,
                 hooks: dict[str, Callable] | None = None):
        if not isinstance(domain, Domain):
            raise TypeError(f"domain: expected a longcat.envs.spec.Domain, got {type(domain).__name__}")
        if not isinstance(conn, sqlite3.Connection):
            raise TypeError(f"connection: expected sqlite3.Connection, got {type(conn).__name__}")
        if conn.isolation_level is not None:
            raise ValueError("connection: open it with isolation_level=None (db.connect does) so the "
                             "runtime controls transactions")
        self.domain, self.conn, self.check_post = domain, conn, check_post
        self.hooks = dict(HOOKS)
        if hooks:
            self.hooks.update(hooks)
        self.state = DbState(conn, domain)
        self.stats = RuntimeStats()
        self._sp = 0

    @property
    def tool_names(self) -> list[str]:
        return list(self.domain.tools)

    def check_preconditions(self, name: str, arguments: dict) -> list[C.Condition]:
        """The preconditions a call would violate now (no execution; arguments must be valid)."""
        tool = self.domain.tool(name)
        return [c for c in tool.pre if not self._holds(c, tool, arguments)]

    def _holds(self, c: C.Condition, tool: Tool, args: dict, **kw) -> bool:
        return bool(C.evaluate(c.node, self.state, _with_defaults(tool, args), now=self.domain.now, **kw))

    def call(self, name: str, arguments: Any = None) -> ToolResult:
        self.stats.calls += 1
        try:
            res = self._call(name, arguments)
        except Exception as e:   # e.g. a hook that committed or closed the transaction itself
            self.stats.internal_errors += 1
            res = ToolResult.fail(f"internal error: {type(e).__name__}: {e}")
        if res.is_error:
            self.stats.errors += 1
        return res

    def _call(self, name, arguments) -> ToolResult:
        if not isinstance(name, str) or name not in self.domain.tools:
            shown = _short(name)
            return ToolResult.fail(f"unknown tool {shown}; available tools: {', '.join(self.domain.tools)}")
        tool = self.domain.tools[name]
        if arguments is None:
            arguments = {}
        if isinstance(arguments, str):   # some agents send the JSON text of the arguments
            if len(arguments.encode("utf-8", "replace")) > MAX_ARGUMENT_BYTES:
                return ToolResult.fail(f"arguments exceed {MAX_ARGUMENT_BYTES} bytes")
            try:
                arguments = json.loads(arguments)
            except ValueError as e:
                return ToolResult.fail(f"arguments are not valid JSON: {e}")
        try:
            size = len(json.dumps(arguments, default=str).encode("utf-8"))
        except (TypeError, ValueError) as e:
            return ToolResult.fail(f"arguments are not JSON-serialisable: {e}")
        if size > MAX_ARGUMENT_BYTES:
            return ToolResult.fail(f"arguments of {size} bytes exceed the limit of {MAX_ARGUMENT_BYTES} bytes")
        if isinstance(arguments, dict):   # null for an optional argument means left out (OpenAI strict mode)
            arguments = {k: v for k, v in arguments.items()
                         if not (v is None and k in tool.params and not tool.params[k].required)}
        errs = validate_arguments(tool.parameters_schema, arguments)
        if errs:
            return ToolResult.fail(f"invalid arguments for {name}: " + "; ".join(errs))
        args = _with_defaults(tool, arguments)
        self._sp += 1
        sp = f"tool_call_{self._sp}"
        changes = self.conn.total_changes
        self.conn.execute(f"SAVEPOINT {sp}")
        ok = False
        try:
            for c in tool.pre:
                if not self._holds(c, tool, args):
                    return ToolResult.fail(f"precondition failed for {name}: {_fill(c.describe(), args)}")
            before = {}
            if self.check_post:
                for c in tool.post:
                    before.update(C.evaluate_before(c.node, self.state, args, now=self.domain.now))
            data = self._run(tool, args)
            if tool.mode == "read" and self.conn.total_changes != changes:
                self.stats.internal_errors += 1
                return ToolResult.fail(f"internal error: read-only tool {name} changed the database")
            if self.check_post:
                for c in tool.post:
                    if not C.evaluate(c.node, self.state, args, result=data, before=before, now=self.domain.now):
                        self.stats.internal_errors += 1
                        self.stats.post_failures.append((name, c.text))
                        return ToolResult.fail(f"internal error: postcondition of {name} does not hold: {c.text}")
            try:
                res = ToolResult.ok(data)
            except (TypeError, ValueError) as e:
                self.stats.internal_errors += 1
                return ToolResult.fail(f"internal error: result of {name} is not JSON-serialisable: {e}")
            ok = True
            return res
        except ToolError as e:
            return ToolResult.fail(str(e))
        except sqlite3.IntegrityError as e:
            return ToolResult.fail(f"{name} would violate a database constraint ({e})")
        except C.ConditionEvalError as e:
            return ToolResult.fail(f"cannot check the conditions of {name}: {e}")
        except Exception as e:   # a bug in a hook must not take the environment down
            self.stats.internal_errors += 1
            return ToolResult.fail(f"internal error in {name}: {type(e).__name__}: {e}")
        finally:
            if not ok:
                self.conn.execute(f"ROLLBACK TO {sp}")
            self.conn.execute(f"RELEASE {sp}")
            self._sp -= 1

    # ---------------------------------------------------------------------- generated kinds
    def _run(self, tool: Tool, args: dict):
        k = tool.kind
        o = tool.options
        if k == "custom":
            hook = self.hooks.get(o["hook"])
            if hook is None:
                raise ToolError(f"tool {tool.name} has no implementation (hook {o['hook']!r} not registered)")
            return hook(ToolContext(self, tool), args)
        e = self.domain.entities[tool.entity]
        ctx = ToolContext(self, tool)
        if k == "get":
            return ctx.require(e.name, args[o["key_param"]])
        if k == "find_by":
            rows = ctx.select(e.name, {f: args[f] for f in o["by"]}, limit=1)
            if not rows:
                raise ToolError(f"no {e.name} matches " + ", ".join(f"{f}={args[f]!r}" for f in o["by"]))
            return rows[0]
        if k in ("list_by", "count"):
            where = {f: args[f] for f in o["by"]}
            if k == "count":
                w, a = _where(e, where)
                return {"count": self.conn.execute(f"SELECT COUNT(*) FROM {q(e.name)}{w}", a).fetchone()[0]}
            for f in o.get("optional", []):
                if args.get(f) is not None:
                    where[f] = args[f]
            return ctx.select(e.name, where, limit=args.get("limit") or o["limit"])
        if k == "search":
            parts, a = [], []
            for fn in o["fields"]:
                v = args.get(fn)
                if v is None:
                    continue
                f = e.fields[fn]
                if f.type == "string":
                    parts.append(f"lower({q(fn)}) LIKE ? ESCAPE '\\'")
                    a.append("%" + _like_escape(v.lower()) + "%")
                else:
                    parts.append(f"{q(fn)} = ?")
                    a.append(value_to_db(f, v))
            w = " WHERE " + " AND ".join(parts) if parts else ""
            a.append(int(args.get("limit") or o["limit"]))
            cur = self.conn.execute(f"SELECT {', '.join(map(q, e.fields))} FROM {q(e.name)}{w} "
                                    f"ORDER BY {q(e.primary_key)} LIMIT ?", a)
            return [row_from_db(e, r) for r in cur]
        if k == "aggregate":
            w, a = _where(e, {f: args[f] for f in o["by"]})
            fn = o["op"].upper()
            v = self.conn.execute(f"SELECT {fn}({q(o['field'])}) FROM {q(e.name)}{w}", a).fetchone()[0]
            return {"value": None if v is None else (float(v) if o["op"] == "avg" or e.fields[o["field"]].type == "number" else v)}
        if k == "create":
            # a left-out optional parameter leaves the field to its default
            values = {fn: args[fn] for fn in o["fields"] if fn not in o["optional"] or args.get(fn) is not None}
            values.update(self._set_values(tool, args))
            return ctx.insert(e.name, values)
        key = args[o["key_param"]]
        if k == "update_fields":
            values = {fn: args[fn] for fn in o["fields"]}
            values.update(self._set_values(tool, args))
            return ctx.update(e.name, key, values)
        if k in ("set_status", "cancel"):
            values = {o["field"]: o["to"]}
            values.update(self._set_values(tool, args))
            return ctx.update(e.name, key, values)
        if k == "adjust":
            cur = ctx.require(e.name, key)[o["field"]]
            values = {o["field"]: cur + args["amount"]}
            values.update(self._set_values(tool, args))
            return ctx.update(e.name, key, values)
        if k == "delete":
            ctx.delete(e.name, key)
            return {"deleted": key}
        raise ToolError(f"tool kind {k!r} has no implementation")

    def _set_values(self, tool: Tool, args: dict) -> dict:
        e = self.domain.entities[tool.entity]
        out = {}
        for fn, v in tool.options.get("set", {}).items():
            if isinstance(v, str) and v.startswith("$"):
                if v == "$now":
                    v = self.domain.now[:10] if e.fields[fn].type == "date" else self.domain.now
                else:
                    v = args.get(v[1:])
            out[fn] = v
        return out


def _fill(message: str, args: dict) -> str:
    """Writes argument values into a condition message ($order_id -> '#W1')."""
    return re.sub(r"\$([A-Za-z_][A-Za-z0-9_]*)(?![.\w])",
                  lambda m: _short(args[m.group(1)]) if m.group(1) in args else m.group(0), message)


def _with_defaults(tool: Tool, args: dict) -> dict:
    """Arguments with every declared parameter present (left-out optionals are None)."""
    out = {p: None for p in tool.params}
    out.update(args)
    return out
