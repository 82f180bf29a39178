"""The detail diagnosis' measures on steps whose effect on the pattern is known by construction."""

import math
from types import SimpleNamespace

import pytest
import torch

from lmcsds.core.lmc_sds import StepConfig
from lmcsds.evaluation import detail_diagnosis as D


def test_highpass_keeps_only_frequencies_from_the_cutoff():
    y, x = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    low, high = torch.cos(2 * math.pi * 2 * x / 32), torch.sin(2 * math.pi * 5 * y / 32)
    torch.testing.assert_close(D.highpass(low + high + 0.7, 3.0), high, atol=1e-5, rtol=0)
    torch.testing.assert_close(D.highpass(low, 2.0), low, atol=1e-5, rtol=0)


class FakePrior:
    """abar = 0.5 everywhere: w(t) = 1 - abar = 0.5 under the "sds" weighting."""

    device = "cpu"

    def abar(self, t):
        return torch.full((len(t), 1, 1, 1), 0.5)


def test_step_effect_measures_gain_pull_coherence_and_share_by_hand(monkeypatch):
    """Steps -g = c d + n_k (n_k: draw k's detail, uncorrelated with d): gain c, coherence
    ||c d + mean n||^2 / mean ||c d + n_k||^2, the update c ||d|| w(t)-weighted."""
    gen = torch.Generator().manual_seed(0)
    y, x = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    d = torch.sin(2 * math.pi * 4 * x / 16).expand(1, 3, 16, 16).clone()
    noises = [torch.sin(2 * math.pi * (5 + k) * y / 16).expand(1, 3, 16, 16) for k in range(2)]
    c = 0.3
    calls = iter(noises)

    def fake_step(prior, corrective, z, t, emb_y, emb_0, eps, cfg):
        w = 1 - prior.abar(t)  # the real step applies w(t); so does this one
        return SimpleNamespace(g=-w * (c * d + next(calls)))

    monkeypatch.setattr(D, "lmc_sds_step", fake_step)
    cfg = StepConfig("sds", 2.0, weighting="sds")
    per_view = D.step_effect(FakePrior(), None, d, d, None, None, cfg, (10, 20), 2, 3.0, gen)
    assert all(len(v) == 1 for v in per_view.values())  # one view
    m = {k: v[0] for k, v in per_view.items()}
    w = 0.5
    mean = w * (c * d + (noises[0] + noises[1]) / 2)
    dd = (d * d).sum()
    assert m["gain"] == pytest.approx(w * c, rel=1e-4)
    assert m["update"] == pytest.approx(w * c * dd.sqrt().item(), rel=1e-4)
    assert m["pull"] == pytest.approx(
        ((mean * d).sum() / (mean.norm() * d.norm())).item(), rel=1e-4
    )
    energy = sum(((w * (c * d + n)) ** 2).sum() for n in noises) / 2
    assert m["coherence"] == pytest.approx(((mean**2).sum() / energy).item(), rel=1e-4)
    assert m["hf_share"] == pytest.approx(1.0, rel=1e-4)  # every term is above 3 cycles


def test_targets_of_a_patterned_mug_are_its_pattern_and_its_handle():
    import numpy as np

    from lmcsds.priors.cameras import CameraDistribution, sample_cameras
    from lmcsds.priors.objects3d import parse_caption

    spec = parse_caption("a photo of a red checkered mug")
    cams = sample_cameras(CameraDistribution(), 3, torch.Generator().manual_seed(0),
                          np.random.default_rng(0))  # fmt: skip
    pattern, handle = D.targets_for(spec, cams, 32)
    assert (pattern.name, handle.name) == ("checkered pattern", "handle")

    # the pattern: same silhouette, the colour averaged; the handle: the flat mug's extra pixels
    def lit(x):  # pixels off the black backdrop (a red check is -1 in green and blue)
        return (x > -1).any(1)

    assert (lit(pattern.truth) ^ lit(pattern.failure)).float().mean() < 0.01  # edge pixels
    fg = lit(pattern.truth)[:, None].expand_as(pattern.truth)
    assert (pattern.truth - pattern.failure)[fg].abs().mean() > 0.1
    assert torch.equal(handle.truth, pattern.failure)
    extra = lit(handle.truth) & ~lit(handle.failure)
    assert extra.sum() > 20 and not (lit(handle.failure) & ~lit(handle.truth)).any()


def test_diagnose_gives_every_loss_state_and_bucket_with_intervals(monkeypatch):
    """A step that adds 0.2 w(t) of the pattern in every view: gain 0.1 with a zero-width
    interval; the update shares of a (loss, state) add up to 1."""
    d = torch.zeros(3, 3, 8, 8)
    d[..., ::2, :] = 1.0  # 4 cycles per image, above the cutoff

    def fake_step(prior, corrective, z, t, emb_y, emb_0, eps, cfg):
        return SimpleNamespace(g=-(1 - prior.abar(t)) * 0.2 * d)

    monkeypatch.setattr(D, "lmc_sds_step", fake_step)
    target = D.Target("stripes", torch.zeros_like(d), d)
    losses = {"a": StepConfig("sds", 2.0, weighting="sds"), "b": StepConfig("sds", 3.0)}
    rows = D.diagnose(FakePrior(), None, target, None, None, losses, draws=2,
                      states=(0.0, 1.0), buckets=[(10, 20), (20, 60)])  # fmt: skip
    assert [(r["loss"], r["a"], r["t"]) for r in rows] == [
        (loss, a, t) for loss in "ab" for a in (0.0, 1.0) for t in ("10-20", "20-60")]  # fmt: skip
    for r in rows:  # w(t) = 1 - abar = 0.5
        assert r["gain"] == r["gain_low"] == r["gain_high"] == pytest.approx(0.1)
    for loss in "ab":
        shares = [r["update_share"] for r in rows if r["loss"] == loss and r["a"] == 0.0]
        assert shares == pytest.approx([0.2, 0.8])  # bucket widths 10 and 40


def test_views_in_which_the_direction_is_hidden_say_nothing(monkeypatch):
    """A handle behind the cup: that view's d is ~0; its ratios would be noise over nothing."""
    d = torch.zeros(2, 3, 8, 8)
    d[0, :, ::2, :] = 1.0
    d[1, :, ::2, :] = 0.01  # 1e-4 of view 0's energy

    def fake_step(prior, corrective, z, t, emb_y, emb_0, eps, cfg):
        return SimpleNamespace(g=-(1 - prior.abar(t)) * d[:1].expand(2, -1, -1, -1))

    monkeypatch.setattr(D, "lmc_sds_step", fake_step)
    cfg = StepConfig("sds", 2.0, weighting="sds")
    gen = torch.Generator().manual_seed(0)
    per_view = D.step_effect(FakePrior(), None, d, d, None, None, cfg, (10, 20), 2, 3.0, gen)
    assert per_view["gain"][0] == pytest.approx(0.5) and math.isnan(per_view["gain"][1])
