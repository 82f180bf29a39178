"""Procedural 3D objects: cameras and view rule equal threestudio's, exact geometry, renders."""

import math
import random

import pytest
import torch

from lmcsds.priors.cameras import (
    VIEWS,
    CameraDistribution,
    orbit_cameras,
    rays,
    sample_cameras,
    view_index,
    with_view,
)
from lmcsds.priors.objects3d import (
    ASYMMETRIC,
    COLOURS,
    PATTERNS,
    SHAPES,
    ObjectSpec,
    albedo,
    all_specs,
    parse_caption,
    pattern_mask,
    sdf,
)
from lmcsds.priors.objects_data import ALBEDO_PROB
from lmcsds.priors.sdf_render import AMBIENT, DIFFUSE, render


def _threestudio_dataset(dist: CameraDistribution, batch: int, res: int):
    from threestudio.data.uncond import RandomCameraDataModuleConfig, RandomCameraIterableDataset
    from threestudio.utils.config import parse_structured

    cfg = parse_structured(
        RandomCameraDataModuleConfig,
        dict(
            batch_size=batch, width=res, height=res,
            elevation_range=list(dist.elevation_range),
            camera_distance_range=list(dist.camera_distance_range),
            fovy_range=list(dist.fovy_range), light_sample_strategy="dreamfusion",
        ),
    )  # fmt: skip
    return RandomCameraIterableDataset(cfg)


@pytest.mark.threestudio
@pytest.mark.parametrize("seed", [0, 1, 7])
def test_cameras_equal_threestudio_random_camera_datamodule(seed):
    """Same seeds -> threestudio's exact cameras, lights, rays and view labels."""
    dist, batch, res = CameraDistribution(), 6, 8
    dataset = _threestudio_dataset(dist, batch, res)
    torch.manual_seed(seed)
    random.seed(seed)
    ref = dataset.collate(None)
    cams = sample_cameras(dist, batch, torch.Generator().manual_seed(seed), random.Random(seed))
    torch.testing.assert_close(cams.c2w, ref["c2w"])
    torch.testing.assert_close(cams.light_positions, ref["light_positions"])
    torch.testing.assert_close(cams.elevation_deg, ref["elevation"])
    torch.testing.assert_close(cams.azimuth_deg, ref["azimuth"])
    torch.testing.assert_close(cams.fovy_deg, torch.rad2deg(ref["fovy"]))
    rays_o, rays_d = rays(cams, res, res)
    torch.testing.assert_close(rays_o, ref["rays_o"])
    torch.testing.assert_close(rays_d, ref["rays_d"], atol=1e-6, rtol=1e-5)


def test_cpu_config_matches_the_prior_data():
    """configs/lmcsds-dreamfusion-cpu.yaml draws the cameras, light and shading the data used."""
    from omegaconf import OmegaConf

    from .conftest import ROOT

    cfg = OmegaConf.load(ROOT / "configs" / "lmcsds-dreamfusion-cpu.yaml")
    data, system = cfg.data, cfg.system
    assert system.material.ambient_light_color == [AMBIENT] * 3
    assert system.material.diffuse_light_color == [DIFFUSE] * 3
    # the data has albedo and diffuse renders only: no untextured (white) object
    assert system.material.textureless_prob == 0.0
    assert system.material.get("diffuse_prob", 0.75) == 1 - ALBEDO_PROB  # threestudio's default
    assert system.background.color == [0.0, 0.0, 0.0] and not system.background.learned
    assert "objects-if-32" in system.guidance.pretrained_model_name_or_path
    assert system.guidance.view_dependent_prompting
    dist = CameraDistribution()
    assert tuple(data.elevation_range) == dist.elevation_range
    assert tuple(data.camera_distance_range) == dist.camera_distance_range
    assert tuple(data.fovy_range) == dist.fovy_range
    assert data.light_sample_strategy == "dreamfusion"
    assert data.width == data.height == 32


@pytest.mark.threestudio
def test_view_rule_and_wording_equal_threestudio_prompt_processor():
    """Hand-picked cameras (the last matching rule wins) and threestudio's suffix wording."""
    from threestudio.models.prompt_processors import base

    ele = torch.tensor([0.0, 10.0, 30.0, -5.0, 61.0, 44.0, 20.0, 0.0])
    azi = torch.tensor([0.0, 44.9, 45.0, 170.0, 10.0, -100.0, -179.0, 315.0])
    # front, front, side (45 is not < 45), back, overhead, side, back, front (315 = -45 + 360.1)
    assert view_index(ele, azi).tolist() == [1, 1, 0, 2, 3, 0, 2, 0]
    source = open(base.__file__).read()
    for view in VIEWS:
        assert f'lambda s: f"{{s}}, {view} view"' in source
    assert (
        with_view("a photo of a red mug", VIEWS.index("back")) == "a photo of a red mug, back view"
    )


