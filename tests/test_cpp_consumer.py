"""The installed C++ package works for a downstream CMake project, with no torch anywhere.

tests/cpp_consumer is such a project: ``find_package(longcat 0.1 CONFIG REQUIRED)``, link
``longcat::kernels``, run RMSNorm on a CPU buffer and catch a ``longcat::Error``. This test
configures and builds it against ``longcat.cmake_prefix_path()``, runs it and checks its output
against numpy.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess

import numpy as np
import pytest

import longcat

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONSUMER = os.path.join(ROOT, "tests", "cpp_consumer")
ROWS, COLS, EPS = 3, 8, 1e-6


def _installed_include_dir() -> str:
    # <prefix>/lib/cmake -> <prefix>/include, for a wheel (site-packages/longcat/...) and a GNU install
    return os.path.normpath(os.path.join(longcat.cmake_prefix_path(), os.pardir, os.pardir, "include"))


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert p.returncode == 0, f"{' '.join(cmd)} failed (exit {p.returncode}):\n{p.stdout}\n{p.stderr}"
    return p


@pytest.fixture(scope="module")
def consumer_output(tmp_path_factory) -> str:
    cmake = shutil.which("cmake")
    assert cmake is not None, "cmake is not on PATH (building longcat itself needs it)"
    build = tmp_path_factory.mktemp("cpp_consumer")
    cfg = [cmake, "-S", CONSUMER, "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
           f"-DCMAKE_PREFIX_PATH={longcat.cmake_prefix_path()}"]
    if shutil.which("ninja"):
        cfg += ["-G", "Ninja"]
    _run(cfg, timeout=300)
    _run([cmake, "--build", str(build)], timeout=600)
    exe = os.path.join(str(build), "longcat_consumer")
    return _run([exe], timeout=60).stdout


def _reference() -> np.ndarray:
    """What main.cpp computes, in numpy: y = w * x / sqrt(mean(x^2) + eps)."""
    x = (0.25 * np.arange(ROWS * COLS, dtype=np.float64) - 2.5).astype(np.float32).reshape(ROWS, COLS)
    w = (0.5 + 0.125 * np.arange(COLS, dtype=np.float64)).astype(np.float32)
    xd = x.astype(np.float64)
    return w.astype(np.float64) * xd / np.sqrt((xd * xd).mean(-1, keepdims=True) + EPS)


@pytest.mark.slow
def test_consumer_rms_norm_matches_numpy(consumer_output):
    y = np.full((ROWS, COLS), np.nan)
    for m in re.finditer(r"^y (\d+) (\d+) (\S+)$", consumer_output, re.M):
        y[int(m.group(1)), int(m.group(2))] = float(m.group(3))
    assert not np.isnan(y).any(), f"missing outputs in:\n{consumer_output}"
    np.testing.assert_allclose(y, _reference(), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_consumer_error_handling(consumer_output):
    m = re.search(r"^error=(.*)$", consumer_output, re.M)
    assert m, consumer_output
    assert "weight" in m.group(1) and "<none raised>" not in m.group(1), m.group(1)


@pytest.mark.slow
def test_consumer_build_info(consumer_output):
    version = re.search(r"^version=(.*)$", consumer_output, re.M)
    assert version and version.group(1) == longcat.__version__, consumer_output
    cuda = re.search(r"^cuda=(on|off)$", consumer_output, re.M)
    assert cuda and cuda.group(1) == longcat.build_info()["cuda"].lower(), consumer_output


@pytest.mark.slow
def test_consumer_kv_copy_queue(consumer_output):
    # main.cpp's transfer: sources [5, 0, 3, 3, 1] -> destinations [7, 2, 0, 4, 1] in chunks of
    # 2 pages, for 2 layers of 2-row pages; untouched destination pages keep -1.
    tickets = re.search(r"^kvq_tickets=(.*)$", consumer_output, re.M)
    assert tickets and tickets.group(1) == "1,2,3", consumer_output
    e = np.arange(2 * 576) % 97
    want = {(layer, p): -1.0 * e.size for layer in range(2) for p in range(8)}
    for s, d in zip([5, 0, 3, 3, 1], [7, 2, 0, 4, 1]):
        for layer in range(2):
            want[layer, d] = float((layer * 10000 + s * 100 + e).sum())
    got = {(int(m.group(1)), int(m.group(2))): float(m.group(3))
           for m in re.finditer(r"^kvq (\d+) (\d+) (\S+)$", consumer_output, re.M)}
    assert got == want
    err = re.search(r"^kvq_error=(.*)$", consumer_output, re.M)
    assert err and "'dst_ids' must not repeat a destination page; page 6" in err.group(1), consumer_output


def _installed_headers() -> list[str]:
    inc = _installed_include_dir()
    assert os.path.isfile(os.path.join(inc, "longcat", "longcat.h")), f"no installed headers in {inc}"
    return [os.path.join(d, f) for d, _, fs in os.walk(inc) for f in fs]


def _includes_matching(pattern: str) -> list[str]:
    rx = re.compile(r'^\s*#\s*include\s*[<"](' + pattern + r')', re.M)
    bad = []
    for path in _installed_headers():
        with open(path, errors="replace") as f:
            bad += [f"{path}: #include {m.group(1)}" for m in rx.finditer(f.read())]
    return bad


def test_installed_headers_do_not_include_torch():
    bad = _includes_matching(r"torch/|ATen/|c10/")
    assert not bad, "installed headers pull in torch:\n" + "\n".join(bad)


def test_installed_headers_do_not_include_cuda():
    # longcatConfig.cmake promises consumers need no CUDA toolkit (Stream is a void*).
    bad = _includes_matching(r"cuda[_a-z0-9]*\.h")
    assert not bad, "installed headers need the CUDA toolkit:\n" + "\n".join(bad)
