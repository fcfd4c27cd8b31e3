"""Seeded synthetic values (Faker) for database rows, user profiles and tool arguments.

``ValueGen`` turns a field description (type, optional semantic hint, enum, bounds, name) into a
realistic value: a hint (or, failing that, the field name) picks a Faker provider ("email" ->
``faker.email()``, "city", "phone", "date", "money", ...); the type decides the rest. One Faker
instance per process is reused (creating one is slow) and re-seeded per environment, so values
depend only on the seed, never on which worker produced them.
"""
from __future__ import annotations

import datetime as _dt
import random
import re
import string
from typing import Any, Callable, Mapping, Sequence

_FAKERS: dict = {}


def faker_instance(slot: str = "values"):
    """A process-wide Faker (en_US) per slot, created on first use. Separate slots keep
    template generation (which may happen in the middle of building an environment, on a cache
    miss) from disturbing the seeded sequence of the environment's own values."""
    fk = _FAKERS.get(slot)
    if fk is None:
        from faker import Faker

        fk = _FAKERS[slot] = Faker("en_US")
    return fk


_BASE_DATE = _dt.date(2026, 1, 1)


def _date(fk, rng: random.Random) -> str:
    return (_BASE_DATE + _dt.timedelta(days=rng.randint(-400, 400))).isoformat()


def _datetime(fk, rng: random.Random) -> str:
    d = _dt.datetime(2026, 1, 1) + _dt.timedelta(minutes=rng.randint(-400 * 1440, 400 * 1440))
    return d.isoformat(timespec="seconds")


def _time(fk, rng: random.Random) -> str:
    return f"{rng.randint(6, 22):02d}:{rng.choice((0, 15, 30, 45)):02d}"


def _money(fk, rng: random.Random) -> float:
    return round(rng.uniform(5, 900), 2)


# Semantic hint -> generator(faker, rng). Hints are matched exactly first, then as a substring
# of the field name ("contact_email" -> email); the order of the name rules matters.
_HINTS: dict[str, Callable[[Any, random.Random], Any]] = {
    "email": lambda f, r: f.email(),
    "name": lambda f, r: f.name(),
    "full_name": lambda f, r: f.name(),
    "first_name": lambda f, r: f.first_name(),
    "last_name": lambda f, r: f.last_name(),
    "phone": lambda f, r: f.numerify("+1-###-###-####"),
    "address": lambda f, r: f.street_address(),
    "street": lambda f, r: f.street_address(),
    "city": lambda f, r: f.city(),
    "state": lambda f, r: f.state_abbr(),
    "country": lambda f, r: f.country_code(),
    "zip": lambda f, r: f.zipcode(),
    "postcode": lambda f, r: f.zipcode(),
    "company": lambda f, r: f.company(),
    "url": lambda f, r: f.url(),
    "date": _date,
    "datetime": _datetime,
    "time": _time,
    "money": _money,
    "price": _money,
    "amount": _money,
    "currency": lambda f, r: r.choice(("USD", "EUR", "GBP")),
    "text": lambda f, r: f.sentence(nb_words=8),
    "description": lambda f, r: f.sentence(nb_words=10),
    "note": lambda f, r: f.sentence(nb_words=6),
    "reason": lambda f, r: f.sentence(nb_words=5).rstrip("."),
    "title": lambda f, r: f.catch_phrase(),
    "product": lambda f, r: f"{f.color_name()} {r.choice(('Lamp', 'Chair', 'Kettle', 'Backpack', 'Jacket', 'Headphones', 'Desk', 'Watch'))}",
    "color": lambda f, r: f.color_name(),
    "card": lambda f, r: f.credit_card_number(),
    "iban": lambda f, r: f.iban(),
    "license_plate": lambda f, r: f.license_plate(),
    "username": lambda f, r: f.user_name(),
    "word": lambda f, r: f.word(),
    "job": lambda f, r: f.job(),
    "code": lambda f, r: "".join(r.choices(string.ascii_uppercase + string.digits, k=6)),
}

_NAME_RULES = ("email", "first_name", "last_name", "full_name", "username", "phone", "address",
               "street", "city", "state", "country", "zip", "postcode", "company", "url",
               "datetime", "date", "time", "price", "amount", "currency", "description",
               "reason", "note", "title", "color", "iban", "license_plate", "job", "code",
               "name")


