"""SDI's noise by DDIM inversion, on a prior whose noise prediction is known exactly.

Data x0 ~ N(mu, s^2 I) with mu read from the text embedding: the exact noise prediction is
eps(x_t, t) = sqrt(1 - abar) (x_t - sqrt(abar) mu) / (abar s^2 + 1 - abar), and guided
predictions are those of N(mu_omega, s^2), so DDIM's ODE has a closed form to compare with.
"""

import math

import pytest
import torch
from diffusers import DDPMScheduler

from lmcsds.core import StepConfig, lmc_sds_step
from lmcsds.core.lmc_sds import invert_noise

S = 0.5  # data standard deviation


class GaussianPrior:
    """IFPrior's interface for Gaussian data, mean = embedding[:, 0, 0] per row."""

    num_train_timesteps = 1000

    def __init__(self):
        self.alphas_cumprod = DDPMScheduler(beta_schedule="squaredcos_cap_v2").alphas_cumprod
        self.rows = 0

    def abar(self, t):
        return self.alphas_cumprod[t].view(-1, 1, 1, 1)

    def eps(self, zt, t, emb):
        self.rows += zt.shape[0]
        a, mu = self.abar(t), emb[:, 0, 0].view(-1, 1, 1, 1)
        return (1 - a).sqrt() * (zt - a.sqrt() * mu) / (a * S**2 + 1 - a)


def embeddings(mu, batch):
    return torch.full((batch, 2, 4), float(mu))


@pytest.fixture
def setup():
    gen = torch.Generator().manual_seed(0)
    z = 0.3 + S * torch.randn(2, 3, 8, 8, generator=gen)
    return GaussianPrior(), z, embeddings(0.4, 2), embeddings(-0.2, 2)


def sigma(a):
    return math.sqrt((1 - a) / a)


def hand_inversion(prior, z, t, mu_y, mu_0, omega, steps, eta=0.0, gen=None):
    """DDIM inversion as Euler steps of dxbar = eps dsigma in xbar = x / sqrt(abar), sigma =
    sqrt((1 - abar) / abar) (DDIM, Song et al. 2021, Eq. 14), image by image in lockstep;
    with eta, eta sqrt((1 - a) / (1 - a') (1 - a' / a)) times one batch-shaped draw per step."""
    stride, mu = 1000 // steps, omega * mu_y + (1 - omega) * mu_0
    xs, taus = [z[b].clone() for b in range(z.shape[0])], [0] * z.shape[0]
    while any(tau < int(tb) for tau, tb in zip(taus, t)):
        xi = torch.randn(z.shape, generator=gen) if eta else None
        for b in range(z.shape[0]):
            nxt = min(taus[b] + stride, int(t[b]))
            a, an = float(prior.alphas_cumprod[taus[b]]), float(prior.alphas_cumprod[nxt])
            e = math.sqrt(1 - a) * (xs[b] - math.sqrt(a) * mu) / (a * S**2 + 1 - a)
            xs[b] = math.sqrt(an) * (xs[b] / math.sqrt(a) + (sigma(an) - sigma(a)) * e)
            if eta:
                xs[b] = xs[b] + eta * math.sqrt((1 - a) / (1 - an) * (1 - an / a)) * xi[b]
            taus[b] = nxt
    return torch.stack(xs)


def test_inversion_is_ddims_ode_discretised_and_kappa_reproduces_z_t(setup):
    prior, z, emb_y, emb_0 = setup
    t = torch.tensor([455, 300])  # 455: a last step shorter than T / steps
    zt, kappa, rows = invert_noise(prior, z, t, emb_y, emb_0, omega=-6.5, steps=10)
    torch.testing.assert_close(zt, hand_inversion(prior, z, t, 0.4, -0.2, -6.5, 10))
    a = prior.abar(t)
    torch.testing.assert_close(a.sqrt() * z + (1 - a).sqrt() * kappa, zt)
    assert rows == 2 * 2 * 5  # 5 steps reach 455 (the other image idles after 3), 2 rows each
    assert prior.rows == rows


def test_inversion_converges_to_the_probability_flow_solution(setup):
    """As T / steps -> 1 the inversion approaches the exact ODE solution
    xbar_t = mu + (x0 - mu) sqrt(s^2 + sigma_t^2) / sqrt(s^2 + sigma_0^2)."""
    prior, z, emb_y, emb_0 = setup
    t, omega = torch.tensor([600, 600]), 3.0
    mu = omega * 0.4 + (1 - omega) * -0.2
    a0, at = float(prior.alphas_cumprod[0]), float(prior.alphas_cumprod[600])
    exact = math.sqrt(at) * (
        mu + (z - mu) * math.sqrt(S**2 + sigma(at) ** 2) / math.sqrt(S**2 + sigma(a0) ** 2)
    )
    errors = []
    for steps in (10, 100, 1000):
        zt, _, _ = invert_noise(prior, z, t, emb_y, emb_0, omega, steps)
        errors.append((zt - exact).abs().max().item())
    assert errors[2] < 1e-2  # of values up to 3.6
    for coarse, fine in zip(errors, errors[1:]):  # first order, as Euler steps are
        assert 8 < coarse / fine < 12


def test_eta_adds_ddim_noise_per_step_from_the_generator(setup):
    prior, z, emb_y, emb_0 = setup
    t = torch.tensor([250, 120])
    zt, _, _ = invert_noise(
        prior, z, t, emb_y, emb_0, -6.5, 10, eta=0.3, generator=torch.Generator().manual_seed(5)
    )
    gen = torch.Generator().manual_seed(5)
    expected = hand_inversion(prior, z, t, 0.4, -0.2, -6.5, 10, 0.3, gen)
    torch.testing.assert_close(zt, expected)
    deterministic = invert_noise(prior, z, t, emb_y, emb_0, -6.5, 10)[0]
    assert (zt - deterministic).abs().max() > 1e-2


def test_sds_with_inverted_noise_is_eps_omega_at_the_inverted_image_minus_kappa(setup):
    prior, z, emb_y, emb_0 = setup
    t = torch.tensor([700, 120])
    cfg = StepConfig("sds", 4.0, noise="inversion", inversion_omega=-6.5, inversion_eta=0.0)
    out = lmc_sds_step(prior, None, z, t, emb_y, emb_0, torch.zeros_like(z), cfg)
    zt, kappa, inv_rows = invert_noise(prior, z, t, emb_y, emb_0, -6.5, 10)
    torch.testing.assert_close(out.zt, zt)
    guided = prior.eps(zt, t, embeddings(4.0 * 0.4 - 3.0 * -0.2, 2))  # N(mu_omega, s^2)
    torch.testing.assert_close(out.g, (guided - kappa) / 4.0, atol=1e-5, rtol=1e-5)
    assert out.unet_rows == 2 + inv_rows // 2  # per image: the step's 2 rows + 2 per step


def test_fixed_eps_and_inversion_conflict_outside_lmc_sds(setup):
    prior, z, emb_y, emb_0 = setup
    cfg = StepConfig("sds", 4.0, noise="inversion")
    with pytest.raises(ValueError, match="fixed noise or noise inversion"):
        lmc_sds_step(prior, None, z, torch.tensor([5, 5]), emb_y, emb_0, z, cfg, eps_cond=z)
    with pytest.raises(ValueError, match="noise must be one of"):
        StepConfig(noise="ddim")
    with pytest.raises(ValueError, match="inversion_steps"):
        StepConfig(noise="inversion", inversion_steps=0)
