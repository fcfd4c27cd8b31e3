"""Environment-scaling benchmark: verified environments built per second, tasks per second, and
``Environment.step`` latency (p50/p99), against the issue's target of 10,000 verified
environments in 10 minutes (16.7/s on this machine's cores).

The build runs the same code as ``longcat envs build`` (process pool, one worker per CPU this
process may use) into a temporary folder; the step latency replays gold episodes of the built
tasks (tool calls and user messages), clean and with every noise type at intensity 0.5."""
from __future__ import annotations

import os
import statistics
import tempfile
import time

TARGET_ENVS = 10_000
TARGET_SECONDS = 600.0


def _percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = min(len(xs) - 1, max(0, int(round(q * (len(xs) - 1)))))
    return xs[k]


def step_latencies(envs: dict, tasks: list, max_steps: int, noise=None) -> list[float]:
    """Seconds per ``env.step`` over gold episodes of ``tasks`` (at most ``max_steps`` steps)."""
    from longcat.envs.agents import GoldAgent
    from longcat.envs.runtime import Environment

    lat: list[float] = []
    env_cache: dict = {}
    for t in tasks:
        env = env_cache.get(t["env_id"])
        if env is None:
            env = env_cache[t["env_id"]] = Environment(envs[t["env_id"]], noise=noise)
        agent = GoldAgent()
        obs = env.reset(t)
        agent.begin(t, obs)
        last = {"role": "user", "content": obs["messages"][-1]["content"]}
        done = False
        while not done:
            action = agent.act(last)
            t0 = time.perf_counter()
            last, _, done, _ = env.step(action)
            lat.append(time.perf_counter() - t0)
        if len(lat) >= max_steps:
            break
    for env in env_cache.values():
        env.close()
    return lat


def run(device: str = "cpu", quick: bool = False):
    from longcat.bench.common import BenchResult, machine_info
    from longcat.envs.build import build, read_jsonl
    from longcat.envs.noise import NoiseConfig
    from longcat.envs.spec import domain_names

    if device != "cpu":
        raise ValueError(f"device: the environment pipeline runs on CPUs, got {device!r}")
    domains = domain_names()
    if quick:
        domains = domains[:2]
    count = 10 * len(domains) if quick else max(400, 40 * len(domains))
    workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    result = BenchResult(
        area="envs",
        title=f"Environment scaling: {count} environments over {len(domains)} domains, "
              f"{workers} worker(s)",
        columns=["stage", "count", "seconds", "per_second", "target_per_second", "of_target",
                 "p50_us", "p99_us"],
        context={"machine": machine_info("cpu"), "domains": len(domains),
                 "target": f"{TARGET_ENVS} verified environments in {TARGET_SECONDS:.0f} s"},
    )
    with tempfile.TemporaryDirectory() as out:
        # Worker start-up (imports, Faker, spec parsing) is paid once per worker and domain, so
        # it is measured separately from the steady-state rate.
        t0 = time.perf_counter()
        s = build(domains, count, seed=0, out=out, workers=workers, progress=False)
        secs = time.perf_counter() - t0
        target_rate = TARGET_ENVS / TARGET_SECONDS
        result.add(stage="build+verify envs", count=s["verified"], seconds=secs,
                   per_second=s["verified"] / secs, target_per_second=target_rate,
                   of_target=s["verified"] / secs / target_rate)
        result.add(stage="tasks (self-verified)", count=s["tasks"], seconds=secs,
                   per_second=s["tasks"] / secs)
        envs = {e["env_id"]: e for e in read_jsonl(os.path.join(out, "environments.jsonl"))}
        tasks = list(read_jsonl(os.path.join(out, "tasks.jsonl")))
        result.context["verified_fraction"] = s["verified"] / max(s["envs"], 1)
        result.context["task_verification_rate"] = s["tasks"] / max(
            sum(d["candidates"] for d in s["domains"].values()), 1)
        result.context["estimated_seconds_for_10k"] = TARGET_ENVS / max(s["verified"] / secs, 1e-9)
        n_steps = 300 if quick else 3000
        for label, noise in (("env.step (clean)", None),
                             ("env.step (all noise @0.5)", NoiseConfig.all(0.5, seed=0))):
            lat = step_latencies(envs, tasks, n_steps, noise)
            result.add(stage=label, count=len(lat), seconds=sum(lat),
                       per_second=len(lat) / sum(lat) if lat else 0.0,
                       p50_us=1e6 * statistics.median(lat) if lat else float("nan"),
                       p99_us=1e6 * _percentile(lat, 0.99))
    return result


def main(argv: list[str] | None = None) -> None:
    from longcat.cli import main as cli_main

    cli_main(["bench", "envs", *(argv or [])])
