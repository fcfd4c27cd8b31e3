"""Cross-table invariants of a domain's data: declared in the spec (``invariants:``), enforced by
the data generator (``datagen.generate_rows``) and checked on any database (``violations``).

Declaration forms (each may add ``message``)::

    invariants:
      # two paths from one row must reach the same value; the first path's first field is the
      # one the generator chooses to satisfy it (an order's address belongs to its user)
      - {same: [order.address_id.user_id, order.user_id]}
      - {same: [order_item.unit_price, order_item.item_id.price]}   # a plain field is copied
      # a parent's field is the sum of products over its child rows
      - {sum: order.total, of: [order_item.quantity, order_item.unit_price], by: order_item.order_id}
      # fields that are null unless a condition holds (a PayPal method has no card brand): ``unset``
      - {unset: [brand, last_four], entity: payment_method, when: {kind: [paypal, gift_card]}}
      # event times that cannot lie after the domain clock
      - {past: [order.created_at, user.created_at]}

Every domain also has two implicit invariants: date and datetime values lie within
``CLOCK_WINDOW_DAYS`` of the domain clock (``now``), except birth dates, which lie 0-100 years
before it.

A path is ``entity.field[.field...]``: every field but the last is a foreign key to a primary
key, followed to the referenced row. Parsing takes the domain duck-typed (``entities``, ``now``)
and an error callback, so this module imports nothing of the package (no import cycle).
"""
from __future__ import annotations

import datetime as _dt
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

__all__ = ["Same", "Sum", "NullWhen", "Past", "parse_invariants", "violations", "enforce_entity",
           "enforce_sums", "fields_of", "CLOCK_WINDOW_DAYS"]

CLOCK_WINDOW_DAYS = (5 * 366, 2 * 366)   # (before, after) the domain clock


@dataclass(frozen=True)
class Same:
    entity: str
    left: tuple[str, ...]       # the generator sets left[0]
    right: tuple[str, ...]
    message: str = ""


@dataclass(frozen=True)
class Sum:
    entity: str                  # the parent (order)
    target: str                  # its field (total)
    child: str                   # order_item
    factors: tuple[str, ...]     # child fields multiplied per row
    by: str                      # the child's foreign key to the parent
    message: str = ""


@dataclass(frozen=True)
class NullWhen:
    entity: str
    when_field: str
    when_values: tuple
    nulls: tuple[str, ...]
    message: str = ""


@dataclass(frozen=True)
class Past:
    fields: tuple[tuple[str, str], ...]   # (entity, field)
    message: str = ""


# ------------------------------------------------------------------------------------- parsing

def _child_sums(inv: "Sum", data: dict) -> dict:
    """Per parent key, the sum over its children of the product of ``inv.factors``."""
    sums: dict = {}
    for c in data.get(inv.child, []):
        p = 1.0
        for fn in inv.factors:
            p *= float(c.get(fn) or 0)
        sums[c.get(inv.by)] = sums.get(c.get(inv.by), 0.0) + p
    return sums

def _path(dom, text: Any, where: str, err: Callable[[str, str], None]) -> tuple[str, tuple]:
    if not isinstance(text, str) or text.count(".") < 1:
        err(where, f"expected a path entity.field[.field...], got {text!r}")
    en, *fields = text.split(".")
    if en not in dom.entities:
        err(where, f"unknown entity {en!r} (entities: {sorted(dom.entities)})")
    cur = dom.entities[en]
    for i, fn in enumerate(fields):
        if fn not in cur.fields:
            err(where, f"{cur.name!r} has no field {fn!r}")
        f = cur.fields[fn]
        if i < len(fields) - 1:
            if not f.ref or f.ref[1] != dom.entities[f.ref[0]].primary_key:
                err(where, f"{cur.name}.{fn} is not a foreign key to a primary key, so the path "
                           f"cannot continue past it")
            cur = dom.entities[f.ref[0]]
    return en, tuple(fields)


