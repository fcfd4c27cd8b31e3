"""Build configuration, CPU ISA dispatch, threads, and the `longcat` command."""
import json
import os
import statistics
import subprocess
import sys
import time

import pytest

import longcat
from longcat import _C

ISAS = ["scalar", "avx2", "avx512", "avx512bf16", "amx"]


def run_cli(*args, env=None):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "longcat", *args], capture_output=True, text=True,
                          env=full_env, timeout=600)


def test_build_info():
    info = longcat.build_info()
    assert info["version"] == longcat.__version__
    assert info["cuda"] in ("on", "off")
    if info["cuda"] == "on":
        assert "90a" in info["cuda_archs"]
    expect = os.environ.get("LONGCAT_EXPECT_CUDA")
    if expect:
        assert info["cuda"] == expect


def test_cpu_isa_detection_and_forcing():
    detected = _C.cpu_isa_detected()
    assert detected in ISAS
    assert longcat.cpu_isas_available() == ISAS[: ISAS.index(detected) + 1]
    before = longcat.cpu_isa()
    try:
        longcat.set_cpu_isa("scalar")
        assert longcat.cpu_isa() == "scalar"
        higher = ISAS[ISAS.index(detected) + 1:] if detected != "amx" else []
        for isa in higher:
            with pytest.raises(ValueError, match=f"this CPU supports up to '{detected}', got '{isa}'"):
                longcat.set_cpu_isa(isa)
        with pytest.raises(ValueError, match="expected one of scalar, avx2"):
            longcat.set_cpu_isa("sse9")
    finally:
        longcat.set_cpu_isa(before)


def test_env_var_forces_lower_isa():
    r = run_cli("info", "--json", env={"LONGCAT_CPU_ISA": "scalar"})
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["cpu.isa_active"] == "scalar"
    assert info["cpu.LONGCAT_CPU_ISA"] == "scalar"
    assert info["cpu.amx_copies"].startswith("moe_grouped_swiglu, mla_prefill, mla_decode (not used")


def test_threads():
    n = longcat.num_threads()
    assert n >= 1
    try:
        longcat.set_num_threads(3)
        assert longcat.num_threads() == 3
        with pytest.raises(ValueError, match=r"expected n in \[1, 1024\], got 0"):
            longcat.set_num_threads(0)
    finally:
        longcat.set_num_threads(n)