@pytest.mark.threestudio
def test_view_index_matches_threestudio_directions():
    """Evaluate threestudio's DirectionConfig conditions (its defaults) on random cameras."""
    from threestudio.models.prompt_processors.base import shift_azimuth_deg

    g = torch.Generator().manual_seed(0)
    ele = torch.rand(2000, generator=g) * 100 - 10
    azi = torch.rand(2000, generator=g) * 720 - 360
    ref = torch.zeros(2000, dtype=torch.long)
    ref[(shift_azimuth_deg(azi) > -45) & (shift_azimuth_deg(azi) < 45)] = 1
    ref[(shift_azimuth_deg(azi) > 135) | (shift_azimuth_deg(azi) < -135)] = 2
    ref[ele > 60] = 3
    assert torch.equal(view_index(ele, azi), ref)


def test_catalogue_sizes_and_captions():
    assert len(SHAPES) >= 8 and len(ASYMMETRIC) >= 3 and len(COLOURS) >= 6
    assert len([p for p in PATTERNS if p != "plain"]) >= 2
    assert ObjectSpec("mug", "red", "striped").caption() == "a photo of a red striped mug"
    assert ObjectSpec("cube", "orange", "plain").caption() == "a photo of an orange cube"
    assert len({s.caption() for s in all_specs()}) == len(all_specs())
    assert parse_caption("a photo of a blue checkered chair, front view") == ObjectSpec(
        "chair", "blue", "checkered"
    )
    with pytest.raises(ValueError, match="names no procedural object"):
        parse_caption("a hamburger")
    with pytest.raises(ValueError, match="unknown colour"):
        ObjectSpec("mug", "teal", "plain")


def test_sdf_hand_computed_distances():
    p = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.9]])
    torch.testing.assert_close(sdf("sphere", p), torch.tensor([-0.6, 0.4, 0.3]))
    # rounded cube (half 0.45): centre -0.45, a face point at x=1 is 0.55 away
    torch.testing.assert_close(sdf("cube", p[:2]), torch.tensor([-0.45, 0.55]))
    # cylinder r 0.45, half height 0.55: 0.35 above the top, 0.55 outside the side
    torch.testing.assert_close(sdf("cylinder", p), torch.tensor([-0.45, 0.55, 0.35]))
    # torus R 0.45 r 0.22 around z: the centre is 0.23 from the tube, a point on the ring -0.22
    q = torch.tensor([[0.0, 0.0, 0.0], [0.45, 0.0, 0.0], [0.0, 0.45, 0.5]])
    torch.testing.assert_close(sdf("torus", q), torch.tensor([0.23, -0.22, 0.28]))
    # cone: base radius 0.55 at z -0.5, apex 0.6; the apex is on the surface, below the base 0.1
    c = torch.tensor([[0.0, 0.0, 0.6], [0.0, 0.0, -0.6], [0.0, 0.0, 0.0]])
    d = sdf("cone", c)
    assert abs(d[0]) < 1e-6 and abs(d[1] - 0.1) < 1e-6 and d[2] < 0
    # the base rim is the nearest point of (1, 0, -0.5); 0.2 out from the side's midpoint, 0.2
    assert abs(sdf("cone", torch.tensor([[1.0, 0.0, -0.5]]))[0] - 0.45) < 1e-6
    normal = torch.tensor([1.1, 0.55]) / math.hypot(1.1, 0.55)  # outward normal of the side
    r, z = torch.tensor([0.275, 0.55]) + 0.2 * normal
    assert abs(sdf("cone", torch.tensor([[r, 0.0, z - 0.5]]))[0] - 0.2) < 1e-6


@pytest.mark.parametrize("shape", SHAPES)
def test_sdf_is_one_lipschitz_and_inside_the_bounding_sphere(shape):
    g = torch.Generator().manual_seed(0)
    p = torch.rand(4000, 3, generator=g) * 2.4 - 1.2
    q = p + torch.randn(4000, 3, generator=g) * 0.02
    d, e = sdf(shape, p), sdf(shape, q)
    assert ((d - e).abs() <= (p - q).norm(dim=-1) * 1.01 + 1e-6).all()  # distance bound
    assert (d[p.norm(dim=-1) > 0.95] > 0).all()  # the object fits inside radius 0.95
    assert (d < 0).any()


