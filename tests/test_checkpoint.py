"""Corrective checkpoints: round trip, and clear errors for every way a file can be wrong."""

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from lmcsds.core import (
    CorrectiveCheckpointError,
    CorrectiveConfig,
    CorrectiveMeta,
    CorrectiveUNet,
    load_corrective,
    prior_id,
    read_meta,
    save_corrective,
)


def meta(**kw):
    base = dict(
        prior_id="IF-I-XL-v1.0",
        resolution=64,
        normalization="global",
        training_steps=123,
        num_train_timesteps=1000,
        architecture=CorrectiveConfig(base_channels=4, depth=2),
    )
    base.update(kw)
    return CorrectiveMeta(**base)


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    m = meta()
    model = CorrectiveUNet(m.architecture)
    path = tmp_path / "c.safetensors"
    save_corrective(path, model, m)
    return path, model, m


def test_round_trip_weights_and_metadata(saved):
    path, model, m = saved
    loaded, m2 = load_corrective(path, expected_prior_id="IF-I-XL-v1.0", expected_resolution=64)
    assert m2 == m
    x, t = torch.randn(1, 3, 16, 16), torch.tensor([500])
    torch.testing.assert_close(loaded(x, t), model(x, t))
    assert not any(p.requires_grad for p in loaded.parameters())


def test_prior_id_agrees_for_hub_id_and_local_copy():
    assert prior_id("DeepFloyd/IF-I-XL-v1.0") == prior_id("/models/IF-I-XL-v1.0/") == "IF-I-XL-v1.0"


def test_missing_file_says_how_to_make_one(tmp_path):
    path = tmp_path / "nope.safetensors"
    with pytest.raises(FileNotFoundError) as e:
        load_corrective(path)
    assert str(path) in str(e.value) and "train-corrective" in str(e.value)


@pytest.mark.parametrize("content", [b"", b"garbage" * 100, b"\xff" * 8 + b"{}"])
def test_corrupt_file_names_the_file(tmp_path, content):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(CorrectiveCheckpointError, match="bad.safetensors"):
        load_corrective(path)


def test_truncated_file(saved):
    path, _, _ = saved
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorrectiveCheckpointError, match=str(path.name)):
        load_corrective(path)


def test_other_safetensors_file_is_refused(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={"format": "pt"})
    with pytest.raises(
        CorrectiveCheckpointError, match="not an LMC-SDS corrective.*'pt', expected"
    ):
        read_meta(path)


def test_prior_mismatch_names_both(saved):
    path, _, _ = saved
    with pytest.raises(CorrectiveCheckpointError) as e:
        load_corrective(path, expected_prior_id="IF-I-L-v1.0")
    msg = str(e.value)
    assert "IF-I-XL-v1.0" in msg and "IF-I-L-v1.0" in msg and str(path) in msg


def test_resolution_mismatch(saved):
    path, _, _ = saved
    with pytest.raises(CorrectiveCheckpointError, match="64x64.*32x32"):
        load_corrective(path, expected_resolution=32)


def test_weights_that_do_not_fit_the_declared_architecture(tmp_path):
    path = tmp_path / "shapes.safetensors"
    model = CorrectiveUNet(CorrectiveConfig(base_channels=8, depth=2))
    save_corrective(path, model, meta())  # metadata says base_channels=4
    with pytest.raises(CorrectiveCheckpointError, match="wrong shapes"):
        load_corrective(path)


def test_newer_format_and_bad_metadata(saved, tmp_path):
    path, _, _ = saved
    tensors = load_file(str(path))
    strings = meta().to_strings()
    newer = tmp_path / "newer.safetensors"
    save_file(tensors, str(newer), metadata={**strings, "format_version": "99"})
    with pytest.raises(CorrectiveCheckpointError, match="newer"):
        read_meta(newer)
    bad = tmp_path / "badnorm.safetensors"
    save_file(tensors, str(bad), metadata={**strings, "normalization": "batch"})
    with pytest.raises(CorrectiveCheckpointError, match="normalization"):
        read_meta(bad)
    arch = tmp_path / "badarch.safetensors"
    save_file(tensors, str(arch), metadata={**strings, "architecture": json.dumps({"x": 1})})
    with pytest.raises(CorrectiveCheckpointError, match="invalid metadata"):
        read_meta(arch)


