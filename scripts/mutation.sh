#!/usr/bin/env bash
# Mutation testing of the core and the guidance adapter with mutmut (PyPI): every surviving
# mutant is a change to the code that no test notices. mutmut expects a package at ./, src/ or
# source/, so this runs on a copy laid out that way (OUT, default build/mutation), with the
# unit tests and threestudio's guidance tests. Results: `cd OUT && python -m mutmut results`,
# one mutant's diff: `python -m mutmut show <name>`. About two hours on 2 cores (JOBS=2).
# RECHECK=FILE tests only the mutants named in FILE (one per line, e.g. the survivors of an
# earlier run: `grep ': survived' results.txt | cut -d: -f1`), after new tests were added.
#   [JOBS=2] [RECHECK=FILE] bash scripts/mutation.sh [OUT]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${1:-$ROOT/build/mutation}
PY=${PY:-$ROOT/.venv/bin/python}
NAMES=()
if [ -n "${RECHECK:-}" ]; then
    mapfile -t NAMES < <(grep -v '^\s*$' "$RECHECK")
fi
LIB=$OUT-lib  # mutmut and its dependencies, kept out of the project's environment
[ -d "$LIB/mutmut" ] || "$PY" -m pip install -q --disable-pip-version-check --target "$LIB" mutmut==3.8.1
rm -rf "$OUT" && mkdir -p "$OUT/src" "$OUT/custom/threestudio-lmcsds" "$OUT/load"
cp -r "$ROOT/custom/threestudio-lmcsds/lmcsds" "$OUT/src/"
cp "$ROOT/custom/threestudio-lmcsds/__init__.py" "$OUT/custom/threestudio-lmcsds/"
cp -r "$ROOT/tests" "$ROOT/configs" "$OUT/" && cp -r "$ROOT/load/lmcsds" "$OUT/load/"
find "$OUT" -name __pycache__ -prune -exec rm -rf {} +
cat >"$OUT/pyproject.toml" <<'TOML'
[tool.mutmut]
source_paths = ["src/lmcsds/core/", "src/lmcsds/adapter/guidance.py"]
# the torch.compile wrapper is left out: each of its tests compiles a UNet (2-4 minutes on a
# CPU), hours over its mutants; make test runs them
do_not_mutate = ["src/lmcsds/core/compiled_unet.py"]
pytest_add_cli_args_test_selection = ["tests/test_gradients.py", "tests/test_noise.py",
    "tests/test_step.py", "tests/test_baselines.py", "tests/test_checkpoint.py",
    "tests/test_threestudio.py"]
also_copy = ["src/lmcsds", "load", "tests", "configs", "custom"]
pytest_add_cli_args = ["-q", "-p", "no:cacheprovider"]

[tool.pytest.ini_options]
testpaths = ["tests"]
markers = ["threestudio: needs threestudio"]
filterwarnings = ["ignore::DeprecationWarning", "ignore::FutureWarning"]
TOML
cd "$OUT"
THREESTUDIO_DIR=${THREESTUDIO_DIR:-$ROOT/../shared/threestudio} OMP_NUM_THREADS=1 PYTHONPATH=$LIB \
    "$PY" -m mutmut run --max-children "${JOBS:-1}" "${NAMES[@]}"
PYTHONPATH=$LIB "$PY" -m mutmut results --all true >"$OUT/results.txt" || true
echo "mutation.sh: $(grep -c ': survived' "$OUT/results.txt" || true) survived; list in $OUT/results.txt"
