"""``longcat bench envs-service --quick`` runs end to end: every phase is reported, the replay
check finds nothing lost or mixed, the faults are reported by kind, the soak leaks nothing.
(Rates are measured, not asserted: they depend on the machine's load.)"""
import pytest


@pytest.mark.slow
def test_bench_envs_service_quick():
    from longcat.bench import AREAS
    from longcat.bench.envs_service import UNIFORM_REPEATS, run

    assert AREAS["envs-service"] == "longcat.bench.envs_service"
    res = run(quick=True)
    ctx = res.context
    phases = [r["phase"] for r in res.rows]
    assert phases[0].startswith("peer: sync Environment loop")
    assert sum(p.startswith("load: uniform over all") for p in phases) == UNIFORM_REPEATS
    assert set(ctx["uniform_median"]) >= {"steps_per_s", "p50_ms", "p99_ms"}
    assert ctx["replay"] == {"checked": ctx["environments"], "lost": 0, "mixed": 0}
    f = ctx["faults"]
    assert f["hang_step"] == "timeout" and f["raise_step"] == "tool_raised"
    assert f["killed_pid"] and len(f["timeline_steps_per_s"]) >= 4
    sk = ctx["soak"]
    assert sk["open_after"] == 0 and sk["worker_handles_after"] == 0
    assert sk["fds_after"] == sk["fds_before"]
    assert len(ctx["worker_cpus"]) == ctx["workers"]
    assert 0 < ctx["memory_total_gib"] <= ctx["memory_after_uniform_gib"]
    assert ctx["load_average_start"] is None or len(ctx["load_average_start"]) == 3
