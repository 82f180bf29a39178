"""CPU mode: the pure-torch renderer, the full-precision prompt processor, and threestudio's own
launch.py training, validating, testing and resuming a 3D run on the CPU."""

import csv
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from .conftest import ROOT, THREESTUDIO_DIR

pytestmark = pytest.mark.threestudio  # needs threestudio's pinned stack

EXTENSION = ROOT / "custom" / "threestudio-lmcsds"
CPU_CONFIG = ROOT / "configs" / "lmcsds-dreamfusion-cpu.yaml"
REFINE_CPU_CONFIG = ROOT / "configs" / "lmcsds-magic3d-refine-cpu.yaml"


# --- renderer: pure functions against known answers ----------------------------------------------


def test_sphere_bounds_known_rays():
    from lmcsds.adapter.dense_renderer import sphere_bounds

    o = torch.tensor([[0.0, 0.0, -3.0], [0.0, 0.0, 0.0], [0.0, 5.0, -3.0], [0.0, 0.0, 3.0]])
    d = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 2.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    near, far = sphere_bounds(o, d, radius=1.0)
    # through the centre: enters at 2, leaves at 4; from the centre (|d| = 2): 0 to 0.5;
    # a miss and a sphere behind the camera: empty intervals
    assert near[:2, 0].tolist() == pytest.approx([2.0, 0.0])
    assert far[:2, 0].tolist() == pytest.approx([4.0, 0.5])
    assert torch.equal(near[2:], far[2:])


def test_stratified_intervals_tile_the_segment():
    from lmcsds.adapter.dense_renderer import stratified_intervals

    near, far = torch.tensor([[1.0], [2.0]]), torch.tensor([[3.0], [2.5]])
    for randomized in (False, True):
        s, e = stratified_intervals(near, far, 16, randomized)
        assert torch.allclose(s[:, :1], near) and torch.allclose(e[:, -1:], far)
        assert torch.equal(s[:, 1:], e[:, :-1]) and bool((e >= s).all())
    s, e = stratified_intervals(near, far, 4, randomized=False)
    assert s[0].tolist() == pytest.approx([1.0, 1.5, 2.0, 2.5])


def test_render_weights_match_nerfacc():
    """Independent reference: nerfacc's dense-form render_weight_from_density (runs on CPU)."""
    import nerfacc

    from lmcsds.adapter.dense_renderer import render_weights

    gen = torch.Generator().manual_seed(0)
    density = torch.rand(5, 32, generator=gen) * 4
    starts = torch.sort(torch.rand(5, 32, generator=gen) * 3, dim=-1).values
    ends = torch.cat([starts[:, 1:], starts[:, -1:] + 0.1], dim=-1)
    ours, trans = render_weights(density, ends - starts)
    ref, ref_trans, _ = nerfacc.render_weight_from_density(starts, ends, density)
    assert torch.allclose(ours, ref, atol=1e-6) and torch.allclose(trans, ref_trans, atol=1e-6)


class _Ball(nn.Module):
    """Constant density sigma inside |x| < r, zero outside."""

    def __init__(self, sigma: float, r: float):
        super().__init__()
        self.sigma, self.r = sigma, r

    def forward(self, points, output_normal=False):
        inside = (points.norm(dim=-1, keepdim=True) < self.r).float()
        out = {"density": self.sigma * inside}
        if output_normal:
            out["normal"] = nn.functional.normalize(points, dim=-1)
        return out


class _Constant(nn.Module):
    def __init__(self, colour, requires_normal=False):
        super().__init__()
        self.colour, self.requires_normal = torch.tensor(colour), requires_normal

    def forward(self, **kwargs):
        ref = kwargs.get("positions", kwargs.get("dirs"))
        return self.colour.expand(*ref.shape[:-1], 3)


@pytest.mark.parametrize("training", [True, False])
def test_renderer_matches_analytic_ball(cpu_threestudio, training):
    """Ray through a ball of constant density: opacity 1 - exp(-sigma * chord), colours mix
    with the background by opacity, depth is the entry point for an opaque ball."""
    import lmcsds.adapter.dense_renderer  # noqa: F401  (registers it)

    cls = cpu_threestudio.find("lmcsds-dense-volume-renderer")
    red, blue = _Constant([1.0, 0.0, 0.0], requires_normal=True), _Constant([0.0, 0.0, 1.0])
    rays_o = torch.tensor([0.0, 0.0, -3.0]).expand(1, 2, 2, 3).clone()
    rays_d = torch.tensor([0.0, 0.0, 1.0]).expand(1, 2, 2, 3).clone()
    rays_o[0, 1, 1] = torch.tensor([0.0, 1.5, -3.0])  # misses the ball, hits the sphere
    light = torch.zeros(1, 3)
    for sigma, r in ((1.0, 0.5), (200.0, 0.5)):
        renderer = cls(
            {"radius": 2.0, "num_samples_per_ray": 512}, geometry=_Ball(sigma, r),
            material=red, background=blue,
        )  # fmt: skip
        renderer.train(training)
        out = renderer(rays_o, rays_d, light)
        opacity = out["opacity"][0, 0, 0, 0].item()
        assert opacity == pytest.approx(
            1 - torch.exp(torch.tensor(-sigma * 2 * r)).item(), abs=5e-3
        )
        assert out["opacity"][0, 1, 1, 0].item() == 0.0
        rgb = out["comp_rgb"][0, 0, 0]
        assert rgb.tolist() == pytest.approx([opacity, 0.0, 1 - opacity], abs=1e-5)
        if sigma > 100:
            assert out["depth"][0, 0, 0, 0].item() == pytest.approx(3.0 - r, abs=0.02)
        assert ("weights" in out) == training  # what dreamfusion-system's losses read
        if training:
            n = 4 * 512
            assert out["weights"].shape == (n, 1) and out["t_dirs"].shape == (n, 3)
            assert out["ray_indices"].shape == (n,) and out["normal"].shape == (n, 3)
        else:
            assert out["comp_normal"].shape == (1, 2, 2, 3)


