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
one argument of a write (wrong argument) does not. Tasks failing any check are dropped and the
reason counted (``SynthStats.dropped``).
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from .noise import stable_seed

__all__ = ["synthesize_task", "SynthStats", "to_tau2", "humanize", "normalize_text",
           "communicated"]


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
_CLOSINGS = ("Thanks!", "Thank you.", "That's all.", "Appreciate it.", "")


def _label(name: str) -> str:
    return humanize(name.replace("_id", " id"))


def _article_phrase(tool, args: Mapping, hidden: set, created: Mapping,
                    mine: Mapping | None = None) -> str:
    """The action of one write step as a phrase: 'cancel pending order for order #W000003
    (reason: no longer needed)'."""
    kp = tool.options.get("key_param")
    parts = [humanize(tool.name)]
    details = []
    for pn, v in args.items():
        if pn in hidden:
            continue
        p = tool.params.get(pn)
        if pn == kp or (p is not None and p.key):
            if (pn, v) in created:
                parts.append(f"for the {created[(pn, v)]} you just created" if pn == kp
                             else f"using the new {created[(pn, v)]}")
            elif mine and mine.get(p.key if p is not None else None) == v:
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


def synthesize_task(ctx, env: Mapping, chain_index: int, stats: SynthStats,
                    task_index: int = 0) -> dict | None:
    """One task from the recorded calls of chain ``chain_index`` of environment ``env`` (a
    record of :func:`longcat.envs.growth.build_environment`); None when it fails
    self-verification (the reason is counted in ``stats``)."""
    from .db import db_hash, table_hashes

    stats.candidates += 1
    d = ctx.domain
    calls = env["chain_calls"][chain_index] if chain_index < len(env["chain_calls"]) else None
    if not calls:
        stats.drop("chain not executable")
        return None
    rng = random.Random(stable_seed("task", env["env_id"], chain_index, task_index))
    ctx.vg.reseed(stable_seed("task-values", env["env_id"], chain_index, task_index))
    tpl, patch = env["template_seed"], env["patch"]

    ctx.open_state(tpl, patch)
    initial_hash = db_hash(ctx.conn, d)
    initial_tables = table_hashes(ctx.conn, d)
    persona, mine = _persona(ctx, calls)
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
    for i in writes[-2:]:
        ctx.open_state(tpl, patch)
        for n, a in calls[:i] + calls[i + 1:]:
            ctx.replayer.call(n, dict(a))
        if db_hash(ctx.conn, d) == expected_hash:
            stats.drop("missing step still passes")
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

    # -- the user's side ------------------------------------------------------------------------
    created: dict = {}       # (param, value) -> entity name, for ids made by earlier writes
    known: dict = {}         # user-held values stated up front
    hidden: dict = {}        # param label -> value, revealed when asked
    intents = []
    for i, ((name, args), data) in enumerate(zip(calls, results)):
        t = d.tools[name]
        for pn, v in args.items():
            p = t.params.get(pn)
            if p and p.key in d.user_held and pn not in known and i == 0:
                known[pn] = v
        if t.mode != "write":
            continue
        hide = set()
        for pn, v in args.items():
            p = t.params.get(pn)
            if p is None or p.key or (pn, v) in created:
                continue
            if rng.random() < 0.4:
                hide.add(pn)
                hidden[pn] = v
        intents.append(_article_phrase(t, args, hide, created, mine))
        if t.kind == "create" and isinstance(data, dict) and t.entity:
            pk = d.entities[t.entity].primary_key
            for n2, a2 in calls[i + 1:]:
                for pn2, v2 in a2.items():
                    if v2 == data.get(pk):
                        created[(pn2, v2)] = humanize(t.entity)
    if mine.get("_identify") and any(v == next(iter(mine.values())) for _, a in calls
                                     for v in a.values()):
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
    rubrics = []
    if rubric is not None:
        what, value, src = rubric
        sents.append(rng.choice(_REPORT).format(what=what))
        rubrics.append({"info": value, "description": f"tell the user the {what}", "tool": src})
    if hidden:
        sents.append(rng.choice(_HIDDEN_HINT))
    closing = rng.choice(_CLOSINGS)
    if closing:
        sents.append(closing)
    instruction = " ".join(sents)
    stats.kept += 1
    return {
        "task_id": f"{env['env_id']}-t{chain_index}-{task_index}",
        "env_id": env["env_id"],
        "domain": d.name,
        "user_profile": persona,
        "instruction": instruction,
        "known_info": known,
        "hidden_info": hidden,
        "gold_actions": [{"name": n, "arguments": a} for n, a in calls],
        "expected_db_hash": expected_hash,
        "expected_table_hashes": {t: final_tables[t] for t in affected},
        "initial_db_hash": initial_hash,
        "affected_tables": affected,
        "rubrics": rubrics,
        "reward_basis": ["DB", "COMMUNICATE"] if rubrics else ["DB"],
        "verification": {"gold": True, "do_nothing_fails": True,
                         "missing_step_fails": True, "wrong_argument_fails": True},
    }


def to_tau2(task: Mapping) -> dict:
    """The task in tau2-bench's ``tasks.json`` shape (``Task`` of src/tau2/data_model/tasks.py)."""
    known = "\n".join(f"Your {_label(k)} is {v}." for k, v in task["known_info"].items())
    unknown = "\n".join(f"If asked, your {_label(k)} is {v}." for k, v in
                        task["hidden_info"].items())
    return {
        "id": task["task_id"],
        "description": {"purpose": f"Synthesised from a verified tool chain of {task['env_id']}",
                        "notes": f"environment {task['env_id']}"},
        "user_scenario": {
            "persona": f"{task['user_profile'].get('name')}, {task['user_profile'].get('style')}",
            "instructions": {"domain": task["domain"], "reason_for_call": task["instruction"],
                             "known_info": known, "unknown_info": unknown,
                             "task_instructions": "Reveal held-back details only when asked."}},
        "initial_state": {"initialization_data": {"env_id": task["env_id"]}},
        "evaluation_criteria": {
            "actions": [{"action_id": f"{task['task_id']}_{i}", "requestor": "assistant",
                         "name": a["name"], "arguments": a["arguments"]}
                        for i, a in enumerate(task["gold_actions"])],
            "communicate_info": [str(r["info"]) for r in task["rubrics"]],
            "reward_basis": list(task["reward_basis"]),
        },
    }
