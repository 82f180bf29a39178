"""Corrective training end to end on the tiny prior with real photos (scikit-image samples)."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from lmcsds.cli import main as cli
from lmcsds.core import CorrectiveCheckpointError, load_corrective, read_meta
from lmcsds.training import trainer as trainer_module
from lmcsds.training.images import CropSampler, NoImagesError, scan_images
from lmcsds.training.triplets import FromCache, generate_cache, triplet_bytes

SMALL = ["--base-channels", "4", "--depth", "2", "--batch-size", "4", "--workers", "0"]


@pytest.fixture(scope="session")
def photos(tmp_path_factory) -> Path:
    """Four real photos plus every kind of bad or odd file a photo folder can hold."""
    import skimage.data as skd

    root = tmp_path_factory.mktemp("photos")
    (root / "sub").mkdir()
    for name in ("astronaut", "chelsea", "coffee"):
        Image.fromarray(getattr(skd, name)()).save(root / f"{name}.jpg", quality=92)
    Image.fromarray(skd.rocket()).save(root / "sub" / "rocket.png")
    Image.fromarray(skd.camera()).save(root / "grey-camera.png")  # grey-scale: converted
    rgba = np.dstack([skd.chelsea(), np.full(skd.chelsea().shape[:2], 200, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(root / "sub" / "transparent.png")  # converted
    Image.fromarray(skd.coffee()[:20, :20]).save(root / "tiny.png")  # too small: skipped
    (root / "notes.jpg").write_text("not an image")  # unreadable: skipped
    data = (root / "astronaut.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 3])  # truncated: skipped
    (root / "readme.txt").write_text("ignored: not an image extension")
    return root


def test_scan_converts_skips_and_counts(photos, tmp_path):
    report = scan_images(str(photos), 32, index_path=str(tmp_path / "index.json"))
    assert len(report.usable) == 6
    assert report.converted == {"grey": 1, "transparent": 1}
    assert sum(report.skipped.values()) == 3
    assert report.skipped["smaller than 32px"] == 1
    assert report.skipped["truncated"] == 1
    assert any(k.startswith("unreadable") for k in report.skipped)
    again = scan_images(str(photos), 32, index_path=str(tmp_path / "index.json"))  # cached
    assert again.usable == report.usable
    with pytest.raises(NoImagesError, match="no usable photo"):
        scan_images(str(photos / "sub"), 10_000)


def test_crops_are_deterministic_per_step_and_in_range(photos):
    paths = scan_images(str(photos), 32).usable
    a = CropSampler(paths, 32, seed=3).batch(7, 6)
    b = CropSampler(paths, 32, seed=3).batch(7, 6)
    assert a.shape == (6, 3, 32, 32) and a.min() >= -1 and a.max() <= 1
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, CropSampler(paths, 32, seed=3).batch(8, 6))
    assert a.std() > 0.1  # real image content, not constant


def train(prior_dir, photos, out, steps, *extra):
    cli(
        [
            "train-corrective",
            "--prior",
            str(prior_dir),
            "--images",
            str(photos),
            "--out",
            str(out),
            "--steps",
            str(steps),
            "--checkpoint-every",
            "2",
            "--log-every",
            "1",
            *SMALL,
            *extra,
        ]
    )


@pytest.mark.threestudio
def test_end_to_end_export_report_and_guidance_load(
    tiny_if_dir, photos, tmp_path, capsys, cpu_threestudio
):
    out = tmp_path / "run"
    train(
        tiny_if_dir,
        photos,
        out,
        4,
        "--val-images",
        str(photos),
        "--report-images",
        "4",
        "--mc-samples",
        "2",
    )
    printed = capsys.readouterr().out
    exported = out / "tiny-if.safetensors"
    assert "system.guidance.corrective_path=" in printed and str(exported) in printed
    meta = read_meta(exported)
    assert (meta.prior_id, meta.resolution, meta.training_steps) == ("tiny-if", 32, 4)
    model, _ = load_corrective(exported, expected_prior_id="tiny-if", expected_resolution=32)
    with pytest.raises(CorrectiveCheckpointError, match="IF-I-XL-v1.0"):
        load_corrective(exported, expected_prior_id="IF-I-XL-v1.0")
    import lmcsds.adapter.guidance  # noqa: F401

    guidance = cpu_threestudio.find("lmc-sds-deep-floyd-guidance")(
        dict(
            pretrained_model_name_or_path=str(tiny_if_dir),
            corrective_path=str(exported),
            half_precision_weights=False,
        )
    )
    assert guidance.step_cfg.normalization == "global"
    for name in ("report.md", "report.json", "spectra.png", "samples.png"):
        assert (out / "report" / name).stat().st_size > 0, name
    assert "L_k" in (out / "report" / "report.md").read_text()
    assert list((out / "tensorboard").glob("events.*"))
    assert (out / "empty_embedding.pt").exists()
    card = (out / "tiny-if.md").read_text()  # model card beside the weights
    assert card.startswith("---\nlibrary_name: threestudio-lmcsds")
    for fact in ("`tiny-if`, 32 px", "`global`", "4 steps of batch", f"images under `{photos}`",
                 "](report/spectra.png)", "relative error"):  # fmt: skip
        assert fact in card, fact


def test_resume_gives_the_same_weights(tiny_if_dir, photos, tmp_path):
    train(tiny_if_dir, photos, tmp_path / "straight", 6)
    train(tiny_if_dir, photos, tmp_path / "resumed", 4)
    train(tiny_if_dir, photos, tmp_path / "resumed", 6, "--resume")
    a = load_file(str(tmp_path / "straight" / "tiny-if.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "tiny-if.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    with pytest.raises(SystemExit) as exit_:
        train(tiny_if_dir, photos, tmp_path / "resumed", 8, "--resume", "--batch-size", "2")
    assert exit_.value.code == 2


def test_bad_input_prints_one_line_and_exits_2(capsys, monkeypatch):
    """No traceback for bad input: one line naming the command and the value; LMCSDS_DEBUG=1
    re-raises."""
    monkeypatch.delenv("LMCSDS_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_:
        cli(["bench3d", "--out", "x", "--jobs", "0"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err == "lmcsds bench3d: error: --jobs must be >= 1, got 0\n"
    monkeypatch.setenv("LMCSDS_DEBUG", "1")
    with pytest.raises(ValueError, match="--jobs"):
        cli(["bench3d", "--out", "x", "--jobs", "0"])


def test_bad_normalization_is_refused_before_any_work(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        cli(["train-corrective", "--out", str(tmp_path / "x"), "--normalization", "global<"])
    assert exit_.value.code == 2
    assert "normalization must be one of" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_kill_during_checkpoint_write_keeps_previous(tiny_if_dir, photos, tmp_path, monkeypatch):
    out = tmp_path / "run"
    train(tiny_if_dir, photos, out, 2)
    ckpt = out / "checkpoints" / "last.ckpt"
    before = ckpt.read_bytes()

    def dying_save(obj, path):
        with open(path, "wb") as f:
            f.write(b"\x80\x02partial")  # a process killed mid-write leaves this behind
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer_module.torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_if_dir, photos, out, 4, "--resume")
    monkeypatch.undo()
    assert ckpt.read_bytes() == before
    assert torch.load(ckpt, weights_only=False)["step"] == 2
    assert not [p for p in os.listdir(ckpt.parent) if p.endswith(".tmp")]
    train(tiny_if_dir, photos, out, 4, "--resume")  # and training goes on from it
    assert torch.load(ckpt, weights_only=False)["step"] == 4


def test_cache_is_resumable_and_trains(tiny_if_dir, tiny_prior, photos, tmp_path, encode):
    paths = scan_images(str(photos), 32).usable
    emb_0 = encode([""])
    sampler = CropSampler(paths, 32, seed=0)
    whole, part = tmp_path / "whole", tmp_path / "part"
    generate_cache(str(whole), tiny_prior, sampler, emb_0, 24, shard_size=8, batch_size=4)
    generate_cache(str(part), tiny_prior, sampler, emb_0, 16, shard_size=8, batch_size=4)
    (part / ".shard-000002.tmp").write_bytes(b"half-written")  # an interrupted write
    generate_cache(str(part), tiny_prior, sampler, emb_0, 24, shard_size=8, batch_size=4)
    split = tmp_path / "split"  # two processes (GPUs) filling one cache
    generate_cache(str(split), tiny_prior, sampler, emb_0, 24, 8, batch_size=4, part=(1, 2))
    assert [p.name[6:12] for p in sorted(split.glob("shard-*"))] == ["000001"]
    generate_cache(str(split), tiny_prior, sampler, emb_0, 24, 8, batch_size=4, part=(0, 2))
    for i in range(3):
        a = load_file(str(whole / f"shard-{i:06d}.safetensors"))
        for other in (part, split):
            b = load_file(str(other / f"shard-{i:06d}.safetensors"))
            for k in ("z", "zhat", "t"):
                torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    source = FromCache(str(whole), batch_size=4)
    z, zhat, t = source.finish(source.prepare(5, 0), 5, 0, "cpu")
    assert z.shape == zhat.shape == (4, 3, 32, 32) and t.min() >= 20 and t.max() <= 980
    with pytest.raises(ValueError, match="other settings"):
        generate_cache(str(whole), tiny_prior, sampler, emb_0, 24, shard_size=4)
    out = tmp_path / "from-cache"
    cli(["train-corrective", "--cache", str(whole), "--out", str(out), "--steps", "3", *SMALL])
    assert read_meta(out / "tiny-if.safetensors").training_steps == 3


def test_one_command_makes_a_cache_and_reuses_its_first_shards(tiny_if_dir, photos, tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "run"
    cli(["train-corrective", "--prior", str(tiny_if_dir), "--images", str(photos), "--cache",
         str(cache), "--cache-triplets", "16", "--shard-size", "8", "--gen-batch-size", "4",
         "--out", str(out), "--steps", "3", *SMALL])  # fmt: skip
    assert sorted(p.name for p in cache.glob("shard-*")) == [
        "shard-000000.safetensors",
        "shard-000001.safetensors",
    ]
    assert "2 shards of 8" in (out / "tiny-if.md").read_text()
    small = FromCache(str(cache), batch_size=4, max_triplets=8)  # the first shard, 4 epochs
    assert len(small.shards) == 1 and small.per_epoch == 2
    shard = load_file(str(cache / "shard-000000.safetensors"))["z"].float()
    for epoch in range(4):  # every epoch visits each of the shard's 8 triplets once
        seen = torch.cat([small.prepare(2 * epoch + k, 0)[0].float() for k in range(2)])
        order = lambda x: x.flatten(1)[:, :8].tolist()  # noqa: E731
        assert sorted(order(seen)) == sorted(order(shard))
    with pytest.raises(ValueError, match="17 triplets need 3"):
        FromCache(str(cache), batch_size=4, max_triplets=17)
    shard_bytes = (cache / "shard-000000.safetensors").stat().st_size
    assert 8 * triplet_bytes(32) <= shard_bytes < 8 * triplet_bytes(32) + 1024  # + header


def test_a_cache_that_does_not_fit_is_refused_before_any_work(tiny_prior, photos, tmp_path):
    from collections import namedtuple

    sampler = CropSampler(scan_images(str(photos), 32).usable, 32, seed=0)
    usage = namedtuple("usage", "total used free")(10**9, 10**9 - 10**5, 10**5)
    with pytest.MonkeyPatch.context() as mp:  # one shard of 1024: 1024 * (2*3*32*32*2 + 4) B
        mp.setattr("shutil.disk_usage", lambda path: usage)
        with pytest.raises(OSError, match="needs 12.0 MiB more and the disk has 0.1 MiB free"):
            generate_cache(str(tmp_path / "c"), tiny_prior, sampler, torch.zeros(1, 77, 64), 64)
    assert not list((tmp_path / "c").glob("shard-*"))


def test_ddp_on_two_cpu_processes(tiny_if_dir, photos, tmp_path):
    """--devices 2: Lightning Fabric runs DDP (gloo on CPU); one export, from rank 0."""
    import subprocess
    import sys

    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "lmcsds",
        "train-corrective",
        "--prior",
        str(tiny_if_dir),
        "--images",
        str(photos),
        "--out",
        str(out),
        "--steps",
        "2",
        "--accelerator",
        "cpu",
        "--devices",
        "2",
        *SMALL,
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "Starting with 2 processes" in run.stdout + run.stderr
    assert run.stdout.count("corrective written:") == 1
    assert read_meta(out / "tiny-if.safetensors").training_steps == 2


def test_stability_gains_of_an_identity_corrective_equal_the_projections(
    tiny_if_dir, tiny_prior, photos, tmp_path, encode
):
    """Known answer: bhat_psi(z) = z without normalisation makes g_lmc = z - zhat_t exactly,
    so its gains are the projection's."""
    from lmcsds.core import CorrectiveConfig, CorrectiveMeta, CorrectiveUNet, save_corrective
    from lmcsds.training.images import scan_images
    from lmcsds.training.report import corrective_report

    arch = CorrectiveConfig(base_channels=8, depth=2, residual=True)
    path = tmp_path / "identity.safetensors"
    meta = CorrectiveMeta("tiny-if", 32, "none", 0, 1000, arch)
    save_corrective(path, CorrectiveUNet(arch), meta)
    paths = scan_images(str(photos), 32).usable
    report = corrective_report(
        str(path), tiny_prior, encode([""]), paths, str(tmp_path / "r"), num_images=4,
        mc_samples=2,
    )  # fmt: skip
    for row in report["buckets"]:
        for kind in ("contrast", "colour", "brightness"):
            assert row[f"{kind}_gain_lmc"] == pytest.approx(row[f"{kind}_gain_proj"], abs=1e-4)
        assert row["mean_lmc"] == pytest.approx(row["mean_proj"], abs=1e-5)
        assert row["rel_err_mc"] == pytest.approx(row["rel_err_mc_identity"], abs=1e-5)
        # without Eq. 10, E[g_lmc] = bhat - E[zhat_t]: its size is the relative error
        assert row["bias_lmc"] == pytest.approx(row["rel_err_mc"], abs=1e-4)
        assert row["bias_identity"] == pytest.approx(row["rel_err_mc_identity"], abs=1e-4)
    assert "colour g_lmc" in (tmp_path / "r" / "report.md").read_text()


