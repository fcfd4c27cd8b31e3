import json

import pytest

from longcat.data import envs_adapter as ea
from longcat.data.format import encode, read_jsonl, render
from longcat.data.synth import (VARIANTS, ReferencePolicy, env_lookup, policy_rules, split_envs, synthesize_env,
                                trajectory_key)
from longcat.engine.chat import normalize_messages


def test_trajectories_are_verified_openai_chats_split_by_environment(built):
    root, summary = built
    trajs = list(read_jsonl(root / "data" / "train.jsonl"))
    assert len(trajs) == summary["trajectories"] > 0
    # retail / airline tasks state no id a one-record lookup fetches (their user ids are looked up
    # by email already), so env_hidden has nothing to hide there: see test_env_hidden_*
    assert {t["variant"] for t in trajs} == set(VARIANTS) - {"env_hidden"}
    held = {json.loads(l)["env_id"] for l in open(root / "data" / "eval_envs.jsonl")}
    assert held and not held & {t["env_id"] for t in trajs}
    assert {json.loads(l)["env_id"] for l in open(root / "data" / "eval_tasks.jsonl")} <= held
    keys = [trajectory_key(t["messages"]) for t in trajs]
    assert len(set(keys)) == len(keys)
    for t in trajs:
        assert t["reward"] == 1.0
        normalize_messages(t["messages"])                    # valid OpenAI chat messages
        roles = [m["role"] for m in t["messages"]]
        assert roles[:2] == ["system", "user"] and roles[-1] == "assistant"
        assert any(m.get("tool_calls") for m in t["messages"])


def test_variants_say_what_they_promise(built):
    root, _ = built
    by = {}
    for t in read_jsonl(root / "data" / "train.jsonl"):
        by.setdefault(t["variant"], []).append(t)
    first_assistant = lambda t: next(m for m in t["messages"] if m["role"] == "assistant")  # noqa: E731
    assert all(first_assistant(t)["content"].startswith("Plan: ") for t in by["planning"])
    assert all(m["content"].startswith("Options: ") for t in by["reasoning"] for m in t["messages"]
               if m["role"] == "assistant" and m.get("tool_calls"))
    # withheld values are asked for before they are used
    assert any("Could you tell me your" in (m.get("content") or "") for t in by["tool_decomposition"]
               for m in t["messages"])
    assert any("retry" in m["content"] for t in by["noisy"] for m in t["messages"] if m["role"] == "tool")
    assert any("Per policy" in (m.get("content") or "") or "confirm every change" in (m.get("content") or "")
               for t in by["text_driven"] for m in t["messages"])


@pytest.fixture(scope="module")
def courses(tmp_path_factory):
    root = tmp_path_factory.mktemp("courses")
    ea.build_envs(root / "envs", count=40, seed=0, domains=["courses"], tasks_per_env=3, workers=1, progress=False)
    return ea.load_build(root / "envs")


def test_env_hidden_fetches_the_id_it_hides(courses):
    envs, tasks = courses
    found = 0
    for task in tasks:
        got = env_lookup(envs[task["env_id"]], task)
        if got is None:
            continue
        hidden, index, (tool, args) = got
        ids = [v for v in task["gold_actions"][index]["arguments"].values()
               if isinstance(v, str) and v in task["instruction"] and v not in hidden["instruction"]]
        assert len(ids) == 1, (task["instruction"], hidden["instruction"])
        trajs, counts = synthesize_env(envs[task["env_id"]], [task], variants=("env_hidden",))
        assert counts["kept"] == {"env_hidden": 1} and trajs[0]["reward"] == 1.0
        msgs = trajs[0]["messages"]
        assert ids[0] not in msgs[1]["content"] and msgs[1]["content"] == hidden["instruction"]
        calls = [(i, c["function"]) for i, m in enumerate(msgs) for c in m.get("tool_calls") or []]
        first_use = next(i for i, f in calls if ids[0] in f["arguments"])
        fetch = [i for i, f in calls if f["name"] == tool and json.loads(f["arguments"]) == args]
        assert fetch and fetch[0] < first_use and ids[0] in msgs[fetch[0] + 1]["content"]
        found += 1
    assert found >= 3, f"only {found} of {len(tasks)} courses tasks had an id to hide"


