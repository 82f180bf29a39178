# Sourced by the long studies (remeasure.sh, corrective-seeds.sh): a frozen worktree of HEAD in
# $SRC and a threestudio run folder $RUN whose extension, configs and load/lmcsds are that
# copy's, so that editing the working tree while a study runs cannot change the code its later
# runs use. Needs `make setup` first (the venv and build/threestudio). Sets SRC, RUN, PY and
# exports PYTHONPATH and LMCSDS_DEVICE. A script of the working tree run after this (a table)
# needs PYTHONPATH=$ROOT/custom/threestudio-lmcsds: the CPU mode's .pth imports lmcsds at
# start-up, from the first folder on PYTHONPATH.
ROOT=${ROOT:?set ROOT to the repository root}
SRC=${SRC:-$ROOT/build/$(basename "$0" .sh)-src}
PY=$ROOT/.venv/bin/python
[ -x "$PY" ] || { echo "$(basename "$0"): run make setup first" >&2; exit 1; }

rm -rf "$SRC"
git -C "$ROOT" worktree prune
git -C "$ROOT" worktree add --detach -f "$SRC" HEAD >/dev/null
echo "$(basename "$0"): code frozen at $(git -C "$SRC" log --oneline -1)"
RUN=$SRC/build/threestudio
mkdir -p "$RUN"
cp -a "$ROOT/build/threestudio/." "$RUN/"
ln -sfn "$SRC/custom/threestudio-lmcsds" "$RUN/custom/threestudio-lmcsds"
ln -sfn "$SRC/load/lmcsds" "$RUN/load/lmcsds"
for cfg in "$SRC"/configs/*.yaml; do ln -sfn "$cfg" "$RUN/configs/$(basename "$cfg")"; done
export PYTHONPATH=$SRC/custom/threestudio-lmcsds LMCSDS_DEVICE=cpu