def test_negative_gains_name_the_runaway_direction():
    """The committed reports: the seed-1 corrective that ran away in 3D, and the bundled one."""
    import json

    from lmcsds.training.report import negative_gains

    root = Path(__file__).resolve().parents[1]
    failed = json.loads((root / "docs/results/triplet-reuse/fresh-seed1/report.json").read_text())
    bundled = root / "load/lmcsds/correctives/objects-if-32-report/report.json"
    assert negative_gains(failed) == ["contrast at t 800-980 (-0.021)"]
    assert negative_gains(json.loads(bundled.read_text())) == []


def test_gather_photos_installs_and_downloads_nothing_unless_asked(tmp_path, monkeypatch):
    """Without --fetch: no pip, no apt-get (subprocess never runs); installed Debian photo
    packages are read where they are installed."""
    from PIL import Image

    from lmcsds.training import photos

    def no_subprocess(*a, **k):
        raise AssertionError(f"subprocess called: {a}")

    monkeypatch.setattr(photos.subprocess, "run", no_subprocess)
    photo = tmp_path / "root" / "field.jpg"  # where dpkg's file list says it was installed
    photo.parent.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(photo)
    info = tmp_path / "info"
    info.mkdir()
    monkeypatch.setattr(
        photos, "DEBIAN_PHOTOS", {"mate-backgrounds": (str(photo.parent)[1:], ("*.jpg",))}
    )
    (info / "mate-backgrounds.list").write_text(f"/usr\n{photo}\n{photo.parent}/notes.txt\n")
    found = photos._installed_debian_photos(info)
    assert found == [("mate-backgrounds", photo)]
    monkeypatch.setattr(photos, "_installed_debian_photos", lambda: found)
    manifest = photos.gather_photos(str(tmp_path / "out"))
    assert "mate-backgrounds" in {e["source"] for e in manifest["entries"]}
