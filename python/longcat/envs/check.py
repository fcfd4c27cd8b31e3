"""Generated unit tests for every tool of a domain, and the conversion report.

For each tool, on a small deterministic database (``make_rows``):

1. **success**: find arguments (and, when needed, repair the database) so that every
   precondition holds, call the tool, and require a non-error result whose postconditions hold
   (the runtime checks them) and, for READ tools, an unchanged database hash;
2. **violations**: for each precondition, from the success state change an argument or a row so
   that this precondition fails, call, and require an ``isError`` result and an unchanged hash;
3. **bad arguments**: missing required arguments, an unknown argument, a wrongly typed argument,
   an SQL-looking string and an oversized argument must each give ``isError`` and leave the hash
   unchanged (an SQL-looking string may also succeed, as plain data, but every table survives).

Every case is kept in ``ToolCheck.cases`` (label, arguments, expectation, outcome), so the JSON
report of ``longcat envs check --json`` lists the generated tests themselves.

A tool passes when its success case passes and every case that could be constructed passes; a
violation that cannot be constructed is counted (``unconstructed``) but is not a failure. The
conversion rate of a domain is passed / tools (the report's >95% bar).

This module keeps its own minimal row generator (sequential, typed values); realistic data comes
from ``datagen`` (Faker).

API (stable): ``make_rows(domain, n=6, seed=0) -> {entity: [row]}``, ``check_tool(domain, name,
seed=0) -> ToolCheck``, ``check_domain(domain, seed=0) -> DomainReport``, ``DomainReport.to_dict()``.
"""
from __future__ import annotations

import itertools
import random
import sqlite3
from dataclasses import dataclass, field as dc_field
from datetime import date, timedelta, datetime

from . import conditions as C
from . import db as D
from .spec import Domain, Field, Tool
from .toolgen import MAX_ARGUMENT_BYTES, ToolRuntime

__all__ = ["make_rows", "gen_value", "check_tool", "check_domain", "ToolCheck", "DomainReport"]

ATTEMPTS = 60
REPAIR_ROUNDS = 6
MAX_INSERTS = 12
_MISSING = object()


# --------------------------------------------------------------------------- minimal row generator
def gen_value(f: Field, i: int, rng: random.Random):
    """A deterministic value of field ``f`` for row number ``i`` (unique where the field is)."""
    if f.type == "enum":
        return f.values[(i + rng.randrange(len(f.values))) % len(f.values)]
    if f.type == "boolean":
        return (i + rng.randrange(2)) % 2 == 0
    if f.type in ("integer", "number"):
        lo = f.min if f.min is not None else 0
        hi = f.max if f.max is not None else lo + 1000
        if f.unique:
            v = lo + i
        else:
            v = lo + rng.randrange(int(max(1, min(hi - lo, 100))) + 1)
        v = min(v, hi)
        return int(v) if f.type == "integer" else float(round(v + (0.5 if v + 0.5 <= hi else 0), 2))
    if f.type == "date":
        return (date(2025, 1, 1) + timedelta(days=i * 3 + rng.randrange(3))).isoformat()
    if f.type == "datetime":
        return (datetime(2025, 1, 1, 8) + timedelta(days=i, hours=rng.randrange(10))).strftime("%Y-%m-%dT%H:%M:%S")
    # strings: short, unique per row, inside max_length
    ml = f.max_length or 2000
    s = f"{f.name}{i}" if f.faker != "email" else f"user{i}@example.com"
    if len(s) > ml:
        s = (f.name[:1] + str(i))[-ml:] if ml >= 2 else str(i % 10)
    return s


def _pk_value(domain: Domain, entity: str, i: int):
    e = domain.entities[entity]
    if e.pk.type == "integer":
        return i + 1
    return D.format_id(e, i + 1)