def test_asymmetric_objects_differ_front_to_back_and_symmetric_ones_do_not():
    """Mirroring x (front <-> back) changes the chair's and the snowman's geometry (the nose is
    small: 2e-4 of the volume), swapping x and y (front <-> side) changes all three asymmetric
    shapes; the mug's back view is its front view mirrored (handle left vs right)."""
    g = torch.Generator().manual_seed(0)
    p = torch.rand(20000, 3, generator=g) * 2 - 1
    flip = p * torch.tensor([-1.0, 1.0, 1.0])
    swap = p[:, [1, 0, 2]]  # front <-> side
    for shape in SHAPES:
        inside, inside_back = sdf(shape, p) < 0, sdf(shape, flip) < 0
        differ_back = (inside != inside_back).float().mean().item()
        differ_side = (inside != (sdf(shape, swap) < 0)).float().mean().item()
        if shape in ASYMMETRIC:
            assert differ_back > 1e-4 or shape == "mug", (shape, differ_back)
            assert differ_side > 1e-4, (shape, differ_side)
        elif shape != "cone":
            assert differ_back < 1e-3 and differ_side < 1e-3, shape


def test_patterns_cover_half_the_surface():
    g = torch.Generator().manual_seed(0)
    p = torch.randn(20000, 3, generator=g)
    p = 0.6 * p / p.norm(dim=-1, keepdim=True)
    for pattern in ["striped", "checkered"]:
        share = pattern_mask(pattern, p).float().mean().item()
        assert 0.4 < share < 0.6, (pattern, share)
    assert not pattern_mask("plain", p).any()
    colour = albedo(ObjectSpec("sphere", "blue", "plain"), p[:3])
    torch.testing.assert_close(colour, torch.tensor([COLOURS["blue"]] * 3))


def test_sphere_render_matches_the_analytic_silhouette_and_lambert_shading():
    """A sphere of radius 0.6 seen from distance d covers a disc of angular radius asin(0.6/d);
    its centre pixel, lit from the camera, is albedo * (ambient + diffuse)."""
    cams = orbit_cameras(1, elevation_deg=0.0, distance=2.4, fovy_deg=45.0)
    out = render(ObjectSpec("sphere", "red", "plain"), cams, resolution=64, supersample=4)
    focal = 0.5 * 64 / math.tan(math.radians(22.5))
    radius_px = focal * math.tan(math.asin(0.6 / 2.4))
    assert abs(out.mask.sum().item() - math.pi * radius_px**2) / (math.pi * radius_px**2) < 0.02
    centre = out.rgb[0, :, 31:33, 31:33].mean((1, 2))
    expected = torch.tensor(COLOURS["red"]) * (AMBIENT + DIFFUSE)
    torch.testing.assert_close(centre, expected, atol=0.02, rtol=0)
    assert out.rgb[0, :, 0, 0].abs().max() == 0  # black backdrop
    torch.testing.assert_close(out.depth[0, 0, 32, 32], torch.tensor(2.4 - 0.6), atol=0.01, rtol=0)


def test_albedo_mode_is_unshaded_and_front_is_plus_x():
    cams = orbit_cameras(2, elevation_deg=0.0, distance=2.4)  # azimuth 0 (front), 180 (back)
    out = render(ObjectSpec("snowman", "green", "plain"), cams, 32, shading=["albedo", "albedo"])
    face, back = out.rgb[0], out.rgb[1]
    dark = lambda img: ((img.max(0).values < 0.15) & (out.mask[0, 0] > 0.99)).sum().item()
    assert dark(face) >= 2 and dark(back) == 0  # the eyes are only seen from the front (+x)
    lit = out.rgb[1][:, out.mask[1, 0] > 0.99]
    torch.testing.assert_close(lit.mean(1), torch.tensor(COLOURS["green"]), atol=1e-4, rtol=0)


