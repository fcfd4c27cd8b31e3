#!/usr/bin/env python3
"""Per-kernel resource usage of the CUDA kernels, as ptxas reports it.

Compiles every ``csrc/cuda/*.cu`` to a cubin for one architecture (default sm_90a) with
``-Xptxas -v``, parses what ptxas prints for each function (registers, spill stores / loads,
shared memory, stack frame) and writes one JSON record per function:

    {"kernel": mangled name, "demangled": c++filt's name (when c++filt exists),
     "kind": "kernel" (a __global__ entry) or "function" (a non-inlined device function),
     "file": "csrc/cuda/norm.cu", "arch": "sm_90a", "registers": 22, "spill_stores": 0,
     "spill_loads": 0, "smem_bytes": 128, "stack_bytes": 0, "barriers": 1, "cmem_bytes": ...}

plus the files compiled, the flags and the nvcc version, and prints a short table.
tests/test_cuda_resources.py runs it and fails on any spill, so a kernel change that pushes
registers to local memory shows up in CI, which has nvcc but no GPU.

Usage:  python tools/cuda_resource_report.py [--out build/cuda_resources.json] [--jobs 2]
Without nvcc on PATH it prints a note and exits 0, writing nothing. A failed compile exits 1.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CUDA_DIR = os.path.join("csrc", "cuda")
DEFAULT_OUT = os.path.join("build", "cuda_resources.json")

# The flags CMakeLists.txt gives the CUDA sources that matter for code generation.
# (-DNDEBUG: CMake's Release flags; CUTLASS's device asserts change register counts.)
NVCC_FLAGS = ["-std=c++17", "-O3", "-DNDEBUG", "--expt-relaxed-constexpr",
              "-DLONGCAT_BUILDING_LIBRARY", "-DLONGCAT_WITH_CUDA_RUNTIME=1"]

# ---- ptxas -v output (checked with nvcc 13.0) -------------------------------------------------
#   ptxas info    : Compiling entry function '_ZN...norm_kernel...' for 'sm_90a'
#   ptxas info    : Function properties for _ZN...norm_kernel...
#       0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
#   ptxas info    : Used 22 registers, used 1 barriers, 128 bytes smem
# Older toolkits add ", 400 bytes cmem[0]" to the "Used" line; non-inlined device functions
# get a "Function properties" block without "Compiling entry function" and "Used" lines.
_RE_ENTRY = re.compile(r"Compiling entry function '([^']+)' for '([^']+)'")
_RE_PROPS = re.compile(r"Function properties for (\S+)")
_RE_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_RE_USED = re.compile(r"Used (\d+) registers")
_RE_SMEM = re.compile(r"(\d+) bytes smem")
_RE_BARRIERS = re.compile(r"used (\d+) barriers")
_RE_CMEM = re.compile(r"(\d+) bytes cmem\[(\d+)\]")


def parse_ptxas(text: str, file: str, default_arch: str) -> list[dict]:
    """One record per function in ptxas -v output, in the order ptxas printed them."""
    records: dict[str, dict] = {}
    current: Optional[dict] = None

    def record(name: str, kind: str, arch: str) -> dict:
        if name not in records:
            records[name] = {"kernel": name, "kind": kind, "file": file, "arch": arch,
                             "registers": None, "spill_stores": 0, "spill_loads": 0,
                             "smem_bytes": 0, "stack_bytes": 0, "barriers": 0, "cmem_bytes": 0}
        return records[name]

    for line in text.splitlines():
        m = _RE_ENTRY.search(line)
        if m:
            current = record(m.group(1), "kernel", m.group(2))
            continue
        m = _RE_PROPS.search(line)
        if m:
            name = m.group(1)
            current = records.get(name) or record(name, "function", default_arch)
            continue
        if current is None:
            continue
        m = _RE_FRAME.search(line)
        if m:
            current["stack_bytes"], current["spill_stores"], current["spill_loads"] = map(int, m.groups())
            continue
        m = _RE_USED.search(line)
        if m:
            current["registers"] = int(m.group(1))
            s = _RE_SMEM.search(line)
            current["smem_bytes"] = int(s.group(1)) if s else 0
            b = _RE_BARRIERS.search(line)
            current["barriers"] = int(b.group(1)) if b else 0
            current["cmem_bytes"] = sum(int(c.group(1)) for c in _RE_CMEM.finditer(line))
    return list(records.values())


# ---- environment ------------------------------------------------------------------------------
def nvcc_version(nvcc: str) -> str:
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    m = re.search(r"release [0-9.]+, V([0-9.]+)", out)
    return m.group(1) if m else out.strip().splitlines()[-1] if out.strip() else "unknown"


def cutlass_include(explicit: Optional[str]) -> Optional[str]:
    """CUTLASS headers: --cutlass-include, $CUTLASS_DIR, or the nvidia-cutlass wheel (as cmake/FindCUTLASS.cmake)."""
    candidates = []
    if explicit:
        candidates.append(explicit)
    if os.environ.get("CUTLASS_DIR"):
        candidates += [os.path.join(os.environ["CUTLASS_DIR"], "include"), os.environ["CUTLASS_DIR"]]
    try:
        import cutlass_library  # noqa: PLC0415  (optional)
        candidates.append(os.path.join(os.path.dirname(cutlass_library.__file__), "source", "include"))
    except Exception:  # not installed, or broken: the kernels that need CUTLASS will fail to compile
        pass
    for c in candidates:
        if os.path.isfile(os.path.join(c, "cutlass", "version.h")):
            return c
    return None


def project_version() -> str:
    with open(os.path.join(ROOT, "CMakeLists.txt")) as f:
        m = re.search(r"project\(longcat VERSION ([0-9.]+)", f.read())
    return m.group(1) if m else "0.0.0"


def build_config_dir(tmp: str) -> tuple[str, str]:
    """A folder holding longcat/build_config.h: the newest one a build made, else one generated
    here from the template with placeholder values. Returns (folder, how it was found)."""
    found = glob.glob(os.path.join(ROOT, "build", "*", "generated", "longcat", "build_config.h"))
    if found:
        newest = max(found, key=os.path.getmtime)
        folder = os.path.dirname(os.path.dirname(newest))
        return folder, os.path.relpath(folder, ROOT)
    template = os.path.join(ROOT, "csrc", "include", "longcat", "build_config.h.in")
    with open(template) as f:
        text = f.read()
    values = {"PROJECT_VERSION": project_version(), "LONGCAT_WITH_CUDA": "ON"}
    text = re.sub(r"@([A-Za-z0-9_]+)@", lambda m: values.get(m.group(1), "unknown"), text)
    folder = os.path.join(tmp, "generated")
    os.makedirs(os.path.join(folder, "longcat"))
    with open(os.path.join(folder, "longcat", "build_config.h"), "w") as f:
        f.write(text)
    return folder, "generated from build_config.h.in (placeholder values)"


def demangle(names: list[str]) -> dict[str, str]:
    cxxfilt = shutil.which("c++filt")
    if not cxxfilt or not names:
        return {}
    out = subprocess.run([cxxfilt], input="\n".join(names) + "\n", capture_output=True, text=True)
    lines = out.stdout.splitlines()
    if out.returncode != 0 or len(lines) != len(names):
        return {}
    return dict(zip(names, lines))


# ---- compile ----------------------------------------------------------------------------------
def compile_one(nvcc: str, src: str, arch: str, includes: list[str], tmp: str,
                defines: Optional[list[str]] = None) -> dict:
    rel = os.path.relpath(src, ROOT)
    cubin = os.path.join(tmp, os.path.basename(src) + ".cubin")
    cmd = [nvcc, "-cubin", f"-arch={arch}", "-Xptxas", "-v", *NVCC_FLAGS, *(defines or []),
           *[f"-I{d}" for d in includes], src, "-o", cubin]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - t0
    output = p.stdout + p.stderr
    return {"file": rel, "ok": p.returncode == 0, "returncode": p.returncode, "seconds": seconds,
            "output": output, "records": parse_ptxas(output, rel, arch) if p.returncode == 0 else []}


def short_name(rec: dict, width: int = 72) -> str:
    name = rec.get("demangled") or rec["kernel"]
    name = name.replace("(anonymous namespace)::", "")
    if rec.get("demangled") and name.endswith(")"):  # drop the parameter list
        depth = 0
        for i in range(len(name) - 1, -1, -1):
            depth += {")": 1, "(": -1}.get(name[i], 0)
            if depth == 0:
                name = name[:i] if i > 0 else name
                break
    return name if len(name) <= width else name[: width - 3] + "..."


def print_table(records: list[dict]) -> None:
    head = f"{'kernel':<72} {'regs':>4} {'spill st/ld':>11} {'smem':>6} {'stack':>5}  file"
    print(head)
    print("-" * len(head))
    for r in records:
        regs = "-" if r["registers"] is None else str(r["registers"])
        spill = f"{r['spill_stores']}/{r['spill_loads']}"
        flag = "  <-- SPILLS" if r["spill_stores"] or r["spill_loads"] else ""
        print(f"{short_name(r):<72} {regs:>4} {spill:>11} {r['smem_bytes']:>6} {r['stack_bytes']:>5}"
              f"  {os.path.basename(r['file'])}{flag}")


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=DEFAULT_OUT,
                    help=f"JSON report path, relative to the repo root unless absolute (default {DEFAULT_OUT})")
    ap.add_argument("--jobs", "-j", type=int, default=2, help="parallel nvcc processes (default 2)")
    ap.add_argument("--arch", default="sm_90a", help="target architecture (default sm_90a)")
    ap.add_argument("--cutlass-include", default=None, help="CUTLASS include dir (default: $CUTLASS_DIR or the nvidia-cutlass wheel)")
    ap.add_argument("--quiet", "-q", action="store_true", help="no table")
    args = ap.parse_args(argv)

    nvcc = shutil.which("nvcc")
    if nvcc is None:
        print("cuda_resource_report: nvcc is not on PATH; nothing compiled, no report written.")
        return 0
    sources = sorted(glob.glob(os.path.join(ROOT, CUDA_DIR, "*.cu")))
    if not sources:
        print(f"cuda_resource_report: no .cu files under {CUDA_DIR}; no report written.")
        return 0
    out_path = args.out if os.path.isabs(args.out) else os.path.join(ROOT, args.out)
    version = nvcc_version(nvcc)

    with tempfile.TemporaryDirectory(prefix="longcat_ptxas_") as tmp:
        cfg_dir, cfg_from = build_config_dir(tmp)
        includes = [os.path.join(ROOT, "csrc", "include"), os.path.join(ROOT, "csrc"), cfg_dir]
        cutlass = cutlass_include(args.cutlass_include)
        defines = []
        if cutlass:
            includes.append(cutlass)
            defines.append("-DLONGCAT_HAVE_CUTLASS=1")  # as CMakeLists.txt when CUTLASS is found
        print(f"cuda_resource_report: nvcc {version}, {args.arch}, {len(sources)} file(s), "
              f"{args.jobs} job(s); build_config.h: {cfg_from}; CUTLASS: {'yes' if cutlass else 'not found'}",
              flush=True)
        t0 = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            results = list(pool.map(lambda s: compile_one(nvcc, s, args.arch, includes, tmp, defines), sources))
        total = time.perf_counter() - t0

    failed = [r for r in results if not r["ok"]]
    if failed:
        for r in failed:
            tail = "\n".join(r["output"].strip().splitlines()[-40:])
            print(f"\ncuda_resource_report: nvcc failed on {r['file']} (exit {r['returncode']}):\n{tail}",
                  file=sys.stderr)
        print(f"\ncuda_resource_report: {len(failed)} of {len(results)} file(s) failed to compile: "
              f"{', '.join(r['file'] for r in failed)}; no report written.", file=sys.stderr)
        return 1

    records = [rec for r in results for rec in r["records"]]
    names = demangle([rec["kernel"] for rec in records])
    for rec in records:
        if rec["kernel"] in names:
            rec["demangled"] = names[rec["kernel"]]
    # key order: names first, numbers after
    keys = ["kernel", "demangled", "kind", "file", "arch", "registers", "spill_stores", "spill_loads",
            "smem_bytes", "stack_bytes", "barriers", "cmem_bytes"]
    records = [{k: rec[k] for k in keys if k in rec} for rec in records]

    report = {
        "generated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "nvcc_version": version,
        "arch": args.arch,
        "flags": ["-cubin", f"-arch={args.arch}", "-Xptxas", "-v", *NVCC_FLAGS, *defines],
        "cutlass": cutlass is not None,
        "build_config": cfg_from,
        "files": [r["file"] for r in results],
        "compile_seconds": {r["file"]: round(r["seconds"], 2) for r in results},
        "kernels": records,
    }
    os.makedirs(os.path.dirname(out_path) or ".", exist_ok=True)
    tmp_out = out_path + ".tmp"
    with open(tmp_out, "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    os.replace(tmp_out, out_path)  # never leave a half-written report

    if not args.quiet:
        print_table(records)
    spilling = [r for r in records if r["spill_stores"] or r["spill_loads"]]
    n_kernels = sum(r["kind"] == "kernel" for r in records)
    print(f"{n_kernels} kernel(s) in {len(results)} file(s), {len(spilling)} spilling; "
          f"compiled in {total:.1f} s; report: {os.path.relpath(out_path, ROOT) if out_path.startswith(ROOT) else out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
