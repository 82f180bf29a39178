#!/bin/bash
# The corrective-seed study's second arm: the same five correctives with the guidance's
# corrective_input=clamped (the corrective sees the render clamped to [-1, 1]); the check
# (seed 0 only, as the first arm's) and the 3D benchmark on the primitives at 3D seeds 0 and
# 1, into docs/results/corrective-seeds/seed-N/{check,bench}-clamped. Run after
# scripts/corrective-seeds.sh (it needs seeds 2-4's weights). Resumable. The seeds that failed
# the first arm go first (2, 4), then the bundled one (0: does clamping cost it?), then 3, 1.
#
#   nohup scripts/corrective-seeds-clamped.sh > corrective-seeds-clamped.log 2>&1 &
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/docs/results/corrective-seeds}
. "$ROOT/scripts/frozen-worktree.sh"
cd "$SRC"
PRIMITIVES="a photo of a red cube;a photo of a blue striped sphere;a photo of a yellow checkered cylinder;a photo of a blue striped cone"
CLAMPED=system.guidance.corrective_input=clamped
for s in 2 4 0 3 1; do
    case $s in
        0) c=$SRC/load/lmcsds/correctives/objects-if-32.safetensors ;;
        1) c=$SRC/docs/results/corrective-check/fixtures/fresh-seed1-objects-if-32.safetensors ;;
        *) c=$OUT/seed-$s/objects-if-32.safetensors ;;
    esac
    [ -f "$OUT/seed-$s/check-clamped/check.json" ] || "$PY" -m lmcsds check-corrective \
        --corrective "$c" --threestudio "$RUN" --out "$OUT/seed-$s/check-clamped" --reseeds 0 \
        "$CLAMPED" || true  # a failing verdict exits 1
    "$PY" -m lmcsds bench3d --threestudio "$RUN" --config configs/lmcsds-dreamfusion-cpu.yaml \
        --out "$OUT/seed-$s/bench-clamped" --prompts "$PRIMITIVES" --guidances lmc-sds-w10 \
        --seeds 2 --jobs 2 "system.guidance.corrective_path=$c" "$CLAMPED"
    PYTHONPATH=$ROOT/custom/threestudio-lmcsds "$PY" "$ROOT/scripts/corrective_seeds_table.py" --traces "$OUT/seed-$s/bench-clamped"
done
PYTHONPATH=$ROOT/custom/threestudio-lmcsds "$PY" "$ROOT/scripts/corrective_seeds_table.py" "$OUT" --variant clamped
