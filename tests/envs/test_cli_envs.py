"""`longcat envs build | stats | eval` and `longcat bench envs`, run through the real CLI entry
point (in-process, plus one subprocess that also checks that a build does not depend on the
process or the number of workers)."""
import json
import os
import subprocess
import sys

import pytest

from longcat.cli import main
from longcat.envs.build import plan_blocks, read_jsonl


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("envs-build")
    rc = main(["envs", "build", "--domains", "retail,airline", "--count", "8", "--seed", "1",
               "--out", str(out), "--workers", "2", "--block", "3", "--no-progress"])
    assert rc == 0
    return out


def test_build_outputs(build_dir):
    summary = json.loads((build_dir / "summary.json").read_text())
    assert summary["envs"] == 8 and set(summary["domains"]) == {"retail", "airline"}
    envs = list(read_jsonl(build_dir / "environments.jsonl"))
    tasks = list(read_jsonl(build_dir / "tasks.jsonl"))
    assert len(envs) == 8
    assert summary["verified"] == sum(e["verified"] for e in envs) >= 7
    assert len(tasks) == summary["tasks"] >= 6
    ids = {e["env_id"] for e in envs}
    assert all(t["env_id"] in ids for t in tasks)
    for dom in ("retail", "airline"):
        tau2 = json.loads((build_dir / "tau2" / f"{dom}_tasks.json").read_text())
        assert len(tau2) == summary["domains"][dom]["tasks"]
        for t in tau2:
            assert {"id", "user_scenario", "evaluation_criteria"} <= set(t)
            assert t["evaluation_criteria"]["actions"]


def test_build_is_independent_of_process_and_workers(build_dir, tmp_path):
    out = tmp_path / "again"
    r = subprocess.run([sys.executable, "-m", "longcat", "envs", "build", "--domains",
                        "retail,airline", "--count", "8", "--seed", "1", "--out", str(out),
                        "--workers", "1", "--block", "3", "--no-progress"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "built 8 environments" in r.stdout
    for f in ("environments.jsonl", "tasks.jsonl", "tau2/retail_tasks.json"):
        assert (out / f).read_text() == (build_dir / f).read_text(), f


def test_stats_and_eval(build_dir, capsys):
    assert main(["envs", "stats", str(build_dir), "--agents", "--sample", "3",
                 "--json", str(build_dir / "stats.json")]) == 0
    text = capsys.readouterr().out
    assert "retail" in text and "airline" in text and "density" in text
    stats = json.loads((build_dir / "stats.json").read_text())
    assert stats["total"]["gold"] == 1.0
    assert stats["total"]["nothing"] == 0.0
    assert stats["total"]["random"] <= 0.2
    assert 0.0 <= stats["total"]["write-only"] <= 1.0
    for r in stats["rows"]:
        assert r["gold/task"] >= 1 and r["max"] >= r["p90"] >= 1
        assert 0.0 <= r["needs read"] <= 1.0 and 0.0 <= r["refusals"] <= 1.0
        assert r["invariant viol."] == 0
    assert main(["envs", "eval", str(build_dir), "--agent", "gold", "--limit", "2",
                 "--noise", "all", "--intensity", "0.7"]) == 0
    assert "100.0%" in capsys.readouterr().out


def test_eval_llm_user_trials_and_log(build_dir, capsys, tmp_path):
    from chat_stub import ChatStub

    from longcat.envs.episodes import read_episodes

    log = tmp_path / "ep.jsonl"
    with ChatStub(lambda body: {"role": "assistant", "content": "Thanks. ###STOP###"}) as stub:
        assert main(["envs", "eval", str(build_dir), "--agent", "gold", "--limit", "2",
                     "--user-model", stub.url, "--trials", "2", "--log", str(log),
                     "--noise", "transient", "--intensity", "1.0"]) == 0
        assert stub.requests   # the user was the model
    out = capsys.readouterr().out
    assert "pass^2" in out and "100.0%" in out
    eps = read_episodes(log)
    assert len(eps) == 2 * 2 * 2 and {e.noise["seed"] for e in eps} == {0, 1}
    assert main(["envs", "eval", str(build_dir), "--agent", "openai"]) == 2
    assert "--agent-url" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["envs", "build", "--domains", "atlantis", "--out", "X"], "unknown domain"),
    (["envs", "build", "--count", "0", "--out", "X"], "--count"),
    (["envs", "build", "--workers", "0", "--out", "X"], "--workers"),
    (["envs", "stats", "/nonexistent-folder-for-test"], "summary.json"),
    (["envs", "build", "--growth", "tau", "--out", "X"], "KEY=VALUE"),
    (["envs", "build", "--growth", "min_tools=abc", "--out", "X"], "min_tools"),
    (["envs", "build", "--growth", "chain_min=9", "--out", "X"], "chain_min"),
    (["envs", "eval", "/nonexistent-folder-for-test"], "summary.json"),
])
def test_bad_arguments(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_growth_options(tmp_path):
    out = tmp_path / "g"
    assert main(["envs", "build", "--domains", "retail", "--count", "2", "--out", str(out),
                 "--workers", "1", "--no-progress", "--growth", "min_tools=24",
                 "--growth", "max_tools=30", "--growth", "tau=1.0"]) == 0
    envs = list(read_jsonl(out / "environments.jsonl"))
    for e in envs:
        assert e["verified"] and 24 <= len(e["tools"]) <= 30
        assert "fused" not in e["chain_kinds"]


def test_plan_blocks():
    blocks = plan_blocks(["a", "b", "c"], 10, block=2)
    assert sum(n for _, _, n in blocks) == 10
    assert [b for b in blocks if b[0] == "a"] == [("a", 0, 2), ("a", 2, 2)]
    with pytest.raises(ValueError, match="count"):
        plan_blocks(["a"], 0)


def test_bench_envs_quick(tmp_path):
    from longcat.bench import AREAS
    from longcat.bench.envs import run

    assert AREAS["envs"] == "longcat.bench.envs"
    res = run(quick=True)
    stages = {r["stage"]: r for r in res.rows}
    assert stages["build+verify envs"]["count"] > 0
    assert stages["build+verify envs"]["per_second"] > 0
    assert stages["env.step (clean)"]["p50_us"] > 0
    assert stages["env.step (clean)"]["p99_us"] >= stages["env.step (clean)"]["p50_us"]
    with pytest.raises(ValueError, match="device"):
        run(device="cuda")