_THREAD_COUNT_PROBE = """
import os, threading, time, torch, longcat
from longcat.ops import kv_copy_blocks
src = torch.zeros(64, 64, 1, 576, dtype=torch.bfloat16)
dst = torch.zeros(64, 64, 1, 576, dtype=torch.bfloat16)
ids = torch.arange(64, dtype=torch.int32)
tasks = lambda: len(os.listdir("/proc/self/task"))
seen = []
def copier():
    longcat.set_thread_limit(1)
    before = tasks()
    kv_copy_blocks(src, dst, ids, ids)  # 4.7 MB: many chunks, so an uncapped call uses the pool
    seen.append((longcat.thread_limit(), tasks() - before))
base = tasks()
t = threading.Thread(target=copier)
t.start()
t.join()
for _ in range(5000):  # a joined thread can linger in /proc for a moment: wait until it is gone
    if tasks() <= base:
        break
    time.sleep(0.001)
before = tasks()
kv_copy_blocks(src, dst, ids, ids)
print(seen[0][0], seen[0][1], longcat.thread_limit(), tasks() - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts threads in /proc")
def test_thread_limit_is_per_calling_thread():
    # The lazily started pool is the observable: a capped thread's copy runs inline (no pool
    # threads appear); the main thread, uncapped, then starts the pool's 2 - 1 workers.
    out = subprocess.run([sys.executable, "-c", _THREAD_COUNT_PROBE], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "LONGCAT_NUM_THREADS": "2"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "0", "0", "1"]
    with pytest.raises(ValueError, match=r"set_thread_limit: expected n in \[0, 1024\] \(0: no cap\), got -1"):
        longcat.set_thread_limit(-1)
    assert longcat.thread_limit() == 0


def test_cli_info_table():
    r = run_cli("info")
    assert r.returncode == 0, r.stderr
    for key in ("build.cuda", "build.cutlass", "build.nccl", "cpu.isa_detected", "cpu.isa_active",
                "cpu.amx_copies", "torch", "cuda.torch_devices"):
        assert key in r.stdout


def test_cli_bench_writes_table_and_json(tmp_path):
    r = run_cli("bench", "norm", "--quick", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "RMSNorm on cpu" in r.stdout
    data = json.loads((tmp_path / "norm.json").read_text())
    assert data["area"] == "norm" and data["context"]["copy_bandwidth_gbs"] > 0
    assert {row["op"] for row in data["rows"]} == {"rms_norm", "fused_add_rms_norm", "rms_norm_backward"}
    for row in data["rows"]:
        assert row["longcat_us"] > 0 and row["reference_us"] > 0 and row["vs_reference"] > 0
    assert (tmp_path / "norm.md").read_text().startswith("## RMSNorm")


def test_cli_rejects_unknown_area():
    r = run_cli("bench", "nope")
    assert r.returncode != 0 and "invalid choice" in r.stderr


def test_cmake_prefix_path_has_package_config():
    path = longcat.cmake_prefix_path()
    assert os.path.isfile(os.path.join(path, "longcat", "longcatConfig.cmake"))


def test_measure_interleaved_hands_back_each_round():
    from longcat.bench.common import measure_interleaved

    calls = []
    rounds: list = []
    medians = measure_interleaved([lambda: calls.append("a"), lambda: calls.append("b")], min_time=0.0,
                                  warmup=1, min_rounds=4, rounds=rounds)
    assert calls == ["a", "b"] + ["a", "b"] * 4  # warm-up, then alternation
    assert len(rounds) == 4 and all(len(r) == 2 and min(r) >= 0 for r in rounds)
    assert medians == [statistics.median(r[i] for r in rounds) for i in range(2)]


def test_measure_interleaved_runs_before_each_untimed():
    from longcat.bench.common import measure_interleaved

    calls = []
    medians = measure_interleaved([lambda: calls.append("a"), lambda: calls.append("b")], min_time=0.0,
                                  warmup=1, min_rounds=3, before_each=lambda: (calls.append("x"), time.sleep(0.02)))
    assert calls == ["a", "b"] + ["x", "a", "x", "b"] * 3  # warm-up without it, then before every timed call
    assert max(medians) < 0.01  # its 20 ms sleep is not in the times


def test_measure_interleaved_untimed_calls_of_the_same_function():
    from longcat.bench.common import measure_interleaved

    calls = []

    def slow_when_untimed(name):
        # The untimed call sleeps, the timed one does not: a time under 10 ms shows the
        # untimed call was left out of it.
        def fn():
            calls.append(name)
            if len(calls) % 2 == 1 and len(calls) > 2:
                time.sleep(0.02)
        return fn

    medians = measure_interleaved([slow_when_untimed("a"), slow_when_untimed("b")], min_time=0.0, warmup=1,
                                  min_rounds=3, untimed_before=1)
    assert calls == ["a", "b"] + ["a", "a", "b", "b"] * 3  # each timed call right after one of itself
    assert max(medians) < 0.01
    with pytest.raises(ValueError, match="untimed_before"):
        measure_interleaved([lambda: None], untimed_before=-1)


def test_measure_interleaved_untimed_calls_last_at_least_untimed_min_s():
    from longcat.bench.common import measure_interleaved

    calls = []
    measure_interleaved([lambda: (calls.append("a"), time.sleep(0.004))], min_time=0.0, warmup=0, min_rounds=2,
                        untimed_before=1, untimed_min_s=0.02)
    # Each round: untimed calls of 4 ms until 20 ms have passed (5 or more), then the timed one.
    assert len(calls) >= 2 * 6
    with pytest.raises(ValueError, match="untimed_min_s"):
        measure_interleaved([lambda: None], untimed_before=1, untimed_min_s=float("nan"))
