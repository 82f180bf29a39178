#!/usr/bin/env bash
# How many distinct triplets and how many steps does a corrective need? The bundled objects
# recipe (1500 steps x 64 = 96k fresh triplets, seed 0) against: the same recipe re-using caches
# of 1k, 3k, 12k and 48k triplets (94, 32, 8 and 2 passes); the same fresh run stopped at 500 and 1000
# steps (the learning rate is constant, so these are its earlier states); a second fresh seed
# (the noise floor). One held-out report each (64 renders, 8 Monte-Carlo samples).
# CPU, 2 cores: about 6 min for the cache, 5-10 min per run, 3 min per report. Steps are skipped
# when their output exists. Results: docs/results/triplet-reuse/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
PRIOR=load/lmcsds/priors/objects-if-32
OUT=${OUT:-build/reuse}
RECIPE=(--batch-size 64 --lr 1e-3 --base-channels 16 --depth 3 --workers 1 --residual
        --normalization "global<700")
REPORT=(--prior "$PRIOR" --images build/objects-val-png --report-images 64 --mc-samples 8)

train() {  # run folder, then train-corrective's data and step flags
    local run=$1; shift
    [ -f "$run/objects-if-32.safetensors" ] || $PY -m lmcsds train-corrective --out "$run" \
        "${RECIPE[@]}" "$@" $([ -f "$run/checkpoints/last.ckpt" ] && echo --resume)
}
$PY -m lmcsds generate-triplets --prior "$PRIOR" --images build/objects-train-png \
    --cache "$OUT/cache" --num-triplets 49152 --shard-size 1024 --gen-batch-size 128
for n in 1024 3072 12288 49152; do
    train "$OUT/cache-$n" --cache "$OUT/cache" --cache-triplets $n --steps 1500
done
FRESH=(--prior "$PRIOR" --images build/objects-train-png)
train "$OUT/fresh-seed1" "${FRESH[@]}" --seed 1 --steps 1500
for steps in 500 1000; do
    train "$OUT/fresh-$steps" "${FRESH[@]}" --steps $steps
done
for run in "$OUT"/cache-* "$OUT"/fresh-*; do
    [ -f "$run/report/report.json" ] || $PY -m lmcsds report-corrective \
        --checkpoint "$run/objects-if-32.safetensors" --report-out "$run/report" "${REPORT[@]}"
done
