"""Where an agent goes wrong, turn by turn, on the reference path (``longcat eval --diagnose``).

Each held-out task is played once by the reference agent (``synth.ReferencePolicy``, the
``grounded`` variant, clean); at every assistant turn of that verified conversation the model
gets the reference prefix and writes one turn greedily. The turn is then graded in order:

* ``kind``   -- a tool call where the reference calls a tool, text where it speaks (a
  ``<tool_call>`` block that does not parse is neither);
* ``name``   -- the tool name;
* ``keys``   -- the argument keys;
* ``values`` -- the argument values (ids and names copied from the user or a tool result);
* for a text turn, ``told`` -- every value the reference tells the user appears in the text.

A turn's ``first_error`` is the first check that fails (``ok`` when none), so the counts say
which skill is missing: picking the tool, its schema, copying values or saying the answer.
``runaway`` counts the turns that did not end (no ``<|im_end|>`` within ``max_tokens``).
``guided`` / ``copy_values`` decode the turns as ``longcat eval`` does with those options.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from types import SimpleNamespace
from typing import Mapping, Sequence

from longcat.data import envs_adapter as ea

__all__ = ["reference_conversation", "grade_turn", "diagnose", "diagnosis_table"]

CHECKS = ("kind", "name", "keys", "values", "told")


def reference_conversation(record: Mapping, task: Mapping) -> tuple[list[dict], list[dict]] | None:
    """(messages, tools) of the reference agent's verified episode on ``task`` (None when it
    does not succeed)."""
    from longcat.data.synth import ReferencePolicy, policy_rules

    env = ea.make_env(record)
    try:
        policy = ReferencePolicy(task, "grounded", env.tools, policy_rules(ea.domain_policy(record["domain"])))
        ep = ea.run_episode(env, task, policy)
    finally:
        env.close()
    return (ep.messages, ep.tools) if ep.reward == 1.0 else None


def _calls(msg: Mapping) -> list[tuple[str, object]]:
    out = []
    for tc in msg.get("tool_calls") or []:
        args = tc["function"]["arguments"]
        try:
            args = json.loads(args) if isinstance(args, str) else args
        except ValueError:
            pass
        out.append((tc["function"]["name"], args))
    return out


def grade_turn(gold: Mapping, reply: Mapping, told: Sequence = ()) -> str:
    """The first failing check of ``reply`` against the reference turn ``gold`` (or ``ok``);
    ``told`` are the values a text turn must tell (checked as the environment checks them)."""
    from longcat.envs.tasks import communicated
    from longcat.models.tokenizer import TOOL_CALL_START

    g, r = _calls(gold), _calls(reply)
    # A call that does not parse is neither a call nor a text turn (the user would see markup).
    if bool(g) != bool(r) or (not r and TOOL_CALL_START in (reply.get("content") or "")):
        return "kind"
    if not g:
        said = [reply.get("content") or ""]
        return "told" if any(not communicated(v, said) for v in told) else "ok"
    (gn, ga), (rn, ra) = g[0], r[0]
    if gn != rn:
        return "name"
    if not isinstance(ra, Mapping) or set(ra) != set(ga):
        return "keys"
    return "ok" if all(str(ra[k]) == str(v) for k, v in ga.items()) else "values"


def diagnose(envs: Mapping, tasks: Sequence[Mapping], model: str, *, tiers: Sequence[int] | None = None,
             max_tasks: int | None = None, max_tokens: int = 128, tool_format: str | None = None,
             engine_args: Mapping | None = None, guided: bool = False, copy_values: bool = False) -> dict:
    """Grades ``model``'s turns on the reference prefixes of held-out ``tasks`` (see the module
    docstring). Returns counts of ``first_error`` per turn position (``1``, ``2``, ...,
    ``final`` for the closing text turn) and the graded turns themselves."""
    from longcat.data.format import render
    from longcat.engine import SamplingParams
    from longcat.engine.chat import chat_stop_token_ids, parse_assistant_text
    from longcat.evaluate.runner import EvalConfig, _EngineAgent

    if tiers:
        tasks = [t for t in tasks if ea.tier_of(t) in tiers]
    tasks = sorted(tasks, key=lambda t: t["task_id"])[:max_tasks] if max_tasks else list(tasks)
    agent = _EngineAgent(model, tool_format, engine_args)
    tok = agent.llm.tokenizer
    cfg = EvalConfig(guided=guided, copy_values=copy_values)
    prompts, where, procs, refs = [], [], [], []
    for t in tasks:
        ref = reference_conversation(envs[t["env_id"]], t)
        if ref is None:
            continue
        msgs, tools = ref
        refs.append(ref)
        turn = 0
        for k, m in enumerate(msgs):
            if m["role"] != "assistant":
                continue
            turn += 1
            pos = "final" if k == len(msgs) - 1 and not m.get("tool_calls") else str(turn)
            text = render(msgs[:k], tools, agent.tool_format, add_generation_prompt=True)
            prompts.append(tok(text, add_special_tokens=False)["input_ids"])
            procs.append(agent.processors(SimpleNamespace(messages=msgs[:k], tools=tools), cfg, prompts[-1]))
            told = [r["info"] for r in t.get("rubrics", [])] if pos == "final" else []
            where.append((t["task_id"], pos, m, told))
    copies = _copy_choices(agent, refs) if copy_values else None
    params = [SamplingParams(temperature=0.0, max_tokens=max_tokens, stop_token_ids=chat_stop_token_ids(tok),
                             logits_processors=p) for p in procs]
    turns, counts = [], {}
    for (task_id, pos, gold, told), comp in zip(where, agent.llm.generate(prompts, params)):
        text = comp.outputs[0].text if comp.outputs else ""
        msg = parse_assistant_text(text)
        reply = {"content": msg.content, "tool_calls": msg.tool_calls}
        err = grade_turn(gold, reply, told)
        runaway = bool(comp.outputs) and comp.outputs[0].finish_reason == "length"
        c = counts.setdefault(pos, Counter())
        c[err] += 1
        c["runaway"] += runaway
        turns.append({"task_id": task_id, "turn": pos, "first_error": err, "runaway": runaway,
                      "generated": text, "reference": gold})
    out = {"agent": agent.name, "tool_format": agent.tool_format, "tasks": len({w[0] for w in where}),
           "counts": {p: dict(c) for p, c in counts.items()}, "turns": turns}
    if copies is not None:
        out["copy_choices"] = copies
    return out


_ID = re.compile(r"[A-Z]{2,5}-\d+")


def _copy_choices(agent, refs: Sequence[tuple[list, list]]) -> dict:
    """The copier's choice for every string or number argument of the reference calls whose value
    occurs in an earlier user or tool message, made on the reference prefix up to the pointer's
    query (``value_sites``): how many are right, for ids (``LR-000007``), other text (names,
    emails) and numbers."""
    from longcat.data.format import layout
    from longcat.engine.guided import _token_pieces
    from longcat.models.copy_head import token_at, value_sites

    tok = agent.llm.tokenizer
    pieces = _token_pieces(tok)
    tally = {"ids": [0, 0], "text": [0, 0], "numbers": [0, 0]}
    for msgs, tools in refs:
        lay = layout(tok, msgs, tools, agent.tool_format)
        starts = [a for a, _ in lay["offsets"]]
        for site in value_sites(lay):
            q = token_at(starts, site["query"])
            value = site["value"]
            string = isinstance(value, str)
            begins = site["query"] + (1 if string else 2)          # the value's first character
            typed = lay["text"][begins:lay["offsets"][q][1]]
            kind = "string" if string else "integer" if isinstance(value, int) else "number"
            choice = agent.copier(lay["messages"][:site["message"]], lay["ids"][:q + 1]).choose([], typed, pieces, kind)
            group = "numbers" if not string else "ids" if _ID.fullmatch(value) else "text"
            tally[group][1] += 1
            tally[group][0] += choice == (json.dumps(value, ensure_ascii=False)[1:-1] if string else json.dumps(value))
    return {"ranker": "head" if agent.has_copy_head else "likelihood",
            **{k: {"right": r, "of": n} for k, (r, n) in tally.items()}}


def diagnosis_table(result: Mapping) -> str:
    cols = ["ok", *CHECKS, "runaway"]
    lines = [f"Agent: `{result['agent']}` on the reference prefixes of {result['tasks']} tasks "
             f"(first failing check per turn)", "", "| turn | turns | " + " | ".join(cols) + " |",
             "|" + "---|" * (len(cols) + 2)]
    order = sorted((p for p in result["counts"] if p != "final"), key=int) + \
        (["final"] if "final" in result["counts"] else [])
    for p in order:
        c = result["counts"][p]
        n = sum(v for k, v in c.items() if k != "runaway")
        lines.append(f"| {p} | {n} | " + " | ".join(f"{c.get(k, 0)}" for k in cols) + " |")
    if "copy_choices" in result:
        c = result["copy_choices"]
        lines += ["", f"Copy choices on the reference prefixes ({c['ranker']} ranking): ids {c['ids']['right']} / "
                      f"{c['ids']['of']}, other text {c['text']['right']} / {c['text']['of']}, numbers "
                      f"{c['numbers']['right']} / {c['numbers']['of']}"]
    return "\n".join(lines) + "\n"
