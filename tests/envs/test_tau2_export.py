"""`longcat envs export-tau2`: the exported domain folders, tau2's meaning of known/unknown info,
and tau2's evaluation logic (re-stated in tau2_eval.py) giving 1.0 to gold replays of exported
tasks and 0.0 to a trajectory that misses a write."""
import json

import pytest

import tau2_eval
from longcat.cli import main
from longcat.envs.tau2_export import ExportedEnvironment


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    b = tmp_path_factory.mktemp("build")
    assert main(["envs", "build", "--domains", "retail,banking", "--count", "6", "--seed", "2",
                 "--out", str(b), "--workers", "1", "--no-progress"]) == 0
    out = tmp_path_factory.mktemp("tau2")
    assert main(["envs", "export-tau2", str(b), "--out", str(out)]) == 0
    return out


def test_package_files(exported):
    for dom in ("retail", "banking"):
        f = exported / dom
        for name in ("db.json", "tasks.json", "split_tasks.json", "policy.md", "tools.json",
                     "domain.json"):
            assert (f / name).is_file(), name
        tasks = json.loads((f / "tasks.json").read_text())
        assert json.loads((f / "split_tasks.json").read_text())["base"] == [t["id"] for t in tasks]
        for t in tasks:
            ins = t["user_scenario"]["instructions"]
            assert "do not know" in ins["unknown_info"]
            assert t["initial_state"]["initialization_data"]["agent_data"]


def test_gold_replays_score_one_and_missing_write_zero(exported):
    n = 0
    for dom in ("retail", "banking"):
        folder = exported / dom
        tools = {t["name"]: t["mode"] for t in json.loads((folder / "domain.json").read_text())
                 ["tools"]}
        for t in json.loads((folder / "tasks.json").read_text()):
            crit = t["evaluation_criteria"]
            calls = [(a["name"], a["arguments"]) for a in crit["actions"]]
            said = ["Here you go: " + "; ".join(crit["communicate_info"])]
            assert tau2_eval.evaluate(lambda: ExportedEnvironment(folder), t, calls, said) == 1.0
            writes = [i for i, (name, _) in enumerate(calls) if tools[name] == "write"]
            missing = calls[:writes[-1]] + calls[writes[-1] + 1:]
            assert tau2_eval.db_reward(lambda: ExportedEnvironment(folder), t, missing) == 0.0
            if crit["communicate_info"]:
                assert tau2_eval.communicate_reward(t, ["I did it."]) == 0.0
            n += 1
    assert n >= 4
