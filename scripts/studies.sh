#!/bin/bash
# The open CPU studies, in the order they are run; each is resumable and keeps its finished
# records under docs/results, so a session starts this, commits what finished before it
# stops, and the next session starts it again. Needs `make setup` first.
#
#   nohup scripts/studies.sh > studies.log 2>&1 &
#
# Shortest first, so that each closes as early as the two cores allow (CPU hours with two
# runs side by side, measured):
#   1. spectral-clamped.sh   the closed-form spectral corrective in 3D with the clamped input (done)
#   2. short-recipe.sh       how 3D quality falls with shorter corrective recipes (done)
#   3. mesh-stage.sh         the mesh stage (bench3d --refine) over 3 seeds, 3 prompts (~3.5 h)
#   4. the remedies for detail on the patterned and asymmetric prompts (docs/detail-3d.md),
#      into the re-measure's folder (it shares its plain runs; ~9 h), then the best of them
#      (-cap800) on all 8 prompts (~1.5 h)
#   5. translator-study.sh   the translation network trained with each of four losses (~4-5 h)
#   6. remeasure.sh          the 3D benchmark's full set, 8 prompts x 3 seeds (docs/bench3d.md):
#      its headline runs are done, the rest of bench3d's default set (~20 h) comes last
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
"$ROOT/scripts/spectral-clamped.sh"
INPUT=clamped "$ROOT/scripts/short-recipe.sh"
"$ROOT/scripts/mesh-stage.sh"
(
    SRC=$ROOT/build/remedies-src
    . "$ROOT/scripts/frozen-worktree.sh"
    cd "$SRC"
    "$PY" -m lmcsds bench3d --threestudio "$RUN" --config configs/lmcsds-dreamfusion-cpu.yaml \
        --out "$ROOT/docs/results/bench3d-full" --seeds 3 --jobs 2 --guidances remedies \
        --tables remedies --prompts "a photo of a red checkered mug;a photo of a green striped mug;a photo of a blue striped sphere;a photo of a purple chair"
)
(   # the remedy that raised LMC-SDS's detail and part recall without breaking shapes on the
    # first remedies cells (-cap800; docs/detail-3d.md), with SDS's, on all 8 prompts: the four
    # above are shared, 24 new runs (~1.5 h). Swap the labels if the remedies table says otherwise.
    SRC=$ROOT/build/remedies-src
    . "$ROOT/scripts/frozen-worktree.sh"
    cd "$SRC"
    "$PY" -m lmcsds bench3d --threestudio "$RUN" --config configs/lmcsds-dreamfusion-cpu.yaml \
        --out "$ROOT/docs/results/bench3d-full" --seeds 3 --jobs 2 --tables cap800 \
        --guidances supervised,sds-w21,lmc-sds-w10,sds-w21-cap800,lmc-sds-w10-cap800
)
"$ROOT/scripts/translator-study.sh"
"$ROOT/scripts/remeasure.sh"
