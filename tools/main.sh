#!/usr/bin/env bash
# The README's main command: sets everything up (tools/bootstrap.sh), prints `longcat info`, then
# runs `longcat demo` (runs/demo/): environments -> verified agent trajectories -> SFT of the tiny
# preset -> (asynchronous RL when an agent recipe exists) -> held-out evaluation, clean and noisy ->
# runs/demo/report.md with plots. Each stage skips when its output exists; arguments go to
# `longcat demo` (`--force`, `--out DIR`). The benchmarks are `longcat bench <area>|all`.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash tools/bootstrap.sh
bin=${LONGCAT_VENV:-$root/.venv}/bin
"$bin/longcat" info
"$bin/longcat" demo --out runs/demo "$@"
