#!/usr/bin/env bash
# The README's test command: sets everything up (tools/bootstrap.sh), writes the CUDA resource
# report when nvcc exists (tests check it for register spills), then runs the test suite.
# Extra arguments go to pytest, e.g. `bash tools/test.sh tests/ops -k fused`.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash tools/bootstrap.sh
py=${LONGCAT_VENV:-$root/.venv}/bin/python
if command -v nvcc >/dev/null 2>&1; then
  t0=$SECONDS
  "$py" tools/cuda_resource_report.py
  echo "test.sh: CUDA resource report in $((SECONDS - t0)) s"
fi
"$py" -m pytest -q "$@"
