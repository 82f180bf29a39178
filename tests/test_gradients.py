"""The identities of the paper (METHOD.md) on the pure gradient functions."""

import pytest
import torch

from lmcsds.core import gradients as G
from lmcsds.core.if_factory import if_scheduler


@pytest.fixture
def batch():
    gen = torch.Generator().manual_seed(0)
    shape = (4, 3, 8, 8)
    z = torch.rand(shape, generator=gen) * 2 - 1
    eps, eps_y, eps_0 = (torch.randn(shape, generator=gen) for _ in range(3))
    t = torch.tensor([20, 250, 600, 979])
    abar = if_scheduler().alphas_cumprod[t].view(-1, 1, 1, 1).float()
    return z, eps, eps_y, eps_0, abar


@pytest.mark.parametrize("omega", [1.0, 7.5, 20.0, 100.0])
def test_sds_splits_into_cond_plus_proj(batch, omega):
    _, eps, eps_y, eps_0, _ = batch
    lhs = G.g_sds(eps_y, eps_0, eps, omega)
    rhs = G.g_cond(eps_y, eps_0, omega) + G.g_proj(eps_0, eps)
    torch.testing.assert_close(lhs, rhs)
    # hand-written: omega eps_y + (1 - omega) eps_0 - eps
    torch.testing.assert_close(lhs, omega * eps_y + (1 - omega) * eps_0 - eps)


def test_paper_omega_is_threestudio_scale_plus_one(batch):
    _, _, eps_y, eps_0, _ = batch
    s = 19.0  # threestudio deep-floyd-guidance: eps_y + s (eps_y - eps_0)
    torch.testing.assert_close(G.eps_omega(eps_y, eps_0, s + 1), eps_y + s * (eps_y - eps_0))


def test_forward_diffusion_matches_diffusers_add_noise(batch):
    z, eps, _, _, abar = batch
    t = torch.tensor([20, 250, 600, 979])
    reference = if_scheduler().add_noise(z, eps, t)
    torch.testing.assert_close(G.z_t(z, eps, abar), reference)


def test_projection_term_is_scaled_distance_to_one_step_denoising(batch):
    """eps_0 - eps == sqrt(abar / (1 - abar)) (z - zhat_t)  (Eq. 7)."""
    z, eps, _, eps_0, abar = batch
    zt = G.z_t(z.double(), eps.double(), abar.double())
    zhat = G.zhat_t(zt, eps_0.double(), abar.double())
    lhs = G.g_proj(eps_0.double(), eps.double())
    rhs = (abar / (1 - abar)).double().sqrt() * (z.double() - zhat)
    torch.testing.assert_close(lhs, rhs)


def test_zhat_recovers_z_when_the_noise_is_predicted_exactly(batch):
    z, eps, _, _, abar = batch
    torch.testing.assert_close(G.zhat_t(G.z_t(z, eps, abar), eps, abar), z, atol=1e-4, rtol=0)


def test_bhat_hand_computed_global():
    b = torch.tensor([0.0, 1.0, 2.0, 3.0]).view(1, 1, 2, 2).expand(1, 3, 2, 2)
    zhat = torch.tensor([0.0, 2.0, 4.0, 6.0]).view(1, 1, 2, 2).expand(1, 3, 2, 2)
    # mu(b) = 1.5, sigma(b) = sqrt(1.25), sigma(zhat) = 2 sigma(b): out = 2 (b - 1.5) + 1.5
    expected = (2 * (b - 1.5) + 1.5).contiguous()
    torch.testing.assert_close(G.bhat(b.contiguous(), zhat.contiguous(), "global"), expected)


@pytest.mark.parametrize("mode,dims", [("global", (1, 2, 3)), ("per_channel", (2, 3))])
def test_bhat_takes_spread_of_zhat_and_keeps_mean_of_b(batch, mode, dims):
    z, _, eps_y, _, _ = batch
    b, zhat = 0.3 * z + 0.1, eps_y
    out = G.bhat(b, zhat, mode)
    torch.testing.assert_close(out.mean(dims), b.mean(dims))
    torch.testing.assert_close(out.std(dims, unbiased=False), zhat.std(dims, unbiased=False))


