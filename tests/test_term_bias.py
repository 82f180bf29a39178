"""term-bias: the mean push of each guidance term, against hand-derived values on a stub prior."""

import pytest
import torch

from lmcsds.core.corrective import CorrectiveConfig, CorrectiveUNet
from lmcsds.evaluation.term_bias import term_means, zhat_spread


class ConstantPrior:
    """A prior whose noise prediction is the constant ``c`` for every row and prompt."""

    device, dtype = torch.device("cpu"), torch.float32

    def __init__(self, c: float):
        self.c = c
        self.alphas_cumprod = torch.linspace(0.9999, 0.0001, 1000)

    def abar(self, t):
        return self.alphas_cumprod[t].view(-1, 1, 1, 1)

    def eps(self, zt, t, embeddings):
        return torch.full_like(zt, self.c)


def _square_on_black(n=4, res=16):
    z = torch.full((n, 3, res, res), -1.0)
    z[:, :, 4:12, 4:12] = 0.6
    mask = torch.zeros(n, 1, res, res, dtype=torch.bool)
    mask[:, :, 4:12, 4:12] = True
    return z, mask


def test_constant_prior_g_cond_vanishes_and_g_proj_pushes_by_minus_c():
    """eps_y = eps_0 = c: g_cond = omega (c - c) = 0; g_proj = c - eps, so E[-g_proj] = -c."""
    z, mask = _square_on_black()
    identity = CorrectiveUNet(CorrectiveConfig(base_channels=4, depth=1, residual=True))
    emb = torch.zeros(1, 2, 4)
    gen = torch.Generator().manual_seed(0)
    m = term_means(ConstantPrior(0.5), identity, z, mask, emb, emb, (100, 900), 16, 20.0,
                   generator=gen)  # fmt: skip
    assert m["g_cond"] == (0.0, 0.0)
    # mean of 16 x 4 x 3 x 64 (object) standard normals: sd 0.018
    assert abs(m["g_proj"][0] + 0.5) < 0.08 and abs(m["g_proj"][1] + 0.5) < 0.08


def test_identity_corrective_darkens_a_bright_object_when_zhat_is_noisier():
    """B = z (a residual corrective at initialisation) and eps_0 = 0: zhat = z + s eps with
    s = sqrt((1 - abar) / abar), so sigma(zhat) > sigma(z) and Eq. 10 stretches z's contrast:
    bhat - zhat ~ (sigma(zhat)/sigma(z) - 1)(z - mu(z)), positive on the bright object, so
    -g_lmc darkens the object and brightens the backdrop."""
    z, mask = _square_on_black()
    identity = CorrectiveUNet(CorrectiveConfig(base_channels=4, depth=1, residual=True))
    emb = torch.zeros(1, 2, 4)
    gen = torch.Generator().manual_seed(0)
    m = term_means(ConstantPrior(0.0), identity, z, mask, emb, emb, (400, 600), 16,
                   generator=gen)  # fmt: skip
    obj, backdrop = m["g_lmc"]
    assert obj < -0.1 and backdrop > 0.05


def test_spread_of_one_zhat_exceeds_that_of_its_mean_by_the_prior_error():
    """eps_0 = 0: zhat = z + s eps, s = sqrt((1 - abar) / abar). One draw has spread
    sqrt(sigma(z)^2 + s^2); the mean of K draws sqrt(sigma(z)^2 + s^2 / K)."""
    z, _ = _square_on_black(n=8, res=32)
    prior, t, k = ConstantPrior(0.0), 500, 64
    abar = prior.alphas_cumprod[t].item()
    s2 = (1 - abar) / abar
    var_z = z.var(unbiased=False).item()
    one, mean = zhat_spread(prior, z, torch.zeros(1, 2, 4), t, k, torch.Generator().manual_seed(0))
    assert one == pytest.approx((var_z + s2) ** 0.5, rel=0.02)
    assert mean == pytest.approx((var_z + s2 / k) ** 0.5, rel=0.02)
