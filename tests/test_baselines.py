"""NFSD, DDS, multi-step SDS and CSD through ``lmc_sds_step``, each against its published
formula written out by hand on the tiny prior (raw UNet calls, diffusers' DDIM scheduler)."""

import pytest
import torch
from diffusers import DDIMScheduler

from lmcsds.core import StepConfig, lmc_sds_step

from .reference import CountingUNet, unet_eps

OMEGA = 4.0


@pytest.fixture
def inputs(tiny_prior, encode):
    gen = torch.Generator().manual_seed(5)
    res = tiny_prior.resolution
    z = torch.rand(2, 3, res, res, generator=gen) * 2 - 1
    t = torch.tensor([100, 700])  # one on each side of NFSD's t = 200
    emb_y = encode(["a photo of a sneaker", "a hamburger"])
    emb_0 = encode(["", ""])
    emb_neg = encode(["blurry, low quality"] * 2)
    eps = torch.randn(2, 3, res, res, generator=gen)
    return z, t, emb_y, emb_0, emb_neg, eps


def step(prior, inputs, loss, **kwargs):
    z, t, emb_y, emb_0, emb_neg, eps = inputs
    options = {k: kwargs.pop(k) for k in ("ms_steps", "csd_negative_weight") if k in kwargs}
    cfg = StepConfig(loss, OMEGA, scale_by_omega=False, **options)
    return lmc_sds_step(prior, None, z, t, emb_y, emb_0, eps, cfg, emb_neg=emb_neg, **kwargs)


def noisy(prior, x, eps, t):
    return prior.scheduler.add_noise(x, eps, t)


def test_nfsd_matches_published_formula(tiny_prior, inputs):
    """Katzir et al.: w(t) (delta_D + s delta_C), delta_C = eps_y - eps_null, delta_D =
    eps_null for t < 200 and eps_null - eps_neg otherwise."""
    z, t, emb_y, emb_0, emb_neg, eps = inputs
    zt = noisy(tiny_prior, z, eps, t)
    ey, e0, en = (unet_eps(tiny_prior, zt, t, e) for e in (emb_y, emb_0, emb_neg))
    expected = torch.stack(
        [
            (e0[0] if t[0] < 200 else e0[0] - en[0]) + OMEGA * (ey[0] - e0[0]),
            (e0[1] if t[1] < 200 else e0[1] - en[1]) + OMEGA * (ey[1] - e0[1]),
        ]
    )
    out = step(tiny_prior, inputs, "nfsd")
    torch.testing.assert_close(out.g, expected, atol=1e-4, rtol=1e-4)
    assert out.unet_rows == 3
    # nfsd_t_small moves the boundary: at 800 both t (100, 700) take eps_0 alone
    cfg = StepConfig("nfsd", OMEGA, scale_by_omega=False, nfsd_t_small=800)
    late = lmc_sds_step(tiny_prior, None, z, t, emb_y, emb_0, eps, cfg, emb_neg=emb_neg)
    torch.testing.assert_close(late.g, e0 + OMEGA * (ey - e0), atol=1e-4, rtol=1e-4)


def test_dds_matches_published_formula(tiny_prior, inputs, encode):
    """Hertz et al.: eps^w(z_t; y) - eps^w(zhat_t; y_src), both noised with the same t, eps."""
    z, t, emb_y, emb_0, _, eps = inputs
    source = torch.rand_like(z) * 2 - 1
    emb_src = encode(["a photo of a t-shirt", "a photo of a bag"])
    zt, zt_src = noisy(tiny_prior, z, eps, t), noisy(tiny_prior, source, eps, t)

    def guided(x, emb):
        e0 = unet_eps(tiny_prior, x, t, emb_0)
        return e0 + OMEGA * (unet_eps(tiny_prior, x, t, emb) - e0)

    out = step(tiny_prior, inputs, "dds", source=(source, emb_src))
    torch.testing.assert_close(
        out.g, guided(zt, emb_y) - guided(zt_src, emb_src), atol=1e-4, rtol=1e-4
    )
    assert out.unet_rows == 4
    # editing nothing: the source image under its own prompt has zero gradient
    same = step(tiny_prior, inputs, "dds", source=(z, emb_y))
    assert same.g.abs().max() < 1e-5


def test_ms_sds_one_step_is_sds(tiny_prior, inputs):
    ms = step(tiny_prior, inputs, "ms-sds", ms_steps=1)
    sds = step(tiny_prior, inputs, "sds")
    torch.testing.assert_close(ms.g, sds.g, atol=1e-4, rtol=1e-4)
    assert ms.unet_rows == 2


