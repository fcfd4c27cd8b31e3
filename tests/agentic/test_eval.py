import json

import pytest

from longcat.data import envs_adapter as ea
from longcat.data.synth import ReferencePolicy
from longcat.evaluate import EvalConfig, markdown_table, partial_credit, pass_hat_k
from longcat.evaluate import runner


def test_pass_hat_k():
    assert pass_hat_k([2, 0], 2, 1) == 0.5
    assert pass_hat_k([2, 1], 2, 2) == 0.5          # only the task with 2/2 passes twice
    assert pass_hat_k([3, 2, 0], 4, 2) == pytest.approx((3 / 6 + 1 / 6) / 3)
    with pytest.raises(ValueError, match="k"):
        pass_hat_k([1], 2, 3)


def test_config_errors_are_named():
    with pytest.raises(ValueError, match="conditions"):
        EvalConfig(conditions=("sunny",))
    with pytest.raises(ValueError, match="temperature"):
        EvalConfig(samples=3, temperature=0.0)


class _Gold:
    """The reference agent behind the evaluator's agent interface: it must score 1 everywhere."""
    name, tool_format = "gold", "compact"

    def __init__(self):
        self.policies = {}

    def replies(self, convs, cfg, seed):
        out = []
        for c in convs:
            p = self.policies.setdefault(id(c), ReferencePolicy(c.task, "grounded", c.env.tools))
            out.append((p(c.messages, {"env": c.env, "last": c.last}), 0, 1))
        return out


class _Mute:
    name, tool_format = "mute", "compact"

    def replies(self, convs, cfg, seed):
        return [({"role": "assistant", "content": "Goodbye."}, 0, 1) for _ in convs]


def test_evaluation_loop_scores_reference_and_silent_agents(built):
    root, _ = built
    envs, tasks = runner.load_heldout(root / "data")
    tasks = tasks[:3]
    # goal-level tasks have up to ~12 gold calls (lookups, read-backs) and transient noise
    # retries each call up to 3 times: the default 12 turns is too few for the reference agent
    cfg = EvalConfig(samples=1, max_turns=40)
    for cond in ("clean", "noisy"):
        rows = runner._run_condition(_Gold(), envs, tasks, cond, cfg, None)
        assert [r["reward"] for r in rows] == [1.0] * len(tasks)
        assert all(r["partial"] == 1.0 for r in rows)
    rows = runner._run_condition(_Mute(), envs, tasks, "clean", cfg, None)
    assert all(r["reward"] == 0.0 and r["partial"] < 1.0 for r in rows)
    s = runner._summarize(rows, 1)
    assert s["success"] == 0.0 and s["tasks"] == len(tasks)


def test_partial_credit_counts_parts():
    task = {"gold_actions": [{"name": "a", "arguments": {"x": 1}}, {"name": "b", "arguments": {}}],
            "rubrics": [{"info": 5}]}
    ep = ea.Episode(messages=[], tools=[], reward=0.0, reward_info={"db": False, "rubrics": [True]},
                    tool_calls=[("a", {"x": "1"}), ("b", {"y": 2})])
    assert partial_credit(task, ep) == pytest.approx(2 / 4)


def test_engine_checkpoint_writes_json_and_markdown(built, tiny_ckpt, tmp_path):
    root, _ = built
    envs, tasks = runner.load_heldout(root / "data")
    r = runner.evaluate(envs, tasks, model=str(tiny_ckpt), out=tmp_path / "res", progress=False,
                        cfg=EvalConfig(conditions=("clean",), max_tasks=2, max_turns=2, max_tokens=8))
    saved = json.loads((tmp_path / "res.json").read_text())
    assert saved["conditions"]["clean"]["all"]["tasks"] == 2 == r["conditions"]["clean"]["all"]["tasks"]
    assert 0 < saved["conditions"]["clean"]["all"]["generated_tokens_per_task"] <= 16
    assert (tmp_path / "res.md").read_text() == markdown_table(r)
    with pytest.raises(ValueError, match="exactly one"):
        runner.evaluate(envs, tasks, progress=False)


def test_diagnose_grades_each_reference_turn(built, tiny_ckpt):
    from longcat.evaluate.diagnose import diagnose, diagnosis_table, grade_turn, reference_conversation

    root, _ = built
    envs, tasks = runner.load_heldout(root / "data")
    msgs, tools = reference_conversation(envs[tasks[0]["env_id"]], tasks[0])
    gold = [m for m in msgs if m["role"] == "assistant"]
    call = gold[0]
    assert call.get("tool_calls") and tools
    name = call["tool_calls"][0]["function"]["name"]
    args = json.loads(call["tool_calls"][0]["function"]["arguments"])

    def reply(n, a):
        return {"content": None, "tool_calls": [{"function": {"name": n, "arguments": json.dumps(a)}}]}

    assert grade_turn(call, reply(name, args)) == "ok"
    assert grade_turn(call, {"content": "Hello."}) == "kind"
    assert grade_turn(call, reply(name + "_x", args)) == "name"
    assert grade_turn(call, reply(name, {**args, "extra": 1})) == "keys"
    assert grade_turn(call, reply(name, {k: str(v) + "9" for k, v in args.items()})) == "values"
    text = {"content": "Done. The total is 12.50."}
    assert grade_turn(text, {"content": "All done: the total is 12.5."}, told=[12.5]) == "ok"
    assert grade_turn(text, {"content": "Done."}, told=[12.5]) == "told"
    # a call that does not parse is not a text turn
    assert grade_turn(text, {"content": '<tool_call>\n{"name": "x", "arguments": {"a": "a": 1}}\n</tool_call>'}) == "kind"
    r = diagnose(envs, tasks[:2], str(tiny_ckpt), max_tokens=8, tool_format="names")
    n_turns = sum(1 for t in tasks[:2] for m in reference_conversation(envs[t["env_id"]], t)[0]
                  if m["role"] == "assistant")
    assert len(r["turns"]) == n_turns == sum(sum(v for k, v in c.items() if k != "runaway")
                                             for c in r["counts"].values())
    assert all(c["runaway"] <= sum(v for k, v in c.items() if k != "runaway") for c in r["counts"].values())
    assert "final" in r["counts"] and "| 1 |" in diagnosis_table(r)
    copied = diagnose(envs, tasks[:2], str(tiny_ckpt), max_tokens=8, tool_format="names", copy_values=True)
    assert [(t["task_id"], t["turn"]) for t in copied["turns"]] == [(t["task_id"], t["turn"]) for t in r["turns"]]
