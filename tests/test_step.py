"""One guidance step on the tiny IF-shaped prior against a hand-written reference."""

import pytest
import torch

from lmcsds.core import CorrectiveUNet, StepConfig, lmc_sds_step, load_corrective

from .reference import CountingUNet, reference, unet_eps


@pytest.fixture
def inputs(tiny_prior, encode):
    gen = torch.Generator().manual_seed(3)
    res = tiny_prior.resolution
    z = torch.rand(2, 3, res, res, generator=gen) * 2 - 1
    t = torch.tensor([100, 700])
    emb_y = encode(["a photo of a sneaker", "a hamburger"])
    emb_0 = encode(["", ""])
    eps = torch.randn(2, 3, res, res, generator=gen)
    eps_fixed = torch.randn(2, 3, res, res, generator=gen)
    return z, t, emb_y, emb_0, eps, eps_fixed


@pytest.mark.parametrize("mode", ["global", "per_channel", "none", "global<500"])
def test_lmc_sds_matches_reference(tiny_prior, tiny_corrective_path, inputs, mode):
    corrective, _ = load_corrective(tiny_corrective_path)
    z, t, emb_y, emb_0, eps, _ = inputs
    out = lmc_sds_step(
        tiny_prior, corrective, z, t, emb_y, emb_0, eps, StepConfig("lmc-sds", 7.0, mode)
    )
    expected = reference(tiny_prior, corrective, z, t, emb_y, emb_0, eps, 7.0, mode=mode)
    torch.testing.assert_close(out.g, expected, atol=1e-4, rtol=1e-4)
    assert out.unet_rows == 2 and isinstance(out.unet_rows, int)


def test_fixed_eps_enters_g_cond_only(tiny_prior, tiny_corrective_path, inputs):
    corrective, _ = load_corrective(tiny_corrective_path)
    z, t, emb_y, emb_0, eps, eps_fixed = inputs
    cfg = StepConfig("lmc-sds", 5.0)
    out = lmc_sds_step(tiny_prior, corrective, z, t, emb_y, emb_0, eps, cfg, eps_cond=eps_fixed)
    expected = reference(tiny_prior, corrective, z, t, emb_y, emb_0, eps, 5.0, eps_c=eps_fixed)
    torch.testing.assert_close(out.g, expected, atol=1e-4, rtol=1e-4)
    assert out.unet_rows == 3
    # zhat comes from the fresh noise, not the fixed one
    torch.testing.assert_close(out.zt, tiny_prior.scheduler.add_noise(z, eps, t))