def hint_for(name: str, hint: str | None = None) -> str | None:
    """The generator key for a field: its explicit hint when known, else one read off its name."""
    if hint and hint in _HINTS:
        return hint
    low = (name or "").lower()
    if low.endswith("_at"):
        return "datetime"                 # created_at, updated_at
    parts = low.split("_")
    for key in _NAME_RULES:
        kp = key.split("_")
        # whole words only: "updated" must not read as "date"
        if any(parts[i:i + len(kp)] == kp for i in range(len(parts) - len(kp) + 1)):
            return key
    return None


class ValueGen:
    """Seeded value factory. ``reseed(seed)`` makes the following values a function of the seed
    only; ``value(...)`` draws one value for a field description."""

    def __init__(self, seed: int = 0, slot: str = "values"):
        self.faker = faker_instance(slot)
        self.rng = random.Random()
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        self.rng.seed(seed)
        self.faker.seed_instance(seed)

    def value(self, type_: str, *, name: str = "", hint: str | None = None,
              enum: Sequence[Any] | None = None, minimum: float | None = None,
              maximum: float | None = None, max_length: int | None = None) -> Any:
        """A value for a field of JSON/SQL type ``type_`` ("string", "integer", "number",
        "boolean", "date", "datetime"; SQL spellings "text", "int", "real" also accepted)."""
        rng = self.rng
        if enum:
            return rng.choice(list(enum))
        t = (type_ or "string").lower()
        if t in ("integer", "int", "bigint"):
            lo = int(minimum) if minimum is not None else 0
            hi = int(maximum) if maximum is not None else max(lo + 1, 1000 if "count" not in
                                                              name else 10)
            if "quantity" in name or "count" in name or "seats" in name or "nights" in name:
                hi = min(hi, lo + 9) if maximum is None else hi
                lo = max(lo, 1) if minimum is None else lo
            return rng.randint(lo, hi)
        if t in ("number", "float", "real", "double", "decimal"):
            lo = float(minimum) if minimum is not None else 1.0
            hi = float(maximum) if maximum is not None else max(lo + 1.0, 900.0)
            return round(rng.uniform(lo, hi), 2)
        if t in ("boolean", "bool"):
            return rng.random() < 0.5
        if t == "date":
            return _date(self.faker, rng)
        if t in ("datetime", "timestamp"):
            return _datetime(self.faker, rng)
        key = hint_for(name, hint)
        v = _HINTS[key](self.faker, rng) if key else self.faker.word()
        v = str(v)
        if max_length is not None and len(v) > max_length:
            v = v[:max_length]
        return v

    def ident(self, prefix: str = "", width: int = 6) -> str:
        """A fresh-looking identifier such as ``ORD-4F9K2Q`` (unique only with high
        probability: callers that need uniqueness keep a set)."""
        body = "".join(self.rng.choices(string.ascii_uppercase + string.digits, k=width))
        return f"{prefix}{body}"

    def persona(self) -> dict:
        """A user profile for task synthesis (name, email, phone, city, style of speech)."""
        f = self.faker
        first, last = f.first_name(), f.last_name()
        return {
            "first_name": first,
            "last_name": last,
            "name": f"{first} {last}",
            "email": f"{first.lower()}.{last.lower()}{self.rng.randint(1, 99)}@{f.free_email_domain()}",
            "phone": f.numerify("+1-###-###-####"),
            "city": f.city(),
            "job": f.job(),
            "style": self.rng.choice(("polite", "terse", "chatty", "impatient", "formal")),
            "facts": [f"I work as a {f.job().lower()}.", f"I live in {f.city()}.",
                      f"My birthday is in {f.month_name()}."],
        }


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def field_kwargs(field: Mapping[str, Any]) -> dict:
    """ValueGen.value keyword arguments from a JSON-Schema-like field description."""
    return {"name": field.get("name", ""), "hint": field.get("hint") or field.get("format"),
            "enum": field.get("enum"), "minimum": field.get("minimum"),
            "maximum": field.get("maximum"), "max_length": field.get("maxLength")}