def test_renderer_gradients_reach_the_geometry(cpu_threestudio):
    import lmcsds.adapter.dense_renderer  # noqa: F401  (registers it)

    cls = cpu_threestudio.find("lmcsds-dense-volume-renderer")
    ball = _Ball(1.0, 0.5)
    sigma = torch.tensor(1.0, requires_grad=True)
    ball.sigma = sigma
    renderer = cls(
        {"radius": 1.0, "num_samples_per_ray": 64}, geometry=ball,
        material=_Constant([1.0, 1.0, 1.0]), background=_Constant([0.0, 0.0, 0.0]),
    )  # fmt: skip
    out = renderer(
        torch.tensor([0.0, 0.0, -3.0]).view(1, 1, 1, 3),
        torch.tensor([0.0, 0.0, 1.0]).view(1, 1, 1, 3),
        torch.zeros(1, 3),
    )
    out["opacity"].sum().backward()
    # d/dsigma (1 - exp(-sigma L)) = L exp(-sigma L), L = 1
    assert sigma.grad.item() == pytest.approx(torch.exp(torch.tensor(-1.0)).item(), abs=2e-2)


class _Box(nn.Module):
    """Density sigma inside |x|, |y|, |z| < half (and x > x_min), zero elsewhere."""

    def __init__(self, sigma: float, half: float, x_min: float = -10.0):
        super().__init__()
        self.sigma, self.half, self.x_min = sigma, half, x_min

    def forward_density(self, points):
        inside = (points.abs() < self.half).all(-1, keepdim=True) & (points[..., :1] > self.x_min)
        return self.sigma * inside.float()

    def forward(self, points, output_normal=False):
        out = {"density": self.forward_density(points)}
        if output_normal:
            out["normal"] = nn.functional.normalize(points, dim=-1)
        return out


@pytest.mark.parametrize("training", [True, False])
def test_grid_prune_skips_empty_cells_and_counts_them_as_empty(cpu_threestudio, training):
    """A box on the occupancy grid's cell boundaries: after nerfacc's warm-up update exactly its
    cells are occupied, fewer samples are evaluated, and the render equals the dense one; cells
    marked empty count as density 0 (as a box without that half renders)."""
    import lmcsds.adapter.dense_renderer  # noqa: F401  (registers it)

    cls = cpu_threestudio.find("lmcsds-dense-volume-renderer")
    gen = torch.Generator().manual_seed(0)
    rays_o = torch.tensor([0.1, 0.2, -3.0]).expand(1, 4, 4, 3).clone()
    rays_o[..., :2] += torch.rand(1, 4, 4, 2, generator=gen) * 0.8 - 0.4
    rays_d = torch.tensor([0.0, 0.0, 1.0]).expand(1, 4, 4, 3).clone()
    light = torch.zeros(1, 3)
    cfg = {"radius": 2.0, "num_samples_per_ray": 256, "randomized": False}

    def renderer(geometry, **extra):
        r = cls(dict(cfg, **extra), geometry=geometry, material=_Constant([1.0, 0.0, 0.0], True),
                background=_Constant([0.0, 0.0, 1.0]))  # fmt: skip
        return r

    box = _Box(3.0, 0.5)  # 0.5 = 4 cells of 4 / 32
    pruned, dense = renderer(box, grid_prune=True), renderer(box)
    pruned.train()
    pruned.update_step(0, 0)  # the warm-up update: every cell, as threestudio's first step
    assert pruned.estimator.binaries.sum().item() == 8**3
    pruned.train(training), dense.train(training)
    a, b = pruned(rays_o, rays_d, light), dense(rays_o, rays_d, light)
    for key in ("comp_rgb", "opacity", "depth"):
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=0)
    if training:
        assert a["weights"].shape[0] < 16 * 256 / 4 and b["weights"].shape[0] == 16 * 256
        assert a["ray_indices"].shape == a["weights"].shape[:1] == a["normal"].shape[:1]
    # the half x < 0 marked empty renders as a box without it
    centres = (torch.arange(32) + 0.5) / 32 * 4 - 2
    pruned.estimator.binaries[0, centres < 0] = False
    half = renderer(_Box(3.0, 0.5, x_min=0.0))
    half.train(training)
    c, d = pruned(rays_o, rays_d, light), half(rays_o, rays_d, light)
    torch.testing.assert_close(c["opacity"], d["opacity"], atol=1e-5, rtol=0)
    assert (c["opacity"] < a["opacity"] - 0.1).any() and (c["opacity"] > 0.5).any()


# --- prompt processor ----------------------------------------------------------------------------