def test_interrupted_save_keeps_previous_file(saved, monkeypatch):
    path, _, m = saved
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    import lmcsds.core.checkpoint as ckpt

    monkeypatch.setattr(ckpt, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        save_corrective(path, CorrectiveUNet(m.architecture), m)
    assert path.read_bytes() == before
    assert [p for p in os.listdir(path.parent) if p.endswith(".tmp")] == []


def test_residual_corrective_starts_as_identity_and_round_trips(tmp_path):
    arch = CorrectiveConfig(base_channels=8, depth=2, residual=True)
    model = CorrectiveUNet(arch)
    z = torch.rand(2, 3, 16, 16) * 2 - 1
    t = torch.tensor([20, 900])
    assert torch.equal(model(z, t), z)  # zero-initialised last layer: bhat_psi(z, t) = z
    paper = CorrectiveUNet(CorrectiveConfig(base_channels=8, depth=2))
    assert not torch.allclose(paper(z, t), z)
    path = tmp_path / "residual.safetensors"
    meta = CorrectiveMeta("p", 16, "global", 0, 1000, arch)
    save_corrective(path, model, meta)
    loaded, loaded_meta = load_corrective(path)
    assert loaded_meta.architecture.residual and torch.equal(loaded(z, t), z)


def test_atomic_write_gives_the_permissions_of_a_plain_write(tmp_path):
    """mkstemp creates 0600 files; the written file gets 0666 minus the umask, like open()."""
    from lmcsds.core.atomic import atomic_write

    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "a.txt", lambda p: open(p, "w").write("x"))
        with open(tmp_path / "b.txt", "w") as f:
            f.write("x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.txt").stat().st_mode & 0o777 == 0o644


def _hub_cache(cache, repo_id, filename, content_path, revision="main"):
    """The Hugging Face cache layout with one file, as hf_hub_download leaves it."""
    commit = "0" * 40
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / revision).write_text(commit)
    target = repo / "snapshots" / commit / filename
    target.parent.mkdir(parents=True)
    target.write_bytes(content_path.read_bytes())
    return target


@pytest.fixture
def offline(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_hub_references_are_told_apart_from_local_paths(tmp_path, monkeypatch):
    from lmcsds.core.checkpoint import hub_reference

    monkeypatch.chdir(tmp_path)
    assert hub_reference("hf://org/repo/sub/IF.safetensors@v1") == (
        "org/repo", "sub/IF.safetensors", "v1")  # fmt: skip
    assert hub_reference("org/repo/IF-I-XL-v1.0.safetensors") == (
        "org/repo", "IF-I-XL-v1.0.safetensors", None)  # fmt: skip
    # the default corrective_path (a folder deeper) and existing local folders stay local
    assert hub_reference("load/lmcsds/correctives/IF-I-XL-v1.0.safetensors") is None
    (tmp_path / "runs").mkdir()
    assert hub_reference("runs/bhat/IF-I-XL-v1.0.safetensors") is None
    assert hub_reference(tmp_path / "c.safetensors") is None
    with pytest.raises(ValueError, match="hf://ORG/REPO"):
        hub_reference("hf://org/only-a-repo")


def test_hub_corrective_resolves_offline_from_the_cache(saved, tmp_path, offline):
    from lmcsds.core.checkpoint import resolve_corrective_path

    path, model, m = saved
    cache = tmp_path / "hub"
    cached = _hub_cache(cache, "org/repo", "IF-I-XL-v1.0.safetensors", path)
    for ref in ("org/repo/IF-I-XL-v1.0.safetensors", "hf://org/repo/IF-I-XL-v1.0.safetensors"):
        assert resolve_corrective_path(ref, cache_dir=cache).resolve() == cached.resolve()


def test_hub_corrective_loads_and_is_validated_like_a_local_file(saved, tmp_path, offline,
                                                                 monkeypatch):  # fmt: skip
    import huggingface_hub.constants

    path, model, m = saved
    cache = tmp_path / "hub"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    _hub_cache(cache, "org/repo", "IF-I-XL-v1.0.safetensors", path)
    loaded, m2 = load_corrective("hf://org/repo/IF-I-XL-v1.0.safetensors", "IF-I-XL-v1.0", 64)
    assert m2 == m
    x, t = torch.randn(1, 3, 16, 16), torch.tensor([500])
    torch.testing.assert_close(loaded(x, t), model(x, t))
    with pytest.raises(CorrectiveCheckpointError, match="trained for prior 'IF-I-XL-v1.0'"):
        load_corrective("hf://org/repo/IF-I-XL-v1.0.safetensors", "IF-II-L-v1.0")
    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(1)}, str(other))
    _hub_cache(cache, "org/other", "x.safetensors", other)
    with pytest.raises(CorrectiveCheckpointError, match="not an LMC-SDS corrective"):
        read_meta("hf://org/other/x.safetensors")