def test_bhat_none_is_identity_and_bad_mode_raises(batch):
    z, _, eps_y, _, _ = batch
    assert G.bhat(z, eps_y, "none") is z
    with pytest.raises(ValueError, match="normalization"):
        G.bhat(z, eps_y, "per_pixel")


def test_loss_k_is_zero_for_an_affine_copy_with_zhat_mean():
    zhat = torch.randn(2, 3, 8, 8)
    zhat = zhat - zhat.mean((1, 2, 3), keepdim=True)  # zero mean, so b = 0.25 zhat shares it
    b = 0.25 * zhat
    assert G.loss_k(b, zhat, "global").item() < 1e-10
    assert G.loss_k(b, zhat, "none").item() > 1e-3


def test_g_lmc_is_difference():
    a, b = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(G.g_lmc(a, b), a - b)


def test_reparameterised_loss_has_gradient_g_over_batch():
    z = torch.randn(3, 3, 8, 8, requires_grad=True)
    g = torch.randn(3, 3, 8, 8)
    G.loss_from_grad(z, g).backward()
    torch.testing.assert_close(z.grad, g / 3)


def test_weights():
    abar = torch.tensor([0.25, 0.81]).view(-1, 1, 1, 1)
    torch.testing.assert_close(G.weight(abar, "uniform"), torch.ones_like(abar))
    torch.testing.assert_close(G.weight(abar, "sds"), torch.tensor([0.75, 0.19]).view(-1, 1, 1, 1))
    torch.testing.assert_close(
        G.weight(abar, "fantasia3d"), torch.tensor([0.5 * 0.75, 0.9 * 0.19]).view(-1, 1, 1, 1)
    )
    with pytest.raises(ValueError, match="weighting_strategy"):
        G.weight(abar, "dreamfusion")


@pytest.mark.parametrize("noise", [0.5, 1.0])
def test_eq10_with_one_noisy_zhat_overstates_contrast_and_none_is_unbiased(noise):
    # An exact corrective b = m = E[zhat_t]; zhat_t = m + n, n ~ N(0, s^2) per pixel. Eq. 10 takes
    # the spread of ONE zhat_t, sqrt(sigma(m)^2 + s^2), so E[bhat] = m stretched by
    # sqrt(1 + s^2 / sigma(m)^2) about its mean, and E[g_lmc] != 0; without it E[g_lmc] = 0.
    gen = torch.Generator().manual_seed(0)
    m = torch.tensor([-1.0, 1.0]).repeat_interleave(2048).view(1, 1, 64, 64).expand(1, 3, 64, 64)
    zhat = m + noise * torch.randn((256, 3, 64, 64), generator=gen)  # sigma(m) = 1
    stretch = (1 + noise**2) ** 0.5
    bright = m.expand_as(zhat) > 0
    for mode, expected in (("global", stretch - 1), ("none", 0.0)):
        g = G.g_lmc(G.bhat(m.expand_as(zhat), zhat, mode), zhat)
        assert g[bright].mean().item() == pytest.approx(expected, abs=0.01)
        assert g[~bright].mean().item() == pytest.approx(-expected, abs=0.01)


def test_normalization_below_t_applies_eq10_only_to_low_timesteps(batch):
    z, _, eps_y, _, _ = batch
    b, zhat, t = 0.3 * z + 0.1, eps_y, torch.tensor([20, 250, 600, 979])
    out = G.bhat(b, zhat, "global<600", t)
    full = G.bhat(b, zhat, "global")
    torch.testing.assert_close(out[:2], full[:2])  # t < 600: Eq. 10
    torch.testing.assert_close(out[2:], b[2:])  # t >= 600: b as predicted
    assert G.parse_normalization("per_channel<700") == ("per_channel", 700)
    assert G.parse_normalization("none") == ("none", None)
    with pytest.raises(ValueError, match="pass the timesteps"):
        G.bhat(b, zhat, "global<600")
    for bad in ("none<600", "global<", "global<-1", "Global"):
        with pytest.raises(ValueError, match="normalization"):
            G.parse_normalization(bad)
    loss = G.loss_k(b, zhat, "global<600", t)
    expected = torch.cat([(full[:2] - zhat[:2]), (b[2:] - zhat[2:])]).pow(2).mean()
    torch.testing.assert_close(loss, expected)


