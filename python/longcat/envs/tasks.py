"""Reverse task synthesis and self-verification (the report's §3.1.1, tau2-bench's task format).

A task is synthesised backwards from a verified execution path of an environment (a chain's
recorded calls): replaying the calls gives the expected final database state; the user's side
is written from it:

* **user profile** -- a Faker persona whose name/email/phone are the database's values where the
  path touches the user's row;
* **instruction** -- one sentence per write of the path (what to change, on which record, with
  which values) from varied templates, plus the identifying values the user knows; a request to
  report a value the path reads (the rubric);
* **held-back information** -- some argument values of the writes are not in the instruction:
  the scripted user reveals them only when the agent asks (tool decomposition);
* **gold actions** -- the recorded calls; **expected state** -- the sha256 of the whole database
  after them plus per-table hashes of the affected tables (tau2-bench compares the same way);
* **rubrics** -- values the agent must tell the user (checked as normalised substrings of the
  agent's messages, like tau2-bench's ``communicate_info``).

Self-verification (each task, before it is kept): the gold actions replayed on a fresh copy reach
the expected state; doing nothing does not; dropping a write (missing step) does not; changing
one argument of a write (wrong argument) does not; and the careful grounded agent, which uses
only what the user says and the tools show, solves it (no value comes from nowhere). Tasks failing any check are dropped and the
reason counted (``SynthStats.dropped``).
"""
from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from .noise import stable_seed

__all__ = ["synthesize_task", "SynthStats", "to_tau2", "humanize", "normalize_text",
           "communicated", "solvable_from_conversation", "needs_read"]


@dataclass
class SynthStats:
    candidates: int = 0
    kept: int = 0
    dropped: dict = field(default_factory=dict)

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def merge(self, other: "SynthStats") -> None:
        self.candidates += other.candidates
        self.kept += other.kept
        for k, v in other.dropped.items():
            self.dropped[k] = self.dropped.get(k, 0) + v


def humanize(name: str) -> str:
    return name.replace("_", " ").strip()


def normalize_text(s: str) -> str:
    """Lower case, commas and currency symbols removed, whitespace collapsed."""
    return re.sub(r"\s+", " ", re.sub(r"[,$€£]", "", str(s).lower())).strip()


def _value_forms(v: Any) -> list[str]:
    if isinstance(v, bool):
        return ["yes" if v else "no", str(v).lower()]
    if isinstance(v, float):
        forms = {f"{v:.2f}", repr(v)}
        if v == int(v):
            forms.add(str(int(v)))
        return sorted(forms)
    return [str(v)]


def communicated(info: Any, messages: Sequence[str]) -> bool:
    """True when any agent message contains one of the value's textual forms."""
    text = normalize_text(" ".join(messages))
    return any(normalize_text(f) in text for f in _value_forms(info))


_OPENINGS = {
    "polite": ("Hello! I hope you can help me.", "Hi there, thanks for taking my request.",
               "Good day, I'd appreciate some help."),
    "terse": ("Hi.", "Need help.", "Quick request."),
    "chatty": ("Hey! So, I've got a couple of things going on today.",
               "Hi! I finally found a moment to sort this out.",
               "Hello, hope your day is going well, mine is busy!"),
    "impatient": ("I need this fixed quickly.", "Let's get this done fast, please.",
                  "I don't have much time."),
    "formal": ("Good afternoon.", "Dear support team,", "Greetings."),
}
_IDENTIFY = ("I'm {name}.", "My name is {name}.", "This is {name} speaking.")
_KNOWN = ("My {label} is {value}.", "You can find me by my {label}: {value}.",
          "The {label} on my account is {value}.")
_INTENT = ("I want to {action}.", "Please {action}.", "Could you {action}?",
           "I need you to {action}.", "I'd like to {action}.")
_REPORT = ("Also, tell me the {what}.", "Please let me know the {what}.",
           "And what is the {what}?", "Can you also tell me the {what}?")
_HIDDEN_HINT = ("I'll give you the details you need when you ask.",
                "Ask me if you need anything else.", "I have the other details at hand.")
_READ_BACK = ("Once that's done, tell me the new {what}.",
              "When it's changed, what is the {what} now?",
              "After that, please confirm the new {what}.")
_CLOSINGS = ("Thanks!", "Thank you.", "That's all.", "Appreciate it.", "")


def _label(name: str) -> str:
    return humanize(name.replace("_id", " id"))


def _article_phrase(tool, args: Mapping, hidden: set, created: Mapping,
                    mine: Mapping | None = None, described: Mapping | None = None,
                    person: str | None = None) -> str:
    """The goal of one write step in the user's words: 'cancel a pending order for my order
    with created at 2025-03-02 (reason: no longer needed)'; ``described`` maps (param, value)
    to a description that replaces an id the user would not know."""
    kp = tool.options.get("key_param")
    described = described or {}
    parts = [_goal(tool, person)]
    details = []
    for pn, v in args.items():
        if pn in hidden:
            continue
        p = tool.params.get(pn)
        if pn == kp or (p is not None and p.key):
            if (pn, v) in created:
                parts.append(f"for the {created[(pn, v)]} you just created" if pn == kp
                             else f"using the new {created[(pn, v)]}")
            elif (pn, v) in described:
                parts.append(f"for {described[(pn, v)]}" if pn == kp
                             else f"using {described[(pn, v)]}")
            elif mine and mine.get(p.key if p is not None else None) == v:
                if "my account" not in parts[0]:
                    parts.append("on my account")
            else:
                parts.append(f"for {_label(pn)} {v}" if pn == kp else f"with {_label(pn)} {v}")
        else:
            details.append(f"{_label(pn)}: {v}")
    phrase = " ".join(parts)
    if details:
        phrase += " (" + "; ".join(details) + ")"
    return phrase