def parse_invariants(dom, doc: Any, err: Callable[[str, str], None]) -> list:
    """The ``invariants:`` list of a domain document; ``err(path, problem)`` raises."""
    if doc is None:
        return []
    if not isinstance(doc, list):
        err("invariants", "expected a list")
    out: list = []
    for i, d in enumerate(doc):
        where = f"invariants[{i}]"
        if not isinstance(d, dict):
            err(where, "expected a mapping")
        msg = str(d.get("message", ""))
        kinds = [k for k in ("same", "sum", "unset", "past") if k in d]
        if len(kinds) != 1:
            err(where, "expected exactly one of same / sum / unset / past")
        kind = kinds[0]
        allowed = {"same": {"same"}, "sum": {"sum", "of", "by"}, "unset": {"entity", "when", "unset"},
                   "past": {"past"}}[kind] | {"message"}
        extra = set(d) - allowed
        if extra:
            err(where, f"unknown keys {sorted(extra)} for a {kind!r} invariant "
                       f"(allowed: {sorted(allowed)})")
        if kind == "same":
            pair = d["same"]
            if not isinstance(pair, list) or len(pair) != 2:
                err(f"{where}.same", "expected two paths")
            (e1, p1), (e2, p2) = (_path(dom, pair[0], f"{where}.same[0]", err),
                                  _path(dom, pair[1], f"{where}.same[1]", err))
            if e1 != e2:
                err(f"{where}.same", f"both paths must start at one entity, got {e1!r} and {e2!r}")
            if p1[0] == dom.entities[e1].primary_key:
                err(f"{where}.same[0]", "the generator cannot change a primary key")
            out.append(Same(e1, p1, p2, msg))
        elif kind == "sum":
            pe, pf = _path(dom, d["sum"], f"{where}.sum", err)
            be, bf = _path(dom, d.get("by"), f"{where}.by", err)
            if len(pf) != 1 or len(bf) != 1:
                err(where, "sum and by are entity.field")
            ref = dom.entities[be].fields[bf[0]].ref
            if not ref or ref[0] != pe:
                err(f"{where}.by", f"{be}.{bf[0]} must be a foreign key to {pe!r}")
            of = d.get("of")
            if not isinstance(of, list) or not of:
                err(f"{where}.of", "expected a list of child fields")
            factors = []
            for j, p in enumerate(of):
                ce, cf = _path(dom, p, f"{where}.of[{j}]", err)
                if ce != be or len(cf) != 1:
                    err(f"{where}.of[{j}]", f"expected a field of {be!r}")
                factors.append(cf[0])
            out.append(Sum(pe, pf[0], be, tuple(factors), bf[0], msg))
        elif kind == "unset":
            en = d.get("entity")
            if en not in dom.entities:
                err(f"{where}.entity", f"unknown entity {en!r}")
            e = dom.entities[en]
            when = d.get("when")
            if not isinstance(when, dict) or len(when) != 1:
                err(f"{where}.when", "expected {field: [values]}")
            (wf, wv), = when.items()
            if wf not in e.fields:
                err(f"{where}.when", f"{en!r} has no field {wf!r}")
            wv = tuple(wv) if isinstance(wv, list) else (wv,)
            nulls = d.get("unset")
            nulls = [nulls] if isinstance(nulls, str) else nulls
            if not isinstance(nulls, list) or not nulls:
                err(f"{where}.unset", "expected a list of fields")
            for fn in nulls:
                if fn not in e.fields or not e.fields[fn].nullable:
                    err(f"{where}.unset", f"{en}.{fn} must be a nullable field of {en!r}")
            out.append(NullWhen(en, wf, wv, tuple(nulls), msg))
        else:
            fl = d["past"]
            if not isinstance(fl, list) or not fl:
                err(f"{where}.past", "expected a list of entity.field")
            pairs = []
            for j, p in enumerate(fl):
                en, pf = _path(dom, p, f"{where}.past[{j}]", err)
                if len(pf) != 1 or dom.entities[en].fields[pf[0]].type not in ("date", "datetime"):
                    err(f"{where}.past[{j}]", "expected a date or datetime field entity.field")
                pairs.append((en, pf[0]))
            out.append(Past(tuple(pairs), msg))
    return out


