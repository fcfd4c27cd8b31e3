"""The policy document of a domain (tau2-bench's ``policy.md``), derived from its spec so that
it agrees with what the tools check and what the evaluator rewards:

* authentication -- the identifiers the user holds (the person entity's user-held fields) and
  the lookup tools that take them; the evaluator fails a task whose agent writes before such a
  lookup (``Environment.authenticated_before_writes``);
* ownership -- the entities that belong to a person; acting on someone else's record is what
  a refusal task asks for and what the evaluator's expected state forbids;
* one rule line per write tool, from its preconditions (the tool itself refuses those);
* how to change records, when to refuse, how to end; the YAML ``policy:`` text is kept as the
  domain's own notes.
"""
from __future__ import annotations

__all__ = ["domain_policy"]


def _h(name: str) -> str:
    return name.replace("_", " ")


def _person(domain):
    from .tasks import _person_entity

    return _person_entity(domain)


def _rules(tool) -> list[str]:
    """'only when its status is pending', 'not when the order has no items' (the messages
    of the tool's preconditions say what is wrong when one fails)."""
    rules = []
    frm = tool.options.get("from")
    if frm:
        rules.append(f"only when its {_h(tool.options.get('field', 'status'))} is "
                     + " or ".join(map(str, frm)))
    rules += [f"not when {c.message}" for c in tool.pre
              if c.message and "not found" not in c.message]
    return rules


def domain_policy(domain) -> str:
    """The policy of ``domain`` (a ``spec.Domain``) as Markdown."""
    title = _h(domain.name).title()
    pe = _person(domain)
    out = [f"# {title} agent policy", "", domain.description.strip(), ""]
    if pe is not None:
        who = _h(pe.name)
        ids = [fn for fn, f in pe.fields.items() if f.key in domain.user_held]
        lookups = sorted(n for n, t in domain.tools.items() if t.entity == pe.name and (
            (t.kind in ("find_by", "list_by") and t.options.get("by")
             and all(b in ids for b in t.options["by"]))
            or (t.kind == "search" and any(f in ids for f in t.options.get("fields", ())))))
        owned = sorted((en, fn) for en, e in domain.entities.items() if en != pe.name
                       for fn, f in e.fields.items()
                       if f.ref and f.ref[0] == pe.name and f.ref[1] == pe.primary_key)
        out += [
            "## Authentication",
            f"You act for one {who} per conversation. Before you change anything that belongs "
            f"to an account, authenticate the user: look up their {who} record with an "
            f"identifier they hold ({', '.join(_h(i) for i in ids) or 'none declared'})"
            + (f", using {', '.join(lookups)}" if lookups else "") + ". A name alone is not "
            "enough, and an id the user reads out does not prove who they are. Until the user "
            "is authenticated you may look up records that belong to no one (catalogue, "
            "schedules, prices) but you make no change. Authenticate once per conversation, "
            "before the first change.", ""]
        if owned:
            out += [
                f"## Whose records you may act on",
                f"These records belong to a {who}: "
                + ", ".join(f"{_h(en)} (its {_h(fn)})" for en, fn in owned)
                + f". Act only on the authenticated {who}'s own records and account. When the "
                "user names a record by its id, check whose it is (look it up, or list the "
                f"{who}'s records) before changing it. If it belongs to another {who}, even "
                "when the user says it is theirs, do not change it: tell them it is not on "
                "their account, and still do the parts of the request that are theirs.", ""]
    out += ["## Actions and their rules",
            "Each change below is allowed only under its rules; the tool refuses a change that "
            "breaks one, and you should not try it. Changes not listed here are not possible."]
    by_entity: dict[str, list] = {}
    for name, t in domain.tools.items():
        if t.mode == "write":
            by_entity.setdefault(t.entity or "other", []).append(t)
    for en in sorted(by_entity):
        out.append(f"### {_h(en).capitalize()}")
        for t in by_entity[en]:
            rules = _rules(t)
            line = f"- {t.description.strip().rstrip('.')} (`{t.name}`)"
            if rules:
                line += ": " + "; ".join(rules)
            out.append(line + ".")
    out += ["", "## How to make changes",
            "- Make exactly the changes the user asks for, with exactly the values they give; "
            "never change other records on your own initiative.",
            "- If a detail a change needs is missing, ask the user for it; never guess or "
            "invent ids, amounts or dates. Ids the user does not know come from your lookups.",
            "- Before a change, tell the user what you are about to do when anything is "
            "unclear, and wait for their answer.",
            "- Read every tool result. A temporary failure (unavailable, timeout) changed "
            "nothing: try again. A result that is cut off or paged: fetch the rest before "
            "relying on it. A field may come back under a differently written name.",
            "- Answers can disagree between calls or lag behind a change you just made: read "
            "again until two answers agree before you rely on a value, and after a change "
            "re-read the record to confirm it took effect (repeat the change only if it did "
            "not).",
            "- A value the user says they no longer use (an old email, a former number) is "
            "not theirs to act on.",
            "- Tell the user the outcome, and every value they asked you to look up.",
            "", "## When to refuse",
            "- Refuse a change to a record of another person, a change before authentication, "
            "and anything a rule above forbids. Refuse only that part, explain which rule "
            "applies, and carry out the rest of the request.",
            "- Do not make a change to work around a refusal (for example on a different "
            "record or with different values) unless the user asks for that change.",
            "", "## Ending the conversation",
            "When everything is done or refused, say so plainly (for example \"All done: ...\") "
            "without asking a question; the user then ends the conversation."]
    notes = (getattr(domain, "policy", "") or "").strip()
    if notes:
        out += ["", "## Domain notes", notes]
    return "\n".join(out) + "\n"