# ----------------------------------------------------------------------------------------------
# Database population (keys, foreign keys, uniqueness, enums, bounds from the spec)
# ----------------------------------------------------------------------------------------------

def _pk_value(entity, i: int):
    """Primary key of the i-th generated row, in the same scheme as ``db.new_id`` so that rows
    created later by tools never collide with generated ones."""
    if entity.pk.type == "integer":
        return i + 1
    prefix = entity.id_prefix if entity.id_prefix is not None else entity.name[:3].upper() + "-"
    return f"{prefix}{i + 1:06d}"


def _around(now: str, rng: random.Random, kind: str) -> str:
    try:
        base = _dt.datetime.fromisoformat(now)
    except (TypeError, ValueError):
        base = _dt.datetime(2026, 1, 1)
    d = base + _dt.timedelta(minutes=rng.randint(-300 * 1440, 60 * 1440))
    return d.date().isoformat() if kind == "date" else d.isoformat(timespec="seconds")


_CLOCK_PROVIDER = re.compile(r"date|time|year|month|day_of|century|unix|iso8601|past|future",
                             re.IGNORECASE)


def is_birth_date(name: str) -> bool:
    return name in ("dob", "birthday") or "birth" in name


def birth_date(now: str, rng: random.Random, entity: str, kind: str = "date") -> str:
    """A birth date before the domain clock: 1-15 years for animals, 18-85 for people."""
    try:
        base = _dt.datetime.fromisoformat(now)
    except (TypeError, ValueError):
        base = _dt.datetime(2026, 1, 1)
    lo, hi = (1, 15) if entity in ("pet", "animal") else (18, 85)
    d = base - _dt.timedelta(days=rng.randint(lo * 365, hi * 365))
    return d.date().isoformat() if kind == "date" else d.isoformat(timespec="seconds")


def field_value(vg: ValueGen, f, now: str = "2026-01-01T00:00:00"):
    """A random valid value of a spec field (``spec.Field``) that is not a key or reference."""
    rng = vg.rng
    if f.type == "enum":
        return rng.choice(list(f.values))
    if f.type == "boolean":
        return rng.random() < 0.5
    if f.type in ("date", "datetime"):
        if is_birth_date(f.name):
            return birth_date(now, rng, f.entity, f.type)
        return _around(now, rng, f.type)
    if f.type == "integer":
        lo = int(f.min) if f.min is not None else 0
        hi = int(f.max) if f.max is not None else max(lo + 10, 100 if lo >= 0 else lo + 100)
        return rng.randint(lo, hi)
    if f.type == "number":
        lo = float(f.min) if f.min is not None else 1.0
        hi = float(f.max) if f.max is not None else max(lo + 10.0, 500.0)
        return round(rng.uniform(lo, hi), 2)
    v = None
    if f.faker and _CLOCK_PROVIDER.search(f.faker):
        # Faker's date/time providers read the wall clock: values would change from one second
        # to the next. Deterministic stand-ins around the domain clock instead.
        low = f.faker.lower()
        if "date_time" in low or "iso8601" in low or "unix" in low:
            v = _around(now, rng, "datetime")
        elif "date" in low or "year" in low or "month" in low or "century" in low:
            v = _around(now, rng, "date")
        else:
            v = _time(vg.faker, rng)
    elif f.faker:
        prov = getattr(vg.faker, f.faker, None)
        if callable(prov):
            try:
                v = prov()
            except TypeError:
                v = None
        if isinstance(v, (_dt.date, _dt.datetime)):
            v = v.isoformat()
    if v is None:
        v = vg.value("string", name=f.name)
    v = str(v)
    if f.max_length and len(v) > f.max_length:
        # digits keep their tail (a card's last four), text its head
        v = v[-f.max_length:] if v.isdigit() else v[:f.max_length].rstrip()
    return v


def invariant_fields(domain) -> frozenset:
    """(entity, field) pairs the domain's invariants read (cached on the domain)."""
    cached = getattr(domain, "_invariant_fields", None)
    if cached is None:
        from .invariants import fields_of

        cached = frozenset(fields_of(domain))
        domain._invariant_fields = cached
    return cached


