#!/bin/bash
# The closed-form spectral corrective (docs/results/corrective-check) with the guidance's
# default clamped corrective input: the acceptance check, then the 3D benchmark on the four
# primitives at 3D seeds 0 and 1 (LMC-SDS omega 10, 1600 steps), as the corrective-seed study's
# clamped arm, into docs/results/corrective-check/spectral-{clamped,bench-clamped}. Resumable.
#
#   nohup scripts/spectral-clamped.sh > spectral-clamped.log 2>&1 &
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/docs/results/corrective-check}
JOBS=${JOBS:-2}
. "$ROOT/scripts/frozen-worktree.sh"
cd "$SRC"
PRIMITIVES="a photo of a red cube;a photo of a blue striped sphere;a photo of a yellow checkered cylinder;a photo of a blue striped cone"
CLAMPED=system.guidance.corrective_input=clamped
c=$SRC/docs/results/corrective-check/fixtures/spectral-objects-if-32.safetensors
[ -f "$OUT/spectral-clamped/check.json" ] || "$PY" -m lmcsds check-corrective \
    --corrective "$c" --threestudio "$RUN" --out "$OUT/spectral-clamped" "$CLAMPED" || true
"$PY" -m lmcsds bench3d --threestudio "$RUN" --config configs/lmcsds-dreamfusion-cpu.yaml \
    --out "$OUT/spectral-bench-clamped" --prompts "$PRIMITIVES" --guidances lmc-sds-w10 \
    --seeds 2 --jobs "$JOBS" "system.guidance.corrective_path=$c" "$CLAMPED"
PYTHONPATH=$ROOT/custom/threestudio-lmcsds "$PY" "$ROOT/scripts/corrective_seeds_table.py" --traces "$OUT/spectral-bench-clamped"