def test_delta_d_is_eps_0_below_t_200_and_the_negative_difference_from_200_on():
    """NFSD: "delta_D = eps_0 for t < 200", the boundary itself on the other side."""
    torch.manual_seed(0)
    eps_0, eps_neg = torch.randn(3, 3, 4, 4), torch.randn(3, 3, 4, 4)
    d = G.delta_d(eps_0, eps_neg, torch.tensor([199, 200, 999]))  # the default t_small
    assert torch.equal(d[0], eps_0[0])
    assert torch.equal(d[1:], eps_0[1:] - eps_neg[1:])


def test_loss_k_normalises_globally_by_default():
    torch.manual_seed(0)
    b, zhat = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8) * 3 + 1
    assert G.loss_k(b, zhat) == G.loss_k(b, zhat, "global")
    assert G.loss_k(b, zhat) != G.loss_k(b, zhat, "per_channel")


def test_the_schedule_is_if_stage_is_cosine_schedule():
    """IF stage I's published scheduler (DDPM, 1000 steps, cosine "squaredcos_cap_v2", learned
    variance range, dynamic thresholding 0.95 at 1.5): abar_t from Nichol & Dhariwal's closed
    form, beta_t = 1 - abar(t+1)/abar(t) capped at 0.999, written out here."""
    import math

    sched = if_scheduler()
    cfg = dict(sched.config)
    assert {k: cfg[k] for k in ("num_train_timesteps", "beta_schedule", "variance_type",
            "prediction_type", "thresholding", "dynamic_thresholding_ratio", "sample_max_value",
            "clip_sample", "clip_sample_range")} == {  # fmt: skip
        "num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2",
        "variance_type": "learned_range", "prediction_type": "epsilon", "thresholding": True,
        "dynamic_thresholding_ratio": 0.95, "sample_max_value": 1.5, "clip_sample": True,
        "clip_sample_range": 1.0,
    }
    # fmt: skip

    def f(t):
        return math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = torch.tensor([min(1 - f(i + 1) / f(i), 0.999) for i in range(1000)])
    expected = torch.cumprod(1 - betas.double(), 0)
    torch.testing.assert_close(sched.alphas_cumprod.double(), expected, atol=1e-6, rtol=1e-5)


def test_image_stats_are_population_statistics():
    """Eq. 10's sigma: the standard deviation over the image's pixels (divided by N, not N - 1)."""
    x = torch.tensor([0.0, 2.0, 0.0, 2.0]).view(1, 1, 2, 2).expand(1, 3, 2, 2)
    mean, std = G.image_stats(x, "global")
    assert mean.item() == 1.0 and std.item() == 1.0


def test_perpendicular_is_orthogonal_also_to_a_small_direction():
    torch.manual_seed(0)
    x, y = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4) * 0.01  # ||y||^2 well below 1
    p = G.perpendicular(x, y)
    assert ((p * y).flatten(1).sum(1).abs() < 1e-6).all()
    torch.testing.assert_close(x - p, (x * y).flatten(1).sum(1).view(-1, 1, 1, 1)
                               / (y * y).flatten(1).sum(1).view(-1, 1, 1, 1) * y)  # fmt: skip


def test_bhat_normalises_globally_by_default(batch):
    b, zhat = batch[0], batch[1] * 3 + 0.5
    torch.testing.assert_close(G.bhat(b, zhat), G.bhat(b, zhat, "global"))