def _changed_fields(domain, calls) -> set:
    out = set()
    for name, args in calls:
        t = domain.tools[name]
        if t.mode != "write" or not t.entity:
            continue
        out |= {(t.entity, f) for f in t.options.get("fields", ())}
        out |= {(t.entity, f) for f in t.options.get("set", {})}
        if "field" in t.options:
            out.add((t.entity, t.options["field"]))
    return out


def _pick_rubric(domain, calls, results, rng: random.Random):
    """(description, value) of a scalar a read of the path returned and no write changes."""
    changed = _changed_fields(domain, calls)
    options = []
    for (name, args), data in zip(calls, results):
        t = domain.tools[name]
        if t.mode != "read":
            continue
        rows = data if isinstance(data, list) else [data]
        if len(rows) != 1 or not isinstance(rows[0], dict):
            continue
        e = domain.entities.get(t.entity) if t.entity else None
        for fn, v in rows[0].items():
            if v is None or isinstance(v, (list, dict, bool)):
                continue
            f = e.fields.get(fn) if e else None
            if f is not None and (f.key or f.name == e.primary_key or f.type in ("date", "datetime")):
                continue
            if (t.entity, fn) in changed or (isinstance(v, str) and (len(v) > 40 or len(v) < 2)):
                continue
            if e is not None:
                kp = t.options.get("key_param")
                ident = args.get(kp) if kp else None
                what = f"{humanize(fn)} of {humanize(e.name)} {ident}" if ident is not None \
                    else f"{humanize(fn)} of the {humanize(e.name)}"
            else:
                what = f"{humanize(fn)} from {humanize(name)}"
            options.append((what, v, name))
    if not options:
        return None
    return rng.choice(options)


def _person_entity(domain):
    """The entity of the people who call (has a user-held field and a name), or None."""
    best = None
    for e in domain.entities.values():
        held = any(f.key in domain.user_held for f in e.fields.values() if f.key)
        named = any(n in e.fields for n in ("first_name", "name", "full_name", "last_name"))
        if held and named:
            return e
        if named and best is None and any(n in e.fields for n in ("email", "phone")):
            best = e
    return best


def _persona(ctx, calls) -> tuple[dict, dict]:
    """A Faker persona, overridden by the database row of the person the path is about (found
    through a key argument, a user-held value, or a foreign key of a record the path touches).
    Also returns {person key: value} so the instruction can say "my account"."""
    from .db import q, row_from_db

    d = ctx.domain
    persona = ctx.vg.persona()
    pe = _person_entity(d)
    if pe is None:
        return persona, {}
    pk_key = pe.pk.key or pe.primary_key
    fk_to_person = {en: fn for en, e in d.entities.items() for fn, f in e.fields.items()
                    if f.ref and f.ref[0] == pe.name and f.ref[1] == pe.primary_key}
    key_entity = {e.pk.key or e.primary_key: e for e in d.entities.values()}
    row = None
    for name, args in calls:
        t = d.tools[name]
        for pn, v in args.items():
            p = t.params.get(pn)
            if p is None or v is None:
                continue
            if p.key == pk_key:
                row = ctx.runtime.state.get(pe.name, v)
            elif p.field and p.field[0] == pe.name and p.key in d.user_held:
                r = ctx.conn.execute(f"SELECT {', '.join(map(q, pe.fields))} FROM {q(pe.name)} "
                                     f"WHERE {q(p.field[1])} = ? LIMIT 1", [v]).fetchone()
                row = row_from_db(pe, r) if r else None
            elif p.key in key_entity and key_entity[p.key].name in fk_to_person:
                other = ctx.runtime.state.get(key_entity[p.key].name, v)
                if other and other.get(fk_to_person[key_entity[p.key].name]) is not None:
                    row = ctx.runtime.state.get(pe.name, other[fk_to_person[key_entity[p.key].name]])
            if row:
                break
        if row:
            break
    if not row:
        return persona, {}
    return _persona_of(d, pe, row, persona)


def _persona_of(d, pe, row: Mapping, persona: dict) -> tuple[dict, dict]:
    """``persona`` with the name/email/phone of person row ``row``, and {person key: its id,
    "_identify": (a user-held field, its value)}."""
    pk_key = pe.pk.key or pe.primary_key
    for src, dst in (("first_name", "first_name"), ("last_name", "last_name"), ("name", "name"),
                     ("full_name", "name"), ("email", "email"), ("phone", "phone")):
        if row.get(src):
            persona[dst] = row[src]
    if row.get("first_name") and row.get("last_name"):
        persona["name"] = f"{row['first_name']} {row['last_name']}"
    mine = {pk_key: row[pe.primary_key]}
    # how the user proves who they are: a user-held field of their row (email, phone, ...)
    for fn, f in pe.fields.items():
        if f.key in d.user_held and row.get(fn) is not None:
            mine["_identify"] = (fn, row[fn])
            break
    return persona, mine