@pytest.mark.parametrize("spawn", [False, True])
def test_full_precision_prompt_processor_caches_t5_embeddings(
    tmp_path, monkeypatch, cpu_threestudio, tiny_if_dir, encode, spawn
):
    """Same embeddings as T5 called directly, for the prompt, the negative prompt and every
    view-dependent prompt; the cache is reused on the second construction."""
    import lmcsds.adapter.prompt_processor  # noqa: F401  (registers it)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LMCSDS_DEVICE", "cpu")  # the spawned encoder imports threestudio
    cls = cpu_threestudio.find("lmcsds-deep-floyd-prompt-processor")
    cfg = {
        "pretrained_model_name_or_path": str(tiny_if_dir),
        "prompt": "a hamburger",
        "spawn": spawn,
    }
    processor = cls(cfg)
    assert torch.allclose(processor.text_embeddings[0], encode(["a hamburger"])[0], atol=1e-5)
    assert torch.allclose(processor.uncond_text_embeddings[0], encode([""])[0], atol=1e-5)
    expected_vd = encode(processor.prompts_vd)
    assert torch.allclose(processor.text_embeddings_vd, expected_vd, atol=1e-5)
    cache = sorted((tmp_path / ".threestudio_cache" / "text_embeddings").glob("*.pt"))
    assert len(cache) == len(set([processor.prompt, ""] + processor.prompts_vd))
    stamps = [p.stat().st_mtime_ns for p in cache]
    cls(cfg)
    assert [p.stat().st_mtime_ns for p in cache] == stamps


def test_prompt_cache_files_appear_only_complete(tmp_path, monkeypatch, tiny_if_dir, encode):
    """Two runs side by side share the cache and skip a prompt whose file exists (threestudio's
    prepare_text_embeddings), so a file must never be visible while it is being written."""
    from lmcsds.adapter import prompt_processor

    prompts, cache = ["a hamburger", ""], tmp_path / "cache"
    cache.mkdir()
    finals = {cache / f"{prompt_processor.hash_prompt(str(tiny_if_dir), p)}.pt" for p in prompts}
    seen, save = [], torch.save

    def watching_save(obj, target, *args, **kwargs):
        seen.append((Path(target), sorted(f.name for f in finals if f.exists())))
        save(obj, target, *args, **kwargs)

    monkeypatch.setattr(torch, "save", watching_save)
    prompt_processor.encode_to_cache(str(tiny_if_dir), prompts, str(cache))
    assert len(seen) == 2 and not {target for target, _ in seen} & finals
    assert seen[0][1] == [] and len(seen[1][1]) == 1  # the first file was in place before the 2nd
    for p, expected in zip(prompts, encode(prompts)):
        path = cache / f"{prompt_processor.hash_prompt(str(tiny_if_dir), p)}.pt"
        assert torch.allclose(torch.load(path), expected, atol=1e-5)
    assert sorted(f.name for f in cache.iterdir()) == sorted(f.name for f in finals)


def test_encoding_prompts_leaves_the_global_random_stream_alone(tmp_path, tiny_if_dir):
    """With ``spawn: false`` the T5 loads in the training process after threestudio seeded it:
    if loading it drew from torch's generator, the same seed would give another run depending
    on whether the prompts were cached (measured: step 0's t 501 with a cold cache, 370 warm)."""
    from lmcsds.adapter import prompt_processor

    torch.manual_seed(0)
    prompt_processor.encode_to_cache(str(tiny_if_dir), ["a hamburger", ""], str(tmp_path))
    after_encoding = torch.rand(4)
    torch.manual_seed(0)
    assert torch.equal(after_encoding, torch.rand(4))


# --- threestudio's launch.py on the CPU ---


def test_cpu_mode_acts_only_when_asked(monkeypatch):
    import pytorch_lightning

    from lmcsds.adapter import cpu_mode

    monkeypatch.delenv("LMCSDS_DEVICE", raising=False)
    before = pytorch_lightning.Trainer.__init__
    assert cpu_mode.activate() is None and pytorch_lightning.Trainer.__init__ is before
    monkeypatch.setenv("LMCSDS_DEVICE", "tpu")
    with pytest.raises(ValueError, match="LMCSDS_DEVICE='tpu'"):
        cpu_mode.requested_device()


def _run_dir(tmp_path: Path) -> Path:
    """A threestudio working directory: launch.py, the extension in custom/, load/lmcsds."""
    run = tmp_path / "threestudio"
    (run / "custom").mkdir(parents=True)
    (run / "load").mkdir()
    os.symlink(THREESTUDIO_DIR / "launch.py", run / "launch.py")
    os.symlink(EXTENSION, run / "custom" / "threestudio-lmcsds")
    os.symlink(ROOT / "load" / "lmcsds", run / "load" / "lmcsds")
    return run


def _launch(run: Path, *args: str, ok: bool = True) -> str:
    hook = Path(sysconfig.get_paths()["purelib"]) / "lmcsds_cpu_mode.pth"
    assert hook.exists(), f"{hook} missing: run `make setup` (scripts/setup.sh writes it)"
    env = dict(os.environ, LMCSDS_DEVICE="cpu", PYTHONPATH=str(THREESTUDIO_DIR))
    proc = subprocess.run(
        [sys.executable, "launch.py", *args], cwd=run, env=env, capture_output=True, text=True
    )
    log = proc.stdout + proc.stderr
    assert (proc.returncode == 0) == ok, log[-4000:]
    assert "IMPORT FAILED" not in log
    return log


