"""The GPU check's parts that run without a GPU (bench/gpu_check.sh itself needs one; run it with
no GPU and it builds, then stops with "no GPU"): the scripts parse, the sources hash that decides
whether prebuilt CUDA objects are used, the summary (stages, tests, sanitizer, benchmark tables,
at most 8 files), and the compute-sanitizer cases on the CPU kernels, so that they keep up with the ops."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import gpu_check_summary  # noqa: E402


@pytest.mark.parametrize("script", ["bench/gpu_check.sh", "tools/gpu_prepare.sh"])
def test_scripts_parse(script):
    r = subprocess.run(["bash", "-n", os.path.join(ROOT, script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_sources_hash_is_stable():
    run = lambda: subprocess.run(["bash", os.path.join(ROOT, "tools", "gpu_prepare.sh"), "--sources-hash"],  # noqa: E731
                                 capture_output=True, text=True, check=True).stdout.strip()
    first = run()
    assert len(first) == 64 and run() == first


JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="0" failures="1"
skipped="1" tests="4"><testcase classname="tests.cuda.test_x" name="test_a"/><testcase classname="tests.cuda.test_x"
name="test_b"><failure message="AssertionError: out differs">trace</failure></testcase>
<testcase classname="tests.cuda.test_x" name="test_c"><skipped message="no"/></testcase>
<testcase classname="tests.cuda.test_x" name="test_d"/></testsuite></testsuites>"""


def make_work(tmp_path, failing_stage=False):
    work = tmp_path / "work"
    (work / "bench").mkdir(parents=True)
    rows = ["build\t0\t40\t150", "tests_cuda\t%d\t90\t200" % (1 if failing_stage else 0),
            "sanitizer_memcheck\t0\t25\t30", "sanitizer_racecheck\t124\t30\t30", "bench_mla\t0\t70\t110"]
    (work / "stages.tsv").write_text("\n".join(rows) + "\n")
    (work / "build_info.json").write_text(json.dumps({"version": "0.1.0", "cuda": "on", "cutlass": "4.2.0"}))
    (work / "tests_cuda.xml").write_text(JUNIT)
    (work / "sanitizer_memcheck.txt").write_text("decode: ok (3.1 s)\n========= ERROR SUMMARY: 0 errors\n")
    (work / "sanitizer_racecheck.txt").write_text("decode: ok (9.0 s)\n")
    for area in ("mla", "moe_gemm", "moe_route"):
        (work / "bench" / f"{area}.json").write_text(json.dumps({"area": area, "rows": [{"op": "x"}]}))
        (work / "bench" / f"{area}.md").write_text(f"## {area}\n")
    return work


def test_summary(tmp_path):
    work, out = make_work(tmp_path), tmp_path / "out"
    (out).mkdir()
    (out / "gpu_check.log").write_text("log\n")
    rc = gpu_check_summary.main(["--work", str(work), "--out", str(out), "--total-s", "300"])
    assert rc == 1  # racecheck timed out
    summary = json.loads((out / "summary.json").read_text())
    assert [s["status"] for s in summary["stages"]] == ["passed", "passed", "passed", "timeout", "passed"]
    tests = summary["tests_cuda"]
    assert (tests["tests"], tests["passed"], tests["failures"], tests["skipped"]) == (4, 2, 1, 1)
    assert tests["failed"] == [{"test": "tests.cuda.test_x::test_b", "kind": "failure",
                                "message": "AssertionError: out differs"}]
    assert summary["sanitizer"]["memcheck"]["summary"] == ["========= ERROR SUMMARY: 0 errors"]
    assert summary["sanitizer"]["racecheck"]["cases_ok"] == ["decode: ok (9.0 s)"]
    assert set(summary["benchmarks"]) == {"mla", "moe_gemm", "moe_route"}
    files = sorted(os.listdir(out))
    assert files == ["gpu_check.log", "mla.md", "moe_gemm.md", "moe_route.md", "summary.json", "summary.md"]
    assert len(files) <= 8
    md = (out / "summary.md").read_text()
    assert "| sanitizer_racecheck | timeout (exit 124) | 30 | 30 |" in md and "test_b" in md


def test_summary_of_a_recovered_build(tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    (work / "stages.tsv").write_text("build\t1\t20\t150\nbuild_cuda_here\t0\t150\t330\n")
    assert gpu_check_summary.main(["--work", str(work), "--out", str(out)]) == 0
    stages = json.loads((out / "summary.json").read_text())["stages"]
    assert stages[0]["status"] == "failed, recovered by build_cuda_here" and stages[1]["status"] == "passed"


def test_summary_of_a_stopped_check(tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    rc = gpu_check_summary.main(["--work", str(work), "--out", str(out), "--stopped", "no GPU: ..."])
    assert rc == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "stopped" and summary["stopped"] == "no GPU: ..." and summary["tests_cuda"] is None
    assert sorted(os.listdir(out)) == ["summary.json", "summary.md"]


def test_sanitizer_cases_run_on_cpu():
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "cuda_sanitize_cases.py"), "--device", "cpu"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert [ln.split(":")[0] for ln in r.stdout.splitlines()] == [
        "decode", "prefill", "grouped_gemm", "routing", "norm_and_cache"]
