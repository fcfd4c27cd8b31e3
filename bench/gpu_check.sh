#!/usr/bin/env bash
# The GPU check: build longcat with its CUDA kernels on an H200 machine, run tests/cuda, a short
# compute-sanitizer pass (memcheck + racecheck) and the quick GPU benchmarks, in about 6 minutes of
# GPU time, and leave at most 8 files in $OUT: gpu_check.log, summary.json, summary.md and one
# markdown table per benchmark area (mla.md, moe_gemm.md, moe_route.md).
#
# Through the device tool, from the repository root of a CPU machine with nvcc:
#   1. bash tools/gpu_prepare.sh        (once per source change: fills the ignored .gpu/, ~30 MB:
#                                        CUTLASS headers + csrc/cuda/*.cu compiled for sm_90a)
#   2. run(command="bash bench/gpu_check.sh", carry=[".gpu"], timeout_s=600)
# Without .gpu/ the script stops at once (no CUTLASS there); with stale objects (csrc/ or
# CMakeLists.txt changed since step 1), or objects that toolchain cannot link, it compiles the
# CUDA files on the GPU machine instead (untimed there; 273-297 s on 2 CPU cores here).
#
# What is built where: the CUDA objects (the slow part: CUTLASS grouped GEMM and the attention
# kernels) on the CPU machine; on the GPU machine only the C++ side (CPU kernels per ISA, the API,
# the nanobind module), because the module is tied to that machine's Python (3.12) and toolchain.
#
# That machine's python3 is itself a virtual environment holding torch (CUDA), nanobind,
# scikit-build-core, cmake, ninja, pytest, pytest-timeout; it is used directly (a venv made from it
# would see none of them) and nothing is downloaded: longcat is installed with pip --no-index into
# a scratch folder put on PYTHONPATH. LONGCAT_GPU_PYTHON overrides the interpreter (tests on a
# machine without a GPU: the script builds, then stops with "no GPU").
#
# Stages, each under `timeout` (seconds): build 150 (330 when compiling CUDA there; the variable
# LONGCAT_GPU_BUILD_LIMIT_S overrides it), tests/cuda 210 (pytest --timeout 90 per test), memcheck 30
# + racecheck 30, benchmarks 130 + 50 + 30; and all of them within 570 s (LONGCAT_GPU_BUDGET_S),
# so that the summary is written before the device tool's 600 s limit.
# Exit status: 0 when every stage passed, 1 when one failed, 2 on setup errors, 3 without a GPU.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
py=${LONGCAT_GPU_PYTHON:-python3}
out=${OUT:-$root/gpu-results}
work=${TMPDIR:-/tmp}/longcat-gpu-check
rm -rf "$work"
mkdir -p "$out" "$work/bench"
exec > >(tee -a "$out/gpu_check.log") 2>&1
start=$SECONDS
export PYTHONUNBUFFERED=1

# The whole check ends within LONGCAT_GPU_BUDGET_S (default 570: the device tool stops a command
# at 600 s), so the summary is always written: a stage gets at most what is left of it.
budget=${LONGCAT_GPU_BUDGET_S:-570}

# stage NAME LIMIT CMD...: runs CMD under timeout (SIGINT first: pytest still writes its report),
# records name, exit status, seconds, limit. With STAGE_LOG=FILE the output goes to FILE.
stage() {
  local name=$1 limit=$2 t0=$SECONDS rc left=$((budget - SECONDS - 15))
  shift 2
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -lt 5 ]; then
    echo "== [$name] skipped: the ${budget} s budget is spent"
    printf '%s\t124\t0\t0\n' "$name" >> "$work/stages.tsv"
    return 124
  fi
  echo "== [$name] (limit ${limit} s) $*"
  if [ -n "${STAGE_LOG:-}" ]; then
    timeout -s INT --kill-after=15 "$limit" "$@" > "$STAGE_LOG" 2>&1
  else
    timeout -s INT --kill-after=15 "$limit" "$@"
  fi
  rc=$?
  [ $rc = 124 ] || [ $rc = 137 ] && echo "== [$name] TIMED OUT after ${limit} s"
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" "$limit" >> "$work/stages.tsv"
  echo "== [$name] exit $rc, $((SECONDS - t0)) s"
  return $rc
}
summary() { "$py" tools/gpu_check_summary.py --work "$work" --out "$out" --total-s $((SECONDS - start)) "$@"; }
# fail_setup MESSAGE [STATUS]: the summary says why the check stopped; exit STATUS (default 2).
fail_setup() {
  echo "== STOP: $1"
  summary --stopped "$1"
  exit "${2:-2}"
}

