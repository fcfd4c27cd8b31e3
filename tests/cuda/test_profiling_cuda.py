"""Ops in GPU profilers: torch.profiler shows each op under its torch.library name with its CUDA
kernels, and LONGCAT_NVTX=1 switches on the NVTX ranges (csrc/cuda/nvtx.cuh) without changing
results (without Nsight attached the NVTX calls find no injection library and do nothing)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

import longcat
from longcat import ops

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or longcat.build_info().get("cuda", "off").lower() != "on",
    reason="needs a CUDA device and a longcat built with its CUDA kernels")


def test_ops_and_kernels_in_torch_profiler():
    x, w = torch.randn(64, 256, device="cuda").bfloat16(), torch.randn(256, device="cuda").bfloat16()
    kv = torch.randn(4, 64, 1, 576, device="cuda").bfloat16()
    table = torch.tensor([[0, 1], [2, 3]], dtype=torch.int32, device="cuda")
    lens = torch.tensor([100, 70], dtype=torch.int32, device="cuda")
    q = torch.randn(2, 1, 16, 576, device="cuda").bfloat16()
    ops.rms_norm(x, w)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        ops.rms_norm(x, w)
        ops.mla_decode(q, kv, table, lens)
        torch.cuda.synchronize()
    events = prof.events()
    names = {e.name for e in events}
    assert "longcat::rms_norm" in names and "longcat::mla_decode" in names
    kernels = {e.name for e in events if e.device_type == torch.autograd.DeviceType.CUDA}
    assert any("decode_kernel" in k for k in kernels), sorted(kernels)


SCRIPT = """
import torch, longcat
from longcat import ops
from longcat.ops import reference
x, w = torch.randn(32, 512, device="cuda"), torch.randn(512, device="cuda")
torch.testing.assert_close(ops.rms_norm(x, w), reference.rms_norm(x, w, 1e-6), rtol=1e-5, atol=1e-5)
print("ok")
"""


@pytest.mark.parametrize("flag", ["1", "0"])
def test_nvtx_switch(flag):
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "LONGCAT_NVTX": flag})
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
