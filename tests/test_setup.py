"""scripts/setup.sh: clear errors for a wrong or too-old threestudio, idempotent links."""

import os
import subprocess

from .conftest import ROOT, THREESTUDIO_DIR

SETUP = ROOT / "scripts" / "setup.sh"


def run_setup(ts_dir, **env):
    env = dict(os.environ, THREESTUDIO_DIR=str(ts_dir), LINK_ONLY="1", **env)
    return subprocess.run(["bash", str(SETUP)], capture_output=True, text=True, env=env)


def test_missing_checkout_says_how_to_get_one(tmp_path):
    out = run_setup(tmp_path / "nope")
    assert out.returncode != 0
    assert "does not exist" in out.stderr and "git clone" in out.stderr


def test_not_a_checkout(tmp_path):
    out = run_setup(tmp_path)
    assert out.returncode != 0 and "not a threestudio checkout" in out.stderr


def test_too_old_threestudio(tmp_path):
    (tmp_path / "threestudio").mkdir()
    (tmp_path / "threestudio" / "__init__.py").write_text('__version__ = "0.1.0"\n')
    (tmp_path / "launch.py").write_text("# an old launch.py without custom modules\n")
    out = run_setup(tmp_path)
    assert out.returncode != 0 and "too old" in out.stderr and "0.1.0" in out.stderr


def test_links_into_a_writable_checkout_idempotently(tmp_path):
    for entry in THREESTUDIO_DIR.iterdir():  # a user's checkout, made of links to the snapshot
        os.symlink(entry, tmp_path / entry.name)
    for sub in ("custom", "configs"):  # real folders, as in a clone
        os.unlink(tmp_path / sub)
        (tmp_path / sub).mkdir()
    for _ in range(2):
        out = run_setup(tmp_path)
        assert out.returncode == 0, out.stderr
    ext = tmp_path / "custom" / "threestudio-lmcsds"
    assert ext.is_symlink() and ext.resolve() == (ROOT / "custom" / "threestudio-lmcsds").resolve()
    assert (tmp_path / "configs" / "lmcsds-dreamfusion.yaml").resolve() == (
        ROOT / "configs" / "lmcsds-dreamfusion.yaml"
    ).resolve()
    assert (tmp_path / "load" / "lmcsds").is_symlink()
    assert f"run threestudio from: {tmp_path}" in out.stdout


def test_never_replaces_a_real_folder(tmp_path):
    for entry in THREESTUDIO_DIR.iterdir():
        os.symlink(entry, tmp_path / entry.name)
    os.unlink(tmp_path / "custom")
    (tmp_path / "custom" / "threestudio-lmcsds").mkdir(parents=True)
    os.unlink(tmp_path / "configs")
    (tmp_path / "configs").mkdir()
    out = run_setup(tmp_path)
    assert out.returncode != 0 and "is not a link" in out.stderr
