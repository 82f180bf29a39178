#!/usr/bin/env bash
# One-command set-up (idempotent):
#   1. checks the threestudio checkout in THREESTUDIO_DIR,
#   2. creates the virtual environment .venv with the pinned stack and this package,
#   3. links the extension, the configs and load/lmcsds into that checkout.
# LINK_ONLY=1 skips step 2 (for an existing environment: only check and link).
# THREESTUDIO_DIR defaults to the offline upstream snapshot ../shared/threestudio, which is a
# read-only dependency: for it, the links go into an overlay, build/threestudio, whose other
# entries point at the snapshot. Run threestudio's launch.py from the printed directory.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3}
SNAPSHOT=$ROOT/../shared/threestudio
TS=${THREESTUDIO_DIR:-$SNAPSHOT}
MIN_TS_VERSION=0.2.0

die() {
    echo "setup.sh: error: $*" >&2
    exit 1
}

# --- 1. threestudio checkout --------------------------------------------------------------
[ -d "$TS" ] || die "THREESTUDIO_DIR=$TS does not exist. Clone threestudio
  (git clone https://github.com/threestudio-project/threestudio) and run
  THREESTUDIO_DIR=/path/to/threestudio bash scripts/setup.sh"
TS=$(cd "$TS" && pwd)
[ -f "$TS/launch.py" ] && [ -f "$TS/threestudio/__init__.py" ] ||
    die "$TS is not a threestudio checkout (expected launch.py and threestudio/__init__.py)"
ts_version=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$TS/threestudio/__init__.py")
if ! grep -q "def load_custom_modules" "$TS/launch.py" ||
    [ ! -f "$TS/threestudio/models/guidance/deep_floyd_guidance.py" ] ||
    [ "$(printf '%s\n' "$MIN_TS_VERSION" "${ts_version:-0}" | sort -V | head -n1)" != "$MIN_TS_VERSION" ]; then
    die "threestudio in $TS (version ${ts_version:-unknown}) is too old: need >= $MIN_TS_VERSION
  with custom-extension loading in launch.py. Update it: git -C $TS pull"
fi

# --- 2. virtual environment -------------------------------------------------------------------
if [ "${LINK_ONLY:-0}" != 1 ]; then
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
        die "$PYTHON is Python $("$PYTHON" -c 'import platform; print(platform.python_version())'); need >= 3.10 (set PYTHON=python3.11)"
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
    echo "setup.sh: installing the pinned stack into $VENV (fast when already installed)"
    "$VENV/bin/pip" install --disable-pip-version-check -q -r "$ROOT/requirements.txt"
    # this package with every extra: the pins above already satisfy them (nothing else changes)
    "$VENV/bin/pip" install --disable-pip-version-check -q -e "$ROOT[train,eval,dev]"
    site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    echo "$TS" >"$site/threestudio-checkout.pth" # makes `import threestudio` work in the venv
    # CPU mode start-up hook: acts only when LMCSDS_DEVICE is set (lmcsds/adapter/cpu_mode.py)
    echo 'import os; os.environ.get("LMCSDS_DEVICE") and __import__("lmcsds.adapter.cpu_mode", fromlist=["boot"]).boot()' \
        >"$site/lmcsds_cpu_mode.pth"

    # Fashion-MNIST (Debian package, 30 MB) for the offline prior's experiments and demo
    FMNIST=/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz
    if [ ! -f "$FMNIST" ] && [ -z "${FASHION_MNIST_DIR:-}" ]; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            echo "setup.sh: installing Debian's dataset-fashion-mnist"
            apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 ||
                { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist >/dev/null; } ||
                echo "setup.sh: warning: could not install dataset-fashion-mnist; the demo needs it"
        else
            echo "setup.sh: note: the offline demo needs Fashion-MNIST: sudo apt-get install dataset-fashion-mnist (or set FASHION_MNIST_DIR)"
        fi
    fi
fi

# --- 3. links into threestudio ------------------------------------------------------------
link() { # link TARGET NAME: NAME -> TARGET, never replacing a real file or folder
    if [ -e "$2" ] && [ ! -L "$2" ]; then
        die "$2 exists and is not a link; move it away and re-run"
    fi
    ln -sfn "$1" "$2"
}

if [ "$TS" = "$(cd "$SNAPSHOT" 2>/dev/null && pwd)" ]; then
    RUN_DIR=$ROOT/build/threestudio
    mkdir -p "$RUN_DIR/custom" "$RUN_DIR/configs" "$RUN_DIR/load"
    for entry in "$TS"/*; do
        name=$(basename "$entry")
        case "$name" in custom | configs | load) continue ;; esac
        link "$entry" "$RUN_DIR/$name"
    done
    for entry in "$TS"/configs/* "$TS"/load/*; do
        [ -e "$entry" ] || continue
        link "$entry" "$RUN_DIR/$(basename "$(dirname "$entry")")/$(basename "$entry")"
    done
else
    RUN_DIR=$TS
    mkdir -p "$RUN_DIR/load"
fi
link "$ROOT/custom/threestudio-lmcsds" "$RUN_DIR/custom/threestudio-lmcsds"
for cfg in "$ROOT"/configs/*.yaml; do
    link "$cfg" "$RUN_DIR/configs/$(basename "$cfg")"
done
link "$ROOT/load/lmcsds" "$RUN_DIR/load/lmcsds"
# the mesh stage's DMTet grids (threestudio does not ship them; existing files are kept)
if [ ! -e "$RUN_DIR/load/tets" ] || [ -d "$RUN_DIR/load/tets" ]; then
    "$VENV/bin/python" -m lmcsds.adapter.tet_grid --out "$RUN_DIR/load/tets" --resolutions 32 64 128 ||
        echo "setup.sh: warning: could not write the tet grids into $RUN_DIR/load/tets"
fi

echo "setup.sh: done. threestudio $ts_version at $TS
  run threestudio from: $RUN_DIR
  e.g. cd $RUN_DIR && $VENV/bin/python launch.py --config configs/lmcsds-dreamfusion.yaml --train --gpu 0 system.prompt_processor.prompt=\"a hamburger\""