def _metrics(trial: Path):
    rows = []
    for path in sorted(trial.glob("csv_logs/version_*/metrics.csv")):
        with open(path) as f:
            rows += [r for r in csv.DictReader(f) if r.get("train/loss_sds")]
    return rows


def test_launch_trains_validates_tests_and_resumes_on_cpu(tmp_path):
    run = _run_dir(tmp_path)
    small = [
        "exp_root_dir=outputs", "use_timestamp=false", "tag=run",
        "data.n_val_views=2", "data.n_test_views=4",  # 3 views trips an upstream torch.cross "data.eval_height=32", "data.eval_width=32",
        "system.renderer.num_samples_per_ray=16", "trainer.val_check_interval=2",
        "system.guidance_eval_every=2",
    ]  # fmt: skip
    _launch(run, "--config", str(CPU_CONFIG), "--train", "trainer.max_steps=4", *small)
    trial = run / "outputs" / "lmcsds-dreamfusion-cpu" / "run"
    save = trial / "save"
    for name in ("it2-0.png", "it4-1.png", "it0-guidance.png", "it2-guidance.png", "it4-test.mp4"):
        assert (save / name).is_file(), sorted(p.name for p in save.iterdir())
    assert len(list((save / "it4-test").glob("*.png"))) == 4
    ckpt = trial / "ckpts" / "last.ckpt"
    assert torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"] == 4
    rows = _metrics(trial)
    assert [int(r["step"]) for r in rows] == [0, 1, 2, 3]
    for r in rows:  # what the LMC-SDS guidance logs through dreamfusion-system
        assert float(r["train/loss_sds"]) > 0 and float(r["train/g_lmc_norm"]) > 0

    # resume from the checkpoint: continues, does not start over. (Lightning 2.0 marks the
    # batch during which the checkpoint was written as unfinished, and replays it: the resumed
    # run logs from step 3 on; global_step, weights and optimiser state continue from 4.)
    parsed = trial / "configs" / "parsed.yaml"
    before = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    _launch(run, "--config", str(parsed), "--train", f"resume={ckpt}", "trainer.max_steps=6")
    after = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert after["global_step"] > 4
    resumed = [int(r["step"]) for r in _metrics(trial)][4:]
    assert resumed and min(resumed) >= 3, resumed
    changed = [k for k in before if not torch.equal(before[k], after["state_dict"][k])]
    assert any(k.startswith("geometry.") for k in changed)
    assert any(save.glob("it[5-9]-test.mp4"))  # the resumed run's final test video

    # validate and test only, from the checkpoint
    _launch(run, "--config", str(parsed), "--validate", f"resume={ckpt}")
    _launch(run, "--config", str(parsed), "--test", f"resume={ckpt}")
    step = after["global_step"]  # --validate / --test report the checkpoint's step
    assert (save / f"it{step}-0.png").is_file() and (save / f"it{step}-test.mp4").is_file()


def test_a_run_whose_renders_stay_non_finite_stops_with_a_clear_message(tmp_path):
    """A NaN backdrop makes every render NaN: loss_sds stays finite and the renders are
    counted each step, and after max_non_finite_steps steps the run stops, saying why."""
    run = _run_dir(tmp_path)
    log = _launch(
        run, "--config", str(CPU_CONFIG), "--train", "exp_root_dir=outputs",
        "use_timestamp=false", "tag=nan", "trainer.max_steps=6",
        "trainer.val_check_interval=100", "system.renderer.num_samples_per_ray=16",
        "system.background.color=[.nan,.nan,.nan]", "system.guidance.max_non_finite_steps=3",
        ok=False,
    )  # fmt: skip
    assert "step 0: 1 of 1 renders hold NaN or inf" in log
    assert "every render has held NaN or inf for 3 steps in a row (since step 0)" in log
    rows = _metrics(run / "outputs" / "lmcsds-dreamfusion-cpu" / "nan")
    assert [float(r["train/non_finite_renders"]) for r in rows] == [1.0, 1.0]
    assert all(float(r["train/loss_sds"]) == 0.0 for r in rows)  # finite: no gradient
    from lmcsds.evaluation.bench3d.scoring import non_finite_steps

    assert non_finite_steps(run / "outputs" / "lmcsds-dreamfusion-cpu" / "nan") == 2


def test_a_step_with_a_non_finite_loss_is_skipped_not_applied(tmp_path):
    """An empty scene (density bias -1000: every opacity exactly 0) makes dreamfusion-system's
    loss_orient 0 / 0: each such step is skipped and counted, the run finishes, and the
    parameters stay finite (one applied NaN step would make them all NaN)."""
    run = _run_dir(tmp_path)
    log = _launch(
        run, "--config", str(CPU_CONFIG), "--train", "exp_root_dir=outputs",
        "use_timestamp=false", "tag=empty", "trainer.max_steps=3", "data.n_test_views=4",
        "data.eval_height=32", "data.eval_width=32", "trainer.val_check_interval=100",
        "system.renderer.num_samples_per_ray=16", "system.geometry.density_bias=-1000.0",
    )  # fmt: skip
    assert "the total loss is nan, so the step is skipped" in log
    trial = run / "outputs" / "lmcsds-dreamfusion-cpu" / "empty"
    rows = _metrics(trial)
    assert [float(r["train/skipped_steps"]) for r in rows] == [1.0, 2.0, 3.0]
    assert all(r["train/loss_orient"] == "nan" for r in rows)
    from lmcsds.evaluation.bench3d.scoring import non_finite_steps

    assert non_finite_steps(trial) == 3  # the benchmark's count sees skipped steps
    state = torch.load(trial / "ckpts" / "last.ckpt", map_location="cpu", weights_only=False)
    assert all(torch.isfinite(v).all() for k, v in state["state_dict"].items() if "geometry" in k)


