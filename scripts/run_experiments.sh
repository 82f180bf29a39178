#!/usr/bin/env bash
# The measured 2D comparison (docs/results-2d.md) (CPU, about an hour): synthesis omega sweep of
# LMC-SDS, SDS, g_cond alone, and the baselines (CSD, NFSD, multi-step SDS), fixed vs standard
# epsilon, editing (with DDS) over omega, 64 px with the patch strategy; results in docs/results/
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-docs/results}
STEPS=${STEPS:-200}
$PY -m lmcsds.evaluation.experiments synthesis --out "$OUT/synthesis" --losses sds,lmc-sds,cond \
    --omegas 2,5,10,20,50 --seeds 2 --steps "$STEPS"
$PY -m lmcsds.evaluation.experiments synthesis --out "$OUT/synthesis-baselines" \
    --losses sds,csd,nfsd,ms-sds --omegas 2,5,10,20,50 --seeds 2 --steps "$STEPS"
$PY -m lmcsds.evaluation.experiments synthesis --out "$OUT/diversity" --losses sds,lmc-sds \
    --omegas 10 --seeds 4 --fixed both --steps "$STEPS"
$PY -m lmcsds.evaluation.experiments edit --out "$OUT/editing" \
    --losses sds,lmc-sds,dds,nfsd,ms-sds,csd --omegas 5,15 --steps "$STEPS"
$PY -m lmcsds.evaluation.experiments synthesis --out "$OUT/patches" --losses sds,lmc-sds \
    --omegas 10,20 --seeds 1 --size 64 --steps "$STEPS"