def make_rows(domain: Domain, n: int = 6, seed: int = 0) -> dict[str, list[dict]]:
    """``n`` rows per entity (at least one per enum value of the first enum field), foreign keys
    drawn from the referenced rows, deterministic under ``seed``."""
    rng = random.Random(f"rows:{domain.name}:{seed}")
    out: dict[str, list[dict]] = {}
    for en in domain.entity_order():
        e = domain.entities[en]
        enums = [len(f.values) for f in e.fields.values() if f.type == "enum"]
        count = max(n, max(enums) if enums else 0)
        rows = []
        for i in range(count):
            row = {}
            for fn, f in e.fields.items():
                if fn == e.primary_key:
                    row[fn] = _pk_value(domain, en, i)
                elif f.ref:
                    parents = out.get(f.ref[0]) or []
                    if f.ref[0] == en:   # self reference: an earlier row or null
                        parents = rows
                    if not parents:
                        row[fn] = None
                    elif f.unique:
                        row[fn] = parents[i][f.ref[1]] if i < len(parents) else None
                    else:
                        row[fn] = parents[(i + rng.randrange(len(parents))) % len(parents)][f.ref[1]]
                elif f.type == "enum":
                    row[fn] = f.values[i % len(f.values)]
                else:
                    row[fn] = gen_value(f, i, rng)
            if any(row[fn] is None and not f.nullable for fn, f in e.fields.items()):
                continue
            rows.append(row)
        out[en] = rows
    return out


# ------------------------------------------------------------------------------------ results
@dataclass
class ToolCheck:
    tool: str
    passed: bool = False
    success: bool = False
    violations_passed: int = 0
    violations_total: int = 0
    unconstructed: int = 0
    bad_args_passed: int = 0
    bad_args_total: int = 0
    failures: list = dc_field(default_factory=list)
    cases: list = dc_field(default_factory=list)   # {case, arguments, expect, passed, result}

    def to_dict(self) -> dict:
        return dict(vars(self))


@dataclass
class DomainReport:
    domain: str
    tools: list[ToolCheck]

    @property
    def passed(self) -> int:
        return sum(t.passed for t in self.tools)

    @property
    def rate(self) -> float:
        return self.passed / len(self.tools) if self.tools else 0.0

    def failures(self) -> list[ToolCheck]:
        return [t for t in self.tools if not t.passed]

    def to_dict(self) -> dict:
        return {"domain": self.domain, "tools": len(self.tools), "passed": self.passed,
                "conversion_rate": self.rate,
                "cases": sum(1 + t.violations_total + t.bad_args_total for t in self.tools),
                "unconstructed_violations": sum(t.unconstructed for t in self.tools),
                "failures": [{"tool": t.tool, "problems": t.failures} for t in self.failures()],
                "per_tool": [t.to_dict() for t in self.tools]}


def _case(label: str, args, expect: str, passed: bool, r) -> dict:
    """One generated test case as report data (long strings shortened)."""
    def short(v):
        return f"<{len(v)} characters>" if isinstance(v, str) and len(v) > 80 else v
    shown = {k: short(v) for k, v in args.items()} if isinstance(args, dict) else short(args)
    return {"case": label, "arguments": shown, "expect": expect, "passed": bool(passed),
            "result": r.text[:200]}


def _direct_params(node):
    """Parameters read as values, not as the key of a field()/exists()/count() call."""
    if isinstance(node, C.Param):
        yield node
    elif isinstance(node, C.BinOp):
        yield from _direct_params(node.left)
        yield from _direct_params(node.right)
    elif isinstance(node, C.ListLit):
        for x in node.items:
            yield from _direct_params(x)


