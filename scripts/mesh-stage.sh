#!/bin/bash
# The mesh stage over seeds (docs/cpu-3d.md#mesh-stage): the ceiling, SDS omega 21 and LMC-SDS
# omega 10 on three prompts with texture to sharpen (stripes, checks, the mug's handle) at 3D
# seeds 0-2, each coarse run (1600 steps) refined 400 steps as a DMTet mesh with its own
# guidance (bench3d --refine), both stages scored against the truth, into
# docs/results/mesh-stage. It trains its own coarse runs: a refine needs the coarse checkpoint,
# which the re-measure's records do not keep. Resumable as bench3d is.
#
#   nohup scripts/mesh-stage.sh > mesh-stage.log 2>&1 &
#
# CPU, 2 cores: 27 coarse runs (~2-5 min each, two at once) and 27 mesh stages (~5 min each
# with one thread, two at once): about 2.5 hours.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/docs/results/mesh-stage}
. "$ROOT/scripts/frozen-worktree.sh"
cd "$SRC"
"$PY" -m lmcsds bench3d --threestudio "$RUN" --config configs/lmcsds-dreamfusion-cpu.yaml \
    --out "$OUT" --seeds 3 --jobs 2 --guidances supervised,sds-w21,lmc-sds-w10 --refine \
    --prompts "a photo of a blue striped sphere;a photo of a red checkered mug;a photo of a yellow checkered cylinder"