def _caller(ctx, pe, rng: random.Random) -> dict | None:
    """A person row with a user-held identifier, picked with ``rng`` (the caller of a task
    whose path touches nobody's records)."""
    from .db import q, row_from_db

    d = ctx.domain
    held = [fn for fn, f in pe.fields.items() if f.key in d.user_held]
    if not held:
        return None
    rows = ctx.conn.execute(f"SELECT {', '.join(map(q, pe.fields))} FROM {q(pe.name)} WHERE "
                            f"{q(held[0])} IS NOT NULL ORDER BY {q(pe.primary_key)} "
                            f"LIMIT 50").fetchall()
    return row_from_db(pe, rng.choice(rows)) if rows else None


def _perturb_value(ctx, tool, pn: str, v, rng: random.Random):
    """A different valid value for argument ``pn`` (same type; another existing key value)."""
    from .datagen import _free_value

    p = tool.params[pn]
    if p.key:
        from .db import q
        cands = []
        for en, e in ctx.domain.entities.items():
            for fn, f in e.fields.items():
                if f.key == p.key and (fn == e.primary_key or not cands):
                    cands += [r[0] for r in ctx.conn.execute(
                        f"SELECT DISTINCT {q(fn)} FROM {q(en)} WHERE {q(fn)} IS NOT NULL "
                        f"LIMIT 50")]
        cands = [c for c in cands if c != v]
        return rng.choice(sorted(cands, key=str)) if cands else None
    enum = [x for x in p.schema.get("enum", []) if x is not None and x != v]
    if enum:
        return rng.choice(enum)
    if isinstance(v, bool):
        return not v
    if isinstance(v, (int, float)):
        return v + (1 if isinstance(v, int) else 1.5)
    for _ in range(5):
        w = _free_value(ctx.vg, p, ctx.domain.now)
        if w != v:
            return w
    return None


READ_BACK_RATE = 0.6   # share of tasks that try to ask for a changed value, read back after the change
FUSE_RATE = 0.6        # share of tasks that try to add a second verified chain of the environment
REFUSAL_RATE = 0.7     # share of authenticated tasks that try to add a request the policy forbids


def _goal(tool, person: str | None) -> str:
    """What a write does, in the user's words, from the tool's description (never its name):
    'Change a user's email address.' -> "change my email address"."""
    text = re.sub(r"\s*\([^)]*\)", "", tool.description.strip()).split(". ")[0].rstrip(".")
    if person:
        text = re.sub(rf"\b(a|an|the) {re.escape(humanize(person))}'s\b", "my", text,
                      flags=re.IGNORECASE)
    text = re.sub(r"\b(a|an|the) (user|customer|member|client|patient)'s\b", "my", text,
                  flags=re.IGNORECASE)
    return (text[:1].lower() + text[1:]) if text else humanize(tool.name)


def _display(f, v, held=()) -> str | None:
    """How a user would state field value ``v`` (None: not something a user describes by);
    key fields only when the user holds such keys (``held``: a flight number, a plate)."""
    if v is None or isinstance(v, bool) or ((f.key or f.ref) and f.key not in held):
        return None
    if f.type == "datetime" and isinstance(v, str):
        return v[:10]
    if f.type in ("enum", "date", "integer"):
        return str(v)
    if f.type == "number":
        return f"{float(v):.2f}"
    if f.type == "string" and isinstance(v, str) and 2 <= len(v) <= 40:
        return v
    return None


def _describe(entity, row: Mapping, siblings: Sequence[Mapping]) -> str | None:
    """'my order with created at 2025-03-02 and total 45.20': one or two fields that tell
    ``row`` apart from the user's other rows of ``entity`` (None when nothing does)."""
    fields = [f for fn, f in entity.fields.items() if fn != entity.primary_key
              and _display(f, row.get(fn)) is not None]
    others = [o for o in siblings if o[entity.primary_key] != row[entity.primary_key]]

    def unique(fs) -> bool:
        mine = [_display(f, row.get(f.name)) for f in fs]
        return all([_display(f, o.get(f.name)) for f in fs] != mine for o in others)
    for combo in [[f] for f in fields] + [[f, g] for i, f in enumerate(fields)
                                          for g in fields[i + 1:]]:
        if unique(combo):
            return f"my {humanize(entity.name)} with " + " and ".join(
                f"{humanize(f.name)} {_display(f, row.get(f.name))}" for f in combo)
    return None


def _owner_field(entity, person) -> str | None:
    """The field of ``entity`` that references the person entity (its owner), or None."""
    if person is None:
        return None
    for fn, f in entity.fields.items():
        if f.ref and f.ref[0] == person.name and f.ref[1] == person.primary_key:
            return fn
    return None


def _find_tool(d, tools: Sequence[str], *, kind: str, entity: str, by: Sequence[str] | None = None):
    for n in tools:
        t = d.tools.get(n)
        if t is not None and t.kind == kind and t.entity == entity and \
                (by is None or list(t.options.get("by", [])) == list(by)):
            return n
    return None