def generate_rows(domain, seed: int, rows: int = 6) -> dict[str, list[dict]]:
    """Rows for every entity of ``domain`` (``spec.Domain``), seeded: ``rows`` rows for entities
    without foreign keys, twice as many for the others (a user has several orders). Foreign keys
    point at generated rows, unique fields are unique, enums and bounds hold, nullable fields
    are sometimes null; the domain's declared invariants hold (``invariants``)."""
    from .invariants import enforce_entity, enforce_sums

    vg = ValueGen(seed, slot="rows")
    rng = vg.rng
    data: dict[str, list[dict]] = {}
    for en in domain.entity_order():
        e = domain.entities[en]
        has_ref = any(f.ref and f.ref[0] != en for f in e.fields.values())
        n = rows * 2 if has_ref else rows
        seen: dict[str, set] = {fn: set() for fn, f in e.fields.items() if f.unique}
        out = []
        for i in range(n):
            row = {}
            for fn, f in e.fields.items():
                if fn == e.primary_key:
                    row[fn] = _pk_value(e, i)
                    continue
                if f.ref:
                    ren, rfn = f.ref
                    pool = [r[rfn] for r in (out if ren == en else data.get(ren, []))
                            if r.get(rfn) is not None]
                    if f.unique:     # one-to-one: each target at most once
                        pool = [v for v in pool if v not in seen[fn]]
                    if not pool or (f.nullable and rng.random() < 0.15):
                        row[fn] = None if f.nullable or not pool else pool[0]
                    else:
                        row[fn] = rng.choice(pool)
                    if f.unique and row[fn] is not None:
                        seen[fn].add(row[fn])
                    continue
                if f.nullable and rng.random() < 0.1:
                    row[fn] = None
                    continue
                v = field_value(vg, f, domain.now)
                if f.unique:
                    k = 0
                    while v in seen[fn]:
                        k += 1
                        v = field_value(vg, f, domain.now) if k < 5 else (
                            f"{v}{k}" if isinstance(v, str) else v + k)
                    seen[fn].add(v)
                row[fn] = v
            if any(row[fn] is None and not f.nullable for fn, f in e.fields.items()):
                continue   # a required reference with nothing to point at: leave the row out
            out.append(row)
        data[en] = enforce_entity(domain, en, out, data, rng)
    enforce_sums(domain, data)
    return data


_TEMPLATES: dict[tuple, Any] = {}


def template_db(domain, seed: int, rows: int = 6):
    """A populated database snapshot for (domain, seed, rows), cached in this process so that
    every environment of a worker that shares it pays one backup copy, not a regeneration."""
    from . import db as _db

    key = (domain.name, id(domain), seed, rows)
    snap = _TEMPLATES.get(key)
    if snap is None:
        conn = _db.connect(domain)
        _db.load(conn, domain, generate_rows(domain, seed, rows))
        snap = _db.snapshot(conn)
        conn.close()
        if len(_TEMPLATES) > 256:
            _TEMPLATES.clear()
        _TEMPLATES[key] = snap
    return snap


def apply_patch(conn, domain, patch: Sequence[Mapping]) -> None:
    """Applies recorded repairs ``{"entity", "key", "field", "value"}`` (bound parameters)."""
    from .db import q, value_to_db

    for p in patch:
        e = domain.entity(p["entity"])
        f = e.fields[p["field"]]
        conn.execute(f"UPDATE {q(e.name)} SET {q(f.name)} = ? WHERE {q(e.primary_key)} = ?",
                     [value_to_db(f, p["value"]), p["key"]])


# ----------------------------------------------------------------------------------------------
# Instantiating calls: arguments from earlier outputs, fresh values, and repairs of the state
# ----------------------------------------------------------------------------------------------

def _free_value(vg: ValueGen, p, now: str):
    """A value for a parameter that is not a semantic key (reason, amount, new address, ...)."""
    s = p.schema
    t = s.get("type")
    if isinstance(t, list):
        t = next((x for x in t if x != "null"), "string")
    enum = [v for v in s.get("enum", []) if v is not None]
    if enum:
        return vg.rng.choice(enum)
    if t == "integer":
        lo = int(s.get("minimum", 1))
        hi = int(s.get("maximum", max(lo + 9, 10)))
        v = vg.rng.randint(max(lo, 1) if lo <= 1 <= hi else lo, hi)
        return v
    if t == "number":
        lo = float(s.get("minimum", 1.0))
        hi = float(s.get("maximum", max(lo + 50.0, 50.0)))
        return round(vg.rng.uniform(max(lo, 1.0) if lo <= 1.0 <= hi else lo, hi), 2)
    if t == "boolean":
        return vg.rng.random() < 0.5
    fmt = s.get("format")
    if fmt == "date":
        return _around(now, vg.rng, "date")
    if fmt == "date-time":
        return _around(now, vg.rng, "datetime")
    v = str(vg.value("string", name=p.name))
    ml = s.get("maxLength")
    return v[:ml] if ml else v