# --- comparison with the built-in SDS ------------------------------------------------------------


def test_compare_on_an_object_prompt_shows_the_truth_the_ceiling_and_3d_scores(tmp_path):
    """ "a photo of a red cube" names a procedural object: the ceiling joins the built-in SDS,
    matched SDS and LMC-SDS (two runs at a time), the pictures get the truth's row and the
    table the 3D benchmark's scores with the objects classifier (the prior's own)."""
    from lmcsds.evaluation.compare import compare

    run = _run_dir(tmp_path)
    out = tmp_path / "compare"
    tiny = [
        "data.n_val_views=1", "data.eval_height=32", "data.eval_width=32",
        "trainer.val_check_interval=2", "system.renderer.num_samples_per_ray=16",
    ]  # fmt: skip
    prompt = "a photo of a red cube"
    rows = compare(run, CPU_CONFIG, prompt, out, steps=2, omegas=[10.0], overrides=tiny, jobs=2,
                   views=3)  # fmt: skip
    labels = ["supervised", "sds-builtin", "sds-matched", "lmc-sds-w10"]  # 32 px prior: matched
    assert [r["run"] for r in rows] == labels
    builtin = OmegaConf.load(out / "configs" / "sds-builtin.yaml").system
    assert builtin.guidance_type == "deep-floyd-guidance" and "loss_type" not in builtin.guidance
    matched = OmegaConf.load(out / "configs" / "sds-matched.yaml").system.guidance
    assert matched.loss_type == "sds" and matched.guidance_scale == 21.0  # built-in 20 + 1
    ceiling = OmegaConf.load(out / "configs" / "supervised.yaml").system
    assert ceiling.guidance_type == "lmcsds-supervised-guidance"
    for label in labels:  # each went through launch.py with its own guidance
        log = (out / "logs" / f"{label}.log").read_text()
        assert ("Loading Deep Floyd" in log) == (label == "sds-builtin")
        trial = out / "runs" / "compare" / label
        assert (trial / "ckpts" / "last.ckpt").is_file()
        assert len(list((trial / "save" / "it2-test").glob("*.png"))) == 4  # 3 views + repeat
    for name in ("renders.png", "strip.mp4", "curves.png", "metrics.csv", "metrics.md"):
        assert (out / name).stat().st_size > 0
    import imageio.v3 as iio

    assert iio.imread(out / "strip.mp4").shape[2] == 5 * 128  # the truth + 4 runs side by side
    for r in rows:
        assert 0 <= r["iou"] <= 1 and r["delta_e_pixel"] >= 0 and r["mean_grad_norm"] > 0
        assert 0 <= r["shape_acc"] <= 1 and r["non_finite_steps"] == 0
    assert (
        "hf_energy" not in rows[0] and "against the true object" in (out / "metrics.md").read_text()
    )
    # a second call reuses the finished runs; another prompt in the same folder is refused
    stamps = {p: p.stat().st_mtime_ns for p in (out / "logs").iterdir()}
    compare(run, CPU_CONFIG, prompt, out, steps=2, omegas=[10.0], overrides=tiny, views=3)
    assert {p: p.stat().st_mtime_ns for p in (out / "logs").iterdir()} == stamps
    with pytest.raises(ValueError, match="'a photo of a red cube'.*--force"):
        compare(run, CPU_CONFIG, "a photo of a blue cube", out, steps=2, omegas=[10.0],
                overrides=tiny, views=3)  # fmt: skip


def test_compare_on_a_free_prompt_says_there_is_no_truth(tmp_path, capsys):
    from lmcsds.evaluation.compare import compare

    run = _run_dir(tmp_path)
    tiny = [
        "data.n_val_views=1", "data.n_test_views=4", "data.eval_height=32", "data.eval_width=32",
        "trainer.val_check_interval=2", "system.renderer.num_samples_per_ray=16",
    ]  # fmt: skip
    rows = compare(run, CPU_CONFIG, "a hamburger", tmp_path / "c", steps=1, omegas=[10.0],
                   overrides=tiny, matched=False, jobs=2)  # fmt: skip
    assert "no ground truth for 'a hamburger'" in capsys.readouterr().out
    assert [r["run"] for r in rows] == ["sds-builtin", "lmc-sds-w10"]  # no ceiling without truth
    for r in rows:  # image statistics only
        assert r["hf_energy"] >= 0 and 0 <= r["clipped_fraction"] <= 1 and "iou" not in r


def test_the_default_metric_classifier_follows_the_prior(tmp_path):
    from lmcsds.evaluation.compare import default_classifier

    root = Path(__file__).resolve().parents[1]
    priors = root / "load" / "lmcsds" / "priors"
    assert default_classifier(root, "load/lmcsds/priors/objects-if-32") == str(
        root / "load/lmcsds/priors/objects-classifier.safetensors")  # fmt: skip
    assert default_classifier(root, "load/lmcsds/priors/fmnist-if-32") == str(
        priors / "fmnist-classifier.safetensors")  # fmt: skip
    assert default_classifier(root, "DeepFloyd/IF-I-XL-v1.0") is None