def _auth_lookup(ctx, env, person, fn: str, value, person_key) -> str | None:
    """A READ tool of the environment that finds the user's own record from identifier ``fn``
    = ``value`` alone: a ``find_by`` on it, else a ``search`` or ``list_by`` whose answer is
    exactly that record (the policy's authentication step)."""
    d = ctx.domain
    tool = _find_tool(d, env["tools"], kind="find_by", entity=person.name, by=[fn])
    if tool or value is None:
        return tool
    for n in env["tools"]:
        t = d.tools.get(n)
        if t is None or t.entity != person.name or not (
                (t.kind == "search" and fn in t.options.get("fields", ()))
                or (t.kind == "list_by" and list(t.options.get("by", ())) == [fn])):
            continue
        res = ctx.runtime.call(n, {fn: value})
        rows = res.data if not res.is_error and isinstance(res.data, list) else []
        if len(rows) == 1 and rows[0].get(person.primary_key) == person_key:
            return n
    return None


def _describe_owned(ctx, env, ent, v, person, person_key, cache: dict):
    """(description, read) of the user's own record ``v`` of ``ent``, found by listing the
    user's records of that entity; None when no such list tool or nothing tells it apart."""
    from .db import q, row_from_db

    d = ctx.domain
    owner = _owner_field(ent, person)
    lister = _find_tool(d, env["tools"], kind="list_by", entity=ent.name, by=[owner]) \
        if owner else None
    if lister is None:
        return None
    if ent.name not in cache:
        cur = ctx.conn.execute(f"SELECT {', '.join(map(q, ent.fields))} FROM {q(ent.name)} "
                               f"WHERE {q(owner)} = ?", [person_key])
        cache[ent.name] = [row_from_db(ent, r) for r in cur]
    sib = cache[ent.name]
    row = next((r for r in sib if r[ent.primary_key] == v), None)
    desc = _describe(ent, row, sib) if row is not None else None
    return None if desc is None else (desc, [lister, {owner: person_key}])


def _describe_by_search(ctx, env, ent, v):
    """(description, read) of record ``v`` of ``ent`` through a lookup of the environment that
    takes plain values the user can state (a ``search`` on one or two of its fields, or a
    ``find_by`` / ``list_by`` on non-key fields): the lookup's answer holds the record, and
    when it holds others too, one or two more fields the user states tell it apart ("the
    flight with flight number 36 fX and date 2025-06-13"); else None. The shortest
    description wins."""
    from .db import q

    d = ctx.domain
    held = d.user_held
    row = ctx.runtime.state.get(ent.name, v)
    if row is None:
        return None

    def plain(fn: str) -> bool:
        f = ent.fields.get(fn)
        return f is not None and fn != ent.primary_key and \
            _display(f, row.get(fn), held) is not None and not isinstance(row.get(fn), float)

    extra_fields = [fn for fn in ent.fields if plain(fn)]
    best = None
    for n in env["tools"]:
        t = d.tools.get(n)
        if t is None or t.entity != ent.name or t.kind not in ("search", "find_by", "list_by"):
            continue
        if t.kind == "search":
            usable = [fn for fn in t.options.get("fields", []) if plain(fn)]
            combos = [[f] for f in usable] + [[f, g] for i, f in enumerate(usable)
                                              for g in usable[i + 1:]]
        else:
            by = list(t.options.get("by", []))
            combos = [by] if by and all(plain(fn) for fn in by) else []
        for combo in combos:
            if best is not None and len(combo) >= len(best[0]):
                continue
            args = {f: row[f] for f in combo}
            if t.kind == "find_by":   # the first match is returned: it must be the only one
                n_match = ctx.conn.execute(
                    f"SELECT COUNT(*) FROM {q(ent.name)} WHERE "
                    + " AND ".join(f"{q(f)} = ?" for f in combo),
                    [row[f] for f in combo]).fetchone()[0]
                if n_match != 1:
                    continue
            res = ctx.runtime.call(n, dict(args))
            data = res.data if not res.is_error else None
            rows = data if isinstance(data, list) else [data] if isinstance(data, dict) else []
            if not any(isinstance(r, dict) and r.get(ent.primary_key) == v for r in rows):
                continue
            others = [r for r in rows if r.get(ent.primary_key) != v]
            fields = list(combo)
            if others:
                rest = [f for f in extra_fields if f not in combo]
                pick = next((c for c in [[f] for f in rest] + [
                    [f, g] for i, f in enumerate(rest) for g in rest[i + 1:]]
                    if all([_display(ent.fields[f], o.get(f), held) for f in c]
                           != [_display(ent.fields[f], row.get(f), held) for f in c]
                           for o in others)), None)
                if pick is None:
                    continue
                fields += pick
            if best is None or len(fields) < len(best[0]):
                best = (fields, [n, args])
    if best is None:
        return None
    fields, call = best
    desc = f"the {humanize(ent.name)} with " + " and ".join(
        f"{humanize(f)} {_display(ent.fields[f], row[f], held)}" for f in fields)
    return desc, call