class Instantiator:
    """Runs tools of one domain against one database with concrete arguments.

    Key parameters take values that earlier calls returned (the ``pool`` of semantic key ->
    values, most recent first), falling back to values in the database for user-held keys;
    fields a write sets get fresh values; other parameters are drawn from their schema. When a
    precondition blocks every candidate, :meth:`repair` changes the state so it holds (a row's
    field set to an allowed value, a free argument set to what the condition asks for) and
    records each database change in ``patch`` so the environment's initial state can include it.
    """

    def __init__(self, domain, conn, runtime, vg: ValueGen, tries: int = 8):
        self.domain, self.conn, self.runtime, self.vg = domain, conn, runtime, vg
        self.tries = tries
        self.pool: dict[str, list] = {}
        self.patch: list[dict] = []
        self.repairs = 0
        # (entity, field) whose values a semantic key names, primary keys first
        self._key_fields: dict[str, list[tuple[str, str]]] = {}
        for e in domain.entities.values():
            for f in e.fields.values():
                if f.key:
                    lst = self._key_fields.setdefault(f.key, [])
                    (lst.insert(0, (e.name, f.name)) if f.name == e.primary_key
                     else lst.append((e.name, f.name)))

    # -- pool ------------------------------------------------------------------------------
    def remember(self, key: str, value) -> None:
        if value is None or isinstance(value, (list, dict)):
            return
        lst = self.pool.setdefault(key, [])
        if value in lst:
            lst.remove(value)
        lst.insert(0, value)

    def observe(self, tool, args: Mapping, data) -> None:
        for pn, p in tool.params.items():
            if p.key and pn in args:
                self.remember(p.key, args[pn])
        e = self.domain.entities.get(tool.entity) if tool.entity else None
        rows = data if isinstance(data, list) else [data]
        # the first rows of a list are the ones a user would mean: remember them last
        for row in reversed(rows[:8]):
            if not isinstance(row, dict):
                continue
            for fn, v in row.items():
                f = e.fields.get(fn) if e else None
                key = f.key if f is not None else (fn if fn in self._key_fields else None)
                if key:
                    self.remember(key, v)

    # -- candidates ------------------------------------------------------------------------
    def _db_values(self, key: str, field: tuple | None, limit: int = 12) -> list:
        from .db import q

        targets = [field] if field else self._key_fields.get(key, [])[:1]
        out = []
        for en, fn in targets:
            rows = self.conn.execute(f"SELECT DISTINCT {q(fn)} FROM {q(en)} WHERE {q(fn)} IS NOT "
                                     f"NULL ORDER BY {q(fn)} LIMIT 200").fetchall()
            vals = [r[0] for r in rows]
            self.vg.rng.shuffle(vals)
            out += vals[:limit]
        return out

    def _fresh_fields(self, tool) -> set:
        """Parameters that are the new value of a field this write sets (need a fresh value)."""
        if tool.mode != "write":
            return set()
        return set(tool.options.get("fields", ())) if tool.kind in ("create", "update_fields") \
            else set()

    def candidate_args(self, tool, k: int, use_db: bool, cache: dict | None = None) -> dict:
        args: dict = {}
        cache = {} if cache is None else cache
        fresh = self._fresh_fields(tool)
        e = self.domain.entities.get(tool.entity) if tool.entity else None
        for pn, p in tool.params.items():
            if not p.required:
                continue
            is_ref = bool(e and pn in e.fields and e.fields[pn].ref)
            if p.key and not (pn in fresh and not is_ref):
                cands = list(self.pool.get(p.key, ()))
                if use_db or not cands or p.key in self.domain.user_held:
                    ck = (p.key, p.field)
                    if ck not in cache:
                        cache[ck] = self._db_values(p.key, p.field)
                    cands += [v for v in cache[ck] if v not in cands]
                if not cands:
                    raise LookupError(f"no value for key {p.key!r} of {tool.name}.{pn}")
                args[pn] = cands[k] if k < len(cands) else self.vg.rng.choice(cands)
            elif p.field is not None and p.field[0] in self.domain.entities and \
                    p.field[1] in self.domain.entities[p.field[0]].fields:
                f = self.domain.entities[p.field[0]].fields[p.field[1]]
                v = field_value(self.vg, f, self.domain.now)
                if p.schema.get("enum") and v not in p.schema["enum"]:
                    v = self.vg.rng.choice([x for x in p.schema["enum"] if x is not None])
                args[pn] = v
            else:
                args[pn] = _free_value(self.vg, p, self.domain.now)
        return args

    # -- repair ----------------------------------------------------------------------------
    def repair(self, tool, args: dict, node) -> bool:
        """Tries to make condition ``node`` hold by changing one row field or one free argument
        (mutating ``args``); True when something was changed."""
        from . import conditions as C

        ev_args = {p: None for p in tool.params}
        ev_args.update(args)

        def ev(n):
            return C.evaluate(n, self.runtime.state, ev_args, now=self.domain.now)

        if isinstance(node, C.Not) and isinstance(node.item, C.Call) and \
                node.item.fn == "exists" and node.item.when is None:
            return self._repair_not_exists(node.item, ev)
        if isinstance(node, C.BoolOp):
            changed = False
            items = node.items if node.op == "and" else node.items[:1]
            for it in items:
                try:
                    ok = bool(ev(it))
                except C.ConditionEvalError:
                    ok = False
                if not ok:
                    changed |= self.repair(tool, args, it)
            return changed
        if not isinstance(node, C.Compare):
            return False
        op, left, right = node.op, node.left, node.right
        mirror = {"<": ">", ">": "<", "<=": ">=", ">=": "<=", "==": "==", "!=": "!="}
        if not isinstance(left, (C.Call, C.Param, C.BinOp)) and op in mirror:
            left, right, op = right, left, mirror[op]
        try:
            target = ev(right)
        except C.ConditionEvalError:
            return False
        # a row field: field(E, key, f) <op> target
        if isinstance(left, C.Call) and left.fn == "field" and left.when in (None, "after"):
            key = ev(left.args[0])
            if key is None:
                return False
            e = self.domain.entities[left.entity]
            f = e.fields[left.name]
            val = self._satisfy(f, op, target, ev(left))
            if val is _NO:
                return False
            if f.name == e.primary_key:
                return False
            return self._patch(e.name, key, f.name, val)
        # a free argument: $p <op> target
        if isinstance(left, C.Param) and left.name in tool.params:
            p = tool.params[left.name]
            if p.key:
                return False
            val = self._satisfy_schema(p.schema, op, target, args.get(left.name))
            if val is _NO:
                return False
            args[left.name] = val
            return True
        # field(E, k, f) + $amount <op> target  -> solve for the argument
        if isinstance(left, C.BinOp) and left.op == "+" and isinstance(left.right, C.Param):
            try:
                base = ev(left.left)
            except C.ConditionEvalError:
                return False
            if not isinstance(base, (int, float)) or not isinstance(target, (int, float)):
                return False
            pn = left.right.name
            cur = args.get(pn)
            if not isinstance(cur, (int, float)):
                return False
            need = target - base
            if (op in (">=", ">") and cur + base < target + (op == ">")) or \
                    (op in ("<=", "<") and cur + base > target - (op == "<")):
                new = abs(cur) if op in (">=", ">") else -abs(cur)
                if (op in (">=", ">") and new < need) or (op in ("<=", "<") and new > need):
                    new = need + (1 if op == ">" else -1 if op == "<" else 0)
                if new == 0:
                    return False
                args[pn] = int(new) if isinstance(cur, int) else round(float(new), 2)
                return True
        return False

    def _patch(self, entity: str, key, field: str, value) -> bool:
        # A field patched once stays: a second repair could undo what an earlier path needs.
        if any(p["entity"] == entity and p["key"] == key and p["field"] == field
               for p in self.patch):
            return False
        # A field an invariant relates to other rows (an address's owner, an order's total) is
        # never repaired: the patched database must stay consistent.
        if (entity, field) in invariant_fields(self.domain):
            return False
        rec = {"entity": entity, "key": key, "field": field, "value": value}
        try:
            apply_patch(self.conn, self.domain, [rec])
        except Exception:   # a CHECK or foreign key the value would break
            return False
        self.patch.append(rec)
        self.repairs += 1
        return True

    def _repair_not_exists(self, call, ev) -> bool:
        """``not exists(E, f=v, ...)``: move the matching rows out of an enum filter's value."""
        from .db import q, value_to_db

        e = self.domain.entities[call.entity]
        filters = {k: ev(v) for k, v in call.filters.items()}
        enums = [k for k in filters if e.fields[k].type == "enum"]
        if not enums:
            return False
        where = " AND ".join(f"{q(k)} IS NULL" if v is None else f"{q(k)} = ?"
                             for k, v in filters.items())
        a = [value_to_db(e.fields[k], v) for k, v in filters.items() if v is not None]
        keys = [r[0] for r in self.conn.execute(
            f"SELECT {q(e.primary_key)} FROM {q(e.name)} WHERE {where} LIMIT 6", a)]
        if not keys:
            return False
        fn = enums[0]
        others = [v for v in e.fields[fn].values if v != filters[fn]]
        if not others:
            return False
        return all(self._patch(e.name, k, fn, self.vg.rng.choice(others)) for k in keys)

    def _satisfy(self, f, op, target, current):
        rng = self.vg.rng
        if op == "==":
            return target
        if op == "in" and isinstance(target, list) and target:
            return rng.choice(target)
        if op in ("!=", "not in") and f.type == "enum":
            bad = target if isinstance(target, list) else [target]
            ok = [v for v in f.values if v not in bad]
            return rng.choice(ok) if ok else _NO
        if op in (">=", ">", "<=", "<") and isinstance(target, (int, float)):
            step = 1 if f.type == "integer" else 0.01
            v = target if op in (">=", "<=") else (target + step if op == ">" else target - step)
            if op in (">=", ">"):
                v = v + (rng.randint(0, 5) if f.type == "integer" else round(rng.uniform(0, 20), 2))
            if f.max is not None and v > f.max or f.min is not None and v < f.min:
                return _NO
            return int(v) if f.type == "integer" else round(float(v), 2)
        return _NO

    def _satisfy_schema(self, schema, op, target, current):
        if op == "==":
            return target
        if op == "in" and isinstance(target, list) and target:
            return self.vg.rng.choice(target)
        if op in (">=", ">", "<=", "<") and isinstance(target, (int, float)):
            if schema.get("type") == "integer" or isinstance(target, int):
                lo, hi = (target + (op == ">"), target + 5) if op in (">=", ">") else \
                    (max(1, target - 5), target - (op == "<"))
                if hi < lo:
                    return _NO
                return self.vg.rng.randint(int(lo), int(hi))
            return round(target + (1 if op in (">=", ">") else -1) * 0.5, 2)
        return _NO

    # -- running ---------------------------------------------------------------------------
    def step(self, name: str, *, repair: bool = True, use_db: bool = False,
             tries: int | None = None):
        """Runs tool ``name`` once with instantiated arguments; returns (arguments, data) or None
        when no candidate (after repairs) succeeds."""
        tool = self.domain.tools[name]
        tries = tries or self.tries
        cache: dict = {}
        for k in range(tries):
            try:
                args = self.candidate_args(tool, k, use_db or k >= tries // 2, cache)
            except LookupError:
                return None
            res = self.runtime.call(name, args)
            if res.is_error and repair and k < 3:
                for _ in range(3):
                    try:
                        violated = self.runtime.check_preconditions(name, args)
                    except Exception:
                        break
                    if not violated or not any(self.repair(tool, args, c.node) for c in violated):
                        break
                res = self.runtime.call(name, args)
            if not res.is_error:
                self.observe(tool, args, res.data)
                return args, res.data
        return None


class _NoValue:
    def __repr__(self) -> str:
        return "<no value>"


_NO = _NoValue()
