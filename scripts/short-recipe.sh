#!/bin/bash
# How does 3D quality fall with a shorter corrective recipe (issue: a corrective a user can
# trust, point 3)? On the objects prior, fractions of the bundled recipe (1500 steps on 3,072
# distinct triplets, i.e. 32 passes: the pass count at which re-use cost nothing measurable,
# docs/results/triplet-reuse) for three sizes of corrective, all from one triplet cache:
#
#   size     U-Net                           fractions of the recipe (steps / triplets)
#   bundled  16 filters, 3 levels, 0.48M     1 (1500 / 3072), 1/2 (750 / 1536), 1/8 (188 / 384),
#                                            and 1/2 of the steps on 1/8 of the triplets
#   paper    32 filters, 4 levels (suppl. A) 1, 1/8
#   small    8 filters, 2 levels             1, 1/8
#
# and, as the control added after the first two results (bundled-1of8 beat bundled-1 in IoU),
# "identity": the residual U-Net untrained (0 steps: its zero last layer makes bhat(z) = z), so
# LMC-SDS without anything learned;
# all with the bundled recipe's residual form, Adam 1e-3, batch 64 and "global<700". On a GPU
# the time of a recipe is its triplets' prior passes plus its steps (docs/benchmark.md), so a
# fraction f of the paper's recipe is about f x 7.6 H100-hours. Each corrective: the offline
# report, check-corrective, and the 3D benchmark on the four primitives at 3D seeds 0 and 1
# (LMC-SDS omega 10, 1600 steps, corrective_input=$INPUT). Results:
# docs/results/short-recipe (reports, checks, 3D records, model cards; the weights stay in
# build/short-recipe), table by scripts/short_recipe_table.py. Resumable.
#
#   INPUT=clamped nohup scripts/short-recipe.sh > short-recipe.log 2>&1 &
#
# CPU, 2 cores: ~3 min for the cache; per corrective ~2-30 min of training, ~3 min report,
# ~5 min check, ~25 min of 3D runs (two at once): ~4 h in all.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/docs/results/short-recipe}
INPUT=${INPUT:?set INPUT to the corrective_input to benchmark with: raw or clamped}
WORK=$ROOT/build/short-recipe
. "$ROOT/scripts/frozen-worktree.sh"
cd "$SRC"
PRIOR=load/lmcsds/priors/objects-if-32
PRIMITIVES="a photo of a red cube;a photo of a blue striped sphere;a photo of a yellow checkered cylinder;a photo of a blue striped cone"
# name, base channels, depth, steps, triplets
# (the ends of the trade-off first, so that a study cut short still has them)
RUNS=(
    "bundled-1 16 3 1500 3072"
    "bundled-1of8 16 3 188 384"
    "small-1of8 8 2 188 384"
    "identity 16 3 0 128"
    "paper-1of8 32 4 188 384"
    "bundled-1of2 16 3 750 1536"
    "bundled-steps1of2-triplets1of8 16 3 750 384"
    "small-1 8 2 1500 3072"
    "paper-1 32 4 1500 3072"
)
# a corrective whose report, check and 3D records are all under $OUT is done: a fresh clone
# (no build/, so no weights) skips it instead of training it again
finished() {
    [ -f "$OUT/$1/report/report.json" ] && [ -f "$OUT/$1/check-$INPUT/check.json" ] &&
        [ "$(find "$OUT/$1/bench-$INPUT/runs" -name scores.json 2>/dev/null | wc -l)" -ge 8 ]
}
todo=()
for spec in "${RUNS[@]}"; do
    finished "${spec%% *}" || todo+=("$spec")
done
if [ ${#todo[@]} -eq 0 ]; then
    echo "short-recipe.sh: every corrective's report, check and 3D records are in $OUT"
    exit 0
fi
[ -d "$ROOT/build/objects-train-png" ] || "$PY" -m lmcsds.priors.objects_data --split train --views 128 --out "$ROOT/build/objects-train-png"
[ -d "$ROOT/build/objects-val-png" ] || "$PY" -m lmcsds.priors.objects_data --split heldout --views 8 --out "$ROOT/build/objects-val-png"
mkdir -p "$WORK" "$OUT"
# one cache, shards of 128 so that every triplet count below is whole shards; its first N
# triplets are the same for every run
"$PY" -m lmcsds generate-triplets --prior "$PRIOR" --images "$ROOT/build/objects-train-png" \
    --cache "$WORK/cache" --num-triplets 3072 --shard-size 128 --gen-batch-size 128

for spec in "${todo[@]}"; do
    read -r name channels depth steps triplets <<< "$spec"
    # the weights stay in build/ (the paper-size corrective is 30 MB); the model card is copied
    run=$WORK/$name weights=$WORK/$name/export/objects-if-32.safetensors
    mkdir -p "$OUT/$name"
    [ -f "$weights" ] || "$PY" -m lmcsds train-corrective --out "$run" --prior "$PRIOR" \
        --cache "$WORK/cache" --cache-triplets "$triplets" --steps "$steps" --batch-size 64 \
        --lr 1e-3 --base-channels "$channels" --depth "$depth" --workers 1 --residual \
        --normalization "global<700" --checkpoint-every 100 --export "$weights" \
        $([ -f "$run/checkpoints/last.ckpt" ] && echo --resume) > "$WORK/train-$name.log" 2>&1
    cp "$WORK/$name/export/objects-if-32.md" "$OUT/$name/model-card.md"
    [ -f "$OUT/$name/report/report.json" ] || "$PY" -m lmcsds report-corrective \
        --checkpoint "$weights" --prior "$PRIOR" --images "$ROOT/build/objects-val-png" \
        --report-images 64 --mc-samples 8 --report-out "$OUT/$name/report"
    [ -f "$OUT/$name/check-$INPUT/check.json" ] || "$PY" -m lmcsds check-corrective \
        --corrective "$weights" --threestudio "$RUN" --out "$OUT/$name/check-$INPUT" \
        "system.guidance.corrective_input=$INPUT" || true  # a failing verdict exits 1
    "$PY" -m lmcsds bench3d --threestudio "$RUN" --config configs/lmcsds-dreamfusion-cpu.yaml \
        --out "$OUT/$name/bench-$INPUT" --prompts "$PRIMITIVES" --guidances lmc-sds-w10 \
        --seeds 2 --jobs 2 "system.guidance.corrective_path=$weights" \
        "system.guidance.corrective_input=$INPUT"
done