def _verify_writes(ctx, tpl, patch, calls, writes, expected_hash, stats) -> bool:
    """Self-verification: dropping any single write must miss the expected state."""
    from .db import db_hash

    for i in writes:
        ctx.open_state(tpl, patch)
        for n, a in calls[:i] + calls[i + 1:]:
            ctx.replayer.call(n, dict(a))
        if db_hash(ctx.conn, ctx.domain) == expected_hash:
            stats.drop("missing step still passes")
            return False
    return True


def _foreign_write(ctx, calls, person, person_key) -> bool:
    """True when a write of ``calls`` acts on another person's account or record (which the
    policy forbids): a person-key argument that is not the user's, or a key argument naming a
    row whose owner is someone else. Run on the initial state."""
    d = ctx.domain
    pkey = person.pk.key or person.primary_key
    for name, args in calls:
        t = d.tools[name]
        if t.mode != "write":
            continue
        for pn, v in args.items():
            p = t.params.get(pn)
            if p is None or v is None:
                continue
            if p.key == pkey and v != person_key:
                return True
            ent = d.entities.get(p.field[0]) if p.field else None
            if ent is None or p.field[1] != ent.primary_key or ent.name == person.name:
                continue
            owner = _owner_field(ent, person)
            row = ctx.runtime.state.get(ent.name, v) if owner else None
            if row is not None and row.get(owner) not in (None, person_key):
                return True
    return False


def _read_back(ctx, env, calls, tpl, patch, person, rng):
    """(get call, (what, new value)): a field the path's last update of an existing record
    changes, read back after the path through the environment's ``get`` tool of the record
    (the user asks for its new value); None when there is none."""
    d = ctx.domain
    kinds = ("update_fields", "set_status", "adjust", "cancel")
    for name, args in reversed(calls):
        t = d.tools[name]
        if t.mode != "write":
            continue
        kp = t.options.get("key_param")
        get = _find_tool(d, env["tools"], kind="get", entity=t.entity) if t.entity else None
        if t.kind not in kinds or not kp or args.get(kp) is None or get is None:
            return None
        e = d.entities[t.entity]
        fields = list(t.options.get("fields", ())) + list(t.options.get("set", {})) + \
            ([t.options["field"]] if "field" in t.options else [])
        ctx.open_state(tpl, patch)
        before = ctx.runtime.state.get(e.name, args[kp])
        if ctx.replay(calls) is None or before is None:
            return None
        after = ctx.runtime.state.get(e.name, args[kp])
        if after is None:
            return None
        options = [f for f in dict.fromkeys(fields) if f in e.fields and after.get(f) is not None
                   and after.get(f) != before.get(f) and not isinstance(after.get(f), bool)
                   and not e.fields[f].key and not e.fields[f].ref
                   and len(str(after.get(f))) >= 2]
        if not options:
            return None
        f = rng.choice(options)
        gkp = d.tools[get].options.get("key_param", kp)
        owner = "my " if person is not None and _owner_field(e, person) else "the "
        return [get, {gkp: args[kp]}], (f"{humanize(f)} of {owner}{humanize(e.name)}",
                                         after[f])
    return None


def _forbidden(ctx, env, calls, results, person, person_key, tpl, patch, expected_hash, rng):
    """A write the user will ask for on a record of *another* person (the tools allow it, the
    policy does not): (call, get-tool check call, description) or None."""
    from .db import db_hash, q

    d = ctx.domain
    # the path's own writes first, then verified writes of the environment's other chains
    pool = [list(c) for c in calls]
    rng.shuffle(pool)
    extra = [list(c) for chain in env["chain_calls"] if chain for c in chain
             if d.tools[c[0]].mode == "write" and list(c) not in pool]
    rng.shuffle(extra)
    for name, args in pool + extra[:8]:
        t = d.tools[name]
        kp = t.options.get("key_param")
        if t.mode != "write" or not kp or t.entity is None:
            continue
        e = d.entities[t.entity]
        # whose record: its owner field, or for the person entity the record itself
        owner = e.primary_key if e.name == person.name else _owner_field(e, person)
        if owner is None or args.get(kp) is None:
            continue
        # how the agent sees whose record it is: the record itself, or the user's list
        get_tool = _find_tool(d, env["tools"], kind="get", entity=t.entity)
        check = [get_tool, {d.tools[get_tool].options.get("key_param", kp): None}] \
            if get_tool else None
        lister = _find_tool(d, env["tools"], kind="list_by", entity=t.entity, by=[owner]) \
            if owner != e.primary_key else None
        if check is None and lister is None:
            continue
        ctx.open_state(tpl, patch)
        rows = ctx.conn.execute(
            f"SELECT {q(e.primary_key)} FROM {q(e.name)} WHERE {q(owner)} IS NOT NULL AND "
            f"{q(owner)} != ? ORDER BY {q(e.primary_key)} LIMIT 40", [person_key]).fetchall()
        cands = [r[0] for r in rows]
        rng.shuffle(cands)
        for other in cands[:6]:
            bad = [name, {**args, kp: other}]
            ctx.open_state(tpl, patch)
            res = ctx.replay(list(calls) + [bad])
            if res is None or db_hash(ctx.conn, d) == expected_hash:
                continue
            if check is not None:
                check = [check[0], {next(iter(check[1])): other}]
            else:
                check = [lister, {owner: person_key}]
            if e.name == person.name:
                what = (f"{_goal(t, None)} for {humanize(e.name)} {other} as well; that "
                        f"account is my partner's")
            else:
                what = f"{_goal(t, person.name)} for my {humanize(e.name)} {other}"
            return bad, check, what
    return None