def test_bench3d_scores_runs_against_the_true_object_and_resumes(tmp_path):
    """The supervised ceiling and fixed-eps LMC-SDS over two seeds on a procedural object, tiny
    settings, two runs at a time; paired differences to the ceiling."""
    import json

    from lmcsds.evaluation.bench3d import bench3d
    from lmcsds.priors.objects3d import ObjectSpec

    run = _run_dir(tmp_path)
    out = tmp_path / "bench"
    tiny = [
        "data.n_val_views=1", "data.eval_height=32", "data.eval_width=32",
        "trainer.val_check_interval=2", "system.renderer.num_samples_per_ray=16",
    ]  # fmt: skip
    kw = dict(prompts=[ObjectSpec("mug", "green", "striped")], seeds=[0, 3], views=4,
              guidances=["supervised", "lmc-sds-fixed-w20"], overrides=tiny, jobs=2,
              reference="supervised",
              classifier_path=str(ROOT / "load/lmcsds/priors/objects-classifier.safetensors"))  # fmt: skip
    # an interrupted earlier attempt's log: the run starts from an empty folder, so its NaN
    # step is not counted (every run below has non_finite 0)
    stale = out / "runs/green-striped-mug/lmc-sds-fixed-w20-s3/csv_logs/version_7"
    stale.mkdir(parents=True)
    (stale / "metrics.csv").write_text("step,train/loss_sds,train/non_finite_renders\n5,nan,1\n")
    rows = bench3d(run, CPU_CONFIG, out, 2, **kw)
    assert not stale.exists()
    assert [(r["guidance"], r["seed"]) for r in rows] == [
        ("supervised", 0),
        ("supervised", 3),
        ("lmc-sds-fixed-w20", 0),
        ("lmc-sds-fixed-w20", 3),
    ]
    for r in rows:
        assert 0 <= r["iou"] <= 1 and r["turn_deg"] in (-90.0, 0.0, 90.0, 180.0)
        assert 0 <= r["view_acc"] <= 1 and 0 <= r["janus_rate"] <= 1  # a mug: asymmetric
        assert 0 <= r["part_recall"] <= 1 and r["chamfer"] >= 0 and r["delta_e_pixel"] >= 0
        assert r["non_finite"] == 0 and r["wall_s"] > 0
        # LMC-SDS records keep the acceptance check's g_lmc summary (logs are not kept); with
        # two logged steps the (upper) median is the peak, so the peak is 1x the median
        if r["guidance"] == "supervised":
            assert "runaway" not in r and "g_lmc_spike" not in r
        else:
            assert r["g_lmc_spike"] == 1.0
            assert r["runaway"] == float(r["g_lmc_ratio"] > 10 or r["g_lmc_growth"] > 10)
    wall = json.loads(
        (out / "runs/green-striped-mug/lmc-sds-fixed-w20-s3/wall_time.json").read_text()
    )
    assert wall["jobs"] == 2
    parsed = OmegaConf.load(out / "runs/green-striped-mug/supervised-s3/configs/parsed.yaml")
    assert parsed.seed == 3 and parsed.system.guidance.object_caption == ObjectSpec(
        "mug", "green", "striped").caption()  # fmt: skip
    fixed = OmegaConf.load(out / "configs" / "lmc-sds-fixed-w20.yaml").system.guidance
    assert fixed.fixed_noise and fixed.loss_type == "lmc-sds"
    summary = (out / "summary.md").read_text()
    assert "| lmc-sds-fixed-w20 | 4 |" not in summary and "| lmc-sds-fixed-w20 | 2 |" in summary
    assert "## Paired differences to `supervised`" in summary
    for name in ("renders-green-striped-mug.png", "per_prompt.csv", "summary.png", "iou.png",
                 "paired.csv", "COMMAND.md"):  # fmt: skip
        assert (out / name).stat().st_size > 0
    assert "--seeds 0,3" in (out / "COMMAND.md").read_text()
    # a second call reuses the runs and their scores
    scores = out / "runs" / "green-striped-mug" / "supervised-s0" / "scores.json"
    stamp = scores.stat().st_mtime_ns
    again = bench3d(run, CPU_CONFIG, out, 2, **kw)
    assert (
        scores.stat().st_mtime_ns == stamp
        and json.loads(scores.read_text())["iou"] == again[0]["iou"]
    )
    # under git, the folder keeps the tables and each run's record only
    subprocess.run(["git", "init", "-q", str(out)], check=True)
    subprocess.run(["git", "-C", str(out), "add", "-A"], check=True)
    tracked = subprocess.run(["git", "-C", str(out), "ls-files"], check=True,
                             capture_output=True, text=True).stdout.split()  # fmt: skip
    run_files = sorted({Path(f).name for f in tracked if f.startswith("runs/")})
    assert run_files == ["scores.json", "views.png"] and "summary.md" in tracked
    assert len([f for f in tracked if f.startswith("runs/")]) == 8
    # the records alone (as a clone of that folder has them) are finished runs: nothing is
    # retrained and --report-only gives the same table
    for trial in (out / "runs" / "green-striped-mug").iterdir():
        for item in trial.iterdir():
            if item.name not in ("scores.json", "views.png"):
                shutil.rmtree(item) if item.is_dir() else item.unlink()
    kept = bench3d(run, CPU_CONFIG, out, 2, **kw)
    assert [r["iou"] for r in kept] == [r["iou"] for r in again]
    assert not (out / "runs/green-striped-mug/supervised-s0/ckpts").exists()
    # a run lost: --report-only scores the cells in which every guidance finished, and says so
    shutil.rmtree(out / "runs/green-striped-mug/lmc-sds-fixed-w20-s3")
    partial = bench3d(run, CPU_CONFIG, out, 2, train=False, **kw)
    assert [(r["guidance"], r["seed"]) for r in partial] == [
        ("supervised", 0), ("lmc-sds-fixed-w20", 0)]  # fmt: skip
    assert "**Partial: 2 of 4 runs, the 1 (prompt, seed) cells" in (out / "summary.md").read_text()