def test_sds_and_cond_match_hand_written(tiny_prior, inputs):
    z, t, emb_y, emb_0, eps, _ = inputs
    zt = tiny_prior.scheduler.add_noise(z, eps, t)
    ey, e0 = unet_eps(tiny_prior, zt, t, emb_y), unet_eps(tiny_prior, zt, t, emb_0)
    sds = lmc_sds_step(tiny_prior, None, z, t, emb_y, emb_0, eps, StepConfig("sds", 4.0))
    torch.testing.assert_close(sds.g, (4.0 * ey - 3.0 * e0 - eps) / 4.0, atol=1e-4, rtol=1e-4)
    cond = lmc_sds_step(
        tiny_prior, None, z, t, emb_y, emb_0, eps, StepConfig("cond", 4.0, scale_by_omega=False)
    )
    torch.testing.assert_close(cond.g, 4.0 * (ey - e0), atol=1e-4, rtol=1e-4)
    w = lmc_sds_step(
        tiny_prior, None, z, t, emb_y, emb_0, eps, StepConfig("sds", 4.0, weighting="sds")
    )
    a = tiny_prior.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    torch.testing.assert_close(w.g, (1 - a) * sds.g, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("fixed,rows", [(False, [4]), (True, [6])])
def test_one_batched_unet_call_per_step(tiny_prior, tiny_corrective_path, inputs, fixed, rows):
    corrective, _ = load_corrective(tiny_corrective_path)
    z, t, emb_y, emb_0, eps, eps_fixed = inputs
    counting = CountingUNet(tiny_prior.unet)
    real, tiny_prior.unet = tiny_prior.unet, counting
    try:
        lmc_sds_step(
            tiny_prior,
            corrective,
            z,
            t,
            emb_y,
            emb_0,
            eps,
            StepConfig(),
            eps_cond=eps_fixed if fixed else None,
        )
    finally:
        tiny_prior.unet = real
    assert counting.rows == rows  # batch 2: 2 rows per image, or 3 with fixed eps


def test_step_config_rejects_bad_values():
    with pytest.raises(ValueError, match="loss_type"):
        StepConfig(loss_type="vsd")
    with pytest.raises(ValueError, match="omega"):
        StepConfig(omega=0.0)
    assert StepConfig(omega=0.5).omega == 0.5  # any omega > 0, also below 1
    with pytest.raises(ValueError, match="normalization"):
        StepConfig(normalization="batch")
    with pytest.raises(ValueError, match="weighting"):
        StepConfig(weighting="linear")


def test_lmc_sds_without_corrective_raises(tiny_prior, inputs):
    z, t, emb_y, emb_0, eps, _ = inputs
    with pytest.raises(ValueError, match="corrective"):
        lmc_sds_step(tiny_prior, None, z, t, emb_y, emb_0, eps, StepConfig())


def test_corrective_paper_architecture():
    """Supplementary A: 4 levels from 32 filters, 512-wide bottleneck, 13 input channels, tanh."""
    net = CorrectiveUNet()
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs[0].in_channels == 3 + 10
    assert [blk[0].out_channels for blk in net.down] == [32, 64, 128, 256]
    assert net.bottleneck[0].out_channels == 512
    assert [blk[0].out_channels for blk in net.decode] == [256, 128, 64, 32]
    assert 7.0e6 < sum(p.numel() for p in net.parameters()) < 8.5e6
    out = net(torch.randn(2, 3, 64, 64) * 10, torch.tensor([20, 980]))
    assert out.shape == (2, 3, 64, 64) and out.abs().max() <= 1
    with pytest.raises(ValueError, match="multiple of 16"):
        net(torch.randn(1, 3, 40, 40), torch.tensor([5]))


def test_the_stand_in_prior_and_corrective_react_to_every_input(
    tiny_prior, tiny_corrective_path, inputs
):
    """The parity tests compare terms such as eps_y - eps_0 and b - zhat: they prove something
    only if the tiny prior's prediction depends on the prompt, t and the image, and the
    corrective's on t and the image (a text-blind UNet would make every g_cond 0 on both sides)."""
    corrective, _ = load_corrective(tiny_corrective_path)
    z, t, emb_y, emb_0, eps, _ = inputs
    zt = tiny_prior.scheduler.add_noise(z, eps, t)

    def rel(a, b):  # relative change of a prediction when one input changes
        return ((a - b).norm() / b.norm()).item()

    base = unet_eps(tiny_prior, zt, t, emb_y)
    assert rel(unet_eps(tiny_prior, zt, t, emb_0), base) > 1e-2  # the prompt
    assert rel(unet_eps(tiny_prior, zt, t.flip(0), emb_y), base) > 1e-2  # t
    assert rel(unet_eps(tiny_prior, zt.flip(0), t, emb_y), base) > 1e-2  # the image
    with torch.no_grad():  # untrained, it reacts less (~1%), still 100x the tests' tolerance
        b = corrective(z, t)
        assert rel(corrective(z, t.flip(0)), b) > 1e-3 and rel(corrective(z.flip(0), t), b) > 1e-3


def test_the_prior_loads_frozen_in_fp32_on_a_cpu_without_the_text_encoder(
    tiny_if_dir, monkeypatch, caplog
):
    """IF's T5 is 9 GB: the prior never loads it (threestudio's processor encodes the prompts);
    the UNet is frozen; fp16 weights are not used on a CPU, with a warning saying so."""
    import logging

    import transformers

    from lmcsds.core import IFPrior

    def refuse(*args, **kwargs):
        raise AssertionError("the text encoder was loaded")

    monkeypatch.setattr(transformers.T5EncoderModel, "from_pretrained", refuse)
    with caplog.at_level(logging.WARNING):
        prior = IFPrior.from_pretrained(str(tiny_if_dir), device="cpu", half_precision=True)
    assert "half_precision_weights ignored on CPU; using float32" in caplog.text
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in prior.unet.parameters())
