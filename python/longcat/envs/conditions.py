"""The machine-checkable condition language of tool pre- and postconditions.

A condition is one boolean expression over the database and the call::

    exists(order, order_id=$order_id)
    field(order, $order_id, status) in [pending, processing]
    after.field(order, $order_id, status) == cancelled
    count(order, user_id=$user_id) == before.count(order, user_id=$user_id) + 1
    not exists(order, user_id=$user_id, status=pending) or $force == true

Grammar (keywords are lower case)::

    cond    := and ('or' and)*
    and     := not ('and' not)*
    not     := 'not' not | cmp
    cmp     := arith (('=='|'!='|'<'|'<='|'>'|'>='|'in'|'not in') arith)?
    arith   := term (('+'|'-') term)*
    term    := unary ('*' unary)*
    unary   := '-' unary | atom
    atom    := NUMBER | STRING | WORD | 'null' | 'true' | 'false' | '[' items ']' | '(' cond ')'
             | $param | $result.field | $now | call
    call    := [('before'|'after') '.'] fn '(' args ')'
    fn      := exists(Entity, f=v, ...)      -> bool: a row matches every f=v
             | count(Entity, f=v, ...)       -> int: rows matching
             | field(Entity, key, name)      -> the named field of the row whose primary key is key
                                                (null when there is no such row)
             | sum(Entity, name, f=v, ...)   -> sum of a numeric field over matching rows (0 when none)
             | len(value)                    -> length of a list or string parameter

A bare WORD that is not an entity/field position is a string literal (``pending``), so enum values
need no quotes. ``$param`` is a tool argument (null when an optional one was left out), ``$now`` the
domain clock, ``$result.f`` a field of the tool's result (postconditions only).

State: in a precondition every call reads the database as it is before the call; in a
postcondition a plain call (or ``after.``) reads the state after the call and ``before.`` the state
before it (the runtime evaluates ``before.`` calls ahead of the write and caches their values).

API (stable):
  - ``parse(text) -> Node``: raises ``ConditionSyntaxError`` (a ``ValueError``) with the position.
  - ``Condition(text, node, message)``: a parsed condition of a tool.
  - ``references(node)``: every entity / field / parameter / result field the node mentions,
    so that ``spec`` can validate it against the domain.
  - ``before_calls(node)``: the ``before.`` calls of a postcondition.
  - ``evaluate(node, state, params, *, result=None, before=None, now=None)``: the value;
    ``state`` is any object with ``exists / count / field / sum`` (``db.DbState``); ``before``
    maps ``id(call)`` to cached values.
  - ``to_text(node)``: canonical text of a node (used in error messages and the expanded spec).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field as dc_field
from typing import Any, Iterator, Protocol

__all__ = [
    "ConditionSyntaxError", "ConditionEvalError", "Node", "Lit", "ListLit", "Param", "Result", "Now",
    "Call", "BinOp", "Compare", "BoolOp", "Not", "Condition", "parse", "references",
    "before_calls", "evaluate", "to_text", "State", "FUNCTIONS",
]

FUNCTIONS = ("exists", "count", "field", "sum", "len")
_KEYWORDS = {"and", "or", "not", "in", "null", "true", "false"}


class ConditionSyntaxError(ValueError):
    """A condition's text does not parse; the message names the position."""


class ConditionEvalError(ValueError):
    """A condition cannot be evaluated (e.g. comparing a number with a string)."""


# ----------------------------------------------------------------------------------------- AST
class Node:
    __slots__ = ()


@dataclass(eq=False)
class Lit(Node):
    value: Any
    word: bool = False   # written as a bare word (an enum value like `pending`)


@dataclass(eq=False)
class ListLit(Node):
    items: list


@dataclass(eq=False)
class Param(Node):
    name: str


@dataclass(eq=False)
class Result(Node):
    field: str | None   # None: the whole result


@dataclass(eq=False)
class Now(Node):
    pass