@pytest.mark.parametrize("t0", [500, 250])
def test_ms_sds_matches_diffusers_ddim(tiny_prior, inputs, t0):
    """SparseFusion's multi-step SDS: x0 after 5 DDIM steps (diffusers' DDIMScheduler, eta 0,
    guided eps), gradient sqrt(abar / (1 - abar)) (z - x0)."""
    z, _, emb_y, emb_0, emb_neg, eps = inputs
    t = torch.tensor([t0, t0])
    inputs = (z, t, emb_y, emb_0, emb_neg, eps)
    ddim = DDIMScheduler.from_config(
        tiny_prior.scheduler.config, clip_sample=False, thresholding=False
    )
    ddim.set_timesteps(1000 // (t0 // 5))  # 1000 / n = t0 / 5: steps t0, 4 t0 / 5, ...
    x = noisy(tiny_prior, z, eps, t)
    for tau in [t0 * (5 - i) // 5 for i in range(5)]:
        tt = torch.tensor([tau, tau])
        e0 = unet_eps(tiny_prior, x, tt, emb_0)
        e = e0 + OMEGA * (unet_eps(tiny_prior, x, tt, emb_y) - e0)
        result = ddim.step(e, tau, x, eta=0.0)
        x, x0 = result.prev_sample, result.pred_original_sample
    a = tiny_prior.scheduler.alphas_cumprod[t0]
    expected = (a / (1 - a)) ** 0.5 * (z - x0)
    out = step(tiny_prior, inputs, "ms-sds", ms_steps=5)
    torch.testing.assert_close(out.g, expected, atol=1e-3, rtol=1e-3)
    assert out.unet_rows == 10


@pytest.mark.parametrize("weight", [0.0, 0.5])
def test_csd_matches_public_coefficients(tiny_prior, inputs, weight):
    """Yu et al.'s DeepFloyd guidance: cond_scale eps_y + uncond_scale eps_neg + null_scale
    eps_null with (1, -lambda, lambda - 1), i.e. (eps_y - eps_null) - lambda (eps_neg -
    eps_null); our omega is their omega_1 (1 here after dividing)."""
    z, t, emb_y, emb_0, emb_neg, eps = inputs
    zt = noisy(tiny_prior, z, eps, t)
    ey, e0, en = (unet_eps(tiny_prior, zt, t, e) for e in (emb_y, emb_0, emb_neg))
    expected = 1.0 * ey + (-weight) * en + (weight - 1.0) * e0
    out = step(tiny_prior, inputs, "csd", csd_negative_weight=weight)
    torch.testing.assert_close(out.g / OMEGA, expected, atol=1e-4, rtol=1e-4)
    assert out.unet_rows == (3 if weight else 2)  # no negative row without its weight


def _perp(x, y):
    """x minus its projection on y, per image (written out, not lmcsds.core's)."""
    coef = (x * y).flatten(1).sum(1) / (y * y).flatten(1).sum(1)
    return x - coef.view(-1, 1, 1, 1) * y


@pytest.mark.parametrize("loss", ["nfsd", "dds", "csd", "ms-sds"])
def test_perp_neg_adds_the_same_term_to_every_loss(tiny_prior, inputs, encode, loss):
    """With Perp-Neg, g_cond gains omega sum_i w_i perp(eps_neg_i - eps_0, eps_y - eps_0)
    and nothing else changes (ms-sds with one step, where it equals SDS)."""
    z, t, emb_y, emb_0, _, eps = inputs
    negs = torch.stack([encode(["a side view", "a back view"])] * 2)  # (B, K=2, L, D)
    weights = torch.tensor([[0.5, -0.2], [1.0, 0.3]])
    kwargs = dict(ms_steps=1, csd_negative_weight=0.5)
    if loss == "dds":
        kwargs["source"] = (torch.zeros_like(z), encode(["a bag", "a bag"]))
    kwargs = {k: v for k, v in kwargs.items() if k == "source" or loss in ("ms-sds", "csd")}
    plain = step(tiny_prior, inputs, loss, **kwargs)
    perp = step(tiny_prior, inputs, loss, perp_neg=(negs, weights), **kwargs)
    zt = noisy(tiny_prior, z, eps, t)
    ey, e0 = unet_eps(tiny_prior, zt, t, emb_y), unet_eps(tiny_prior, zt, t, emb_0)
    term = sum(
        weights[:, i].view(-1, 1, 1, 1)
        * _perp(unet_eps(tiny_prior, zt, t, negs[:, i]) - e0, ey - e0)
        for i in range(2)
    )
    torch.testing.assert_close(perp.g - plain.g, OMEGA * term, atol=1e-4, rtol=1e-4)
    assert perp.unet_rows == plain.unet_rows + 2


@pytest.mark.parametrize(
    "loss,kwargs,calls",
    [
        ("nfsd", {}, [6]),
        ("csd", {"csd_negative_weight": 1.0}, [6]),
        ("ms-sds", {"ms_steps": 5}, [4] * 5),
    ],
)
def test_unet_calls(tiny_prior, inputs, loss, kwargs, calls):
    counting = CountingUNet(tiny_prior.unet)
    real, tiny_prior.unet = tiny_prior.unet, counting
    try:
        step(tiny_prior, inputs, loss, **kwargs)
    finally:
        tiny_prior.unet = real
    assert counting.rows == calls  # batch 2: one call, or one per denoising step


def test_baselines_refuse_missing_inputs(tiny_prior, inputs):
    z, t, emb_y, emb_0, _, eps = inputs
    with pytest.raises(ValueError, match="negative prompt"):
        lmc_sds_step(tiny_prior, None, z, t, emb_y, emb_0, eps, StepConfig("nfsd"))
    with pytest.raises(ValueError, match="source image"):
        lmc_sds_step(tiny_prior, None, z, t, emb_y, emb_0, eps, StepConfig("dds"))
    with pytest.raises(ValueError, match="ms_steps"):
        StepConfig("ms-sds", ms_steps=0)


def test_dds_editing_crops_the_source_like_the_image(tiny_prior, encode, monkeypatch):
    """2D editing with patches: every step crops (and first downscales) the source exactly as
    the image; checked on the step's inputs with lr 0 (the image stays the source)."""
    from lmcsds.evaluation import optimise as O

    seen = []

    def spy(prior, corrective, z, *args, source=None, **kwargs):
        seen.append((z.shape[-1], torch.equal(z, source[0])))
        return lmc_sds_step(prior, corrective, z, *args, source=source, **kwargs)

    monkeypatch.setattr(O, "lmc_sds_step", spy)
    init = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(0)) * 2 - 1
    emb_y, emb_0 = encode(["a sneaker", "a bag"]), encode([""])
    cfg = O.OptimConfig(steps=4, whole_steps=2, lr=0.0, lr_end=0.0)
    stats = {}
    O.optimise(tiny_prior, None, init, emb_y, emb_0, StepConfig("dds", 5.0), cfg,
               source=(init, encode(["a bag", "a sneaker"])), stats=stats)  # fmt: skip
    assert seen == [(32, True)] * 4  # 2 downscaled steps, then 2 of patches
    assert stats["unet_rows"] == 4


class RecordingUNet(CountingUNet):
    """Also records the timesteps of each call."""

    def forward(self, x, t, encoder_hidden_states):
        self.timesteps = getattr(self, "timesteps", []) + [t.tolist()]
        return super().forward(x, t, encoder_hidden_states)


def test_ms_sds_timesteps_are_rounded_and_rows_counted_per_image(tiny_prior, inputs):
    """From t = 503 in 5 steps: round(503 (5 - i) / 5) = 503, 402, 302, 201, 101 (100.6 rounds
    up); one image: 2 rows per step, 10 in all."""
    z, _, emb_y, emb_0, emb_neg, eps = inputs
    one = (z[:1], torch.tensor([503]), emb_y[:1], emb_0[:1], emb_neg[:1], eps[:1])
    recording = RecordingUNet(tiny_prior.unet)
    real, tiny_prior.unet = tiny_prior.unet, recording
    try:
        out = step(tiny_prior, one, "ms-sds", ms_steps=5)
    finally:
        tiny_prior.unet = real
    assert [ts[0] for ts in recording.timesteps] == [503, 402, 302, 201, 101]
    assert out.unet_rows == 10 and recording.rows == [2] * 5


def test_ms_sds_with_perp_neg_guides_every_step_with_the_negatives(tiny_prior, inputs, encode):
    """Two DDIM steps written out by hand, each with Perp-Neg's guided eps at its own noisy
    image and timestep: x0 = (x - sqrt(1 - a) e) / sqrt(a), re-noised with e to the next t."""
    z, t, emb_y, emb_0, _, eps = inputs
    negs = torch.stack([encode(["a side view", "a back view"])] * 2)
    weights = torch.tensor([[0.5, -0.2], [1.0, 0.3]])
    abar = tiny_prior.scheduler.alphas_cumprod.float()

    def guided(x, tau):
        ey, e0 = unet_eps(tiny_prior, x, tau, emb_y), unet_eps(tiny_prior, x, tau, emb_0)
        term = sum(weights[:, i].view(-1, 1, 1, 1)
                   * _perp(unet_eps(tiny_prior, x, tau, negs[:, i]) - e0, ey - e0)
                   for i in range(2))  # fmt: skip
        return e0 + OMEGA * (ey - e0 + term)

    def a(tau):
        return abar[tau].view(-1, 1, 1, 1)

    x = noisy(tiny_prior, z, eps, t)
    e = guided(x, t)
    x0 = (x - (1 - a(t)).sqrt() * e) / a(t).sqrt()
    half = torch.div(t + 1, 2, rounding_mode="floor")  # round(t / 2)
    x = a(half).sqrt() * x0 + (1 - a(half)).sqrt() * e
    e = guided(x, half)
    x0 = (x - (1 - a(half)).sqrt() * e) / a(half).sqrt()
    expected = (a(t) / (1 - a(t))).sqrt() * (z - x0)
    out = step(tiny_prior, inputs, "ms-sds", ms_steps=2, perp_neg=(negs, weights))
    torch.testing.assert_close(out.g, expected, atol=1e-3, rtol=1e-3)
