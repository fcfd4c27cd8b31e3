#!/usr/bin/env bash
# The README's main command: sets everything up (tools/bootstrap.sh), prints `longcat info`,
# runs every benchmark on the CPU (tables on screen, JSON + markdown in bench-results/), then
# the environment pipeline end to end: builds verified environments and tasks for every domain
# (runs/envs/) and scores the reference agents on them.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash tools/bootstrap.sh
bin=${LONGCAT_VENV:-$root/.venv}/bin
"$bin/longcat" info
"$bin/longcat" bench all "$@"
"$bin/longcat" envs build --domains all --count 240 --seed 0 --out runs/envs
"$bin/longcat" envs stats runs/envs --agents --sample 5
