"""The RL backends on one recipe at an equal sample budget: the in-process asyncio loop (the
peer), the Ray backend (generators, reward workers and the trainer as actors on a local cluster
of the machine's cores), the data-parallel trainer over 2 processes (gloo all-reduce) and the
FSDP2-sharded trainer over 2 processes (``train.sharding: fsdp2``).

Every run trains arith-tiny's model and task from the same seed with the same short warm start
(not timed) for the same number of steps and samples; reported: steps and trained samples per
second of loop wall time (start-up of actors and processes excluded, it is paid once per run),
the ratio to the in-process run, and the mean reward of the last steps."""
from __future__ import annotations

import tempfile

from longcat.rl.metrics import read_metrics



def _recipe(steps: int, quick: bool, data_parallel: int = 1, sharding: str = "none") -> dict:
    return {"name": "bench-backends", "seed": 0, "model": {"preset": "tiny"},
            "task": {"max_operand": 9, "ops": "+-", "n_terms": 2},
            "warm_start": {"steps": 40 if quick else 100, "batch_size": 32, "lr": 1e-3},
            "rollout": {"group_size": 8, "max_new_tokens": 4, "controllers": 2, "max_concurrent": 16},
            "train": {"steps": steps, "batch_groups": 8, "lr": 1e-4, "max_staleness": 2,
                      "checkpoint_every": steps, "data_parallel": data_parallel, "sharding": sharding}}


def run(device: str = "cpu", quick: bool = False):
    import torch

    from longcat.bench.common import BenchResult, machine_info
    from longcat.rl import train

    if device != "cpu":
        raise ValueError(f"device: the RL backends benchmark runs on CPU, got {device!r}")
    steps = 3 if quick else 10
    result = BenchResult(
        area="rl-backends", title=f"RL backends, arith-tiny model and task, {steps} steps x 64 samples",
        columns=["backend", "wall_s", "steps_per_s", "samples_per_s", "ratio", "final_reward"],
        context={"machine": machine_info("cpu"), "torch_threads": torch.get_num_threads(),
                 "recipe": _recipe(steps, quick)})
    base = None
    for name, backend, dp, sharding in (("in-process (asyncio)", "local", 1, "none"),
                                        ("ray (local cluster)", "ray", 1, "none"),
                                        ("data-parallel 2 (gloo)", "local", 2, "none"),
                                        ("fsdp2 2 (gloo)", "local", 2, "fsdp2")):
        if backend == "ray":
            try:
                import ray  # noqa: F401
            except ImportError:
                result.add(backend=name + ": ray not installed", wall_s=float("nan"), steps_per_s=float("nan"),
                           samples_per_s=float("nan"), ratio=float("nan"), final_reward=float("nan"))
                continue
        with tempfile.TemporaryDirectory() as out:
            res = train(_recipe(steps, quick, dp, sharding), out, progress=False, backend=backend)
            rows = read_metrics(res.metrics_path)
        samples = sum(r["samples"] for r in rows)
        trained = sum(len(r["uids"]) for r in rows) * 8
        rate = trained / res.wall_s
        base = base or rate
        tail = rows[-max(1, len(rows) // 3):]
        result.add(backend=name, wall_s=res.wall_s, steps_per_s=res.steps / res.wall_s, samples_per_s=rate,
                   ratio=rate / base, final_reward=sum(r["reward"] for r in tail) / len(tail))
        result.context.setdefault("generated_samples", {})[name] = samples
    return result


def main(argv: list[str] | None = None) -> None:
    from longcat.cli import main as cli_main

    cli_main(["bench", "rl-backends", *(argv or [])])


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