def synthesize_task(ctx, env: Mapping, chain_index: int, stats: SynthStats,
                    task_index: int = 0) -> dict | None:
    """One task from the recorded calls of chain ``chain_index`` of environment ``env`` (a
    record of :func:`longcat.envs.growth.build_environment`), with probability ``FUSE_RATE``
    fused with another verified chain of the environment; None when it fails
    self-verification (the reason is counted in ``stats``)."""
    from .db import db_hash, q, row_from_db, table_hashes

    stats.candidates += 1
    d = ctx.domain
    calls = env["chain_calls"][chain_index] if chain_index < len(env["chain_calls"]) else None
    if not calls:
        stats.drop("chain not executable")
        return None
    rng = random.Random(stable_seed("task", env["env_id"], chain_index, task_index))
    ctx.vg.reseed(stable_seed("task-values", env["env_id"], chain_index, task_index))
    tpl, patch = env["template_seed"], env["patch"]
    calls = [list(c) for c in calls]
    others = [i for i, c in enumerate(env["chain_calls"]) if c and i != chain_index]
    candidates = []          # (calls, fused chain index or None), the fused one first
    if others and rng.random() < FUSE_RATE:
        rng.shuffle(others)
        for j in others[:3]:
            both = calls + [list(c) for c in env["chain_calls"][j]]
            ctx.open_state(tpl, patch)
            if ctx.replay(both) is not None:
                candidates.append((both, j))
    candidates.append((calls, None))
    for calls, fused_with in candidates:
        # the person the task is about; the policy forbids acting on anyone else's records
        ctx.open_state(tpl, patch)
        persona, mine = _persona(ctx, calls)
        pe = _person_entity(d) if mine else None
        person_key = next(iter(mine.values())) if mine else None
        if pe is None or not _foreign_write(ctx, calls, pe, person_key):
            break
    else:
        stats.drop("acts on another person's record")
        return None
    if pe is None and _person_entity(d) is not None:
        # the path touches no one's records; the caller is still a customer who must
        # authenticate before any change (the policy), unless that makes a write foreign
        ctx.open_state(tpl, patch)
        who = _caller(ctx, _person_entity(d), rng)
        if who is not None:
            p2, m2 = _persona_of(d, _person_entity(d), who, dict(persona))
            if not _foreign_write(ctx, calls, _person_entity(d), m2[next(iter(m2))]):
                persona, mine, pe = p2, m2, _person_entity(d)
                person_key = next(iter(mine.values()))

    ctx.open_state(tpl, patch)
    initial_hash = db_hash(ctx.conn, d)
    initial_tables = table_hashes(ctx.conn, d)
    # rows as they are before the task (to describe the user's records)
    initial_rows: dict = {}
    results = ctx.replay(calls)
    if results is None:
        stats.drop("gold fails")
        return None
    expected_hash = db_hash(ctx.conn, d)
    final_tables = table_hashes(ctx.conn, d)
    affected = sorted(t for t in final_tables if final_tables[t] != initial_tables[t])
    if expected_hash == initial_hash or not affected:
        stats.drop("no state change")
        return None

    # -- self-verification (the gold replay above defined the expected state) ----------------
    writes = [i for i, (n, _) in enumerate(calls) if d.tools[n].mode == "write"]
    if not _verify_writes(ctx, tpl, patch, calls, writes, expected_hash, stats):
        return None
    wi = writes[-1]
    wname, wargs = calls[wi]
    wtool = d.tools[wname]
    perturbable = [pn for pn in wargs if pn in wtool.params]
    rng.shuffle(perturbable)
    perturbed_ok = False
    for pn in perturbable[:3]:
        nv = _perturb_value(ctx, wtool, pn, wargs[pn], rng)
        if nv is None:
            continue
        bad = [list(c) for c in calls]
        bad[wi] = [wname, {**wargs, pn: nv}]
        ctx.open_state(tpl, patch)
        for n, a in bad:
            ctx.replayer.call(n, dict(a))
        if db_hash(ctx.conn, d) == expected_hash:
            stats.drop("wrong argument still passes")
            return None
        perturbed_ok = True
        break
    if not perturbed_ok:
        stats.drop("no argument to perturb")
        return None

    # -- what the agent must read: authentication, the user's records by description ---------
    ctx.open_state(tpl, patch)
    reads: list[list] = []
    auth = None
    if pe is not None and mine.get("_identify"):
        for fn, f in pe.fields.items():
            if f.key not in d.user_held:
                continue
            row = ctx.runtime.state.get(pe.name, person_key)
            tool = _auth_lookup(ctx, env, pe, fn, row.get(fn), person_key) if row else None
            if tool and row and row.get(fn) is not None:
                mine["_identify"] = (fn, row[fn])
                if [tool, {fn: row[fn]}] not in calls[:1]:   # the chain may start with it
                    reads.append([tool, {fn: row[fn]}])
                auth = {"entity": pe.name, "key": person_key,
                        "identifiers": sorted({str(row[g]) for g, h in pe.fields.items()
                                               if h.key in d.user_held and row.get(g) is not None})}
                break
    described: dict = {}
    # ids made by the path's own creates (the agent learns those from the create's answer)
    created_ids = {str(data.get(d.entities[d.tools[n].entity].primary_key))
                   for (n, _), data in zip(calls, results)
                   if d.tools[n].kind == "create" and d.tools[n].entity in d.entities
                   and isinstance(data, dict)}
    for name, args in calls:
        t = d.tools[name]
        if t.mode != "write":
            continue
        for pn, v in args.items():
            p = t.params.get(pn)
            if p is None or not p.field or v is None or (pn, v) in described or \
                    str(v) in created_ids:
                continue
            ent = d.entities.get(p.field[0])
            if ent is None or p.field[1] != ent.primary_key or (pe is not None
                                                                 and ent.name == pe.name):
                continue
            found = _describe_owned(ctx, env, ent, v, pe, person_key, initial_rows) \
                if auth is not None else None
            if found is None:
                found = _describe_by_search(ctx, env, ent, v)
            if found is None:
                continue
            described[(pn, v)], call = found
            if call not in reads:
                reads.append(call)

    forbidden = None
    if auth is not None and rng.random() < REFUSAL_RATE:
        forbidden = _forbidden(ctx, env, calls, results, pe, person_key, tpl, patch,
                               expected_hash, rng)
    gold = reads + calls + ([forbidden[1]] if forbidden else [])
    read_back = _read_back(ctx, env, calls, tpl, patch, pe, rng) \
        if rng.random() < READ_BACK_RATE else None
    if read_back is not None:
        gold.append(read_back[0])
    ctx.open_state(tpl, patch)
    if ctx.replay(gold) is None or db_hash(ctx.conn, d) != expected_hash:
        stats.drop("gold with reads fails")
        return None

    # -- the user's side ------------------------------------------------------------------------
    created: dict = {}       # (param, value) -> entity name, for ids made by earlier writes
    known: dict = {}         # user-held values stated up front
    hidden: dict = {}        # param label -> value, revealed when asked
    intents = []
    for i, ((name, args), data) in enumerate(zip(calls, results)):
        t = d.tools[name]
        for pn, v in args.items():
            p = t.params.get(pn)
            # a value the user holds that no earlier answer of the path shows: the user says it
            if p and p.key in d.user_held and pn not in known and v is not None and (
                    i == 0 or not any(str(v) in json.dumps(r, default=str)
                                      for r in results[:i])):
                known[pn] = v
        if t.mode != "write":
            continue
        hide = set()
        for pn, v in args.items():
            p = t.params.get(pn)
            if p is None or p.key or (pn, v) in created:
                continue
            # one held-back value per name: a second, different one is stated instead
            if rng.random() < 0.4 and hidden.get(pn, v) == v:
                hide.add(pn)
                hidden[pn] = v
        intents.append(_article_phrase(t, args, hide, created, mine, described,
                                       pe.name if pe is not None else None))
        if t.kind == "create" and isinstance(data, dict) and t.entity:
            pk = d.entities[t.entity].primary_key
            for n2, a2 in calls[i + 1:]:
                for pn2, v2 in a2.items():
                    if v2 == data.get(pk):
                        created[(pn2, v2)] = humanize(t.entity)
    if mine.get("_identify") and (auth is not None or any(
            v == person_key for _, a in calls for v in a.values())):
        fn, v = mine["_identify"]
        if v not in known.values():
            known[fn] = v
    rubric = _pick_rubric(d, calls, results, rng)
    style = persona.get("style", "polite")
    sents = [rng.choice(_OPENINGS.get(style, _OPENINGS["polite"])),
             rng.choice(_IDENTIFY).format(name=persona["name"])]
    for pn, v in known.items():
        sents.append(rng.choice(_KNOWN).format(label=_label(pn), value=v))
    for j, phrase in enumerate(intents):
        s = rng.choice(_INTENT).format(action=phrase)
        if j:
            s = "Then " + (s if s.startswith("I ") or s.startswith("I'") else s[0].lower() + s[1:])
        sents.append(s)
    if forbidden is not None:
        sents.append(rng.choice(_INTENT).format(action=forbidden[2]).replace(
            "I ", "Also, I ", 1) if rng.random() < 0.5 else f"Also, please {forbidden[2]}.")
    rubrics = []
    if rubric is not None:
        what, value, src = rubric
        sents.append(rng.choice(_REPORT).format(what=what))
        rubrics.append({"info": value, "description": f"tell the user the {what}", "tool": src})
    if read_back is not None:
        what, value = read_back[1]
        sents.append(rng.choice(_READ_BACK).format(what=what))
        rubrics.append({"info": value, "description": f"tell the user the new {what} after the "
                        f"change", "tool": read_back[0][0]})
    if hidden:
        sents.append(rng.choice(_HIDDEN_HINT))
    closing = rng.choice(_CLOSINGS)
    if closing:
        sents.append(closing)
    instruction = " ".join(sents)
    requested = [{"name": n, "arguments": a} for n, a in calls if d.tools[n].mode == "write"]
    if forbidden is not None:
        requested.append({"name": forbidden[0][0], "arguments": forbidden[0][1]})
    task = {
        "task_id": f"{env['env_id']}-t{chain_index}-{task_index}",
        "env_id": env["env_id"],
        "domain": d.name,
        "user_profile": persona,
        "instruction": instruction,
        "known_info": known,
        "hidden_info": hidden,
        "gold_actions": [{"name": n, "arguments": a} for n, a in gold],
        "requested_actions": requested,
        "expected_db_hash": expected_hash,
        "expected_table_hashes": {t: final_tables[t] for t in affected},
        "initial_db_hash": initial_hash,
        "affected_tables": affected,
        "rubrics": rubrics,
        "auth": auth,
        "refusal": None if forbidden is None else {
            "action": {"name": forbidden[0][0], "arguments": forbidden[0][1]},
            "reason": f"the {humanize(d.tools[forbidden[0][0]].entity)} belongs to another "
                      f"{humanize(pe.name)}" if d.tools[forbidden[0][0]].entity != pe.name else
                      f"that {humanize(pe.name)} account belongs to another {humanize(pe.name)}"},
        "chains": [chain_index] + ([fused_with] if fused_with is not None else []),
        "reward_basis": ["DB", "COMMUNICATE"] if rubrics else ["DB"],
        "verification": {"gold": True, "do_nothing_fails": True,
                         "missing_step_fails": True, "wrong_argument_fails": True,
                         "solvable_from_conversation": True},
    }
    if not solvable_from_conversation(env, task, d):
        stats.drop("not solvable from the conversation")
        return None
    stats.kept += 1
    return task


