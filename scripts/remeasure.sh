#!/bin/bash
# The 3D benchmark's full re-measure (docs/bench3d.md): the headline three (the ceiling, SDS
# omega 21, LMC-SDS omega 10) and LMC-SDS omega 10 with the paper's raw corrective input (the
# default until the corrective-seed study; its runs were made then) at seeds 0-2 first, then
# bench3d's default set, into
# docs/results/bench3d-full. Finished runs are kept as records there (commit them), so the
# script continues wherever it stopped, on this machine or on a fresh clone.
#
#   nohup scripts/remeasure.sh > remeasure.log 2>&1 &
#
# It trains from a frozen copy of the current commit (build/remeasure-src), so that editing
# the working tree while it runs cannot change the code a later run of it uses. Needs
# `make setup` first (the venv and build/threestudio).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/docs/results/bench3d-full}
SRC=$ROOT/build/remeasure-src
. "$ROOT/scripts/frozen-worktree.sh"

cd "$SRC"
for guidances in supervised,sds-w21,lmc-sds-w10,lmc-sds-w10-raw ""; do
    "$PY" -m lmcsds bench3d --threestudio "$RUN" \
        --config configs/lmcsds-dreamfusion-cpu.yaml --out "$OUT" --seeds 3 --jobs 2 \
        ${guidances:+--guidances $guidances}
done
