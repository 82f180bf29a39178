"""The benchmark's supervised ceiling: its targets are the true object under exactly the
batch's rays, light and shading as threestudio draws and computes them."""

import random

import pytest
import torch

from lmcsds.priors.cameras import CameraDistribution, rays
from lmcsds.priors.objects3d import ObjectSpec, albedo
from lmcsds.priors.sdf_render import normals, render, trace

from .test_objects3d import _threestudio_dataset

pytestmark = pytest.mark.threestudio
SPEC = ObjectSpec("mug", "red", "checkered")


def _batch(seed: int = 3, size: int = 16, batch: int = 4) -> dict:
    dataset = _threestudio_dataset(CameraDistribution(), batch, size)
    torch.manual_seed(seed)
    random.seed(seed)
    return dataset.collate(None)


def _material(cpu_threestudio, **overrides):
    from threestudio.models.materials.diffuse_with_point_light_material import (
        DiffuseWithPointLightMaterial,
    )

    cfg = dict(ambient_light_color=[0.3] * 3, diffuse_light_color=[0.7] * 3,
               albedo_activation="scale_-11_01", textureless_prob=0.0)  # fmt: skip
    cfg.update(overrides)
    return DiffuseWithPointLightMaterial(cfg)


def test_the_ceilings_rays_are_the_batchs(cpu_threestudio):
    from lmcsds.evaluation.supervised import cameras_from_batch

    b = _batch()
    o, d = rays(cameras_from_batch(b), b["height"], b["width"])
    torch.testing.assert_close(o, b["rays_o"])
    torch.testing.assert_close(d, b["rays_d"], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("shading", ["diffuse", "albedo", "textureless"])
def test_the_true_render_is_threestudios_material_on_the_true_surface(cpu_threestudio, shading):
    """One ray per pixel: every pixel that hits the object has the colour threestudio's
    material gives the true surface point (albedo through the config's activation, the SDF's
    normal, the batch's light) in that shading mode."""
    from lmcsds.evaluation.supervised import cameras_from_batch

    b = _batch()
    cams = cameras_from_batch(b)
    out = render(SPEC, cams, b["height"], supersample=1, shading=[shading] * len(cams))
    o, d = b["rays_o"].reshape(-1, 3), b["rays_d"].reshape(-1, 3)
    hit, _, p = trace(SPEC.shape, o, d)
    lights = b["light_positions"][:, None].expand(-1, b["height"] * b["width"], -1).reshape(-1, 3)
    material = _material(cpu_threestudio)
    material.eval()
    expected = material(features=albedo(SPEC, p[hit]) * 2 - 1, positions=p[hit],
                        shading_normal=normals(SPEC.shape, p[hit]), light_positions=lights[hit],
                        shading=shading)  # fmt: skip
    ours = out.rgb.permute(0, 2, 3, 1).reshape(-1, 3)[hit]
    assert hit.sum() > 100
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("ambient_only", [True, False])
def test_the_system_draws_the_materials_shading_with_its_random_draws(
    cpu_threestudio, ambient_only
):
    """draw_shading picks what the material would have picked, consuming Python's random
    exactly as it does, so a run's random stream is unchanged."""
    from lmcsds.adapter.system import draw_shading

    material = _material(cpu_threestudio, textureless_prob=0.3)
    material.train()
    material.ambient_only = ambient_only
    picks = set()
    for seed in range(40):
        random.seed(seed)
        ours = draw_shading(material)
        state = random.getstate()
        random.seed(seed)
        x = torch.full((1, 3), 0.2)
        theirs = material(features=x, positions=x, shading_normal=x, light_positions=x + 1)
        assert random.getstate() == state
        colour = {"albedo": x * 0.5 + 0.5, "textureless": None, "diffuse": None}[ours]
        if colour is not None:
            torch.testing.assert_close(theirs, colour)
        picks.add(ours)
    assert picks == ({"albedo"} if ambient_only else {"albedo", "diffuse", "textureless"})


def test_the_drawn_shading_reaches_a_material_called_without_it(cpu_threestudio):
    """threestudio's nvdiff-rasterizer calls the material without the batch's shading: inside
    ``material_shading`` the drawn mode applies (albedo: the albedo itself, with no random
    draw), a caller's own choice still wins, and the material is as before afterwards."""
    from lmcsds.adapter.system import material_shading

    material = _material(cpu_threestudio, textureless_prob=0.0)
    material.train()
    x = torch.full((1, 3), 0.2)
    call = dict(features=x, positions=x, shading_normal=x, light_positions=x + 1)
    with material_shading(material, "albedo"):
        state = random.getstate()
        torch.testing.assert_close(material(**call), x * 0.5 + 0.5)
        assert random.getstate() == state
        diffuse = material(**call, shading="diffuse")
    assert not torch.allclose(diffuse, x * 0.5 + 0.5)
    assert "forward" not in material.__dict__


def test_the_ceilings_loss_is_half_the_squared_error_to_the_truth(cpu_threestudio):
    from lmcsds.evaluation.supervised import SupervisedGuidance

    guidance = SupervisedGuidance({"object_caption": SPEC.caption()})
    b = dict(_batch(size=8, batch=2), shading="albedo")
    rgb = torch.rand(2, 8, 8, 3, requires_grad=True)
    out = guidance(rgb, None, **b)
    truth = guidance.true_renders(b, 8, 8)
    by_hand = 0.5 * ((rgb * 2 - 1) - (truth * 2 - 1)).pow(2).sum() / 2
    torch.testing.assert_close(out["loss_sds"], by_hand)
    out["loss_sds"].backward()
    torch.testing.assert_close(rgb.grad, 2 * ((rgb * 2 - 1) - (truth * 2 - 1)).detach() / 2)
    b.pop("shading")  # threestudio's own dreamfusion-system passes none
    with pytest.raises(ValueError, match="lmcsds-dreamfusion-system"):
        guidance(rgb, None, **b)
    with pytest.raises(ValueError, match="names no procedural object"):
        SupervisedGuidance({"object_caption": "a hamburger"})
