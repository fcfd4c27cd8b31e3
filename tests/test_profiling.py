"""Ops in profilers: each op shows in torch.profiler traces under its torch.library name
(``longcat::rms_norm``) even though eager calls normally skip the dispatcher, the fast path
stays on when no profiler runs, and ``longcat bench <area> --profile DIR`` writes one
Chrome/Perfetto trace per timed function of each benchmark case. tests/cuda/test_profiling_cuda.py
checks the CUDA side (kernels in the trace, NVTX ranges switched on by LONGCAT_NVTX=1)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import torch
from torch.profiler import ProfilerActivity, profile

from longcat import ops
from longcat.ops._common import eager_fast_path


def profiled_names(fn) -> set[str]:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return {e.key for e in prof.key_averages()}


def small_decode():
    kv = torch.randn(3, 64, 1, 576).bfloat16()
    table = torch.tensor([[2, 0], [1, 0]], dtype=torch.int32)
    lens = torch.tensor([100, 30], dtype=torch.int32)
    return torch.randn(2, 1, 4, 576).bfloat16(), kv, table, lens


def test_ops_show_in_torch_profiler_on_cpu():
    x, w = torch.randn(8, 64), torch.randn(64)
    q, kv, table, lens = small_decode()
    hidden, router = torch.randn(5, 32), torch.randn(12, 32)

    def work():
        ops.rms_norm(x, w)
        ops.mla_decode(q, kv, table, lens)
        ids, weights = ops.moe_route(hidden, router, None, 2, 8, 4)
        x_perm, _, _, _, slot = ops.moe_dispatch(hidden, ids, 8)
        ops.moe_combine(x_perm, slot, ids, weights, hidden, 8)

    names = profiled_names(work)
    for op in ("rms_norm", "mla_decode", "moe_route", "moe_dispatch", "moe_combine"):
        assert f"longcat::{op}" in names, sorted(n for n in names if "longcat" in n)


def test_fast_path_is_on_without_a_profiler():
    x = torch.randn(4, 8)
    assert eager_fast_path(x)
    with profile(activities=[ProfilerActivity.CPU]):
        assert not eager_fast_path(x)
    assert eager_fast_path(x)


def test_bench_profile_writes_a_trace_per_case(tmp_path):
    traces = tmp_path / "traces"
    r = subprocess.run([sys.executable, "-m", "longcat", "bench", "norm", "--quick", "--out", str(tmp_path),
                        "--profile", str(traces)], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "LONGCAT_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    rows = json.loads((tmp_path / "norm.json").read_text())["rows"]
    files = sorted(os.listdir(traces))
    assert files and not [f for f in files if f.startswith(".pending")]
    assert sorted(f for row in rows for f in row["trace"]) == files
    for row in rows:
        assert row["trace"] and all(f.startswith("norm_") for f in row["trace"])
        # The case's first timed function is longcat's own op; its trace names it.
        events = json.loads((traces / row["trace"][0]).read_text())["traceEvents"]
        assert any(e.get("name") == f"longcat::{row['op']}" for e in events), row
