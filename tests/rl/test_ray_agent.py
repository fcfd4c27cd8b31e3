"""The Ray backend with the multi-turn environment task: generators and environment workers as
actors (a driver process whose own environments cannot even be built still runs every episode)."""
import pytest

from longcat.rl import train
from longcat.rl.metrics import read_metrics

pytest.importorskip("ray")


def test_agent_task_runs_its_episodes_on_ray_actors(ray_cluster, envs_world, tmp_path, monkeypatch):
    from longcat.data import envs_adapter as ea

    world, run_dir = envs_world, tmp_path / "run"
    recipe = {"name": "agent-ray", "task": {"name": "envs"}, "model": {"checkpoint": str(world / "init")},
              "envs": {"build": str(world / "envs"), "max_turns": 2, "max_model_len": 1024, "reward": "partial"},
              "context": {"max_turns": 1},
              "curriculum": {"enabled": True, "min_updates": 1},
              "rollout": {"group_size": 2, "max_new_tokens": 8, "controllers": 2, "max_concurrent": 2},
              "algorithm": {"filter_degenerate": False},
              "train": {"steps": 2, "batch_groups": 1, "lr": 1e-5, "checkpoint_every": 1, "max_staleness": 1}}

    def no_env_here(*a, **k):  # the driver builds no environment: the env workers do
        raise AssertionError("an environment was built in the driver process")

    monkeypatch.setattr(ea, "make_env", no_env_here)
    res = train(recipe, str(run_dir), progress=False, backend="ray")
    assert res.steps == 2 and res.stopped is None and res.generator_busy_s > 0
    rows = read_metrics(res.metrics_path)
    assert [r["version"] for r in rows] == [1, 2]
    # every episode ran to its reward in an env worker, none was dropped
    assert all(r["failed_samples"] == 0 and r["errors"] == [] for r in rows), [r["errors"] for r in rows]
    assert sum(r["episodes"] for r in rows) >= 2 * 1 * 2 and all(r["turns_mean"] >= 1 for r in rows)
    assert all(max(map(int, r["staleness_hist"])) <= 1 for r in rows)
    assert all(r["logp_gap"] < 1.0 for r in rows)  # the generator actors' logprobs are the policy's
    assert "curriculum" in rows[-1]
