"""Asynchronous vs synchronous RL at an equal sample budget, on rewards with heavy-tailed latency.

Both runs train the tiny preset from the same random init with the same recipe, reward and
number of trained samples; only the staleness bound differs: ``max_staleness 0`` is the
synchronous batch-barrier baseline (a batch is generated, every sample scored, then one step),
``max_staleness 2`` the streaming loop. Every sample's reward waits a Pareto delay
(``min(scale * U**(-1/alpha), cap)``, the long tail of real environments and sandboxes), so
the barrier waits for the slowest sample of every batch. The task is first-token parity (reward 1
when the first generated token id is even): learnable from a random init in a few steps, so the
final rewards are comparable without a warm start.

Reported: trained samples per second and its ratio, final reward (mean over the last quarter of
steps), the staleness distribution of trained samples, and generator idle time (the share of wall
time the rollout engines were not stepping); ``rl.png`` plots trained samples and reward against
wall time for both modes and the streaming run's staleness histogram."""
from __future__ import annotations

import tempfile

import os

from longcat.rl.metrics import read_metrics


async def parity_reward(task, sample) -> float:
    return float(sample.completion_ids[0] % 2 == 0) if sample.completion_ids else 0.0


def _recipe(steps: int, staleness: int, quick: bool) -> dict:
    batch = 4
    return {"name": f"bench-eta{staleness}", "seed": 0, "warm_start": {"steps": 0},
            "rollout": {"group_size": 4, "max_new_tokens": 3, "controllers": 2,
                        "max_concurrent": batch * (staleness + 1),
                        "latency": {"dist": "pareto", "scale": 0.02, "alpha": 1.1, "cap": 1.0 if quick else 2.0}},
            "train": {"steps": steps, "batch_groups": batch, "max_staleness": staleness, "lr": 2e-3,
                      "checkpoint_every": steps}}


def run(device: str = "cpu", quick: bool = False, out: str | None = None):
    import torch

    from longcat.bench.common import BenchResult, machine_info
    from longcat.rl import train

    if device != "cpu":
        raise ValueError(f"device: the RL benchmark runs the built-in engine on CPU, got {device!r}")
    steps = 8 if quick else 30
    result = BenchResult(
        area="rl", title=f"Async vs sync RL, tiny preset, {steps} steps x 16 samples, Pareto reward latency",
        columns=["mode", "max_staleness", "wall_s", "samples_per_s", "speedup", "final_reward", "staleness_mean",
                 "staleness_hist", "generator_idle"],
        context={"machine": machine_info("cpu"), "torch_threads": torch.get_num_threads(),
                 "task": "first-token parity", "latency": _recipe(steps, 0, quick)["rollout"]["latency"]})
    base, curves = None, {}
    for mode, eta in (("sync (barrier)", 0), ("async (streaming)", 2)):
        with tempfile.TemporaryDirectory() as run_dir:
            res = train(_recipe(steps, eta, quick), run_dir, progress=False, reward_fn=parity_reward)
            rows = read_metrics(res.metrics_path)
        samples = sum(len(r["uids"]) for r in rows) * 4
        curves[mode] = rows
        rate = samples / res.wall_s
        base = base or rate
        tail = rows[-max(1, len(rows) // 4):]
        hist: dict[str, int] = {}
        for r in rows:
            for k, v in r["staleness_hist"].items():
                hist[k] = hist.get(k, 0) + v
        n = sum(hist.values())
        result.add(mode=mode, max_staleness=eta, wall_s=res.wall_s, samples_per_s=rate, speedup=rate / base,
                   final_reward=sum(r["reward_trained"] for r in tail) / len(tail),
                   staleness_mean=sum(int(k) * v for k, v in hist.items()) / n,
                   staleness_hist=" ".join(f"{k}:{v}" for k, v in sorted(hist.items())),
                   generator_idle=1 - res.generator_busy_s / res.wall_s)
    result.context["throughput_ratio"] = result.rows[1]["samples_per_s"] / result.rows[0]["samples_per_s"]
    out = out or os.environ.get("LONGCAT_BENCH_DIR", "bench-results")
    os.makedirs(out, exist_ok=True)
    result.context["plot"] = _plot(curves, result.title, os.path.join(out, "rl.png"))
    return result


def _plot(curves: dict, title: str, path: str) -> str:
    """Trained samples and reward against wall time per mode, and the streaming run's staleness."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(13, 3.6))
    for mode, rows in curves.items():
        t = [r["elapsed_s"] for r in rows]
        done = [4 * sum(len(x["uids"]) for x in rows[:i + 1]) for i in range(len(rows))]
        ax[0].plot(t, done, marker=".", label=mode)
        ax[1].plot(t, [r["reward"] for r in rows], marker=".", alpha=0.7, label=mode)
    ax[0].set_xlabel("seconds")
    ax[0].set_ylabel("samples trained")
    ax[1].set_xlabel("seconds")
    ax[1].set_ylabel("mean reward of the step's samples")
    hist: dict[int, int] = {}
    for r in list(curves.values())[-1]:
        for k, v in r["staleness_hist"].items():
            hist[int(k)] = hist.get(int(k), 0) + v
    ax[2].bar(list(hist), list(hist.values()))
    ax[2].set_xlabel(f"staleness, {list(curves)[-1]}")
    ax[2].set_ylabel("samples trained")
    for a in ax[:2]:
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    from longcat.cli import main as cli_main

    cli_main(["bench", "rl", *(argv or [])])


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