# ---- setup: interpreter, packages, tools --------------------------------------------------------
echo "== gpu_check on $(hostname) at $(date -u +%FT%TZ), python: $(command -v "$py")"
"$py" - <<'EOF' || fail_setup "the interpreter lacks a package the check needs (above)"
import importlib, sys
print("python", sys.version.split()[0], sys.prefix)
missing = []
for name in ("torch", "nanobind", "scikit_build_core", "pytest", "numpy", "rich", "yaml"):
    try:
        m = importlib.import_module(name)
        print(f"  {name} {getattr(m, '__version__', '')}")
    except ImportError:
        missing.append(name)
for name in ("pytest_timeout",):
    if importlib.util.find_spec(name) is None:
        print(f"  {name}: missing (pytest runs without per-test timeouts)")
if missing:
    sys.exit("missing: " + ", ".join(missing))
EOF
for tool in cmake ninja nvcc compute-sanitizer nvidia-smi; do
  printf '  %-18s %s\n' "$tool" "$(command -v "$tool" || echo missing)"
done
command -v nvcc >/dev/null || fail_setup "nvcc is not on PATH (the C++ side links the CUDA runtime)"

# ---- CUTLASS and the prebuilt CUDA objects (.gpu/, from tools/gpu_prepare.sh) ----------------------
cutlass=$root/.gpu/cutlass
[ -f "$cutlass/include/cutlass/version.h" ] ||
  fail_setup "no CUTLASS headers in .gpu/cutlass: run 'bash tools/gpu_prepare.sh' on the CPU machine and carry .gpu"
objects=$root/.gpu/cuda-objects
want=$(bash tools/gpu_prepare.sh --sources-hash)
have=$(sed -n 's/^sources //p' "$objects/SOURCES" 2>/dev/null)
if [ -n "$have" ] && [ "$have" = "$want" ]; then
  echo "== prebuilt CUDA objects match the sources: $(tr '\n' ' ' < "$objects/SOURCES")"
  build_limit=150
else
  why="are missing (no $objects/SOURCES)"
  [ -n "$have" ] && why="are stale (compiled from other sources than these)"
  echo "== prebuilt CUDA objects $why: compiling csrc/cuda here"
  objects=""
  build_limit=330
fi

# ---- build: pip --no-index into a scratch folder, with CUTLASS required --------------------------
site=$work/site
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
# build STAGE OBJECTS LIMIT: a fresh scratch build; OBJECTS "" compiles csrc/cuda here.
build() {
  rm -rf "$site" "$work/build"
  STAGE_LOG=$work/build.log stage "$1" "${LONGCAT_GPU_BUILD_LIMIT_S:-$3}" \
    "$py" -m pip install -v --no-build-isolation --no-deps --no-index --disable-pip-version-check --target "$site" \
    --config-settings=build-dir="$work/build" --config-settings=cmake.define.LONGCAT_CUDA=ON \
    --config-settings=cmake.define.CUTLASS_DIR="$cutlass" --config-settings=cmake.define.LONGCAT_REQUIRE_CUTLASS=ON \
    --config-settings=cmake.define.LONGCAT_CUDA_OBJECTS="$2" .
}
build build "$objects" "$build_limit"
rc=$?
if [ $rc != 0 ] && [ $rc != 124 ] && [ -n "$objects" ]; then
  # Objects this machine's toolchain cannot link: it compiles them itself.
  grep -E 'CMake Error|error:|undefined reference' "$work/build.log" | head -10
  echo "== the build with the prebuilt CUDA objects failed (exit $rc): compiling csrc/cuda here instead"
  build build_cuda_here "" 330
  rc=$?
