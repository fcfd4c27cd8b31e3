#!/usr/bin/env bash
# One command for a GPU machine: build longcat with CUDA (sm_90a), run the CUDA tests (the
# attention kernels first, with their own log) and the CPU op tests, write the ptxas resource
# report, run the GPU benchmarks (attention first), print a summary.
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

log "tests/cuda/test_mla_cuda.py (MLA / SSA decode and prefill, RoPE, paged cache)"
"$py" -m pytest -q tests/cuda/test_mla_cuda.py 2>&1 | tee "$out/tests_mla_cuda.txt" | tail -15
attn_rc=${PIPESTATUS[0]}
log "tests/cuda (the rest)"
"$py" -m pytest -q tests/cuda --ignore=tests/cuda/test_mla_cuda.py 2>&1 | tee "$out/tests_cuda.txt" | tail -15
cuda_rc=${PIPESTATUS[0]}
[ "$attn_rc" = 0 ] || cuda_rc=$attn_rc
log "tests/ops (CPU kernels on this machine's CPU: $("$py" -c 'import longcat; print(longcat.cpu_isa())'))"
"$py" -m pytest -q tests/ops 2>&1 | tee "$out/tests_ops.txt" | tail -5
ops_rc=${PIPESTATUS[0]}

areas=$("$py" -c 'from longcat.bench import AREAS; print(" ".join(AREAS))')
log "benchmark mla (cuda): MLA decode GB/s and TFLOP/s (FlashMLA: 3000 GB/s, 660 TFLOP/s on H800)"
case " $areas " in
  *" mla "*)
    LONGCAT_BENCH_DIR="$out" "$py" -m longcat.cli bench mla --device cuda 2>&1 | tee "$out/bench_mla_cuda.txt" ;;
  *) log "no 'mla' bench area in this build (longcat.bench.AREAS: $areas)" ;;
esac
log "benchmarks (cuda, the other areas)"
for area in $areas; do
  [ "$area" = mla ] && continue
  LONGCAT_BENCH_DIR="$out" "$py" -m longcat.cli bench "$area" --device cuda 2>&1 | tee -a "$out/bench_cuda.txt"
done
log "summary: tests/cuda rc=$cuda_rc (attention rc=$attn_rc), tests/ops rc=$ops_rc, total $((SECONDS - start)) s"
[ "$cuda_rc" = 0 ] && [ "$ops_rc" = 0 ]