# --- mesh stage ----------------------------------------------------------------------------------


def test_bench3d_refines_each_run_as_a_mesh_and_scores_both_stages(tmp_path):
    """bench3d --refine: the ceiling's coarse run, then its mesh stage from the coarse
    checkpoint at the coarse asset's own occupancy level, both scored against the object
    (the mesh's volume scores from its solid); a rerun trains nothing."""
    import json

    from omegaconf import OmegaConf

    from lmcsds.adapter.tet_grid import write_tet_grids
    from lmcsds.evaluation.bench3d import bench3d
    from lmcsds.priors.objects3d import ObjectSpec

    run = _run_dir(tmp_path)
    write_tet_grids(run / "load" / "tets", [32])
    out = tmp_path / "bench"
    # (overrides apply to both stages: nothing the mesh stage's renderer does not know)
    tiny = ["data.n_val_views=1", "data.eval_height=32", "data.eval_width=32", "data.width=32",
            "data.height=32", "system.geometry.isosurface_resolution=32"]  # fmt: skip
    kw = dict(prompts=[ObjectSpec("cube", "red", "plain")], seeds=[0], views=4,
              guidances=["supervised"], overrides=tiny, reference=None,
              classifier_path=str(ROOT / "load/lmcsds/priors/objects-classifier.safetensors"),
              refine_config=REFINE_CPU_CONFIG, refine_steps=2)  # fmt: skip
    rows = bench3d(run, CPU_CONFIG, out, 3, **kw)
    assert [r["guidance"] for r in rows] == ["supervised", "supervised-refine"]
    coarse, fine = (
        out / "runs" / "red-cube" / n for n in ("supervised-s0", "supervised-refine-s0")
    )
    parsed = OmegaConf.load(fine / "configs" / "parsed.yaml")
    level = json.loads((coarse / "scores.json").read_text())["occupancy_level"]
    assert parsed.system.geometry_type == "tetrahedra-sdf-grid" and parsed.trainer.max_steps == 2
    assert parsed.system.geometry_convert_override.isosurface_threshold == pytest.approx(level)
    assert parsed.system.geometry_convert_from == str(coarse / "ckpts" / "last.ckpt")
    record = json.loads((fine / "scores.json").read_text())
    assert record["steps"] == 2 and 0 <= record["iou"] <= 1 and 0 <= record["volume_iou"] <= 1
    assert "supervised-refine" in (out / "summary.md").read_text()
    assert "--refine --refine-config" in (out / "COMMAND.md").read_text()
    # a rerun trains nothing; --tables keeps this selection's tables in a folder of their own
    stamp = (fine / "scores.json").stat().st_mtime_ns
    bench3d(run, CPU_CONFIG, out, 3, **kw, tables="mesh")
    assert (fine / "scores.json").stat().st_mtime_ns == stamp
    assert "supervised-refine" in (out / "mesh" / "summary.md").read_text()
    command = (out / "mesh" / "COMMAND.md").read_text()
    assert f"--out {out} " in command and "--tables mesh" in command


