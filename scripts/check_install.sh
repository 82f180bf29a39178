#!/usr/bin/env bash
# The package as declared, on today's releases, in a fresh virtual environment (no pins):
#   1. `pip install .` alone: the `lmcsds` command works, and a command that needs an extra says
#      which one in one line;
#   2. `pip install .[train,eval,dev]`: every module imports (the threestudio adapter excepted:
#      it needs threestudio's pinned stack, which `make setup` builds);
#   3. the tests that use the libraries whose releases differ (LMCSDS_WITHOUT_THREESTUDIO=1
#      skips the tests marked `threestudio`, and only those).
# torch is pinned to the release whose build lies on this kind of machine (a CPU run needs no
# other). VENV=... picks the folder (default build/venv-current); PYTHON=... the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-build/venv-current}
PYTHON=${PYTHON:-python3}
PIP=(-q --disable-pip-version-check)

"$PYTHON" -m venv --clear "$VENV"
"$VENV/bin/pip" install "${PIP[@]}" torch==2.14.1
"$VENV/bin/pip" install "${PIP[@]}" .
"$VENV/bin/lmcsds" --help >/dev/null
"$VENV/bin/lmcsds" train-corrective --help >/dev/null
if "$VENV/bin/lmcsds" compare --threestudio . 2>"$VENV/extra.txt"; then
    echo "check_install: lmcsds compare ran without the [eval] extra" >&2
    exit 1
fi
grep -q "pip install 'threestudio-lmcsds\[eval\]'" "$VENV/extra.txt" ||
    { echo "check_install: no extra named in: $(cat "$VENV/extra.txt")" >&2; exit 1; }

"$VENV/bin/pip" install "${PIP[@]}" ".[train,eval,dev]"
"$VENV/bin/pip" list --format=freeze 2>/dev/null |
    grep -iE "^(torch|diffusers|transformers|huggingface.hub|tokenizers|pytorch.lightning)=" |
    tr '\n' ' '
echo
"$VENV/bin/python" - <<'PY'
import importlib, pkgutil, lmcsds
skip = {"lmcsds.adapter.guidance", "lmcsds.adapter.dense_renderer",
        "lmcsds.adapter.prompt_processor", "lmcsds.adapter.system",
        "lmcsds.evaluation.supervised"}  # threestudio components
names = [m.name for m in pkgutil.walk_packages(lmcsds.__path__, "lmcsds.")
         if m.name not in skip and not m.name.endswith(".__main__")]  # __main__ runs a command
for name in names:
    importlib.import_module(name)
print(f"check_install: {len(names)} modules import")
PY
# the tests that use diffusers, transformers or safetensors, whose releases here differ from the
# pinned stack (torch is the same release, so its pure-torch tests ran under make test; so did
# the opt-in torch.compile path, 4 minutes)
TESTS=()
for t in baselines checkpoint cli gradients objects3d offline_prior setup step training; do
    TESTS+=("tests/test_$t.py")
done
LMCSDS_WITHOUT_THREESTUDIO=1 "$VENV/bin/python" -m pytest -q -n 2 -p no:cacheprovider "${TESTS[@]}"
