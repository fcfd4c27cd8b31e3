#!/usr/bin/env bash
# The README's main command: sets everything up (tools/bootstrap.sh), prints `longcat info`,
# then runs every benchmark on the CPU (tables on screen, JSON + markdown in bench-results/).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash tools/bootstrap.sh
bin=${LONGCAT_VENV:-$root/.venv}/bin
"$bin/longcat" info
"$bin/longcat" bench all "$@"
