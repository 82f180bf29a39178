"""The guidance inside the real threestudio: loader, config, system inputs, errors."""

import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lmcsds.core import FixedNoise, prior_id

from .conftest import ROOT, THREESTUDIO_DIR
from .reference import reference, unet_eps

pytestmark = pytest.mark.threestudio  # needs threestudio's pinned stack

EXTENSION = ROOT / "custom" / "threestudio-lmcsds"
CONFIG = ROOT / "configs" / "lmcsds-dreamfusion.yaml"
NAME = "lmc-sds-deep-floyd-guidance"


def test_loaded_by_threestudio_custom_module_loader(tmp_path):
    """launch.py's own loader imports the folder; the guidance registers once, one copy."""
    (tmp_path / "custom").mkdir()
    os.symlink(EXTENSION, tmp_path / "custom" / "threestudio-lmcsds")
    script = textwrap.dedent(f"""
        import importlib.util, sys
        from lmcsds.adapter.cpu_mode import install_cuda_placeholders
        install_cuda_placeholders()  # no CUDA here: tiny-cuda-nn / nvdiffrast placeholders
        spec = importlib.util.spec_from_file_location("ts_launch", {str(THREESTUDIO_DIR / "launch.py")!r})
        launch = importlib.util.module_from_spec(spec); spec.loader.exec_module(launch)
        launch.load_custom_modules()
        import threestudio
        cls = threestudio.find({NAME!r})
        assert "threestudio-lmcsds" in sys.modules, sorted(sys.modules)
        copies = [m for m, mod in list(sys.modules.items())
                  if getattr(mod, "__file__", None) and mod.__file__.endswith("adapter/guidance.py")]
        print("CLASS", cls.__module__, cls.__name__, "COPIES", copies)
        """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "IMPORT FAILED" not in out.stdout
    assert "CLASS lmcsds.adapter.guidance LMCSDSDeepFloydGuidance" in out.stdout
    assert "COPIES ['lmcsds.adapter.guidance']" in out.stdout


def test_core_does_not_import_threestudio():
    script = "import sys, lmcsds.core; assert 'threestudio' not in sys.modules; print('ok')"
    env = dict(os.environ, PYTHONPATH=str(EXTENSION))
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


def test_config_parses_with_threestudio(tmp_path, monkeypatch, cpu_threestudio):
    from threestudio.utils.config import load_config, parse_structured

    import lmcsds.adapter.guidance  # noqa: F401

    monkeypatch.chdir(tmp_path)
    cfg = load_config(str(CONFIG), cli_args=["system.prompt_processor.prompt=a hamburger"])
    assert cfg.system_type == "dreamfusion-system"
    assert cfg.system.guidance_type == NAME
    system_cfg = parse_structured(cpu_threestudio.find(cfg.system_type).Config, cfg.system)
    guidance_cfg = parse_structured(cpu_threestudio.find(NAME).Config, system_cfg.guidance)
    assert guidance_cfg.guidance_scale == 20.0 and guidance_cfg.loss_type == "lmc-sds"
    assert guidance_cfg.weighting_strategy == "sds" and guidance_cfg.noise_seed == cfg.seed
    assert "lambda_sds" in system_cfg.loss  # the system picks up our loss_sds
    sds = load_config(
        str(CONFIG),
        cli_args=["system.prompt_processor.prompt=a hamburger", "system.guidance.loss_type=sds"],
    )
    assert sds.system.guidance.loss_type == "sds"


@pytest.fixture
def workdir(tmp_path, monkeypatch, encode, cpu_threestudio):
    """A threestudio working directory whose DeepFloyd prompt processor uses the tiny T5.

    threestudio's processor loads T5 in 8 bit (CUDA-only) inside ``spawn_func``; only that
    function is replaced, by one writing the same cache files with the tiny encoder.
    """
    from threestudio.models.prompt_processors.base import hash_prompt
    from threestudio.models.prompt_processors.deepfloyd_prompt_processor import (
        DeepFloydPromptProcessor,
    )

    def spawn_func(model, prompts, cache_dir):
        for prompt, emb in zip(prompts, encode(prompts)):
            torch.save(emb, os.path.join(cache_dir, f"{hash_prompt(model, prompt)}.pt"))

    monkeypatch.setattr(DeepFloydPromptProcessor, "spawn_func", staticmethod(spawn_func))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def make_guidance(threestudio, prior_dir, corrective, **overrides):
    import lmcsds.adapter.guidance  # noqa: F401

    cfg = dict(
        pretrained_model_name_or_path=str(prior_dir),
        corrective_path=str(corrective),
        half_precision_weights=False,
        guidance_scale=8.0,
    )
    cfg.update(overrides)
    return threestudio.find(NAME)(cfg)


def system_inputs(threestudio, prior_dir, batch_size=2, size=32, prompt="a hamburger", **pp):
    """What dreamfusion-system passes: prompt_utils and the random-camera batch."""
    processor = threestudio.find("deep-floyd-prompt-processor")(
        dict(pretrained_model_name_or_path=str(prior_dir), prompt=prompt, spawn=False, **pp)
    )
    dm = threestudio.find("random-camera-datamodule")(
        dict(batch_size=batch_size, width=size, height=size, elevation_range=[-10, 90])
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    return processor(), batch


@pytest.mark.parametrize("fixed", [False, True])
def test_gradient_reaching_the_render_equals_the_formula(
    workdir, cpu_threestudio, tiny_if_dir, tiny_corrective_path, tiny_prior, fixed
):
    guidance = make_guidance(
        cpu_threestudio, tiny_if_dir, tiny_corrective_path, fixed_noise=fixed, noise_seed=11
    )
    prompt_utils, batch = system_inputs(cpu_threestudio, tiny_if_dir)
    rgb = torch.rand(2, 32, 32, 3, requires_grad=True)  # 32 = prior resolution: resize is identity
    torch.manual_seed(5)
    out = guidance(rgb, prompt_utils, **batch, rgb_as_latents=False)
    out["loss_sds"].backward()

    torch.manual_seed(5)  # documented draw order: t, then the fresh eps
    t = torch.randint(guidance.min_step, guidance.max_step + 1, [2])
    eps = torch.randn(2, 3, 32, 32)
    z = rgb.detach().permute(0, 3, 1, 2) * 2 - 1
    emb_y, emb_0 = prompt_utils.get_text_embeddings(
        batch["elevation"], batch["azimuth"], batch["camera_distances"], True
    ).chunk(2)
    eps_c = FixedNoise(11)(z) if fixed else None
    g = reference(tiny_prior, guidance.corrective, z, t, emb_y, emb_0, eps, 8.0, eps_c=eps_c)
    torch.testing.assert_close(out["timestep"], t.float())
    # z = 2 rgb - 1 and loss = 0.5 ||z - sg(z - g)||^2 / B  =>  d loss / d rgb = 2 g / B
    torch.testing.assert_close(rgb.grad.permute(0, 3, 1, 2), 2 * g / 2, atol=1e-4, rtol=1e-4)
    assert {"g_cond_norm", "g_lmc_norm", "grad_norm"} <= set(out)
    assert not [k for k in out if k.startswith("loss_") and k != "loss_sds"]
    assert "eval" not in out  # the eval images cost a decode: only when asked for
    assert out["g_lmc_norm"] > 0 and out["g_cond_norm"] > 0


def test_fixed_noise_same_across_steps_and_restarts(
    workdir, cpu_threestudio, tiny_if_dir, tiny_corrective_path
):
    a = make_guidance(cpu_threestudio, tiny_if_dir, tiny_corrective_path, fixed_noise=True)
    b = make_guidance(cpu_threestudio, tiny_if_dir, tiny_corrective_path, fixed_noise=True)
    c = make_guidance(
        cpu_threestudio, tiny_if_dir, tiny_corrective_path, fixed_noise=True, noise_seed=1
    )
    like = torch.zeros(2, 3, 32, 32)
    torch.testing.assert_close(a.fixed_noise(like), a.fixed_noise(like))
    torch.testing.assert_close(a.fixed_noise(like), b.fixed_noise(like))
    assert not torch.allclose(a.fixed_noise(like), c.fixed_noise(like))


def test_resizes_larger_renders_and_sds_mode_reports_g_proj(
    workdir, cpu_threestudio, tiny_if_dir, tiny_corrective_path
):
    guidance = make_guidance(
        cpu_threestudio, tiny_if_dir, tiny_corrective_path / "unused", loss_type="sds"
    )
    prompt_utils, batch = system_inputs(cpu_threestudio, tiny_if_dir, batch_size=1, size=64)
    rgb = torch.rand(1, 64, 64, 3, requires_grad=True)
    out = guidance(rgb, prompt_utils, **batch, guidance_eval=True)
    out["loss_sds"].backward()
    assert rgb.grad.shape == rgb.shape and rgb.grad.abs().sum() > 0
    assert "g_proj_norm" in out and "g_lmc_norm" not in out
    assert set(out["eval"]) >= {"imgs_noisy", "imgs_zhat", "imgs_g_cond", "imgs_g_proj", "texts"}


def test_a_larger_render_is_resized_bilinearly_without_aligned_corners(
    workdir, cpu_threestudio, tiny_if_dir, tiny_corrective_path
):
    """As threestudio's deep-floyd-guidance: the 64 px render gives the loss of its bilinear
    (align_corners=False) resize to the prior's 32 px, with the same t and noise."""
    guidance = make_guidance(cpu_threestudio, tiny_if_dir, tiny_corrective_path)
    prompt_utils, batch = system_inputs(cpu_threestudio, tiny_if_dir, batch_size=1, size=64)
    rgb = torch.rand(1, 64, 64, 3)
    small = F.interpolate(rgb.permute(0, 3, 1, 2), (32, 32), mode="bilinear", align_corners=False)
    losses = []
    for x in (rgb, small.permute(0, 2, 3, 1)):
        torch.manual_seed(3)
        losses.append(guidance(x, prompt_utils, **batch)["loss_sds"])
    torch.testing.assert_close(losses[0], losses[1])


def test_grad_clip_bounds_every_element_and_the_logs_give_the_t_range(
    workdir, cpu_threestudio, tiny_if_dir, tiny_corrective_path
):
    """grad_clip clamps g element-wise to [-c, c] (threestudio's deep-floyd-guidance); the
    outputs log the t range in use."""
    prompt_utils, batch = system_inputs(cpu_threestudio, tiny_if_dir)
    rgb = torch.rand(2, 32, 32, 3)
    grads = []
    for clip in (None, 2e-3):
        guidance = make_guidance(cpu_threestudio, tiny_if_dir, tiny_corrective_path,
                                 grad_clip=clip, min_step_percent=0.3, max_step_percent=0.6)  # fmt: skip
        x = rgb.clone().requires_grad_()
        torch.manual_seed(4)
        out = guidance(x, prompt_utils, **batch)
        out["loss_sds"].backward()
        grads.append(x.grad)  # = g: d loss / d rgb = 2 g / B, and B = 2
    full, clipped = grads
    assert (full > 2e-3).any() and (full < -2e-3).any()  # the clip acts on both sides
    torch.testing.assert_close(clipped, full.clamp(-2e-3, 2e-3))
    assert out["min_step"] == 300.0 and out["max_step"] == 600.0
    assert 300 <= out["timestep"].min() and out["timestep"].max() <= 600


def test_an_empty_negative_prompt_is_warned_once_where_the_loss_uses_it(
    workdir, cpu_threestudio, tiny_if_dir, caplog
):
    import logging

    caplog.set_level(logging.WARNING)
    prompt_utils, batch = system_inputs(cpu_threestudio, tiny_if_dir)
    unused = workdir / "unused"
    csd = make_guidance(cpu_threestudio, tiny_if_dir, unused, loss_type="csd",
                        csd_negative_weight=0.0)  # fmt: skip
    csd(torch.rand(2, 32, 32, 3), prompt_utils, **batch)
    assert "empty negative prompt" not in caplog.text  # csd without its negative term
    nfsd = make_guidance(cpu_threestudio, tiny_if_dir, unused, loss_type="nfsd")
    for _ in range(2):
        nfsd(torch.rand(2, 32, 32, 3), prompt_utils, **batch)
    assert caplog.text.count("loss_type nfsd with an empty negative prompt") == 1
    assert "or system.prompt_processor.negative_prompt" in caplog.text


def test_guidance_eval_images(workdir, cpu_threestudio, tiny_if_dir, tiny_corrective_path):
    guidance = make_guidance(cpu_threestudio, tiny_if_dir, tiny_corrective_path, max_items_eval=1)
    prompt_utils, batch = system_inputs(cpu_threestudio, tiny_if_dir)
    out = guidance(torch.rand(2, 32, 32, 3), prompt_utils, **batch, guidance_eval=True)
    ev = out["eval"]
    for key in ("imgs_noisy", "imgs_zhat", "imgs_bhat", "imgs_g_cond", "imgs_g_lmc"):
        assert ev[key].shape == (1, 32, 32, 3), key
        assert 0 <= ev[key].min() and ev[key].max() <= 1
    assert ev["bs"] == 1 and len(ev["texts"]) == 1


def test_schedules_through_update_step(workdir, cpu_threestudio, tiny_if_dir, tiny_corrective_path):
    guidance = make_guidance(
        cpu_threestudio,
        tiny_if_dir,
        tiny_corrective_path,
        max_step_percent=[0, 0.98, 0.5, 100],
        grad_clip=[0, 2.0, 8.0, 100],
    )
    guidance.update_step(0, 50)
    assert guidance.max_step == int(1000 * 0.74)
    assert guidance.grad_clip_val == pytest.approx(5.0)
    # threestudio's C(): an int end is a step, a float end an epoch; halfway through either
    for end, epoch, step in ((100, 0, 50), (2.0, 1, 0)):
        scheduled = make_guidance(
            cpu_threestudio, tiny_if_dir, tiny_corrective_path / "unused", loss_type="csd",
            grad_clip=[0, 2.0, 8.0, end], min_step_percent=[0, 0.02, 0.22, end],
            max_step_percent=[0, 0.98, 0.5, end], csd_negative_weight=[0, 0.0, 1.0, end],
        )  # fmt: skip
        assert (scheduled.min_step, scheduled.max_step) == (20, 980), end  # before any step
        scheduled.update_step(epoch, step)
        assert (scheduled.min_step, scheduled.max_step) == (120, 740), end
        assert scheduled.grad_clip_val == pytest.approx(5.0), end
        assert scheduled.step_cfg.csd_negative_weight == pytest.approx(0.5), end


def test_configure_passes_every_option_on(workdir, cpu_threestudio, tiny_if_dir, tmp_path):
    """Each guidance option reaches the step, the prior or the checks; the corrective's
    normalisation and resolution come from its file."""
    from lmcsds.core import CorrectiveConfig, CorrectiveMeta, CorrectiveUNet, save_corrective

    unused = tmp_path / "unused"
    with pytest.raises(ValueError, match="'bogus'"):  # before the prior is loaded
        make_guidance(cpu_threestudio, tmp_path / "no-prior", unused, compile_unet=True,
                      compile_mode="bogus", loss_type="sds")  # fmt: skip
    nfsd = make_guidance(cpu_threestudio, tiny_if_dir, unused, loss_type="nfsd", nfsd_t_small=500)
    assert nfsd.step_cfg.nfsd_t_small == 500 and nfsd.corrective is None
    for channels_last in (False, True):
        sds = make_guidance(cpu_threestudio, tiny_if_dir, unused, loss_type="sds",
                            enable_channels_last_format=channels_last)  # fmt: skip
        weight = sds.prior.unet.conv_in.weight
        assert weight.is_contiguous(memory_format=torch.channels_last) == channels_last
        assert weight.is_contiguous() != channels_last
    for resolution, normalization in ((32, "per_channel"), (64, "global")):
        arch = CorrectiveConfig(base_channels=4, depth=1)
        meta = CorrectiveMeta(prior_id=prior_id(str(tiny_if_dir)), resolution=resolution,
                              normalization=normalization, training_steps=0,
                              num_train_timesteps=1000, architecture=arch)  # fmt: skip
        path = tmp_path / f"corrective-{resolution}.safetensors"
        save_corrective(path, CorrectiveUNet(arch, 1000), meta)
        if resolution == 32:
            lmc = make_guidance(cpu_threestudio, tiny_if_dir, path)
            assert lmc.step_cfg.normalization == "per_channel"  # the file's, not the default
        else:
            with pytest.raises(ValueError, match="trained at 64x64, but the prior works at 32x32"):
                make_guidance(cpu_threestudio, tiny_if_dir, path)


@pytest.mark.parametrize(
    "low,high,ok", [(0.0, 0.5, True), (0.5, 0.5, True), (0.2, 1.0, False), (0.2, 1.5, False)]
)
def test_the_t_range_may_be_one_t_from_0_and_stays_below_1(
    workdir, cpu_threestudio, tiny_if_dir, low, high, ok
):
    kw = dict(loss_type="sds", min_step_percent=low, max_step_percent=high)
    if ok:
        guidance = make_guidance(cpu_threestudio, tiny_if_dir, tiny_if_dir / "unused", **kw)
        assert (guidance.min_step, guidance.max_step) == (int(1000 * low), int(1000 * high))
    else:
        with pytest.raises(ValueError, match="max_step_percent < 1"):
            make_guidance(cpu_threestudio, tiny_if_dir, tiny_if_dir / "unused", **kw)


def test_view_independent_prompts_and_batches_of_three(
    workdir, cpu_threestudio, tiny_if_dir, tiny_corrective_path
):
    """view_dependent_prompting False: the views' directions do not matter; Perp-Neg refuses it
    (threestudio's own check); a batch of 3 is split into prompt and empty-prompt rows."""
    plain = make_guidance(cpu_threestudio, tiny_if_dir, tiny_corrective_path,
                          view_dependent_prompting=False)  # fmt: skip
    prompt_utils, batch = system_inputs(cpu_threestudio, tiny_if_dir, batch_size=3)
    front = dict(batch, azimuth=torch.zeros(3), elevation=torch.zeros(3))
    rgb = torch.rand(3, 32, 32, 3)
    losses = []
    for views in (batch, front):
        torch.manual_seed(2)
        losses.append(plain(rgb, prompt_utils, **views)["loss_sds"])
    torch.testing.assert_close(losses[0], losses[1])
    assert batch["azimuth"].abs().max() > 30  # the directions did differ
    perp_utils, _ = system_inputs(cpu_threestudio, tiny_if_dir, batch_size=3, use_perp_neg=True)
    with pytest.raises(AssertionError, match="Perp-Neg only works with view-dependent"):
        plain(rgb, perp_utils, **batch)


def test_lmc_sds_without_corrective_fails_before_loading_the_prior(
    workdir, cpu_threestudio, tmp_path
):
    missing = tmp_path / "none.safetensors"
    with pytest.raises(FileNotFoundError) as e:
        make_guidance(cpu_threestudio, tmp_path / "no-such-prior", missing)
    assert str(missing) in str(e.value) and "train-corrective" in str(e.value)


@pytest.mark.parametrize(
    "overrides,match",
    [
        (dict(loss_type="vsd"), "loss_type"),
        (dict(loss_type="sds", guidance_scale=-1.0), "omega"),
        (dict(loss_type="sds", weighting_strategy="dreamfusion"), "weighting_strategy"),
        (dict(loss_type="sds", compile_unet=True, compile_mode="fast"), "compile mode"),
        (dict(loss_type="sds", time_schedule="cosine"), "time_schedule must be one of"),
        (dict(loss_type="sds", time_schedule="linear", trainer_max_steps=0), "trainer.max_steps"),
        (dict(loss_type="sds", dreamtime_params=[500, 800, 300, 100]), "m2 <= m1"),
        (dict(loss_type="sds", noise="ddim"), "noise must be one of"),
        (dict(loss_type="sds", noise="inversion", inversion_n_steps=0), "inversion_steps"),
    ],
)
def test_invalid_config_values_fail_before_loading_the_prior(
    workdir, cpu_threestudio, tmp_path, overrides, match
):
    with pytest.raises(ValueError, match=match):
        make_guidance(cpu_threestudio, tmp_path / "no-such-prior", tmp_path / "x", **overrides)


def test_bad_step_range(workdir, cpu_threestudio, tiny_if_dir, tiny_corrective_path):
    with pytest.raises(ValueError, match="min_step_percent"):
        make_guidance(
            cpu_threestudio,
            tiny_if_dir,
            tiny_corrective_path,
            min_step_percent=0.9,
            max_step_percent=0.5,
        )


def test_corrective_normalization_mismatch(
    workdir, cpu_threestudio, tiny_if_dir, tiny_corrective_path
):
    with pytest.raises(ValueError, match="per_channel.*global"):
        make_guidance(
            cpu_threestudio,
            tiny_if_dir,
            tiny_corrective_path,
            corrective_normalization="per_channel",
        )


def test_corrective_for_another_prior_is_refused(
    workdir, cpu_threestudio, tiny_if_dir, tiny_corrective_path, tmp_path
):
    other = tmp_path / "other-prior"
    shutil.copytree(tiny_if_dir, other)
    with pytest.raises(ValueError, match="'tiny-if'.*'other-prior'"):
        make_guidance(cpu_threestudio, other, tiny_corrective_path)


@pytest.mark.parametrize("fixed", [False, True])
def test_perp_neg_gradient_equals_the_formula(
    workdir, cpu_threestudio, tiny_if_dir, tiny_corrective_path, tiny_prior, fixed
):
    """LMC-SDS with Perp-Neg prompts: g_cond becomes omega (e + sum_i w_i perp(e_i, e)),
    written out here with threestudio's own perpendicular_component; g_lmc is unchanged."""
    from threestudio.utils.ops import perpendicular_component

    guidance = make_guidance(
        cpu_threestudio, tiny_if_dir, tiny_corrective_path, fixed_noise=fixed, noise_seed=3
    )
    prompt_utils, batch = system_inputs(cpu_threestudio, tiny_if_dir, use_perp_neg=True)
    batch["azimuth"] = torch.tensor([30.0, 120.0])  # front-side and side-back interpolation
    batch["elevation"] = torch.tensor([10.0, 20.0])
    rgb = torch.rand(2, 32, 32, 3, requires_grad=True)
    torch.manual_seed(5)
    out = guidance(rgb, prompt_utils, **batch)
    out["loss_sds"].backward()

    torch.manual_seed(5)
    t = torch.randint(guidance.min_step, guidance.max_step + 1, [2])
    eps = torch.randn(2, 3, 32, 32)
    z = rgb.detach().permute(0, 3, 1, 2) * 2 - 1
    eps_c = FixedNoise(3)(z) if fixed else eps
    emb, w = prompt_utils.get_text_embeddings_perp_neg(
        batch["elevation"], batch["azimuth"], batch["camera_distances"], True
    )
    assert (w != 0).all()  # both views get two weighted negatives
    zt_c = tiny_prior.scheduler.add_noise(z, eps_c, t)
    e_y, e_0 = unet_eps(tiny_prior, zt_c, t, emb[:2]), unet_eps(tiny_prior, zt_c, t, emb[2:4])
    e_neg = unet_eps(tiny_prior, zt_c.repeat_interleave(2, 0), t.repeat_interleave(2), emb[4:])
    e_pos = e_y - e_0
    accum = sum(w[:, i].view(-1, 1, 1, 1) * perpendicular_component(e_neg[i::2] - e_0, e_pos)
                for i in range(2))  # fmt: skip
    plain = reference(tiny_prior, guidance.corrective, z, t, emb[:2], emb[2:4], eps, 8.0,
                      eps_c=eps_c if fixed else None)  # fmt: skip
    g = plain - e_pos + (e_pos + accum)  # swap g_cond / omega for Perp-Neg's (omega 8 cancels)
    torch.testing.assert_close(rgb.grad.permute(0, 3, 1, 2), g, atol=1e-4, rtol=1e-4)


def _perp_neg_builtin_and_ours(cpu_threestudio, tmp_path, azimuth, elevation):
    """Gradients of the built-in and of our ``sds`` (w = 1 - abar, no 1/omega, omega = the
    built-in's scale) with Perp-Neg prompts on a 64-px prior (the built-in always works at 64
    px), for cameras at ``azimuth`` / ``elevation``; also the Perp-Neg weights they saw."""
    from lmcsds.core.if_factory import IFShape, build_if_pipeline

    from .conftest import TINY_PROMPTS

    torch.manual_seed(0)
    prior_dir = tmp_path / "if-64"
    build_if_pipeline(TINY_PROMPTS * 4, IFShape(sample_size=64)).save_pretrained(prior_dir)
    common = dict(pretrained_model_name_or_path=str(prior_dir), half_precision_weights=False)
    builtin = cpu_threestudio.find("deep-floyd-guidance")(dict(common, guidance_scale=7.0))
    ours = make_guidance(cpu_threestudio, prior_dir, tmp_path / "unused", loss_type="sds",
                         guidance_scale=7.0, scale_by_omega=False, weighting_strategy="sds")  # fmt: skip
    n = len(azimuth)
    prompt_utils, batch = system_inputs(
        cpu_threestudio, prior_dir, batch_size=n, size=64, use_perp_neg=True
    )
    batch["azimuth"], batch["elevation"] = torch.tensor(azimuth), torch.tensor(elevation)
    _, weights = prompt_utils.get_text_embeddings_perp_neg(
        batch["elevation"], batch["azimuth"], batch["camera_distances"], True
    )
    grads = []
    for guidance in (builtin, ours):
        # an NCHW-contiguous render: the built-in's randn_like then draws what randn draws
        rgb = torch.rand(n, 3, 64, 64, generator=torch.Generator().manual_seed(1))
        rgb = rgb.permute(0, 2, 3, 1).requires_grad_()
        torch.manual_seed(5)  # both draw t, then the noise
        guidance(rgb, prompt_utils, **batch)["loss_sds"].backward()
        grads.append(rgb.grad)
    return grads[0], grads[1], weights


def test_sds_with_perp_neg_equals_threestudios_builtin_for_one_image(
    workdir, cpu_threestudio, tmp_path
):
    """Where the two overlap: one image (see the next test), a camera between front and side
    where both negative prompts carry weight, so the negatives enter the comparison."""
    builtin, ours, weights = _perp_neg_builtin_and_ours(cpu_threestudio, tmp_path, [30.0], [10.0])
    assert (weights != 0).all() and weights.shape == (1, 2)
    torch.testing.assert_close(ours, builtin, atol=1e-5, rtol=1e-4)


def test_builtin_perp_neg_pairs_negatives_with_another_images_input(
    workdir, cpu_threestudio, tmp_path
):
    """With several images the built-in stacks the noisy images batch after batch but the
    negative prompts image by image, so with two images and two negatives each image's second
    or first negative is evaluated at the other image's noisy input and timestep
    (docs/baselines.md): the two then disagree on both images. Our per-image pairing is pinned
    against a hand-written reference in test_perp_neg_gradient_equals_the_formula."""
    builtin, ours, weights = _perp_neg_builtin_and_ours(
        cpu_threestudio, tmp_path, [30.0, 120.0], [10.0, 20.0]
    )
    assert (weights != 0).all()
    rel = (ours - builtin).flatten(1).norm(dim=1) / builtin.flatten(1).norm(dim=1)
    assert (rel > 0.05).all(), rel


def _draws(guidance, rgb):
    """The t and eps a call drew after torch.manual_seed(5), and the image z it saw."""
    torch.manual_seed(5)
    t = torch.randint(guidance.min_step, guidance.max_step + 1, [rgb.shape[0]])
    return t, torch.randn(rgb.shape[0], 3, 32, 32), rgb.detach().permute(0, 3, 1, 2) * 2 - 1


def test_nfsd_and_csd_take_the_empty_prompt_and_a_negative(
    workdir, cpu_threestudio, tiny_if_dir, tiny_prior, encode
):
    """nfsd: its own negative prompt (guidance option), eps_0 of the empty prompt although the
    prompt processor has a negative prompt; csd: the processor's negative prompt, weighted by
    a schedule. Both written out by hand (NFSD's delta_D + omega delta_C; CSD's coefficients)."""
    prompt_utils, batch = system_inputs(cpu_threestudio, tiny_if_dir, negative_prompt="a bag")
    emb_y = prompt_utils.get_text_embeddings(
        batch["elevation"], batch["azimuth"], batch["camera_distances"], True
    ).chunk(2)[0]
    null, bag, blurry = encode([""] * 2), encode(["a bag"] * 2), encode(["blurry, dark"] * 2)
    unused = workdir / "unused"
    for loss, options in [
        ("nfsd", dict(negative_prompt="blurry, dark")),
        ("csd", dict(csd_negative_weight=[0, 0.0, 1.0, 10], grad_normalize=True)),
    ]:
        guidance = make_guidance(cpu_threestudio, tiny_if_dir, unused, loss_type=loss,
                                 scale_by_omega=False, **options)  # fmt: skip
        guidance.update_step(0, 5)  # csd's weight halfway: 0.5
        rgb = torch.rand(2, 32, 32, 3, requires_grad=True)
        torch.manual_seed(5)
        out = guidance(rgb, prompt_utils, **batch)
        out["loss_sds"].backward()
        t, eps, z = _draws(guidance, rgb)
        zt = tiny_prior.scheduler.add_noise(z, eps, t)
        e_y, e_0 = unet_eps(tiny_prior, zt, t, emb_y), unet_eps(tiny_prior, zt, t, null)
        if loss == "nfsd":
            e_n = unet_eps(tiny_prior, zt, t, blurry)
            small = (t < 200).view(-1, 1, 1, 1)
            g = torch.where(small, e_0, e_0 - e_n) + 8.0 * (e_y - e_0)
        else:
            e_n = unet_eps(tiny_prior, zt, t, bag)
            g = 8.0 * (1.0 * e_y - 0.5 * e_n - 0.5 * e_0)
            g = g / g.norm()  # grad_normalize, over the batch as CSD's public guidance
            assert out["grad_norm"].item() == pytest.approx(1.0, rel=1e-4)
        torch.testing.assert_close(rgb.grad.permute(0, 3, 1, 2), g, atol=1e-4, rtol=1e-4)
        assert out["unet_rows"] == 3.0


def test_dds_needs_a_source_and_edits_it(workdir, cpu_threestudio, tiny_if_dir, tiny_prior, encode):
    from PIL import Image

    unused = workdir / "unused"
    message = (
        "loss_type 'dds' edits a source: set system.guidance.dds_source_image (an image file) "
        "and system.guidance.dds_source_prompt (a caption of it); in text-to-3D without a "
        "reference image use another loss_type"
    )
    for only in ({}, {"dds_source_image": "source.png"}, {"dds_source_prompt": "a bag"}):
        with pytest.raises(ValueError) as e:
            make_guidance(cpu_threestudio, tiny_if_dir, unused, loss_type="dds", **only)
        assert str(e.value) == message
    with pytest.raises(FileNotFoundError, match="missing.png"):
        make_guidance(cpu_threestudio, tiny_if_dir, unused, loss_type="dds",
                      dds_source_image="missing.png", dds_source_prompt="a bag")  # fmt: skip
    pixels = (torch.rand(48, 48, 3, generator=torch.Generator().manual_seed(2)) * 255).byte()
    Image.fromarray(pixels.numpy()).save(workdir / "source.png")
    guidance = make_guidance(cpu_threestudio, tiny_if_dir, unused, loss_type="dds",
                             dds_source_image="source.png", dds_source_prompt="a bag",
                             scale_by_omega=False)  # fmt: skip
    prompt_utils, batch = system_inputs(cpu_threestudio, tiny_if_dir)
    emb_y, emb_0 = prompt_utils.get_text_embeddings(
        batch["elevation"], batch["azimuth"], batch["camera_distances"], True
    ).chunk(2)
    rgb = torch.rand(2, 32, 32, 3, requires_grad=True)
    torch.manual_seed(5)
    out = guidance(rgb, prompt_utils, **batch)
    out["loss_sds"].backward()
    t, eps, z = _draws(guidance, rgb)
    source = pixels.float().permute(2, 0, 1)[None] / 255 * 2 - 1
    source = torch.nn.functional.interpolate(source, (32, 32), mode="bilinear", antialias=True)

    def guided(image, emb):
        zt = tiny_prior.scheduler.add_noise(image, eps, t)
        e_0 = unet_eps(tiny_prior, zt, t, emb_0)
        return e_0 + 8.0 * (unet_eps(tiny_prior, zt, t, emb) - e_0)

    g = guided(z, emb_y) - guided(source.expand(2, -1, -1, -1), encode(["a bag"] * 2))
    torch.testing.assert_close(rgb.grad.permute(0, 3, 1, 2), g, atol=1e-4, rtol=1e-4)
    assert out["unet_rows"] == 4.0 and "g_source_norm" in out


def test_ms_sds_reports_its_rows(workdir, cpu_threestudio, tiny_if_dir):
    guidance = make_guidance(cpu_threestudio, tiny_if_dir, workdir / "unused",
                             loss_type="ms-sds", ms_sds_steps=3)  # fmt: skip
    prompt_utils, batch = system_inputs(cpu_threestudio, tiny_if_dir, use_perp_neg=True)
    rgb = torch.rand(2, 32, 32, 3, requires_grad=True)
    out = guidance(rgb, prompt_utils, **batch, guidance_eval=True)
    out["loss_sds"].backward()
    assert rgb.grad.abs().sum() > 0
    assert out["unet_rows"] == 3 * (2 + 2)  # 3 steps of prompt, empty prompt, 2 negatives
    assert "imgs_g_proj_multistep" in out["eval"]


def test_time_schedules_give_one_t_per_step_within_the_scheduled_range(
    workdir, cpu_threestudio, tiny_if_dir
):
    from .test_timesteps import hand_pdf, hand_t

    prompt_utils, batch = system_inputs(cpu_threestudio, tiny_if_dir)
    rgb = torch.rand(2, 32, 32, 3)
    linear = make_guidance(cpu_threestudio, tiny_if_dir, workdir / "unused", loss_type="sds",
                           time_schedule="linear", trainer_max_steps=100,
                           max_step_percent=[0, 0.98, 0.5, 100])  # fmt: skip
    for step, t in ((0, 980), (50, 380), (100, 20)):  # max_step 980 -> 740 -> 500 meanwhile
        linear.update_step(0, step)
        assert linear(rgb, prompt_utils, **batch)["timestep"].tolist() == [t, t], step
    dreamtime = make_guidance(cpu_threestudio, tiny_if_dir, workdir / "unused", loss_type="sds",
                              time_schedule="dreamtime", trainer_max_steps=40)  # fmt: skip
    pdf = hand_pdf(20, 980)  # the tiny prior has IF's squared-cosine schedule
    for step in (0, 13, 40):
        dreamtime.update_step(0, step)
        t = dreamtime(rgb, prompt_utils, **batch)["timestep"].tolist()
        assert t == [hand_t(pdf, step / 40)] * 2, step
    assert hand_t(pdf, 0.0) == 980 and hand_t(pdf, 1.0) == 20


def test_inverted_noise_replaces_the_random_draw_and_reports_its_rows(
    workdir, cpu_threestudio, tiny_if_dir
):
    """With eta 0 and a fixed t the step no longer depends on torch's random state; each of the
    4 inversion steps (0 -> 250 -> 500 -> 750 -> 980) adds the prompt's and the empty row."""
    prompt_utils, batch = system_inputs(cpu_threestudio, tiny_if_dir)
    rgb = torch.rand(2, 32, 32, 3)
    grads = {}
    for noise in ("random", "inversion"):
        guidance = make_guidance(cpu_threestudio, tiny_if_dir, workdir / "unused",
                                 loss_type="sds", time_schedule="linear", noise=noise,
                                 inversion_n_steps=4, inversion_eta=0.0)  # fmt: skip
        outs = []
        for seed in (1, 2):
            torch.manual_seed(seed)
            x = rgb.clone().requires_grad_(True)
            out = guidance(x, prompt_utils, **batch)
            out["loss_sds"].backward()
            outs.append(x.grad)
        grads[noise] = outs
        assert out["unet_rows"] == (2 + 4 * 2 if noise == "inversion" else 2)
    assert not torch.allclose(*grads["random"])
    torch.testing.assert_close(*grads["inversion"])


def test_rejects_latents(workdir, cpu_threestudio, tiny_if_dir, tiny_corrective_path):
    guidance = make_guidance(cpu_threestudio, tiny_if_dir, tiny_corrective_path)
    prompt_utils, batch = system_inputs(cpu_threestudio, tiny_if_dir, batch_size=1)
    with pytest.raises(
        ValueError, match="DeepFloyd IF works in pixel space: rgb_as_latents must be False"
    ):
        guidance(torch.rand(1, 32, 32, 3), prompt_utils, **batch, rgb_as_latents=True)


def test_cpu_mode_is_scoped_and_placeholders_raise_when_used():
    import threestudio.utils.base as ts_base

    from lmcsds.adapter.cpu_mode import threestudio_device

    before = ts_base.get_device()
    with threestudio_device("cpu") as device:
        assert ts_base.get_device() == device == torch.device("cpu")
    assert ts_base.get_device() == before  # cuda:<rank> again outside the block
    import tinycudann

    if getattr(tinycudann, "__lmcsds_placeholder__", False):
        with pytest.raises(RuntimeError, match="needs CUDA"):
            tinycudann.Encoding(3, {})


def test_non_finite_renders_get_no_gradient_are_counted_and_warned_once(
    workdir, cpu_threestudio, tiny_if_dir, tiny_corrective_path, caplog
):
    """A NaN render gives a finite loss and no gradient; the other image's gradient is the one
    it gets beside a finite render (the UNet works per image); one warning per run."""
    import logging

    guidance = make_guidance(cpu_threestudio, tiny_if_dir, tiny_corrective_path)
    guidance.update_step(0, 7)
    prompt_utils, batch = system_inputs(cpu_threestudio, tiny_if_dir)
    good = torch.rand(2, 32, 32, 3)
    grads, outs = [], []
    for bad in (None, float("nan"), float("inf")):
        rgb = good.clone()
        if bad is not None:
            rgb[1, 5, 7, 0] = bad
        rgb.requires_grad_()
        torch.manual_seed(5)
        with caplog.at_level(logging.WARNING):
            out = guidance(rgb, prompt_utils, **batch)
        out["loss_sds"].backward()
        grads.append(rgb.grad)
        outs.append(out)
    for out, grad in zip(outs[1:], grads[1:]):
        assert torch.isfinite(out["loss_sds"]) and out["non_finite_renders"] == 1.0
        assert (grad[1] == 0).all() and grad[0].abs().sum() > 0
        torch.testing.assert_close(grad[0], grads[0][0])
    assert outs[0]["non_finite_renders"] == 0.0
    assert caplog.text.count("renders hold NaN or inf") == 1 and "step 7: 1 of 2" in caplog.text


def test_renders_non_finite_for_n_steps_in_a_row_stop_the_run(
    workdir, cpu_threestudio, tiny_if_dir, tiny_corrective_path, caplog
):
    import logging

    caplog.set_level(logging.WARNING)
    guidance = make_guidance(
        cpu_threestudio, tiny_if_dir, tiny_corrective_path, max_non_finite_steps=3
    )
    prompt_utils, batch = system_inputs(cpu_threestudio, tiny_if_dir)
    nan = torch.full((2, 32, 32, 3), float("nan"))
    guidance.update_step(0, 10)
    guidance(nan, prompt_utils, **batch)
    guidance(torch.rand(2, 32, 32, 3), prompt_utils, **batch)  # a finite step resets the count
    for step in (12, 13):
        guidance.update_step(0, step)
        assert torch.isfinite(guidance(nan, prompt_utils, **batch)["loss_sds"])
    guidance.update_step(0, 14)
    with pytest.raises(RuntimeError, match=r"3 steps in a row \(since step 12\)"):
        guidance(nan, prompt_utils, **batch)
    assert "step 10: 2 of 2 renders hold NaN or inf" in caplog.text  # counted, not the finite
    # one finite render in the batch also resets the count
    half = nan.clone()
    half[0] = 0.5
    for step in (20, 21, 22, 23, 24, 25):
        guidance.update_step(0, step)
        guidance(half if step in (20, 23) else nan, prompt_utils, **batch)
    guidance.update_step(0, 26)
    with pytest.raises(RuntimeError, match=r"3 steps in a row \(since step 24\)"):
        guidance(nan, prompt_utils, **batch)
    # a fresh guidance with max_non_finite_steps N stops at the N-th such step; 0 never stops
    for limit in (1, 2, 0):
        strict = make_guidance(cpu_threestudio, tiny_if_dir, tiny_corrective_path,
                               max_non_finite_steps=limit)  # fmt: skip
        for _ in range(limit - 1 if limit else 3):
            assert torch.isfinite(strict(nan, prompt_utils, **batch)["loss_sds"])
        if limit:
            with pytest.raises(RuntimeError, match=f"{limit} steps in a row"):
                strict(nan, prompt_utils, **batch)


def test_guidance_images_map_the_prior_range_and_scale_gradients_per_image(workdir):
    """Eval images: [-1, 1] -> [0, 1] (HWC); gradients divided by each image's own largest
    magnitude first, so the largest lands on 0 or 1 and zero stays mid-grey."""
    from lmcsds.adapter.guidance import _to_image

    x = torch.zeros(2, 3, 2, 2)
    x[0, 0, 0, 0], x[0, 1, 1, 1], x[1, 2, 0, 1] = -1.0, 0.5, 0.02
    plain = _to_image(x)
    assert plain.shape == (2, 2, 2, 3)
    torch.testing.assert_close(plain, (x.permute(0, 2, 3, 1) + 1) / 2)
    signed = _to_image(x, signed=True)
    assert signed[0, 0, 0, 0] == 0.0 and signed[0, 1, 1, 1] == 0.75  # -1 / 1, 0.5 / 1
    assert signed[1, 0, 1, 2] == 1.0 and signed[1, 1, 1, 0] == 0.5  # 0.02 / 0.02; zero
    assert (_to_image(torch.zeros(1, 3, 2, 2), signed=True) == 0.5).all()  # no 0 / 0


@pytest.mark.parametrize("mode", ["RGBA", "L"])
def test_a_dds_source_image_of_any_mode_loads_as_rgb_in_the_prior_range(workdir, tmp_path, mode):
    from PIL import Image

    from lmcsds.adapter.guidance import load_source_image

    pixels = np.zeros((4, 5, 4 if mode == "RGBA" else 1), dtype=np.uint8)
    pixels[0, 0] = 255
    path = tmp_path / "source.png"
    Image.fromarray(pixels.squeeze(-1) if mode == "L" else pixels, mode).save(path)
    x = load_source_image(str(path))
    assert x.shape == (1, 3, 4, 5) and x.dtype == torch.float32
    assert x[0, :, 0, 0].tolist() == [1.0, 1.0, 1.0] and x[0, :, 1, 1].tolist() == [-1.0] * 3
