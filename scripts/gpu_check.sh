#!/usr/bin/env bash
# The GPU check (lmcsds/bench/gpu_check.py) on any CUDA machine, also one with only a recent
# PyTorch and no network: diffusers 0.19.3 and the hub client it needs come from wheels in
# $WHEELS (default .whl/, pure Python) when the machine has no diffusers. Make them where pip
# works:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl \
#       diffusers==0.19.3 huggingface_hub==0.25.2 importlib_metadata==7.1.0
# Then, on the GPU machine (about 6 minutes; extra flags go to the check):
#   scripts/gpu_check.sh --out bench-results/gpu-check.json
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
WHEELS=${WHEELS:-.whl}
hide=()
if ! $PY -c "import diffusers" 2>/dev/null; then
    [ -d "$WHEELS" ] || { echo "no diffusers here and no wheels in $WHEELS (see the header)" >&2; exit 1; }
    site=$(mktemp -d)
    $PY -m pip install -q --no-index --no-deps --no-compile --target "$site" "$WHEELS"/*.whl
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    # diffusers 0.19 imports these when installed; today's releases break it
    hide=(--hide-modules transformers jax flax onnxruntime)
fi
export PYTHONPATH="custom/threestudio-lmcsds${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec $PY -m lmcsds.bench.gpu_check "${hide[@]}" "$@"
