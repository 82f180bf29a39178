#!/usr/bin/env bash
# How many distinct triplets does a corrective need? The bundled objects recipe (1500 steps x 64,
# i.e. 96k fresh triplets) against the same recipe re-using caches of 3k, 12k and 48k triplets
# (32, 8 and 2 epochs), plus a second fresh seed for the noise floor; one held-out report each.
# CPU, 2 cores: about 6 min for the cache, 5-10 min per run, 3 min per report. Steps are skipped
# when their output exists. Results: docs/results/triplet-reuse/ (scripts/triplet_reuse_table.py).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
PRIOR=load/lmcsds/priors/objects-if-32
OUT=${OUT:-build/reuse}
RECIPE=(--steps 1500 --batch-size 64 --lr 1e-3 --base-channels 16 --depth 3 --workers 1
        --residual --normalization "global<700")
REPORT=(--prior "$PRIOR" --images build/objects-val-png --report-images 64 --mc-samples 8)

$PY -m lmcsds generate-triplets --prior "$PRIOR" --images build/objects-train-png \
    --cache "$OUT/cache" --num-triplets 49152 --shard-size 1024 --gen-batch-size 128
for n in 3072 12288 49152; do
    run="$OUT/cache-$n"
    [ -f "$run/objects-if-32.safetensors" ] || $PY -m lmcsds train-corrective --cache "$OUT/cache" \
        --cache-triplets $n --out "$run" "${RECIPE[@]}" \
        $([ -f "$run/checkpoints/last.ckpt" ] && echo --resume)
done
run="$OUT/fresh-seed1"
[ -f "$run/objects-if-32.safetensors" ] || $PY -m lmcsds train-corrective --prior "$PRIOR" \
    --images build/objects-train-png --seed 1 --out "$run" "${RECIPE[@]}" \
    $([ -f "$run/checkpoints/last.ckpt" ] && echo --resume)
for run in "$OUT"/cache-* "$OUT/fresh-seed1"; do
    [ -f "$run/report/report.json" ] || $PY -m lmcsds report-corrective \
        --checkpoint "$run/objects-if-32.safetensors" --report-out "$run/report" "${REPORT[@]}"
done
