#!/bin/bash
# The translation network's comparison (docs/translation.md, paper Sec. 5.2): the CPU preset
# (3000 steps, omega 15) trained with LMC-SDS, SDS, NFSD and DDS at seeds 0 and 1 on the
# recolouring task, each scored on held-out cameras against the exact targets, then the table
# (means, two-level intervals, each loss minus LMC-SDS paired per object and seed) into
# docs/results/translator/summary.md. Resumable: a run with scores is kept, an interrupted one
# continues from its checkpoint (the same data order and noise).
#
#   nohup scripts/translator-study.sh > translator.log 2>&1 &
#
# CPU, 2 cores: about 15 minutes of training per run alone (3.3 steps/s), 55-70 beside a
# two-job 3D benchmark.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/docs/results/translator}
. "$ROOT/scripts/frozen-worktree.sh"
cd "$SRC"
mkdir -p "$OUT"
for seed in 0 1; do
    for loss in lmc-sds sds nfsd dds; do
        run=$OUT/$loss-s$seed
        [ -f "$run/scores.json" ] && continue
        "$PY" -m lmcsds train-translator --out "$run" --loss-type "$loss" --seed "$seed" \
            --device cpu $([ -f "$run/checkpoints/last.ckpt" ] && echo --resume)
    done
done
"$PY" -m lmcsds train-translator --out "$OUT" --table
