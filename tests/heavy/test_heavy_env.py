"""``longcat bench heavy-env``: single sample vs self-consistency over final database states vs a
summary episode, on real environments with a scripted agent (no model), and the tally layouts."""
import json
from collections import defaultdict

import pytest

from longcat.bench.heavy_env import evaluate, majority_episode, plot
from longcat.heavy import TALLY, ShownCandidate
from longcat.heavy.templates import TALLY_FIRST, get_template


def _env_and_task():
    from longcat.envs.growth import DomainContext, build_environment
    from longcat.envs.tasks import SynthStats, synthesize_task

    ctx = DomainContext("retail")
    for i in range(8):
        rec = build_environment(ctx, 11, i, {})
        task = synthesize_task(ctx, rec, 0, SynthStats()) if rec["verified"] else None
        if task is not None and task["gold_actions"] and not task.get("rubrics"):
            return rec, task
    pytest.fail("no verified retail task with a gold path in the first 8 environments: the build or "
                "the task synthesis regressed")


class ScriptedAgent:
    """Candidate episodes: per task, every third one skips its last gold call (a wrong final
    database); the others make all the gold calls, then say they are done. A summary episode
    (its opening holds the summary prompt) checks that the candidates' tool calls are shown and
    makes the gold calls."""

    def __init__(self):
        self.seen = defaultdict(int)
        self.summary_prompts = []

    def replies(self, convs, cfg, seed):
        out = []
        for c in convs:
            if not hasattr(c, "scripted_plan"):
                opening = c.messages[1]["content"] if len(c.messages) > 1 else ""
                gold = list(c.task["gold_actions"])
                if "Thinkers Process" in opening:
                    self.summary_prompts.append(opening)
                else:
                    n = self.seen[c.task["task_id"]]
                    self.seen[c.task["task_id"]] += 1
                    if n % 3 == 1:
                        gold = gold[:-1]
                c.scripted_plan = gold
            todo = c.scripted_plan
            if todo:
                act = todo.pop(0)
                call = {"id": f"call_{len(todo)}", "type": "function",
                        "function": {"name": act["name"], "arguments": json.dumps(act["arguments"])}}
                out.append(({"role": "assistant", "content": "", "tool_calls": [call]}, 10, 7))
            else:
                out.append(({"role": "assistant", "content": "All done."}, 10, 3))
        return out


def test_rows_votes_summary_and_token_accounting(tmp_path):
    rec, task = _env_and_task()
    envs, tasks = {rec["env_id"]: rec}, [task]
    agent = ScriptedAgent()
    rows = evaluate(agent, envs, tasks, count_tokens=lambda t: len(t.split()), ks=(1, 2, 3), heavy_ks=(2, 3),
                    max_turns=len(task["gold_actions"]) + 3)
    by = {(r["method"], r["k"]): r for r in rows}
    n_gold = len(task["gold_actions"])
    good, bad = 7 * n_gold + 3, 7 * (n_gold - 1) + 3   # tokens of a full / a short episode
    assert by[("single", 1)]["success"] == 1.0 and by[("single", 1)]["gen_tokens"] == good
    # K=2: one good, one bad episode, a tie: the first group (the good one) wins.
    assert by[("self-consistency", 2)]["gen_tokens"] == good + bad
    assert by[("self-consistency", 3)]["success"] == 1.0  # two good episodes share a final state
    assert by[("pass@k (oracle)", 2)]["success"] == 1.0
    heavy3 = by[("heavy", 3)]
    assert heavy3["success"] == 1.0 and heavy3["summary_tokens"] == good
    assert heavy3["gen_tokens"] == 2 * good + bad + good  # candidates + the summary episode
    assert heavy3["delta_vs_sc"] == pytest.approx(heavy3["success"] - heavy3["sc_success_at_equal_tokens"])
    first = task["gold_actions"][0]["name"]
    assert len(agent.summary_prompts) == 2 and all(f"{first}(" in p and " -> " in p for p in agent.summary_prompts)
    plot(rows, str(tmp_path / "h.png"), "t")
    assert (tmp_path / "h.png").stat().st_size > 1000


def test_majority_episode_picks_the_largest_final_state_group():
    class E:
        def __init__(self, h, r):
            self.db_hash, self.reward = h, r

    eps = [E("a", 0.0), E("b", 1.0), E("b", 1.0), E("a", 0.0), E("b", 0.0)]
    assert majority_episode(eps) is eps[1]
    assert majority_episode(eps[:1] + eps[1:2]) is eps[0]  # tie: the group seen first


def test_bad_ks_are_named():
    with pytest.raises(ValueError, match="ks / heavy_ks"):
        evaluate(ScriptedAgent(), {}, [{"task_id": "t"}], count_tokens=len, ks=(0,), heavy_ks=(2,))
    with pytest.raises(ValueError, match="tasks"):
        evaluate(ScriptedAgent(), {}, [], count_tokens=len)


def test_tally_layout_merges_and_counts_most_frequent_first():
    shown = [ShownCandidate(a) for a in ("7", "9", "7", " [9]", "-2", "7")]
    assert TALLY.render("3+4=", shown) == "3+4=[7:3][9:2][-2:1]="
    assert TALLY.render("3+4=", []) == "3+4=="
    assert TALLY_FIRST.render("3+4=", shown) == "[7:3][9:2][-2:1]3+4="
    assert get_template("tally-first") is TALLY_FIRST


@pytest.mark.slow  # about 30 s of CPU (building 8 environments, a random model's episodes)
def test_quick_bench_end_to_end_through_the_engine(tmp_path):
    """``longcat bench heavy-env --quick`` on a random tiny checkpoint: the engine agent path,
    the table, JSON and plot (the numbers are 0: the model is untrained)."""
    from longcat.cli import main

    assert main(["bench", "heavy-env", "--quick", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "heavy-env.json").read_text())
    methods = {(r["method"], r["k"]) for r in result["rows"]}
    assert {("single", 1), ("self-consistency", 2), ("heavy", 2)} <= methods
    heavy = next(r for r in result["rows"] if r["method"] == "heavy")
    sc2 = next(r for r in result["rows"] if r["method"] == "self-consistency")
    assert heavy["gen_tokens"] > sc2["gen_tokens"] > 0  # the summary episode is paid for on top
    assert (tmp_path / "heavy-env.png").stat().st_size > 1000
