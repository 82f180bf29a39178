"""The corrective acceptance check and the closed-form spectral corrective (its negative control)."""

from types import SimpleNamespace

import pytest
import torch

from lmcsds.core import StepConfig, lmc_sds_step, load_corrective
from lmcsds.core.spectral_corrective import SpectralCorrective
from lmcsds.training import acceptance as A
from lmcsds.training.spectral import fit_spectral, save_spectral

from .conftest import ROOT


def _blur_filter(res: int, sigma: float) -> torch.Tensor:
    """The rfft2 transfer function of a circular Gaussian blur, (res, res // 2 + 1)."""
    fy = torch.fft.fftfreq(res)[:, None]
    fx = torch.fft.rfftfreq(res)[None, :]
    return torch.exp(-2 * (torch.pi * sigma) ** 2 * (fx**2 + fy**2))


def test_spectral_fit_recovers_a_known_linear_filter():
    """Triplets made by a known filter (a blur for t < 500, a colour mix for t >= 500) plus
    noise: the least-squares filters reproduce it on new images."""
    res, T = 16, 1000
    blur = _blur_filter(res, 1.5).to(torch.complex64)
    mix = torch.tensor([[0.2, 0.7, 0.1], [0.5, 0.5, 0.0], [0.0, 0.3, 0.6]])

    def truth(z, t):
        blurred = torch.fft.irfft2(torch.fft.rfft2(z) * blur, s=(res, res))
        mixed = torch.einsum("ij,bjhw->bihw", mix, z)
        return torch.where((t < 500).view(-1, 1, 1, 1), blurred, mixed)

    gen = torch.Generator().manual_seed(0)

    def batches(n):
        for _ in range(n):
            z = torch.randn(64, 3, res, res, generator=gen)
            t = torch.randint(0, T, (64,), generator=gen)
            yield z, truth(z, t) + 0.05 * torch.randn(z.shape, generator=gen), t

    model = fit_spectral(batches(40), T, bins=10, smooth_bins=0.3)
    z, _, t = next(batches(1))
    t = torch.where(t // 100 == 4, t - 100, t)  # keep away from the blur/mix boundary bins
    t = torch.where(t // 100 == 5, t + 100, t)
    expected = truth(z, t)
    err = (model(z, t) - expected).norm() / expected.norm()
    assert err < 0.05


def test_spectral_corrective_loads_as_a_corrective_and_drives_the_step(tmp_path, tiny_prior):
    res, T = tiny_prior.resolution, tiny_prior.num_train_timesteps
    gen = torch.Generator().manual_seed(1)
    filters = torch.randn(5, res, res // 2 + 1, 3, 3, generator=gen, dtype=torch.complex64)
    model = SpectralCorrective(filters, T)
    path = tmp_path / "spectral.safetensors"
    save_spectral(str(path), model, tiny_prior, "global<700")
    loaded, meta = load_corrective(path, tiny_prior.prior_id, res)
    assert meta.architecture.kind == "spectral" and meta.normalization == "global<700"
    z = torch.randn(4, 3, res, res, generator=gen)
    t = torch.tensor([0, 250, 600, T - 1])
    assert torch.equal(loaded(z, t), model(z, t))
    emb = torch.zeros(4, 77, tiny_prior.unet.config.encoder_hid_dim)
    out = lmc_sds_step(tiny_prior, loaded, z, t, emb, emb, torch.randn(z.shape, generator=gen),
                       StepConfig(loss_type="lmc-sds", normalization="none"))  # fmt: skip
    b = model(z, t)
    assert torch.allclose(out.bhat, b) and torch.allclose(out.g_second, b - out.zhat)


def test_traces_of_a_stable_run_pass_and_of_runaways_fail_with_their_reason():
    n, limits = 100, A.Limits()
    steady = A.trace_summary([5.0] * n, [20.0] * n, 0)
    assert steady["ratio"] == 0.25 and steady["growth"] == 1.0
    assert A.run_reasons(steady, limits, "steady") == []
    geometric = [4.0 * 1.1**i for i in range(n)]  # the spectral corrective's red cube
    reasons = A.run_reasons(A.trace_summary(geometric, [20.0] * n, 0), limits, "geo")
    assert any("grew" in r for r in reasons) and any("g_cond" in r for r in reasons)
    dominated = A.trace_summary([400.0] * n, [20.0] * n, 0)  # no growth, but 20x g_cond
    assert [r for r in A.run_reasons(dominated, limits, "d") if "g_cond" in r]
    assert not [r for r in A.run_reasons(dominated, limits, "d") if "grew" in r]
    assert "skipped" in A.run_reasons(A.trace_summary([5.0] * n, [20.0] * n, 3), limits, "s")[0]
    assert "too few" in A.run_reasons(A.trace_summary([5.0] * 3, [20.0] * 3, 0), limits, "f")[0]
    leaning = A.trace_summary([30.0] * n, [20.0] * n, 0)  # g_lmc 1.5x g_cond: warn, no fail
    assert A.run_reasons(leaning, limits, "l") == [] and A.run_warnings(leaning, limits, "l")
    assert A.run_warnings(steady, limits, "s") == [] and not A.run_warnings(dominated, limits, "d")
    assert A.verdict([], []) == "pass" and A.verdict([], ["w"]) == "warn"
    assert A.verdict(["f"], ["w"]) == "fail"


def test_a_late_burst_of_g_lmc_fails_on_the_spike_rule_alone():
    """A 3D runaway of 1600 steps: g_lmc steady at 5, then 1e6 for the last 8 steps; its
    second-half median ratio (0.25) and quarter growth (1.0) stay inside their limits."""
    n, limits = 1600, A.Limits()
    burst = A.trace_summary([5.0] * (n - 8) + [1e6] * 8, [20.0] * n, 0)
    assert burst["ratio"] == 0.25 and burst["growth"] == 1.0
    assert burst["peak_g_lmc"] == 1e6 and burst["spike"] == 2e5  # 1e6 / median 5
    reasons = A.run_reasons(burst, limits, "burst")
    assert len(reasons) == 1 and "peaked at 1e+06, 2e+05x its median" in reasons[0]
    # the warm-up's first large steps (30x the median, as in every stable run) pass
    warm_up = A.trace_summary([150.0] * 10 + [5.0] * (n - 10), [20.0] * n, 0)
    assert warm_up["spike"] == 30.0 and A.run_reasons(warm_up, limits, "warm-up") == []
    assert A.run_reasons(burst, A.Limits(spike_limit=3e5), "burst") == []


def test_an_emptied_scene_is_found_from_the_sparsity_loss():
    """threestudio's sparsity loss is mean(sqrt(opacity^2 + 0.01)): 0.1 for an empty scene."""
    sparsity = lambda o: (torch.as_tensor(o) ** 2 + 0.01).sqrt().mean().item()  # noqa: E731
    blob = torch.zeros(32, 32)
    blob[8:24, 8:24] = 0.9  # a quarter of the render covered
    empty = torch.zeros(32, 32)
    three_pixels = torch.zeros(32, 32).flatten()
    three_pixels[:3] = 1.0
    trace = [sparsity(blob)] * 10 + [sparsity(empty)] * 30
    assert A.emptied_at(trace) == 10
    assert A.emptied_at([sparsity(blob)] * 40) is None
    assert A.emptied_at([sparsity(three_pixels)] * 40) is None  # three opaque pixels are an object
    # emptied for a while, then regrown: not empty at the end
    assert A.emptied_at([sparsity(empty)] * 20 + [sparsity(blob)] * 20) is None
    assert A.emptied_at([]) is None
    row = A.trace_summary([5.0] * 40, [20.0] * 40, 0, trace)
    assert row["emptied_at"] == 10 and A.run_reasons(row, A.Limits(), "e") == []
    # steps skipped once the scene is empty (loss_orient's 0/0) are not the corrective's failure
    late = A.trace_summary([5.0] * 40, [20.0] * 40, 12, trace, skipped_from=28)
    assert late["skipped"] == 0 and late["skipped_when_empty"] == 12
    assert A.run_reasons(late, A.Limits(), "late") == []
    # skips from before the scene emptied, or in a scene that never emptied, still fail
    for losses, first in ((trace, 9), ([sparsity(blob)] * 40, 28)):
        early = A.trace_summary([5.0] * 40, [20.0] * 40, 12, losses, skipped_from=first)
        assert early["skipped"] == 12 and early["skipped_when_empty"] == 0
        assert "12 steps skipped" in A.run_reasons(early, A.Limits(), "early")[0]


def test_traces_from_a_run_log_place_the_first_skip_after_the_scene_emptied(tmp_path):
    """A launch.py CSV log as the system writes it (one row per step): the scene empties at
    step 10, loss_orient turns 0/0 from step 25 on; the check reads the skips as the empty
    scene's, not the corrective's."""
    from lmcsds.evaluation.check_corrective import guidance_traces

    log = tmp_path / "csv_logs" / "version_0" / "metrics.csv"
    log.parent.mkdir(parents=True)
    lines = ["step,train/loss_sds,train/g_lmc_norm,train/g_cond_norm,train/loss_sparsity,"
             "train/skipped_steps"]  # fmt: skip
    for step in range(40):
        sparsity = 0.12 if step < 10 else 0.1
        lines.append(f"{step},1.0,5.0,20.0,{sparsity},{max(0, step - 24)}")
    log.write_text("\n".join(lines) + "\n")
    traces = guidance_traces(tmp_path)
    assert traces["skipped"] == 15 and traces["skipped_from"] == 25
    row = A.trace_summary(**traces)
    assert row["emptied_at"] == 10 and row["skipped"] == 0 and row["skipped_when_empty"] == 15
    assert A.run_reasons(row, A.Limits(), "log") == []


@pytest.mark.threestudio
def test_check_passes_the_bundled_corrective_and_fails_an_amplifier(tmp_path):
    """Through launch.py: the bundled objects corrective passes; a corrective returning 30 z
    (no Eq. 10 normalisation) makes g_lmc dominate g_cond, and the check says so."""
    from lmcsds.evaluation.check_corrective import check

    from .test_cpu_mode import CPU_CONFIG, _run_dir

    run = _run_dir(tmp_path)
    tiny = ["data.n_val_views=1", "data.n_test_views=4", "data.eval_height=32",
            "data.eval_width=32", "system.renderer.num_samples_per_ray=16"]  # fmt: skip
    prompts = ["a photo of a red cube"]
    bundled = ROOT / "load" / "lmcsds" / "correctives" / "objects-if-32.safetensors"
    good = check(run, CPU_CONFIG, str(bundled), tmp_path / "good", prompts, steps=30,
                 overrides=tiny)  # fmt: skip
    assert good["verdict"] == "pass", good["failures"]
    assert good["runs"][0]["steps"] == 30 and (tmp_path / "good" / "norms.png").is_file()
    assert "runs/" in (tmp_path / "good" / ".gitignore").read_text().split()
    # a run whose scene emptied is followed by the same prompt at the next seed, up to 2 times
    runs = good["runs"]
    assert [r["seed"] for r in runs] == list(range(len(runs))) and len(runs) <= 3
    assert all(r["emptied_at"] is not None for r in runs[:-1])
    assert (runs[-1]["emptied_at"] is None) == (len(good["warnings"]) == 0)
    # stricter limits re-judge the finished run without training it again
    log = tmp_path / "good" / "a-photo-of-a-red-cube.log"
    stamp = log.stat().st_mtime_ns
    strict = check(run, CPU_CONFIG, str(bundled), tmp_path / "good", prompts, steps=30,
                   limits=A.Limits(ratio_limit=1e-3, warn_ratio=1e-4), overrides=tiny)  # fmt: skip
    assert strict["verdict"] == "fail" and log.stat().st_mtime_ns == stamp
    # the config's own value as an override reuses the run; another value trains it again
    parsed = tmp_path / "good" / "runs" / "check" / "a-photo-of-a-red-cube" / "configs"
    assert "corrective_input: clamped" in (parsed / "parsed.yaml").read_text()  # the default
    check(run, CPU_CONFIG, str(bundled), tmp_path / "good", prompts, steps=30,
          limits=A.Limits(reseeds=0), overrides=tiny + ["system.guidance.corrective_input=clamped"])  # fmt: skip
    assert log.stat().st_mtime_ns == stamp
    raw = tiny + ["system.guidance.corrective_input=raw"]
    check(run, CPU_CONFIG, str(bundled), tmp_path / "good", prompts, steps=30,
          limits=A.Limits(reseeds=0), overrides=raw)  # fmt: skip
    assert log.stat().st_mtime_ns != stamp
    assert "corrective_input: raw" in (parsed / "parsed.yaml").read_text()

    prior = SimpleNamespace(prior_id="objects-if-32", resolution=32, num_train_timesteps=1000)
    eye = 30 * torch.eye(3, dtype=torch.complex64).expand(2, 32, 17, 3, 3)
    amplifier = tmp_path / "amplifier.safetensors"
    save_spectral(str(amplifier), SpectralCorrective(eye.clone(), 1000), prior, "none")
    bad = check(run, CPU_CONFIG, str(amplifier), tmp_path / "bad", prompts, steps=30,
                overrides=tiny)  # fmt: skip
    assert bad["verdict"] == "fail" and "g_cond" in bad["failures"][0]
    assert "**fail**" in (tmp_path / "bad" / "check.md").read_text()


def test_a_clamped_corrective_input_passes_the_part_outside_through():
    """corrective_input="clamped": b_psi(clamp(z)) + (z - clamp(z)); for the residual
    corrective z + w z that is z + w clamp(z), written out by hand."""
    from lmcsds.core.lmc_sds import StepConfig, corrective_output

    class Residual(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor(0.1))

        def forward(self, z, t):
            return z + self.w * z

    z = torch.tensor([0.5, 1.5, -2.0, -1.0]).view(1, 1, 2, 2)
    t = torch.tensor([500])
    raw = corrective_output(Residual(), z, t, "raw").flatten().tolist()
    clamped = corrective_output(Residual(), z, t, "clamped").flatten().tolist()
    assert raw == pytest.approx([0.55, 1.65, -2.2, -1.1])
    assert clamped == pytest.approx([0.55, 1.6, -2.1, -1.1])
    with pytest.raises(ValueError, match="corrective_input"):
        StepConfig(corrective_input="clip")
