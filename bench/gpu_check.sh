#!/usr/bin/env bash
# One command for a GPU machine: build longcat with CUDA (sm_90a), run the CUDA tests and the
# CPU op tests, write the ptxas resource report, run the GPU benchmarks, print a summary.
# Uses the machine's python3 (which must have torch with CUDA, nanobind, scikit-build-core,
# cmake, ninja, pytest, hypothesis, rich); nothing is downloaded. Results go to $OUT if set
# (the device tool's output folder), else to gpu-results/.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
out=${OUT:-$root/gpu-results}
mkdir -p "$out"
log() { echo "== $*" | tee -a "$out/summary.txt"; }
start=$SECONDS

nvidia-smi -L 2>&1 | tee "$out/nvidia-smi.txt"
venv=${TMPDIR:-/tmp}/longcat-gpu-venv
[ -x "$venv/bin/python" ] || python3 -m venv --system-site-packages "$venv"
py=$venv/bin/python
log "build (LONGCAT_CUDA=ON)"
t0=$SECONDS
LONGCAT_CUDA=ON "$py" -m pip install -q --no-build-isolation --no-deps -e . \
  -Cbuild-dir=build/gpu > "$out/build.log" 2>&1 || { tail -50 "$out/build.log"; log "BUILD FAILED"; exit 1; }
log "build took $((SECONDS - t0)) s"
"$py" -m longcat.cli info | tee "$out/info.txt"

log "ptxas resource report"
"$py" tools/cuda_resource_report.py --out "$out/cuda_resources.json" 2>&1 | tail -20

log "tests/cuda"
"$py" -m pytest -q tests/cuda 2>&1 | tee "$out/tests_cuda.txt" | tail -15
cuda_rc=${PIPESTATUS[0]}
log "tests/ops (CPU kernels on this machine's CPU: $("$py" -c 'import longcat; print(longcat.cpu_isa())'))"
"$py" -m pytest -q tests/ops 2>&1 | tee "$out/tests_ops.txt" | tail -5
ops_rc=${PIPESTATUS[0]}

log "benchmarks (cuda)"
LONGCAT_BENCH_DIR="$out" "$py" -m longcat.cli bench all --device cuda 2>&1 | tee "$out/bench_cuda.txt"
log "summary: tests/cuda rc=$cuda_rc, tests/ops rc=$ops_rc, total $((SECONDS - start)) s"
[ "$cuda_rc" = 0 ] && [ "$ops_rc" = 0 ]
