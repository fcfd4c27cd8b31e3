#!/usr/bin/env bash
# The README's main command: sets everything up (tools/bootstrap.sh), prints `longcat info`,
# runs every benchmark on the CPU (tables on screen, JSON + markdown in bench-results/), writes a
# randomly initialised `small` LongCat-Flash checkpoint with its tokenizer (runs/models/small) and
# generates from it through the engine, then the environment pipeline end to end: builds verified
# environments and tasks for every domain (runs/envs/) and scores the reference agents on them; last,
# `longcat demo` (runs/demo/): environments -> verified trajectories -> SFT of the tiny preset -> (RL when
# longcat.rl is installed) -> held-out evaluation clean and noisy -> runs/demo/report.md with plots.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash tools/bootstrap.sh
bin=${LONGCAT_VENV:-$root/.venv}/bin
"$bin/longcat" info
"$bin/longcat" bench all "$@"
[ -f runs/models/small/config.json ] || "$bin/longcat" models init --preset small --out runs/models/small --seed 0
"$bin/longcat" generate --model runs/models/small --chat --max-tokens 32 \
  --prompt "I need to change the delivery address of my order."
"$bin/longcat" envs build --domains all --count 240 --seed 0 --out runs/envs
"$bin/longcat" envs stats runs/envs --agents --sample 5
"$bin/longcat" demo --out runs/demo