# ----------------------------------------------------------------------------------- the checker
class _Checker:
    def __init__(self, domain: Domain, seed: int):
        self.domain, self.seed = domain, seed
        self.conn = D.connect(domain)
        D.load(self.conn, domain, make_rows(domain, seed=seed))
        self.base = D.snapshot(self.conn)
        self.rt = ToolRuntime(domain, self.conn)
        self.state = self.rt.state
        self._fresh = itertools.count(10_000)
        self.prefer_rows = False

    def close(self):
        self.base.close()
        self.conn.close()

    def reset(self):
        D.restore(self.conn, self.base)

    # ---- candidates
    def column(self, entity: str, fname: str, limit: int = 30) -> list:
        e = self.domain.entities[entity]
        cur = self.conn.execute(f"SELECT DISTINCT {D.q(fname)} FROM {D.q(entity)} WHERE {D.q(fname)} IS NOT NULL "
                                f"ORDER BY {D.q(e.primary_key)} LIMIT ?", [limit])
        return [D.value_from_db(e.fields[fname], r[0]) for r in cur]

    def fresh(self, f: Field, rng):
        return gen_value(f, next(self._fresh), rng)

    def candidates(self, tool: Tool, pname: str, rng) -> list:
        p = tool.params[pname]
        s = p.schema
        if p.field is not None:
            en, fn = p.field
            f = self.domain.entities[en].fields[fn]
            vals = self.column(en, fn)
            own = tool.kind in ("create", "update_fields") and en == tool.entity and not f.ref
            if own or not vals or f.type in ("enum", "boolean"):
                if f.type == "enum":
                    vals = vals + [v for v in f.values if v not in vals]
                elif f.type == "boolean":
                    vals = vals + [v for v in (True, False) if v not in vals]
                else:
                    vals = ([self.fresh(f, rng)] if own and f.unique else []) + vals + [self.fresh(f, rng)]
            return vals
        return self.schema_values(s, rng)

    def schema_values(self, s: dict, rng) -> list:
        t = s.get("type")
        t = [x for x in t if x != "null"][0] if isinstance(t, list) else t
        if "enum" in s:
            return [v for v in s["enum"] if v is not None]
        if t == "boolean":
            return [True, False]
        if t in ("integer", "number"):
            lo, hi = s.get("minimum"), s.get("maximum")
            base = [1, 5, 2, 10, 0, -1, 100]
            vals = [v for v in base if (lo is None or v >= lo) and (hi is None or v <= hi)] or [lo if lo is not None else hi]
            return [float(v) if t == "number" else int(v) for v in vals]
        if t == "string":
            if s.get("format") in ("date", "date-time"):
                return self.times(s["format"])
            return ["sample text"][: 1] if s.get("maxLength", 99) >= 11 else ["x"]
        if t == "array":
            return [[]]
        return [None]

    # ---- success arguments
    def failing(self, tool: Tool, args: dict) -> list[C.Condition]:
        try:
            return self.rt.check_preconditions(tool.name, args)
        except C.ConditionEvalError:
            return list(tool.pre)

    def find_args(self, tool: Tool, rng) -> dict | None:
        req = [p for p in tool.params.values() if p.required]
        cands = {p.name: self.candidates(tool, p.name, rng) for p in req}
        best, best_fail = None, None
        for a in range(ATTEMPTS):
            args = {}
            for p in req:
                vals = cands[p.name]
                if not vals:
                    return None
                args[p.name] = vals[a % len(vals)] if a < len(vals) else rng.choice(vals)
            fails = self.failing(tool, args)
            if not fails:
                return args
            if best_fail is None or len(fails) < best_fail:
                best, best_fail = args, len(fails)
        args = dict(best)
        for _ in range(REPAIR_ROUNDS):
            fails = self.failing(tool, args)
            if not fails:
                return args
            for c in fails:
                args = self.greedy_repair(tool, c, args, rng)
        return args if not self.failing(tool, args) else None

    def greedy_repair(self, tool: Tool, c: C.Condition, args: dict, rng) -> dict:
        """Repairs one failing precondition, keeping a change only when fewer preconditions fail
        (or as many, with this one fixed); tries argument changes first, then row inserts."""
        before = len(self.failing(tool, args))
        # rows first: changing a row keeps the arguments that already satisfy other conditions
        for prefer_rows in (True, False):
            self.conn.execute("SAVEPOINT repair")
            trial = dict(args)
            self.prefer_rows = prefer_rows
            try:
                self.repair(tool, c.node, trial, rng, want=True)
            finally:
                self.prefer_rows = False
            after = self.failing(tool, trial)
            if len(after) < before or (len(after) == before and c not in after):
                self.conn.execute("RELEASE repair")
                return trial
            self.conn.execute("ROLLBACK TO repair")
            self.conn.execute("RELEASE repair")
        return args

    # ---- repairs: make `node` evaluate to `want` by changing an argument or a row
    def value(self, node, args):
        return C.evaluate(node, self.state, args, now=self.domain.now)

    def repair(self, tool: Tool, node, args: dict, rng, want: bool) -> bool:
        full = {p: args.get(p) for p in tool.params}
        try:
            if bool(self.value(node, full)) == want:
                return True
        except C.ConditionEvalError:
            pass
        done = False
        if isinstance(node, C.Not):
            done = self.repair(tool, node.item, args, rng, not want)
        elif isinstance(node, C.BoolOp):
            if (node.op == "and") == want:   # all items must become `want`
                done = all(self.repair(tool, x, args, rng, want) for x in node.items)
            else:
                done = any(self.repair(tool, x, args, rng, want) for x in node.items)
        elif isinstance(node, C.Compare):
            done = self.repair_compare(tool, node, args, rng, want)
        elif isinstance(node, C.Call) and node.fn == "exists":
            done = self.repair_exists(tool, node, args, rng, want)
        if done and self._holds(node, {p: args.get(p) for p in tool.params}) == want:
            return True
        return self.search_params(tool, node, args, rng, want)

    def search_params(self, tool: Tool, node, args: dict, rng, want: bool) -> bool:
        """Last resort: one argument at a time, try its candidate values on the whole node (parts
        repaired one by one can undo each other, as in `not exists(...) or field(...) == $x`)."""
        names = [n.name for n in C.walk(node) if isinstance(n, C.Param) and n.name in tool.params]
        for name in dict.fromkeys(names):
            old = args.get(name, _MISSING)
            for v in self.param_values(tool, name, rng):
                args[name] = v
                if self._holds(node, {p: args.get(p) for p in tool.params}) == want:
                    return True
            if old is _MISSING:
                args.pop(name, None)
            else:
                args[name] = old
        return False

    def set_row(self, entity: str, key, fname: str, v) -> bool:
        e = self.domain.entities[entity]
        f = e.fields[fname]
        if key is None or fname == e.primary_key:
            return False
        try:
            self.conn.execute(f"UPDATE {D.q(entity)} SET {D.q(fname)} = ? WHERE {D.q(e.primary_key)} = ?",
                              [D.value_to_db(f, v), key])
            return True
        except sqlite3.Error:
            return False

    def times(self, fmt: str) -> list[str]:
        """Dates around the domain clock: after it first (bookings), then before it, then far out."""
        now = datetime.fromisoformat(self.domain.now)
        vals = [now + timedelta(days=30), now - timedelta(days=30), now + timedelta(days=400),
                datetime(2000, 1, 1)]
        return [v.date().isoformat() if fmt == "date" else v.strftime("%Y-%m-%dT%H:%M:%S") for v in vals]

    def param_values(self, tool: Tool, pname: str, rng) -> list:
        vals = self.candidates(tool, pname, rng)
        s = tool.params[pname].schema
        if s.get("format") in ("date", "date-time"):
            vals = vals + [v for v in self.times(s["format"]) if v not in vals]
        if isinstance(s.get("type"), list) and "null" in s["type"]:
            vals = vals + [None]
        if s.get("type") in ("integer", "number") and "enum" not in s:
            extra = [-10**6, 10**6, -1, 0, 1]
            lo, hi = s.get("minimum"), s.get("maximum")
            vals = vals + [v for v in extra if (lo is None or v >= lo) and (hi is None or v <= hi)]
            if s["type"] == "number":
                vals = [float(v) for v in vals]
        return vals

    def repair_compare(self, tool, node: C.Compare, args, rng, want) -> bool:
        full = lambda: {p: args.get(p) for p in tool.params}  # noqa: E731
        holds = lambda: self._holds(node, full()) == want     # noqa: E731
        # 1. change an argument the comparison reads directly (not one that names a row)
        for side in (() if self.prefer_rows else (node.left, node.right)):
            for n in _direct_params(side):
                if n.name in tool.params:
                    old = args.get(n.name, _MISSING)
                    for v in self.param_values(tool, n.name, rng) + ([None] if not tool.params[n.name].required else []):
                        args[n.name] = v
                        if holds():
                            return True
                    if old is _MISSING:
                        args.pop(n.name, None)
                    else:
                        args[n.name] = old
        # 2. change the row a field() call reads (compared directly or inside arithmetic)
        for side, other in ((node.left, node.right), (node.right, node.left)):
            for call in [n for n in C.walk(side) if isinstance(n, C.Call) and n.fn == "field"]:
                try:
                    key = self.value(call.args[0], full())
                    target = self.value(other, full()) if call is side else 0
                except C.ConditionEvalError:
                    continue
                f = self.domain.entities[call.entity].fields[call.name]
                for v in self.row_values(f, node.op, target, want, rng):
                    if self.set_row(call.entity, key, call.name, v) and holds():
                        return True
        # 3. add rows that a count() reads
        for call in [n for n in C.walk(node) if isinstance(n, C.Call) and n.fn == "count"]:
            try:
                filters = {k: self.value(v, full()) for k, v in call.filters.items()}
            except C.ConditionEvalError:
                continue
            for _ in range(MAX_INSERTS):
                if holds() or not self.insert_matching(call.entity, filters, rng):
                    break
        return holds()

    def _holds(self, node, args) -> bool:
        try:
            return bool(self.value(node, args))
        except C.ConditionEvalError:
            return False

    def row_values(self, f: Field, op: str, target, want: bool, rng) -> list:
        if f.type == "enum":
            return list(f.values)
        if f.type == "boolean":
            return [True, False]
        if f.type in ("integer", "number") and isinstance(target, (int, float)) and not isinstance(target, bool):
            vals = [target, target + 1, target - 1, target + 100, target - 100, 0]
            vals = [v for v in vals if (f.min is None or v >= f.min) and (f.max is None or v <= f.max)]
            return [int(v) if f.type == "integer" else float(v) for v in vals]
        vals = [] if target is None else [target]
        if isinstance(target, list):
            vals = list(target)
        if f.type in ("date", "datetime"):
            vals += self.times("date" if f.type == "date" else "date-time")
        vals.append(self.fresh(f, rng))
        if f.nullable:
            vals.append(None)
        if f.ref:
            vals += self.column(*f.ref)
        return vals

    def repair_exists(self, tool, node: C.Call, args, rng, want) -> bool:
        full = {p: args.get(p) for p in tool.params}
        try:
            filters = {k: self.value(v, full) for k, v in node.filters.items()}
        except C.ConditionEvalError:
            return False
        e = self.domain.entities[node.entity]
        if want:
            # an argument naming a missing row: point it at an existing one
            for k, v in ([] if self.prefer_rows else node.filters.items()):
                if isinstance(v, C.Param) and v.name in tool.params:
                    for cand in self.column(node.entity, k):
                        args[v.name] = cand
                        if self._holds(node, {p: args.get(p) for p in tool.params}):
                            return True
            return self.insert_matching(node.entity, filters, rng)
        # make no row match: change an argument to a fresh value, else change or delete the rows
        for k, v in node.filters.items():
            if isinstance(v, C.Param) and v.name in tool.params:
                f = e.fields[k]
                old = args.get(v.name)
                args[v.name] = self.missing_value(f)
                if not self._holds(node, {p: args.get(p) for p in tool.params}) and self.schema_ok(tool, args):
                    return True
                args[v.name] = old
        w, a = D._where(e, filters)
        keys = [r[0] for r in self.conn.execute(f"SELECT {D.q(e.primary_key)} FROM {D.q(node.entity)}{w}", a)]
        for key in keys:
            done = False
            for k in filters:
                f = e.fields[k]
                if f.type == "enum":
                    for alt in f.values:
                        if alt != filters[k] and self.set_row(node.entity, key, k, alt):
                            done = True
                            break
                if done:
                    break
            if not done:
                try:
                    self.conn.execute(f"DELETE FROM {D.q(node.entity)} WHERE {D.q(e.primary_key)} = ?", [key])
                except sqlite3.Error:
                    return False
        return not self._holds(node, {p: args.get(p) for p in tool.params})

    def schema_ok(self, tool, args) -> bool:
        from .toolgen import validate_arguments
        # as the runtime does: null for an optional argument means left out
        return not validate_arguments(tool.parameters_schema, {k: v for k, v in args.items()
                                                               if v is not None or tool.params[k].required})

    def missing_value(self, f: Field):
        if f.type == "integer":
            return 987654321 if f.max is None or f.max >= 987654321 else f.max
        if f.type == "number":
            return 987654.25
        if f.type == "string":
            ml = f.max_length or 40
            return ("NO-SUCH-" + f.name.upper())[:ml] if ml >= 12 else "~" * ml
        if f.type == "date":
            return "1999-01-01"
        if f.type == "datetime":
            return "1999-01-01T00:00:00"
        return f.values[0] if f.type == "enum" else False

    def insert_matching(self, entity: str, filters: dict, rng) -> bool:
        e = self.domain.entities[entity]
        row = {}
        for fn, f in e.fields.items():
            if fn in filters:
                row[fn] = filters[fn]
            elif fn == e.primary_key:
                row[fn] = D.new_id(self.conn, self.domain, entity)
            elif f.ref:
                vals = self.column(*f.ref, limit=1)
                row[fn] = vals[0] if vals else None
            else:
                row[fn] = self.fresh(f, rng)
        try:
            D.insert_rows(self.conn, self.domain, entity, [row])
            return True
        except (sqlite3.Error, ValueError):
            return False

    # ---- the cases
    def call_expect_error(self, tool: Tool, args, label: str, res: ToolCheck) -> bool:
        h = D.db_hash(self.conn, self.domain)
        r = self.rt.call(tool.name, args)
        ok = r.is_error and D.db_hash(self.conn, self.domain) == h
        res.cases.append(_case(label, args, "error", ok, r))
        if not ok:
            res.failures.append(f"{label}: expected an error and an unchanged database, got "
                                f"isError={r.is_error}: {r.text[:160]}")
        return ok

    def check(self, tool: Tool) -> ToolCheck:
        res = ToolCheck(tool.name)
        rng = random.Random(f"check:{self.domain.name}:{tool.name}:{self.seed}")
        self.reset()
        args = self.find_args(tool, rng)
        if args is None:
            res.failures.append("no arguments/state found that satisfy every precondition")
            return res
        args = {k: v for k, v in args.items() if v is not None or tool.params[k].required}
        good = D.snapshot(self.conn)
        try:
            h = D.db_hash(self.conn, self.domain)
            ie = self.rt.stats.internal_errors
            r = self.rt.call(tool.name, args)
            res.cases.append(_case("success", args, "ok", not r.is_error, r))
            if r.is_error:
                res.failures.append(f"success case {args}: {r.text[:200]}")
            elif self.rt.stats.internal_errors != ie:
                res.failures.append(f"success case {args}: internal error")
            elif tool.mode == "read" and D.db_hash(self.conn, self.domain) != h:
                res.failures.append("read tool changed the database")
            else:
                res.success = True
            # violations of each precondition
            for i, c in enumerate(tool.pre):
                D.restore(self.conn, good)
                vargs = dict(args)
                self.repair(tool, c.node, vargs, rng, want=False)
                vargs = {k: v for k, v in vargs.items() if v is not None or tool.params[k].required}
                if not self.schema_ok(tool, vargs) or self._holds(c.node, {p: vargs.get(p) for p in tool.params}):
                    res.unconstructed += 1
                    continue
                res.violations_total += 1
                res.violations_passed += self.call_expect_error(tool, vargs, f"precondition {i} ({c.text})", res)
            # bad arguments
            D.restore(self.conn, good)
            cases = []
            if any(p.required for p in tool.params.values()):
                cases.append(("missing arguments", {}))
            cases.append(("unknown argument", {**args, "zz_unknown": 1}))
            if args:
                k = next(iter(args))
                t = tool.params[k].schema.get("type")
                wrong = [1, 2] if t != "array" else "not-a-list"
                cases.append((f"wrong type for {k}", {**args, k: wrong}))
                cases.append(("oversized argument", {**args, k: "x" * (MAX_ARGUMENT_BYTES + 1)}))
            strs = [p.name for p in tool.params.values() if p.schema.get("type") == "string" and "enum" not in p.schema
                    and "format" not in p.schema and p.name in args]
            if strs:
                cases.append(("SQL-looking string", {**args, strs[0]: "x'; DROP TABLE " + D.q(tool.entity or "t") + "; --"}))
            for label, bad in cases:
                res.bad_args_total += 1
                res.bad_args_passed += self.call_expect_error(tool, bad, label, res) if label != "SQL-looking string" \
                    else self.sql_case(tool, bad, res)
        finally:
            good.close()
        res.passed = (res.success and res.violations_passed == res.violations_total
                      and res.bad_args_passed == res.bad_args_total)
        return res

    def sql_case(self, tool: Tool, args, res: ToolCheck) -> bool:
        """An injection string is data: the call may succeed or fail, but all tables survive and
        a failure changes nothing."""
        h = D.db_hash(self.conn, self.domain)
        r = self.rt.call(tool.name, args)
        tables = {x[0] for x in self.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        ok = set(self.domain.entities) <= tables and (not r.is_error or D.db_hash(self.conn, self.domain) == h)
        res.cases.append(_case("SQL-looking string", args, "ok or error, tables intact", ok, r))
        if not ok:
            res.failures.append(f"SQL-looking string: tables or state damaged ({r.text[:120]})")
        return ok


def check_tool(domain: Domain, name: str, seed: int = 0) -> ToolCheck:
    ch = _Checker(domain, seed)
    try:
        return ch.check(domain.tool(name))
    finally:
        ch.close()


def check_domain(domain: Domain, seed: int = 0, progress=None) -> DomainReport:
    """Runs the generated tests of every tool; ``progress(tool_name)`` is called after each."""
    ch = _Checker(domain, seed)
    out = []
    try:
        for t in domain.tools.values():
            try:
                out.append(ch.check(t))
            except Exception as e:   # a checker bug on one tool is a failure of that tool, not of the run
                tc = ToolCheck(t.name)
                tc.failures.append(f"checker error: {type(e).__name__}: {e}")
                out.append(tc)
            if progress:
                progress(t.name)
    finally:
        ch.close()
    return DomainReport(domain.name, out)
