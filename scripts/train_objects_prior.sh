#!/usr/bin/env bash
# The procedural-object prior bundled in load/lmcsds, from scratch (CPU, 2 cores: about
# 2 hours for the prior, 25 minutes for its corrective, a few minutes for the rest).
# Every step resumes or is skipped when its output exists; FRESH=1 retrains everything.
#   1. renders (cached in data/objects3d) and the prior: load/lmcsds/priors/objects-if-32
#   2. the object classifier on renders the prior never saw: load/lmcsds/priors/objects-classifier.*
#   3. the prior's own samples: faithfulness.json and sample grids in the prior's folder
#   4. its corrective (residual form) and report: load/lmcsds/correctives/objects-if-32*
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
PRIOR=load/lmcsds/priors/objects-if-32
CLASSIFIER=load/lmcsds/priors/objects-classifier.safetensors
CORRECTIVE=load/lmcsds/correctives/objects-if-32.safetensors
REPORT=load/lmcsds/correctives/objects-if-32-report
fresh=${FRESH:+--fresh}

if [ -n "${FRESH:-}" ] || [ ! -f "$PRIOR/unet/diffusion_pytorch_model.safetensors" ]; then
    $PY -m lmcsds.priors.train --data objects3d --out "$PRIOR" --steps 7000 --minutes 115 \
        --lr 5e-4 --warmup 200 --batch-size 64 $fresh
fi
if [ -n "${FRESH:-}" ] || [ ! -f "$CLASSIFIER" ]; then
    $PY -m lmcsds.priors.objects_classifier --out "$CLASSIFIER"
fi
if [ -n "${FRESH:-}" ] || [ ! -f "$PRIOR/faithfulness.json" ]; then
    $PY -m lmcsds.priors.objects_eval --prior "$PRIOR" --classifier "$CLASSIFIER"
fi
if [ -n "${FRESH:-}" ] || [ ! -f "$CORRECTIVE" ]; then
    [ -d build/objects-train-png ] ||
        $PY -m lmcsds.priors.objects_data --split train --views 128 --out build/objects-train-png
    [ -d build/objects-val-png ] ||
        $PY -m lmcsds.priors.objects_data --split heldout --views 8 --out build/objects-val-png
    $PY -m lmcsds train-corrective --prior "$PRIOR" --images build/objects-train-png \
        --out build/bhat-objects-g700 --steps 1500 --batch-size 64 --lr 1e-3 --base-channels 16 \
        --depth 3 --workers 1 --residual --normalization "global<700" --export "$CORRECTIVE" \
        $([ -f build/bhat-objects-g700/checkpoints/last.ckpt ] && echo --resume)
    $PY -m lmcsds report-corrective --checkpoint "$CORRECTIVE" --prior "$PRIOR" \
        --images build/objects-val-png --report-out "$REPORT" --report-images 64 --mc-samples 8
fi