fi
if [ $rc != 0 ]; then
  grep -E 'CMake Error|error:|FATAL' "$work/build.log" | head -20
  tail -30 "$work/build.log"
  [ $rc = 124 ] || [ $rc = 137 ] && fail_setup "the build timed out" 1
  fail_setup "the build failed (exit $rc, log above)" 1
fi
grep -E 'longcat: (CUDA=|linking)' "$work/build.log"
export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
# The scratch install, not some other longcat the interpreter may already hold.
"$py" -c 'import json, longcat, os, sys
assert longcat.__file__.startswith(os.path.realpath(sys.argv[1])), f"imported {longcat.__file__}"
print(json.dumps(longcat.build_info()))' "$site" > "$work/build_info.json" ||
  fail_setup "the built longcat does not import from $site" 1
cat "$work/build_info.json"
"$py" - "$work/build_info.json" <<'EOF' || fail_setup "the build has no CUDA kernels or no CUTLASS" 1
import json, sys
info = json.load(open(sys.argv[1]))
ok = info.get("cuda") == "on" and info.get("cutlass", "not found")[:1].isdigit()
sys.exit(0 if ok else f"cuda={info.get('cuda')} cutlass={info.get('cutlass')}")
EOF

# ---- a GPU? -------------------------------------------------------------------------------------
command -v nvidia-smi >/dev/null && nvidia-smi -L
"$py" -c 'import torch; assert torch.cuda.is_available(), "torch.cuda.is_available() is False"; print(torch.cuda.get_device_name(0), torch.version.cuda)' ||
  fail_setup "no GPU: the build passed; tests/cuda, compute-sanitizer and the benchmarks need a CUDA device" 3

# ---- tests/cuda ----------------------------------------------------------------------------------
timeout_opt=()
"$py" -c 'import pytest_timeout' 2>/dev/null && timeout_opt=(--timeout=90)
stage tests_cuda 210 "$py" -m pytest tests/cuda -q -rfE -p no:cacheprovider "${timeout_opt[@]}" \
  --junitxml="$work/tests_cuda.xml"

# ---- compute-sanitizer on small decode, prefill, grouped-GEMM and routing cases ------------------
# No caching allocator: each tensor is its own cudaMalloc, so memcheck sees reads past any of them.
if command -v compute-sanitizer >/dev/null; then
  for tool in memcheck racecheck; do
    extra=()
    [ $tool = racecheck ] && extra=(--racecheck-report hazard)
    STAGE_LOG=$work/sanitizer_$tool.txt stage "sanitizer_$tool" 30 env PYTORCH_NO_CUDA_MEMORY_CACHING=1 \
      compute-sanitizer --tool $tool "${extra[@]}" --error-exitcode 9 --print-limit 20 \
      "$py" tools/cuda_sanitize_cases.py
    grep -vE '^\s*$' "$work/sanitizer_$tool.txt" | tail -25
  done
else
  printf 'sanitizer\t-1\t0\t0\n' >> "$work/stages.tsv"
  echo "== compute-sanitizer is not on PATH: sanitizer stage skipped"
fi

# ---- quick GPU benchmarks --------------------------------------------------------------------------
for spec in mla:130 moe_gemm:50 moe_route:30; do
  area=${spec%%:*}
  stage "bench_$area" "${spec##*:}" "$py" -m longcat.cli bench "$area" --device cuda --quick --out "$work/bench"
done

summary
