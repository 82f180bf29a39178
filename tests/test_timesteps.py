"""Timestep schedules against DreamTime's and SDI's definitions, written out by hand."""

import math

import pytest
import torch
from diffusers import DDPMScheduler

from lmcsds.core.timesteps import dreamtime_pdf, dreamtime_t, linear_t, w_d, w_p

ABAR = DDPMScheduler(beta_schedule="squaredcos_cap_v2").alphas_cumprod  # IF stage I's


def hand_pdf(t_min, t_max, m1=800, m2=500, s1=300, s2=100, diffusion=True):
    """DreamTime's p(t), one t at a time, in plain Python floats."""
    weights = []
    for t in range(1000):
        if t > m1:
            wp = math.exp(-((t - m1) ** 2) / (2 * s1**2))
        elif t < m2:
            wp = math.exp(-((t - m2) ** 2) / (2 * s2**2))
        else:
            wp = 1.0
        a = float(ABAR[t])
        wd = math.sqrt((1 - a) / a) if diffusion else 1.0
        weights.append(wp * wd if t_min <= t <= t_max else 0.0)
    total = sum(weights)
    return [w / total for w in weights]


def hand_t(pdf, progress):
    """argmin_t |sum_{t' >= t} p(t') - progress| over the support, by brute force."""
    support = [t for t, p in enumerate(pdf) if p > 0]
    best, best_err = None, None
    for t in support:
        err = abs(sum(pdf[t:]) - progress)
        if best_err is None or err < best_err:
            best, best_err = t, err
    return best


def test_prior_weight_is_flat_between_the_modes_and_gaussian_outside():
    t = torch.tensor([300, 499, 500, 650, 800, 801, 999])
    got = w_p(t, 800, 500, 300, 100)
    expected = [math.exp(-(200**2) / 2e4), math.exp(-1 / 2e4), 1, 1, 1]
    expected += [math.exp(-1 / 1.8e5), math.exp(-(199**2) / 1.8e5)]
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64))
    a = ABAR[[20, 500, 980]]
    torch.testing.assert_close(w_d(a), ((1 - a.double()) / a.double()).sqrt())


@pytest.mark.parametrize("diffusion", [True, False])
@pytest.mark.parametrize("t_range", [(20, 980), (200, 700)])
def test_dreamtime_schedule_matches_the_definition_by_brute_force(diffusion, t_range):
    pdf = dreamtime_pdf(ABAR, *t_range, diffusion_weight=diffusion)
    expected = hand_pdf(*t_range, diffusion=diffusion)
    torch.testing.assert_close(pdf, torch.tensor(expected, dtype=torch.float64))
    n = 50
    ts = [dreamtime_t(pdf, i / n) for i in range(n + 1)]
    assert ts == [hand_t(expected, i / n) for i in range(n + 1)]
    assert ts[0] == t_range[1] and ts[-1] == t_range[0]  # from t_max down to t_min
    assert all(a >= b for a, b in zip(ts, ts[1:]))  # non-increasing


def test_dreamtime_spends_steps_on_t_in_proportion_to_p():
    """With W_p alone the flat part [500, 800] holds its share of the mass, and the schedule
    spends that share of the steps there; W_d moves steps towards high noise."""
    n = 2000
    shares = {}
    for diffusion in (False, True):
        pdf = dreamtime_pdf(ABAR, 20, 980, diffusion_weight=diffusion)
        ts = torch.tensor([dreamtime_t(pdf, i / n) for i in range(n)])
        in_flat = ((ts >= 500) & (ts <= 800)).float().mean().item()
        assert in_flat == pytest.approx(pdf[500:801].sum().item(), abs=2e-3)
        shares[diffusion] = (ts > 800).float().mean().item()
    assert shares[True] > shares[False] + 0.1


def test_linear_schedule_and_bad_parameters():
    assert [linear_t(p, 20, 980) for p in (0.0, 0.25, 1.0, 1.5)] == [980, 740, 20, 20]
    for bad in ((500, 800, 300, 100), (800, 500, 0, 100), (800, 500, 300, -1), (800, 500)):
        with pytest.raises(ValueError, match=r"\[m1, m2, s1, s2\] with m2 <= m1, s1, s2 > 0"):
            dreamtime_pdf(ABAR, 20, 980, bad)
