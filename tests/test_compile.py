"""The compiled UNet: the eager step's gradients, one compile per input shape, none after."""

import logging

import pytest
import torch

from lmcsds.core import IFPrior, StepConfig, lmc_sds_step, load_corrective
from lmcsds.core.compiled_unet import CompiledUNet

from .test_threestudio import make_guidance, system_inputs, workdir  # noqa: F401


@pytest.fixture(scope="module")
def compiled_prior(tiny_if_dir):
    prior = IFPrior.from_pretrained(str(tiny_if_dir), device="cpu", half_precision=False)
    prior.compile("default")
    return prior


def test_compiled_step_equals_eager_and_compiles_once_per_shape(
    compiled_prior, tiny_prior, tiny_corrective_path, encode
):
    corrective, _ = load_corrective(tiny_corrective_path)
    gen = torch.Generator().manual_seed(0)
    emb_y, emb_0 = encode(["a hamburger", "a photo of a shirt"]), encode(["", ""])
    eps_fixed = torch.randn(2, 3, 32, 32, generator=gen)
    cfg = StepConfig("lmc-sds", 8.0)
    for step in range(10):  # shared noise (2 rows per image) and fixed eps (3 rows) alternate
        z = torch.rand(2, 3, 32, 32, generator=gen) * 2 - 1
        t = torch.randint(20, 981, (2,), generator=gen)
        eps = torch.randn(2, 3, 32, 32, generator=gen)
        eps_cond = eps_fixed if step % 2 else None
        args = (corrective, z, t, emb_y, emb_0, eps, cfg, eps_cond)
        ours, eager = lmc_sds_step(compiled_prior, *args), lmc_sds_step(tiny_prior, *args)
        torch.testing.assert_close(ours.g, eager.g, atol=1e-5, rtol=1e-4)
    compiled = compiled_prior.compiled
    assert sorted(compiled.compile_seconds) == [(4, 3, 32, 32), (6, 3, 32, 32)]
    assert (compiled.compiles, compiled.recompiles) == (2, 0)


class _Affine(torch.nn.Module):
    """The UNet's call signature around one multiply-add: compiles in seconds."""

    def forward(self, x, t, encoder_hidden_states, return_dict=True):
        return (x * 2 + t.view(-1, 1, 1, 1) + encoder_hidden_states.mean(),)


def test_a_recompilation_is_counted_and_logged(caplog):
    compiled = CompiledUNet(_Affine(), "default")
    x, t, e = torch.randn(2, 3, 8, 8), torch.tensor([1, 2]), torch.randn(2, 5, 4)
    for _ in range(3):
        torch.testing.assert_close(compiled(x, t, e), x * 2 + t.view(-1, 1, 1, 1) + e.mean())
    assert (compiled.compiles, compiled.recompiles) == (1, 0)
    with caplog.at_level(logging.WARNING):
        compiled(x.transpose(2, 3), t, e)  # same shape, other strides: dynamo must recompile
    assert (compiled.compiles, compiled.recompiles) == (2, 1)
    assert "recompiled for input (2, 3, 8, 8)" in caplog.text
    with pytest.raises(ValueError, match="compile mode"):
        CompiledUNet(_Affine(), "fastest")


@pytest.mark.threestudio
def test_guidance_compile_unet_gives_the_eager_gradient(
    workdir, cpu_threestudio, tiny_if_dir, tiny_corrective_path  # noqa: F811
):
    prompt_utils, batch = system_inputs(cpu_threestudio, tiny_if_dir)
    render = torch.rand(2, 32, 32, 3)
    grads = {}
    for compile_unet in (False, True):
        guidance = make_guidance(
            cpu_threestudio, tiny_if_dir, tiny_corrective_path, compile_unet=compile_unet
        )
        rgb = render.clone().requires_grad_()
        torch.manual_seed(5)  # the same t and noise for both
        for _ in range(3):
            out = guidance(rgb, prompt_utils, **batch)
            out["loss_sds"].backward()
        grads[compile_unet] = rgb.grad
    assert out["unet_compiles"] == 1.0  # one shape, compiled at the first call only
    torch.testing.assert_close(grads[True], grads[False], atol=1e-5, rtol=1e-4)
