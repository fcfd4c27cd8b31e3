"""The summary of bench/gpu_check.sh: reads what the stages left in the work folder (stages.tsv,
build_info.json, the pytest JUnit XML, the compute-sanitizer reports, the benchmark JSON and
markdown files) and writes OUT/summary.json, OUT/summary.md and OUT/<area>.md, one per benchmark
area. With the log that makes at most 8 files. Exit status 0 when every stage passed.

Usage: python tools/gpu_check_summary.py --work DIR --out DIR [--total-s N] [--stopped MESSAGE]
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

MAX_BENCH_TABLES = 5  # + gpu_check.log, summary.json, summary.md = 8 files


def read_stages(work: Path) -> list[dict]:
    path = work / "stages.tsv"
    if not path.exists():
        return []
    stages = []
    for line in path.read_text().splitlines():
        name, rc, seconds, limit = line.split("\t")
        rc = int(rc)
        status = "passed" if rc == 0 else "timeout" if rc in (124, 137) else "skipped" if rc == -1 else "failed"
        stages.append({"stage": name, "status": status, "exit": rc, "seconds": int(seconds), "limit_s": int(limit)})
    # gpu_check.sh compiles the CUDA files itself when the prebuilt objects do not link there.
    names = {s["stage"]: s for s in stages}
    if names.get("build", {}).get("status") == "failed" and names.get("build_cuda_here", {}).get("status") == "passed":
        names["build"]["status"] = "failed, recovered by build_cuda_here"
    return stages


def read_tests(work: Path) -> dict | None:
    path = work / "tests_cuda.xml"
    if not path.exists():
        return None
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    totals = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    failed = []
    for case in root.iter("testcase"):
        for kind in ("failure", "error"):
            node = case.find(kind)
            if node is not None:
                message = (node.get("message") or node.text or "").strip().splitlines()
                failed.append({"test": f"{case.get('classname')}::{case.get('name')}", "kind": kind,
                               "message": message[0][:300] if message else ""})
    totals["passed"] = totals["tests"] - totals["failures"] - totals["errors"] - totals["skipped"]
    return {**totals, "failed": failed}


def read_sanitizer(work: Path) -> dict:
    found = {}
    for path in sorted(work.glob("sanitizer_*.txt")):
        text = path.read_text(errors="replace")
        lines = [ln.strip() for ln in text.splitlines() if re.search(r"(ERROR|RACECHECK) SUMMARY", ln)]
        cases = [ln.strip() for ln in text.splitlines() if re.match(r"^\w+: ok \(", ln.strip())]
        found[path.stem.removeprefix("sanitizer_")] = {"summary": lines, "cases_ok": cases}
    return found


def read_benchmarks(work: Path) -> dict:
    bench = {}
    for path in sorted((work / "bench").glob("*.json")):
        bench[path.stem] = json.loads(path.read_text())
    return bench


def markdown(summary: dict) -> str:
    lines = ["# GPU check", ""]
    if summary.get("stopped"):
        lines += [f"**Stopped:** {summary['stopped']}", ""]
    lines += [f"Overall: **{summary['status']}** in {summary['total_s']} s. Build: "
              + ", ".join(f"{k} {v}" for k, v in summary.get("build_info", {}).items()
                          if k in ("version", "cuda", "cuda_archs", "cutlass")), ""]
    lines += ["| stage | status | seconds | limit |", "|---|---|---|---|"]
    lines += [f"| {s['stage']} | {s['status']} (exit {s['exit']}) | {s['seconds']} | {s['limit_s']} |"
              for s in summary["stages"]]
    tests = summary.get("tests_cuda")
    if tests:
        lines += ["", f"tests/cuda: {tests['passed']} passed, {tests['failures']} failed, {tests['errors']} errors, "
                      f"{tests['skipped']} skipped"]
        lines += [f"- `{f['test']}` ({f['kind']}): {f['message']}" for f in tests["failed"][:30]]
    for tool, rep in summary.get("sanitizer", {}).items():
        lines += ["", f"compute-sanitizer {tool}: " + ("; ".join(rep["summary"]) or "no summary line"),
                  "  cases: " + (", ".join(rep["cases_ok"]) or "none finished")]
    if summary.get("benchmarks"):
        lines += ["", "Benchmark tables: " + ", ".join(f"{a}.md" for a in summary["benchmarks"])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--total-s", type=int, default=0)
    p.add_argument("--stopped", default=None, help="why the check stopped early")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    stages = read_stages(args.work)
    info_path = args.work / "build_info.json"
    summary = {
        "status": "stopped" if args.stopped else
                  "passed" if stages and all(s["status"] in ("passed", "skipped") or "recovered" in s["status"]
                                             for s in stages) else "failed",
        "stopped": args.stopped,
        "total_s": args.total_s,
        "stages": stages,
        "build_info": json.loads(info_path.read_text()) if info_path.exists() else {},
        "tests_cuda": read_tests(args.work),
        "sanitizer": read_sanitizer(args.work),
        "benchmarks": read_benchmarks(args.work),
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (args.out / "summary.md").write_text(markdown(summary))
    for path in sorted((args.work / "bench").glob("*.md"))[:MAX_BENCH_TABLES]:
        shutil.copy(path, args.out / path.name)
    print(markdown(summary))
    return 0 if summary["status"] == "passed" else 1


if __name__ == "__main__":
    sys.exit(main())