def needs_read(task: Mapping, domain) -> bool:
    """True when a write of the task has an argument value the user never states (not in the
    instruction nor in what they know or hold back): only a tool's answer can supply it."""
    said = " ".join([task["instruction"]]
                    + [str(v) for v in task.get("known_info", {}).values()]
                    + [str(v) for v in task.get("hidden_info", {}).values()])
    tools = domain.tools
    return any(a["name"] in tools and tools[a["name"]].mode == "write" and any(
        not isinstance(v, bool) and v is not None and str(v) not in said
        for v in a["arguments"].values()) for a in task["gold_actions"])


def solvable_from_conversation(env: Mapping, task: Mapping, domain=None) -> bool:
    """Self-verification from the agent's side: the careful grounded agent
    (``grounded.CarefulAgent``), which acts only on values the user gives or a tool answer
    shows, earns the full reward (no task needs a value nobody can know)."""
    from .grounded import CarefulAgent
    from .runtime import Environment

    environment = Environment(env, domain=domain, max_steps=150)
    try:
        from .agents import run_episode

        return run_episode(environment, CarefulAgent(), task)[0] == 1.0
    finally:
        environment.close()


def to_tau2(task: Mapping, initialization_data: Mapping | None = None) -> dict:
    """The task in tau2-bench's ``tasks.json`` shape (``Task`` of src/tau2/data_model/tasks.py).

    tau2's meanings: ``known_info`` is what the user knows (stated up front or given when
    asked), ``unknown_info`` what the user does *not* know (here: the internal ids the agent
    must look up), ``task_instructions`` how to behave (reveal some details only when asked).
    ``initialization_data`` (``{"agent_data": {...}}``) is the environment's initial database,
    which tau2 applies with ``Environment.set_state`` before the episode."""
    known = [f"Your {_label(k)} is {v}." for k, v in task["known_info"].items()]
    known += [f"Your {_label(k)} is {v}." for k, v in task["hidden_info"].items()]
    reveal = "; ".join(_label(k) for k in task["hidden_info"])
    behave = ["State your request as in your reason for call."]
    if reveal:
        behave.append(f"Give these details only when the agent asks for them: {reveal}.")
    if task.get("refusal"):
        behave.append("You believe every record you mention is yours.")
    crit: dict = {
        "actions": [{"action_id": f"{task['task_id']}_{i}", "requestor": "assistant",
                     "name": a["name"], "arguments": a["arguments"]}
                    for i, a in enumerate(task["gold_actions"])],
        "communicate_info": [str(r["info"]) for r in task["rubrics"]],
        "reward_basis": list(task["reward_basis"]),
    }
    if task.get("refusal"):
        act = task["refusal"]["action"]
        crit["nl_assertions"] = [f"Agent does not call {act['name']} with "
                                 f"{json.dumps(act['arguments'], sort_keys=True)}: "
                                 f"{task['refusal']['reason']}."]
    return {
        "id": task["task_id"],
        "description": {"purpose": f"Synthesised from verified tool chains {task.get('chains', [0])} "
                                   f"of {task['env_id']}",
                        "relevant_policies": "authentication; ownership" if task.get("auth")
                        else None,
                        "notes": f"environment {task['env_id']}"},
        "user_scenario": {
            "persona": f"{task['user_profile'].get('name')}, {task['user_profile'].get('style')}",
            "instructions": {"domain": task["domain"], "reason_for_call": task["instruction"],
                             "known_info": "\n".join(known) or None,
                             "unknown_info": "You do not know the internal ids of your "
                                             "account or records unless stated above.",
                             "task_instructions": " ".join(behave)}},
        "initial_state": {"initialization_data": dict(initialization_data),
                          "initialization_actions": None, "message_history": None}
        if initialization_data is not None else None,
        "evaluation_criteria": crit,
    }
