"""Register spills in the CUDA kernels fail CI, which has nvcc but no GPU.

tools/cuda_resource_report.py compiles every csrc/cuda/*.cu for sm_90a with ``ptxas -v`` and
writes build/cuda_resources.json; this test (re)creates that report when it is missing or older
than the CUDA sources, then checks it: every file compiled, every file holds a kernel, nothing spills.
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "tools", "cuda_resource_report.py")
REPORT = os.path.join(ROOT, "build", "cuda_resources.json")

pytestmark = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH")


def _cu_files() -> list[str]:
    return sorted(os.path.relpath(p, ROOT).replace(os.sep, "/")
                  for p in glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cu")))


def _inputs() -> list[str]:
    """Everything the report depends on: the CUDA sources, the headers they include, the script."""
    paths = glob.glob(os.path.join(ROOT, "csrc", "cuda", "*"))
    paths += glob.glob(os.path.join(ROOT, "csrc", "include", "longcat", "*"))
    paths += glob.glob(os.path.join(ROOT, "csrc", "core", "*.h"))
    return paths + [SCRIPT]


def _report_is_current() -> bool:
    if not os.path.isfile(REPORT):
        return False
    mtime = os.path.getmtime(REPORT)
    if any(os.path.getmtime(p) > mtime for p in _inputs()):
        return False
    try:
        with open(REPORT) as f:
            files = json.load(f).get("files", [])
    except (OSError, ValueError):
        return False
    return sorted(files) == _cu_files()


@pytest.fixture(scope="module")
def report() -> dict:
    assert _cu_files(), "no csrc/cuda/*.cu files found: the report would check nothing"
    if not _report_is_current():
        p = subprocess.run([sys.executable, SCRIPT, "--out", REPORT, "--quiet"],
                           capture_output=True, text=True, cwd=ROOT, timeout=3600)
        assert p.returncode == 0, (f"tools/cuda_resource_report.py failed (exit {p.returncode}):\n"
                                   f"{p.stdout}\n{p.stderr}")
    with open(REPORT) as f:
        return json.load(f)


def test_every_cu_file_compiled(report):
    missing = sorted(set(_cu_files()) - set(report["files"]))
    assert not missing, f"not in {os.path.relpath(REPORT, ROOT)}: {missing}"


def test_every_file_has_kernels(report):
    per_file = {f: 0 for f in report["files"]}
    for k in report["kernels"]:
        if k["kind"] == "kernel":
            per_file[k["file"]] = per_file.get(k["file"], 0) + 1
    empty = sorted(f for f, n in per_file.items() if n == 0)
    assert not empty, f"ptxas reported no kernel for: {empty}"
    for k in report["kernels"]:
        if k["kind"] == "kernel":
            assert isinstance(k["registers"], int) and k["registers"] > 0, k


def test_no_register_spills(report):
    spills = [k for k in report["kernels"] if k["spill_stores"] > 0 or k["spill_loads"] > 0]
    lines = [f"  {k.get('demangled') or k['kernel']} ({k['file']}, {k['arch']}): "
             f"{k['registers']} registers, {k['spill_stores']} bytes spill stores, "
             f"{k['spill_loads']} bytes spill loads, {k['stack_bytes']} bytes stack"
             for k in spills]
    assert not spills, f"{len(spills)} function(s) spill registers to local memory:\n" + "\n".join(lines)