def test_a_cpu_coarse_result_refines_as_a_mesh_through_launch(tmp_path):
    """The mesh stage on the CPU, through threestudio's own launch.py, magic3d-system,
    tetrahedra-sdf-grid and nvdiff-rasterizer: a coarse CPU run's checkpoint converts to a
    DMTet mesh (tet grids written as make setup does) and refines; the renders show a surface
    and the geometry's SDF and texture network get gradients (their values move)."""
    from lmcsds.adapter.tet_grid import write_tet_grids

    run = _run_dir(tmp_path)
    write_tet_grids(run / "load" / "tets", [32])
    prompt = "system.prompt_processor.prompt=a photo of a red cube"
    _launch(run, "--config", str(CPU_CONFIG), "--train", "exp_root_dir=outputs",
            "use_timestamp=false", "tag=coarse", "trainer.max_steps=2", prompt,
            "trainer.val_check_interval=100", "data.n_test_views=1", "data.eval_height=32",
            "data.eval_width=32", "system.renderer.num_samples_per_ray=16")  # fmt: skip
    coarse = run / "outputs" / "lmcsds-dreamfusion-cpu" / "coarse" / "ckpts" / "last.ckpt"
    log = _launch(run, "--config", str(REFINE_CPU_CONFIG), "--train", "exp_root_dir=outputs",
                  "use_timestamp=false", "tag=fine", "trainer.max_steps=3", prompt,
                  f"system.geometry_convert_from={coarse}", "system.geometry.isosurface_resolution=32",
                  "data.width=32", "data.height=32", "data.n_test_views=2",
                  "data.eval_height=32", "data.eval_width=32", "trainer.val_check_interval=100")  # fmt: skip
    assert "Initializing geometry from a given checkpoint" in log
    trial = run / "outputs" / "lmcsds-magic3d-refine-cpu" / "fine"
    assert [float(r["train/loss_sds"]) > 0 for r in _metrics(trial)] == [True] * 3
    state = torch.load(trial / "ckpts" / "last.ckpt", map_location="cpu", weights_only=False)
    assert state["global_step"] == 3
    from lmcsds.evaluation.bench3d.scoring import final_test_views

    rgb, opacity = final_test_views(trial, 2)
    assert (opacity > 0.5).float().mean() > 0.02 and torch.isfinite(rgb).all()  # a surface
    sdf, texture = state["state_dict"]["geometry.sdf"], "geometry.feature_network.layers.0.weight"

    start = torch.load(coarse, map_location="cpu", weights_only=False)["state_dict"]
    assert not torch.equal(state["state_dict"][texture], start[texture])  # refined texture
    assert torch.isfinite(sdf).all() and (sdf < 0).any() and (sdf > 0).any()
    # the scorer's solid of the refined mesh: SOLID inside, 0 outside, neither empty nor full
    from lmcsds.evaluation.asset_density import SOLID, extract

    solid = extract(trial, 32)
    assert solid["radius"] == 1.0 and set(np.unique(solid["density"])) == {0.0, SOLID}


def test_mesh_refinement_config_parses_and_builds_its_cpu_parts(
    tmp_path, monkeypatch, cpu_threestudio, tiny_if_dir, tiny_corrective_path
):
    """Every part of the Magic3D-style stage is built on the CPU, the rasteriser on the
    pure-torch stand-in for nvdiffrast."""
    from threestudio.utils.config import load_config, parse_structured

    import lmcsds.adapter.guidance  # noqa: F401
    import lmcsds.adapter.system  # noqa: F401

    monkeypatch.chdir(tmp_path)
    cfg = load_config(
        str(ROOT / "configs" / "lmcsds-magic3d-refine.yaml"),
        cli_args=[
            "system.prompt_processor.prompt=a hamburger",
            "system.geometry_convert_from=outputs/lmcsds-dreamfusion/x/ckpts/last.ckpt",
        ],
    )
    system_cls = cpu_threestudio.find(cfg.system_type)
    system_cfg = parse_structured(system_cls.Config, cfg.system)
    assert system_cfg.refinement and system_cfg.geometry_type == "tetrahedra-sdf-grid"
    for kind in ("geometry", "material", "background", "renderer", "guidance"):
        cpu_threestudio.find(getattr(system_cfg, f"{kind}_type"))  # all registered
    # the coarse stage's geometry settings carry over (radius, hash-grid encoding)
    coarse = load_config(str(ROOT / "configs" / "lmcsds-dreamfusion.yaml"),
                         cli_args=["system.prompt_processor.prompt=a hamburger"])  # fmt: skip
    assert system_cfg.geometry.radius == coarse.system.geometry.radius
    for key in ("n_levels", "n_features_per_level", "log2_hashmap_size", "base_resolution"):
        assert (
            system_cfg.geometry.pos_encoding_config[key]
            == coarse.system.geometry.pos_encoding_config[key]
        )
    material = cpu_threestudio.find(system_cfg.material_type)(system_cfg.material)
    assert material.requires_normal
    guidance_cfg = dict(system_cfg.guidance)
    guidance_cfg.update(
        pretrained_model_name_or_path=str(tiny_if_dir), corrective_path=str(tiny_corrective_path),
        half_precision_weights=False,
    )  # fmt: skip
    guidance = cpu_threestudio.find(system_cfg.guidance_type)(guidance_cfg)
    assert guidance.max_step == int(0.5 * guidance.num_train_timesteps)
    # the conversion parses the coarse stage's saved config with the refine system's Config:
    # the GPU pair as threestudio's own systems; the CPU coarse config holds this extension's
    # system options, which threestudio's magic3d-system does not know (hence ours)
    parse_structured(system_cls.Config, coarse.system)
    cpu_coarse = load_config(str(CPU_CONFIG), cli_args=["system.prompt_processor.prompt=a cube"])
    cpu_refine = load_config(str(REFINE_CPU_CONFIG), cli_args=[
        "system.prompt_processor.prompt=a cube", "system.geometry_convert_from=x.ckpt"])  # fmt: skip
    parse_structured(cpu_threestudio.find(cpu_refine.system_type).Config, cpu_coarse.system)
    with pytest.raises(Exception, match="guidance_eval_every"):
        parse_structured(system_cls.Config, cpu_coarse.system)
    # threestudio's nvdiff-rasterizer builds on the CPU rasteriser
    renderer = cpu_threestudio.find(system_cfg.renderer_type)(
        system_cfg.renderer, geometry=None, material=material, background=None
    )
    from lmcsds.adapter import rasterizer

    assert isinstance(renderer.ctx.ctx, rasterizer.RasterizeCudaContext)