def test_env_hidden_skips_a_task_without_an_id_to_hide(built):
    root, _ = built
    envs, tasks = ea.load_build(root / "envs")
    task = next(t for t in tasks if env_lookup(envs[t["env_id"]], t) is None)
    trajs, counts = synthesize_env(envs[task["env_id"]], [task], variants=("env_hidden",))
    assert trajs == [] and counts["skipped"] == 1 and counts["attempted"] == {}


def test_replaying_a_trajectory_scores_in_the_environment(built):
    """The recorded assistant turns, replayed against a fresh environment, get reward 1 again."""
    root, _ = built
    envs, tasks = ea.load_build(root / "envs")
    t = next(read_jsonl(root / "data" / "train.jsonl"))
    task = next(x for x in tasks if x["task_id"] == t["task_id"])
    turns = iter([m for m in t["messages"] if m["role"] == "assistant"])
    ep = ea.run_episode(ea.make_env(envs[t["env_id"]]), task, lambda msgs, st: next(turns))
    assert ep.reward == 1.0
    bad = ea.run_episode(ea.make_env(envs[t["env_id"]]), task,
                         lambda msgs, st: {"role": "assistant", "content": "I cannot help."})
    assert bad.reward == 0.0


def test_policy_rules_mine_workflows_from_text():
    r = policy_rules("Authenticate the user by email or phone before acting on an account. Only pending "
                     "orders can be cancelled. Confirm every write with the user first.")
    assert r["confirm_writes"] and r["auth_fields"] == ["email", "phone"] and len(r["sentences"]) == 2
    assert policy_rules("Nothing to mine here.") == {"confirm_writes": False, "auth_fields": [], "sentences": []}


def test_split_is_stable_and_disjoint():
    ids = [f"d-0-{i:06d}" for i in range(200)]
    tr, he = split_envs(ids, 0.2, seed=3)
    assert sorted(tr + he) == sorted(ids) and not set(tr) & set(he) and 20 < len(he) < 60
    assert split_envs(list(reversed(ids)), 0.2, seed=3) == (tr, he)
    with pytest.raises(ValueError, match="eval_fraction"):
        split_envs(ids, 1.0)


def test_bad_variant_is_named():
    with pytest.raises(ValueError, match="variant"):
        ReferencePolicy({"task_id": "x", "domain": "retail", "gold_actions": []}, "telepathy", [])


def test_corrupt_and_truncated_data_name_file_and_line(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}]}\n'
                 '{"messages": [oops]}\n')
    with pytest.raises(ValueError, match=r"d\.jsonl:2: not valid JSON"):
        list(read_jsonl(p))
    p.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "cont')
    with pytest.raises(ValueError, match=r"d\.jsonl:1: .*cut off"):
        list(read_jsonl(p))


def test_assistant_mask_covers_exactly_the_assistant_turns(tiny_ckpt):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_ckpt)
    tools = [{"type": "function", "function": {"name": "get_order", "description": "Get an order. More.",
                                               "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}, "limit": {"type": "integer"}},
                                                              "required": ["order_id"]}}}]
    msgs = [{"role": "system", "content": "Be nice."}, {"role": "user", "content": "Order W1 please."},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {
                "name": "get_order", "arguments": "{\"order_id\": \"W1\"}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "{\"status\": \"ok\"}"},
            {"role": "assistant", "content": "The status is ok."}]
    assert "get_order(order_id, limit?): Get an order" in render(msgs, tools, "compact")
    ids, mask = encode(tok, msgs, tools, "compact")
    learned = tok.decode([i for i, m in zip(ids, mask) if m], skip_special_tokens=False)
    assert learned == ('<tool_call>\n{"name": "get_order", "arguments": {"order_id": "W1"}}\n</tool_call><|im_end|>'
                       'The status is ok.<|im_end|>')
    assert tok.decode(ids, skip_special_tokens=False) == render(msgs, tools, "compact")
    names = render(msgs, tools, "names")
    assert "get_order(order_id, limit?)\n" in names and "Get an order" not in names
    ids_n, mask_n = encode(tok, msgs, tools, "names")
    assert len(ids_n) < len(ids) and tok.decode([i for i, m in zip(ids_n, mask_n) if m], skip_special_tokens=False) == learned