def fields_of(dom) -> set[tuple[str, str]]:
    """Every (entity, field) some invariant of ``dom`` reads, along its paths included."""
    out: set = set()

    def walk(entity: str, path: tuple[str, ...]) -> None:
        cur = entity
        for fn in path:
            out.add((cur, fn))
            f = dom.entities[cur].fields[fn]
            if f.ref:
                cur = f.ref[0]

    for inv in getattr(dom, "invariants", ()):
        if isinstance(inv, Same):
            walk(inv.entity, inv.left)
            walk(inv.entity, inv.right)
        elif isinstance(inv, Sum):
            out |= {(inv.entity, inv.target), (inv.child, inv.by)}
            out |= {(inv.child, f) for f in inv.factors}
        elif isinstance(inv, NullWhen):
            out |= {(inv.entity, inv.when_field)} | {(inv.entity, f) for f in inv.nulls}
        elif isinstance(inv, Past):
            out |= set(inv.fields)
    return out


# ------------------------------------------------------------------------------------ checking
class _Index:
    """Rows by primary key, per entity, over a {entity: [rows]} mapping."""

    def __init__(self, dom, data: Mapping[str, list]):
        self.dom, self.data, self.by = dom, data, {}

    def row(self, entity: str, key) -> dict | None:
        idx = self.by.get(entity)
        if idx is None:
            pk = self.dom.entities[entity].primary_key
            idx = self.by[entity] = {r[pk]: r for r in self.data.get(entity, [])}
        return idx.get(key)

    def follow(self, entity: str, row: Mapping, path: tuple[str, ...]):
        """The value at the end of ``path`` from ``row`` (None when a link is null/missing)."""
        cur_e, cur = entity, row
        for i, fn in enumerate(path):
            v = cur.get(fn)
            if i == len(path) - 1 or v is None:
                return v
            cur_e = self.dom.entities[cur_e].fields[fn].ref[0]
            cur = self.row(cur_e, v)
            if cur is None:
                return None
        return None


def _parse_time(v: str) -> _dt.datetime | None:
    try:
        return _dt.datetime.fromisoformat(v) if "T" in v else \
            _dt.datetime.combine(_dt.date.fromisoformat(v), _dt.time())
    except (TypeError, ValueError):
        return None