@dataclass(eq=False)
class Call(Node):
    fn: str                      # exists / count / field / sum / len
    when: str | None             # None, "before" or "after"
    entity: str | None           # None for len
    args: list = dc_field(default_factory=list)      # field: [key]; sum: []; len: [value]
    name: str | None = None      # field name for field() / sum()
    filters: dict = dc_field(default_factory=dict)   # f=v of exists / count / sum


@dataclass(eq=False)
class BinOp(Node):
    op: str
    left: Node
    right: Node


@dataclass(eq=False)
class Compare(Node):
    op: str
    left: Node
    right: Node


@dataclass(eq=False)
class BoolOp(Node):
    op: str          # and / or
    items: list


@dataclass(eq=False)
class Not(Node):
    item: Node


@dataclass
class Condition:
    """One pre- or postcondition of a tool: its source text, parsed form and the message a
    violated precondition reports (defaults to the text)."""
    text: str
    node: Node
    message: str | None = None

    def describe(self) -> str:
        return self.message or self.text


# ----------------------------------------------------------------------------------- tokenizer
_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<num>\d+\.\d*|\d*\.\d+|\d+)
  | (?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
  | (?P<param>\$[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)
  | (?P<word>[A-Za-z_][A-Za-z0-9_\-]*)
  | (?P<op>==|!=|<=|>=|<|>|\+|-|\*|\(|\)|\[|\]|,|=|\.)
""", re.VERBOSE)


def _tokens(text: str) -> list[tuple[str, str, int]]:
    out, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise ConditionSyntaxError(f"unexpected character {text[pos]!r} at column {pos + 1} in {text!r}")
        kind = m.lastgroup
        if kind != "ws":
            out.append((kind, m.group(), pos))
        pos = m.end()
    out.append(("end", "", len(text)))
    return out


class _Parser:
    def __init__(self, text: str):
        if not isinstance(text, str):
            raise ConditionSyntaxError(f"a condition must be a string, got {type(text).__name__}")
        self.text = text
        self.toks = _tokens(text)
        self.i = 0

    def peek(self, k: int = 0):
        return self.toks[min(self.i + k, len(self.toks) - 1)]

    def take(self):
        t = self.toks[self.i]
        self.i += 1
        return t

    def fail(self, what: str, tok=None):
        tok = tok or self.peek()
        got = "end of condition" if tok[0] == "end" else repr(tok[1])
        raise ConditionSyntaxError(f"expected {what} at column {tok[2] + 1}, found {got} in {self.text!r}")

    def expect(self, value: str):
        t = self.peek()
        if t[1] != value or t[0] not in ("op", "word"):
            self.fail(repr(value))
        return self.take()

    def is_word(self, value: str, k: int = 0) -> bool:
        t = self.peek(k)
        return t[0] == "word" and t[1] == value

    def parse(self) -> Node:
        node = self.or_()
        if self.peek()[0] != "end":
            self.fail("an operator or the end")
        return node

    def or_(self):
        items = [self.and_()]
        while self.is_word("or"):
            self.take()
            items.append(self.and_())
        return items[0] if len(items) == 1 else BoolOp("or", items)

    def and_(self):
        items = [self.not_()]
        while self.is_word("and"):
            self.take()
            items.append(self.not_())
        return items[0] if len(items) == 1 else BoolOp("and", items)

    def not_(self):
        if self.is_word("not") and not self.is_word("in", 1):
            self.take()
            return Not(self.not_())
        return self.cmp()

    def cmp(self):
        left = self.arith()
        t = self.peek()
        if t[0] == "op" and t[1] in ("==", "!=", "<", "<=", ">", ">="):
            self.take()
            return Compare(t[1], left, self.arith())
        if self.is_word("in"):
            self.take()
            return Compare("in", left, self.arith())
        if self.is_word("not") and self.is_word("in", 1):
            self.take(), self.take()
            return Compare("not in", left, self.arith())
        return left

    def arith(self):
        node = self.term()
        while self.peek()[0] == "op" and self.peek()[1] in ("+", "-"):
            op = self.take()[1]
            node = BinOp(op, node, self.term())
        return node

    def term(self):
        node = self.unary()
        while self.peek()[0] == "op" and self.peek()[1] == "*":
            self.take()
            node = BinOp("*", node, self.unary())
        return node

    def unary(self):
        if self.peek()[0] == "op" and self.peek()[1] == "-":
            self.take()
            return BinOp("-", Lit(0), self.unary())
        return self.atom()

    def atom(self):
        kind, val, pos = self.peek()
        if kind == "num":
            self.take()
            return Lit(float(val) if "." in val else int(val))
        if kind == "str":
            self.take()
            return Lit(bytes(val[1:-1], "utf-8").decode("unicode_escape"))
        if kind == "param":
            self.take()
            name, _, sub = val[1:].partition(".")
            if name == "result":
                return Result(sub or None)
            if sub:
                self.fail("a parameter name without '.' (only $result.<field> has one)", (kind, val, pos))
            if name == "now":
                return Now()
            return Param(name)
        if kind == "op" and val == "[":
            self.take()
            items = []
            if not (self.peek()[0] == "op" and self.peek()[1] == "]"):
                items.append(self.arith())
                while self.peek()[1] == "," and self.peek()[0] == "op":
                    self.take()
                    items.append(self.arith())
            self.expect("]")
            return ListLit(items)
        if kind == "op" and val == "(":
            self.take()
            node = self.or_()
            self.expect(")")
            return node
        if kind == "word":
            if val in ("before", "after") and self.peek(1)[1] == ".":
                self.take(), self.take()
                t = self.peek()
                if t[0] != "word" or t[1] not in FUNCTIONS or t[1] == "len":
                    self.fail(f"one of exists/count/field/sum after '{val}.'")
                return self.call(val)
            if val in FUNCTIONS and self.peek(1)[1] == "(":
                return self.call(None)
            self.take()
            if val == "null":
                return Lit(None)
            if val in ("true", "false"):
                return Lit(val == "true")
            if val in _KEYWORDS:
                self.fail("a value", (kind, val, pos))
            return Lit(val, word=True)
        self.fail("a value")

    def name(self, what: str) -> str:
        t = self.peek()
        if t[0] != "word" or t[1] in _KEYWORDS:
            self.fail(what)
        return self.take()[1]

    def filters(self, call: Call):
        while self.peek()[1] == "," and self.peek()[0] == "op":
            self.take()
            key = self.name("a field name (f=value)")
            self.expect("=")
            if key in call.filters:
                self.fail(f"each field once (field {key!r} repeats)")
            call.filters[key] = self.arith()

    def call(self, when):
        fn = self.take()[1]
        self.expect("(")
        if fn == "len":
            call = Call("len", when, None, [self.arith()])
        else:
            call = Call(fn, when, self.name("an entity name"))
            if fn == "field":
                self.expect(",")
                call.args.append(self.arith())
                self.expect(",")
                call.name = self.name("a field name")
            elif fn == "sum":
                self.expect(",")
                call.name = self.name("a field name")
                self.filters(call)
            else:
                self.filters(call)
        self.expect(")")
        return call


def parse(text: str) -> Node:
    """Parses one condition; raises ``ConditionSyntaxError`` naming the column on bad text."""
    return _Parser(text).parse()


# ------------------------------------------------------------------------------------ analysis
def walk(node: Node) -> Iterator[Node]:
    yield node
    if isinstance(node, ListLit):
        for x in node.items:
            yield from walk(x)
    elif isinstance(node, Call):
        for x in node.args:
            yield from walk(x)
        for x in node.filters.values():
            yield from walk(x)
    elif isinstance(node, (BinOp, Compare)):
        yield from walk(node.left)
        yield from walk(node.right)
    elif isinstance(node, BoolOp):
        for x in node.items:
            yield from walk(x)
    elif isinstance(node, Not):
        yield from walk(node.item)


@dataclass
class References:
    entities: set = dc_field(default_factory=set)          # entity names
    fields: set = dc_field(default_factory=set)            # (entity, field)
    params: set = dc_field(default_factory=set)            # parameter names
    result_fields: set = dc_field(default_factory=set)     # $result.<f>
    whole_result: bool = False
    states: set = dc_field(default_factory=set)            # "before" / "after" prefixes used
    uses_now: bool = False


def references(node: Node) -> References:
    """Everything a condition mentions, for validation against a domain."""
    refs = References()
    for n in walk(node):
        if isinstance(n, Call):
            if n.when:
                refs.states.add(n.when)
            if n.entity is not None:
                refs.entities.add(n.entity)
                if n.name:
                    refs.fields.add((n.entity, n.name))
                for f in n.filters:
                    refs.fields.add((n.entity, f))
        elif isinstance(n, Param):
            refs.params.add(n.name)
        elif isinstance(n, Result):
            if n.field is None:
                refs.whole_result = True
            else:
                refs.result_fields.add(n.field)
        elif isinstance(n, Now):
            refs.uses_now = True
    return refs


def before_calls(node: Node) -> list[Call]:
    """The ``before.`` calls of a postcondition, outermost first."""
    return [n for n in walk(node) if isinstance(n, Call) and n.when == "before"]


def enum_comparisons(node: Node) -> Iterator[tuple[str, str, Any]]:
    """(entity, field, literal) for every literal compared with a field() or used as a filter
    value, so that ``spec`` can reject enum values the domain does not declare."""
    for n in walk(node):
        if isinstance(n, Compare):
            for a, b in ((n.left, n.right), (n.right, n.left)):
                if isinstance(a, Call) and a.fn == "field":
                    lits = b.items if isinstance(b, ListLit) else [b]
                    for lit in lits:
                        if isinstance(lit, Lit):
                            yield a.entity, a.name, lit.value
        elif isinstance(n, Call) and n.entity is not None:
            for f, v in n.filters.items():
                if isinstance(v, Lit):
                    yield n.entity, f, v.value


# ---------------------------------------------------------------------------------- evaluation
class State(Protocol):
    def exists(self, entity: str, filters: dict) -> bool: ...
    def count(self, entity: str, filters: dict) -> int: ...
    def field(self, entity: str, key: Any, name: str) -> Any: ...
    def sum(self, entity: str, name: str, filters: dict) -> float: ...


def _eq(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b if isinstance(a, bool) and isinstance(b, bool) else (a == b and type(a) is type(b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        if isinstance(a, float) or isinstance(b, float):
            return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
        return a == b
    return a == b


def _num(v, node):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ConditionEvalError(f"{to_text(node)} is {v!r}, not a number")
    return v


def evaluate(node: Node, state: State, params: dict, *, result: Any = None,
             before: dict | None = None, now: Any = None) -> Any:
    """Evaluates a node. ``before`` maps id(call) of ``before.`` calls to their cached values;
    when it is None, ``before.`` calls read ``state`` (as in a precondition)."""
    ev = lambda n: evaluate(n, state, params, result=result, before=before, now=now)  # noqa: E731
    if isinstance(node, Lit):
        return node.value
    if isinstance(node, ListLit):
        return [ev(x) for x in node.items]
    if isinstance(node, Param):
        return params.get(node.name)
    if isinstance(node, Now):
        return now
    if isinstance(node, Result):
        if node.field is None:
            return result
        return result.get(node.field) if isinstance(result, dict) else None
    if isinstance(node, Call):
        if node.when == "before" and before is not None:
            return before[id(node)]
        if node.fn == "len":
            v = ev(node.args[0])
            return 0 if v is None else len(v)
        filters = {k: ev(v) for k, v in node.filters.items()}
        if node.fn == "exists":
            return bool(state.exists(node.entity, filters))
        if node.fn == "count":
            return int(state.count(node.entity, filters))
        if node.fn == "field":
            return state.field(node.entity, ev(node.args[0]), node.name)
        if node.fn == "sum":
            return state.sum(node.entity, node.name, filters)
        raise ConditionEvalError(f"unknown function {node.fn!r}")
    if isinstance(node, BinOp):
        a, b = ev(node.left), ev(node.right)
        if a is None or b is None:
            return None
        a, b = _num(a, node.left), _num(b, node.right)
        return a + b if node.op == "+" else a - b if node.op == "-" else a * b
    if isinstance(node, Compare):
        a, b = ev(node.left), ev(node.right)
        if node.op in ("in", "not in"):
            if not isinstance(b, (list, tuple)):
                raise ConditionEvalError(f"right side of '{node.op}' in {to_text(node)} is not a list")
            hit = any(_eq(a, x) for x in b)
            return hit if node.op == "in" else not hit
        if node.op == "==":
            return _eq(a, b)
        if node.op == "!=":
            return not _eq(a, b)
        if a is None or b is None:
            return False
        if isinstance(a, str) != isinstance(b, str):
            raise ConditionEvalError(f"cannot order {a!r} and {b!r} in {to_text(node)}")
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and _eq(a, b):
            return node.op in ("<=", ">=")
        return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[node.op]
    if isinstance(node, BoolOp):
        if node.op == "and":
            return all(bool(ev(x)) for x in node.items)
        return any(bool(ev(x)) for x in node.items)
    if isinstance(node, Not):
        return not bool(ev(node.item))
    raise ConditionEvalError(f"unknown node {type(node).__name__}")


def evaluate_before(node: Node, state: State, params: dict, now: Any = None) -> dict:
    """Values of a postcondition's ``before.`` calls, read from the state before the call."""
    return {id(c): evaluate(Call(c.fn, None, c.entity, c.args, c.name, c.filters), state, params, now=now)
            for c in before_calls(node)}


# ----------------------------------------------------------------------------------------- text
def _lit_text(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-]*", v) and v not in _KEYWORDS and v not in FUNCTIONS:
            return v
        return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return repr(v)


_PREC = {"or": 1, "and": 2, "not": 3, "cmp": 4, "+": 5, "-": 5, "*": 6}


def to_text(node: Node, parent: int = 0) -> str:
    """Canonical text; parsing it gives an equivalent node."""
    def wrap(s, p):
        return f"({s})" if p < parent else s
    if isinstance(node, Lit):
        return _lit_text(node.value)
    if isinstance(node, ListLit):
        return "[" + ", ".join(to_text(x) for x in node.items) + "]"
    if isinstance(node, Param):
        return f"${node.name}"
    if isinstance(node, Now):
        return "$now"
    if isinstance(node, Result):
        return "$result" + (f".{node.field}" if node.field else "")
    if isinstance(node, Call):
        pre = f"{node.when}." if node.when else ""
        if node.fn == "len":
            return f"len({to_text(node.args[0])})"
        parts = [node.entity]
        if node.fn == "field":
            parts += [to_text(node.args[0]), node.name]
        elif node.fn == "sum":
            parts.append(node.name)
        parts += [f"{k}={to_text(v)}" for k, v in node.filters.items()]
        return f"{pre}{node.fn}({', '.join(parts)})"
    if isinstance(node, BinOp):
        p = _PREC[node.op]
        return wrap(f"{to_text(node.left, p)} {node.op} {to_text(node.right, p + 1)}", p)
    if isinstance(node, Compare):
        p = _PREC["cmp"]
        return wrap(f"{to_text(node.left, p + 1)} {node.op} {to_text(node.right, p + 1)}", p)
    if isinstance(node, BoolOp):
        p = _PREC[node.op]
        return wrap(f" {node.op} ".join(to_text(x, p + 1) for x in node.items), p)
    if isinstance(node, Not):
        p = _PREC["not"]
        return wrap(f"not {to_text(node.item, p)}", p)
    raise TypeError(type(node).__name__)