def test_hub_corrective_not_cached_offline_is_a_clear_error(tmp_path, offline):
    from lmcsds.core.checkpoint import resolve_corrective_path

    with pytest.raises(FileNotFoundError, match="org/repo.*HF_HUB_OFFLINE=1"):
        resolve_corrective_path("hf://org/repo/IF-I-XL-v1.0.safetensors", cache_dir=tmp_path)


def test_timestep_dependent_normalization_round_trips(tmp_path):
    m = meta(normalization="global<700")
    path = tmp_path / "c.safetensors"
    save_corrective(path, CorrectiveUNet(m.architecture), m)
    assert read_meta(path).normalization == "global<700"


def test_atomic_write_creates_folders_and_writes_beside_the_target(tmp_path):
    """The temporary file lies in the target's folder (so the rename stays on one file
    system and is atomic), missing parent folders are made, and nothing is left on failure."""
    from lmcsds.core.atomic import atomic_write

    target = tmp_path / "a" / "b" / "c.txt"
    seen = []
    atomic_write(target, lambda p: (seen.append(Path(p)), open(p, "w").write("x")))
    assert target.read_text() == "x" and seen[0].parent == target.parent
    assert seen[0].name.startswith(".c.txt.") and not seen[0].exists()

    def fail(p):
        seen.append(Path(p))
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, fail)
    assert target.read_text() == "x" and not seen[-1].exists()


def test_the_committed_corrective_computes_what_it_computed_when_its_report_was_made():
    """The architecture's forward pass (ReLUs, the residual's sign, the time encoding) pinned
    on the bundled objects corrective: a change that still loads its weights but computes
    something else would silently void its report and every 3D result made with it."""
    from lmcsds.core import load_corrective

    root = Path(__file__).resolve().parents[1]
    model, _ = load_corrective(root / "load/lmcsds/correctives/objects-if-32.safetensors",
                               map_location="cpu")  # fmt: skip
    z = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        out = model(z, torch.tensor([100, 800]))
    expected = [[0.3648638, 0.5638878, 0.5628461], [0.3591526, -0.3559643, 0.2742257]]
    torch.testing.assert_close(torch.stack([out[0, :, 5, 7], out[1, :, 20, 3]]),
                               torch.tensor(expected), atol=1e-5, rtol=1e-4)  # fmt: skip


def test_t_encoding_is_sin_and_cos_of_doubling_frequencies():
    import math

    from lmcsds.core.corrective import t_encoding

    enc = t_encoding(torch.tensor([250, 999]), 1000, 3)
    for row, t in zip(enc, (250, 999)):
        angles = [math.pi * 2**k * t / 1000 for k in range(3)]
        expected = [math.sin(a) for a in angles] + [math.cos(a) for a in angles]
        torch.testing.assert_close(row, torch.tensor(expected), atol=1e-6, rtol=1e-5)


def test_the_corrective_refuses_sizes_not_divisible_in_either_side(tiny_corrective_path):
    from lmcsds.core import load_corrective

    model, _ = load_corrective(tiny_corrective_path, map_location="cpu")
    m = model.min_resolution_multiple
    for h, w in ((4 * m, 4 * m + 1), (4 * m + 1, 4 * m)):
        with pytest.raises(ValueError, match=f"{h}x{w}"):
            model(torch.zeros(1, 3, h, w), torch.tensor([10]))


@pytest.mark.parametrize(
    "name", ["load/priors/objects-if-32/", "DeepFloyd/IF-I-XL-v1.0", "load/objects-if-32\\"]
)
def test_prior_id_is_the_last_path_component(name):
    from lmcsds.core import prior_id

    assert prior_id(name) == ("IF-I-XL-v1.0" if "Deep" in name else "objects-if-32")


def test_a_checkpoint_with_a_tensor_missing_is_refused(saved, tmp_path):
    """Missing tensors alone (nothing unexpected, no wrong shape) are enough to refuse it."""
    path, _, m = saved
    tensors = load_file(str(path))
    dropped = sorted(tensors)[0]
    del tensors[dropped]
    short = tmp_path / "short.safetensors"
    save_file(tensors, str(short), metadata=m.to_strings())
    with pytest.raises(CorrectiveCheckpointError, match=f"missing \\['{dropped}'\\]"):
        load_corrective(short)
