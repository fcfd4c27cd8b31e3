#!/usr/bin/env bash
# Sets up everything the quick-start commands need, idempotently:
#   a virtual environment (.venv, or $LONGCAT_VENV), torch (the CPU build 2.13.0 when no CUDA
#   driver is present, so pip does not pull a multi-GB CUDA build), the build tools, the test
#   dependencies, and an editable build of longcat itself (CUDA on when nvcc is found).
# Usage: `bash tools/bootstrap.sh`, then use .venv/bin/python. Settings (environment):
#   LONGCAT_VENV       the virtual environment (default .venv)
#   LONGCAT_CUDA       AUTO (default) / ON / OFF, passed to CMake
#   LONGCAT_EDITABLE   1 (default): editable install; 0: a plain `pip install .`
#   LONGCAT_BUILD_DIR  CMake build folder (default build/{wheel_tag})
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${LONGCAT_VENV:-$root/.venv}
python=${PYTHON:-python3}

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
py="$venv/bin/python"
pip() { "$py" -m pip --disable-pip-version-check -q "$@"; }

if ! "$py" -c 'import torch' 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    pip install 'torch>=2.4'          # a CUDA driver is present: a CUDA build of torch
  else
    pip install 'torch==2.13.0'       # no driver: the CPU build
  fi
fi

# Build tools (the build runs without isolation so it sees them and the CUDA extras below).
pip install 'scikit-build-core>=0.10' 'nanobind>=2.4' ninja
if command -v nvcc >/dev/null 2>&1; then
  pip install 'nvidia-cutlass>=4.2' nvidia-nccl-cu13   # CUTLASS headers and NCCL for the CUDA build
fi

# The package with its test extras. The build folder persists, so a second run only recompiles
# what changed.
editable=()
[ "${LONGCAT_EDITABLE:-1}" = 1 ] && editable=(-e)
build_dir=${LONGCAT_BUILD_DIR:-}
[ -n "$build_dir" ] || build_dir="$root/build/{wheel_tag}"   # {wheel_tag}: scikit-build-core fills it in
pip install --no-build-isolation "${editable[@]}" "$root[test]" -Cbuild-dir="$build_dir"