def _same_value(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and abs(float(a) - float(b)) < 0.005
    return a == b


def violations(dom, data: Mapping[str, list]) -> list[str]:
    """Every violated invariant of ``data`` ({entity: [rows]}, e.g. ``db.dump``), as text."""
    out: list[str] = []
    idx = _Index(dom, data)
    for inv in getattr(dom, "invariants", ()):
        if isinstance(inv, Same):
            pk = dom.entities[inv.entity].primary_key
            for r in data.get(inv.entity, []):
                a, b = idx.follow(inv.entity, r, inv.left), idx.follow(inv.entity, r, inv.right)
                if a is not None and b is not None and not _same_value(a, b):
                    out.append(f"{inv.entity} {r[pk]}: {'.'.join(inv.left)}={a!r} but "
                               f"{'.'.join(inv.right)}={b!r}" + (f" ({inv.message})"
                                                                  if inv.message else ""))
        elif isinstance(inv, Sum):
            sums = _child_sums(inv, data)
            pk = dom.entities[inv.entity].primary_key
            for r in data.get(inv.entity, []):
                want = round(sums.get(r[pk], 0.0), 2)
                if r.get(inv.target) is None or abs(float(r[inv.target]) - want) > 0.005:
                    out.append(f"{inv.entity} {r[pk]}: {inv.target}={r.get(inv.target)!r}, the "
                               f"sum over {inv.child} is {want}")
        elif isinstance(inv, NullWhen):
            pk = dom.entities[inv.entity].primary_key
            for r in data.get(inv.entity, []):
                if r.get(inv.when_field) in inv.when_values:
                    bad = [fn for fn in inv.nulls if r.get(fn) is not None]
                    if bad:
                        out.append(f"{inv.entity} {r[pk]}: {inv.when_field}="
                                   f"{r[inv.when_field]!r} but {bad} are set")
        elif isinstance(inv, Past):
            now = _parse_time(dom.now)
            for en, fn in inv.fields:
                pk = dom.entities[en].primary_key
                for r in data.get(en, []):
                    t = _parse_time(r[fn]) if isinstance(r.get(fn), str) else None
                    if t is not None and t > now:
                        out.append(f"{en} {r[pk]}: {fn}={r[fn]} is after the clock {dom.now}")
    now = _parse_time(dom.now)
    lo = now - _dt.timedelta(days=CLOCK_WINDOW_DAYS[0])
    hi = now + _dt.timedelta(days=CLOCK_WINDOW_DAYS[1])
    for en, e in dom.entities.items():
        tf = [fn for fn, f in e.fields.items() if f.type in ("date", "datetime")]
        for r in data.get(en, []) if tf else ():
            for fn in tf:
                t = _parse_time(r[fn]) if isinstance(r.get(fn), str) else None
                birth = fn in ("dob", "birthday") or "birth" in fn
                if t is not None and birth and not now - _dt.timedelta(days=36525) <= t <= now:
                    out.append(f"{en} {r[e.primary_key]}: birth date {fn}={r[fn]} is not in the "
                               f"100 years before {dom.now}")
                elif t is not None and not birth and not lo <= t <= hi:
                    out.append(f"{en} {r[e.primary_key]}: {fn}={r[fn]} is outside the clock "
                               f"window of {dom.now}")
    return out


# --------------------------------------------------------------------------------- enforcement
def enforce_entity(dom, entity: str, rows: list[dict], data: Mapping[str, list],
                   rng: random.Random) -> list[dict]:
    """Makes the freshly generated ``rows`` of ``entity`` satisfy its ``same`` / ``null`` /
    ``past`` invariants (``data`` holds the rows of the entities generated before it); a row
    that cannot be made consistent is left out. Returns the rows kept."""
    invs = [i for i in getattr(dom, "invariants", ()) if getattr(i, "entity", None) == entity]
    pasts = [fn for i in getattr(dom, "invariants", ()) if isinstance(i, Past)
             for en, fn in i.fields if en == entity]
    if not invs and not pasts:
        return rows
    e = dom.entities[entity]
    idx = _Index(dom, data)
    now = _parse_time(dom.now)
    sames = [i for i in invs if isinstance(i, Same)]
    kept = []
    for r in rows:
        for inv in invs:
            if isinstance(inv, NullWhen) and r.get(inv.when_field) in inv.when_values:
                for fn in inv.nulls:
                    r[fn] = None
        for fn in pasts:
            t = _parse_time(r[fn]) if isinstance(r.get(fn), str) else None
            if t is not None and t > now:
                back = now - _dt.timedelta(minutes=rng.randint(60, 200 * 1440))
                r[fn] = back.date().isoformat() if e.fields[fn].type == "date" else \
                    back.isoformat(timespec="seconds")
        if sames and not _satisfy_same(dom, idx, e, r, sames, data, rng):
            continue
        kept.append(r)
    return kept


def _satisfy_same(dom, idx: _Index, e, r: dict, sames: list, data, rng) -> bool:
    for attempt in range(6):
        ok = True
        for inv in sames:
            want = idx.follow(e.name, r, inv.right)
            if want is None or _same_value(idx.follow(e.name, r, inv.left), want):
                continue
            f = e.fields[inv.left[0]]
            if len(inv.left) == 1:            # a plain field: copy the value
                r[inv.left[0]] = want
                continue
            target = f.ref[0]
            tpk = dom.entities[target].primary_key
            cands = [c[tpk] for c in data.get(target, [])
                     if _same_value(idx.follow(target, c, inv.left[1:]), want)]
            if cands:
                r[inv.left[0]] = rng.choice(cands)
            elif f.nullable:
                r[inv.left[0]] = None
            else:
                ok = False
                break
        if ok:
            return True
        # re-draw the anchor (a one-field foreign key) and try again
        anchor = sames[0].right
        af = e.fields[anchor[0]]
        if len(anchor) != 1 or not af.ref:
            return False
        pool = data.get(af.ref[0], [])
        if not pool:
            return False
        r[anchor[0]] = rng.choice(pool)[af.ref[1]]
    return False


def enforce_sums(dom, data: dict[str, list]) -> None:
    """Sets every ``sum`` invariant's parent field from its children (after all entities)."""
    for inv in getattr(dom, "invariants", ()):
        if not isinstance(inv, Sum):
            continue
        sums = _child_sums(inv, data)
        pk = dom.entities[inv.entity].primary_key
        for r in data.get(inv.entity, []):
            r[inv.target] = round(sums.get(r[pk], 0.0), 2)