def test_renders_are_deterministic_and_labelled():
    from lmcsds.priors.objects_data import HELD_OUT, render_views, training_specs

    specs = [ObjectSpec("mug", "red", "striped"), ObjectSpec("cone", "blue", "plain")]
    a = render_views(specs, 5, seed=3, progress=False)
    b = render_views(specs, 5, seed=3, progress=False)
    assert torch.equal(a.images, b.images) and a.images.shape == (10, 3, 32, 32)
    assert a.labels()[:5, :3].tolist() == [[5, 0, 1]] * 5
    assert torch.equal(a.view, view_index(a.elevation_deg, a.azimuth_deg))
    assert len(set(HELD_OUT)) == len(HELD_OUT) and not set(HELD_OUT) & set(training_specs())
    for i, values in enumerate([SHAPES, list(COLOURS), PATTERNS[1:]]):
        seen = {s.labels[i] for s in training_specs()}
        assert len(seen) == len(values) + (i == 2)  # every word still appears in training


@pytest.mark.threestudio
def test_prior_trains_on_the_objects_with_threestudio_view_prompts(tmp_path, monkeypatch):
    from lmcsds.core import IFPrior
    from lmcsds.priors.datasets import objects3d
    from lmcsds.priors.objects_data import load_or_render, training_prompts, training_specs
    from lmcsds.priors.train import train_prior

    monkeypatch.chdir(tmp_path)
    data, renders = objects3d(views_per_object=2), load_or_render("train", 2)
    prompts = training_prompts()
    assert len(prompts) == len(training_specs()) * (1 + len(VIEWS)) + 1 and prompts[-1] == ""
    assert prompts[1] == training_specs()[0].caption() + ", side view"
    gen = torch.Generator().manual_seed(0)
    images, index = data.batch(torch.arange(data.size), gen)
    assert images.shape == (data.size, 3, 32, 32) and -1 <= images.min() < images.max() <= 1
    for i in range(data.size):  # the caption names the rendered object; the suffix its view
        spec = training_specs()[i // 2]
        assert prompts[int(index[i])].startswith(spec.caption())
        if "," in prompts[int(index[i])]:
            assert prompts[int(index[i])].endswith(f"{VIEWS[int(renders.view[i])]} view")
    train_prior(str(tmp_path / "p"), minutes=5, steps=1, batch_size=4, checkpoint_every=1,
                dataset=data)  # fmt: skip
    prior = IFPrior.from_pretrained(str(tmp_path / "p"), device="cpu", half_precision=False)
    assert prior.resolution == 32
    assert "procedural 3D objects" in (tmp_path / "p" / "TRAINING.md").read_text()


CLASSIFIER = "load/lmcsds/priors/objects-classifier.safetensors"


def _true_sampler(prior_dir, prompts, **kw):
    """Stands in for the prior's sampler: the true object of each prompt from its view."""
    azimuth = {"side": 90.0, "front": 0.0, "back": 180.0}
    out = []
    for p in prompts:
        view = p.split(", ")[1].split()[0]
        cams = orbit_cameras(1, 15.0, 2.4, 45.0, azimuth_offset_deg=azimuth[view])
        out.append(render(parse_caption(p), cams, 32).rgb * 2 - 1)
    return torch.cat(out)


def test_committed_classifier_recognises_true_renders_and_scores_faithfulness(monkeypatch):
    """On fresh renders (a seed it never saw) the bundled classifier names shape, colour and
    pattern; faithfulness() scored on the true objects passes every caption."""
    from lmcsds.priors import objects_eval
    from lmcsds.priors.objects_classifier import accuracies, load_object_classifier
    from lmcsds.priors.objects_data import HELD_OUT, render_views

    from .conftest import ROOT

    model = load_object_classifier(str(ROOT / CLASSIFIER))
    acc = accuracies(model, render_views(all_specs()[::3], 8, seed=11, progress=False))
    assert acc["shape"] > 0.95 and acc["colour"] > 0.97 and acc["pattern"] > 0.9, acc
    assert acc["view"] > 0.7, acc  # views near the 45-degree borders are ambiguous
    monkeypatch.setattr(objects_eval, "sample", _true_sampler)
    result = objects_eval.faithfulness("unused", str(ROOT / CLASSIFIER), HELD_OUT)
    assert result["captions"] == len(HELD_OUT) and result["captions_passing"] == 1.0
    assert result["sample_view_asymmetric"] > 0.8


def test_classifier_augmentation_is_seeded_in_range_and_mild():
    from lmcsds.priors.objects_classifier import augment
    from lmcsds.priors.objects_data import render_views

    x = render_views([ObjectSpec("cube", "red", "plain")], 4, seed=0, progress=False).float_images()
    a = augment(x, torch.Generator().manual_seed(0))
    b = augment(x, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == x.shape and a.min() >= -1 and a.max() <= 1
    change = (a - x).abs().mean().item()
    assert 0.005 < change < 0.3, change  # perturbs, but keeps the object recognisable
