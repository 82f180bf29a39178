"""Fake assets made from the truth, to check that every metric ranks what it should: the truth
scores best, a known failure worse. Each is scored through the benchmark's own file path (a
trial folder with threestudio's test PNGs and a density grid), by the tests and by
``lmcsds bench3d --oracles``.
"""

from pathlib import Path
from typing import Dict

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ...priors.cameras import rays
from ...priors.objects3d import ObjectSpec, albedo
from ...priors.sdf_render import render, trace
from .truth import Truth, ground_truth, occupancy, quantise_8bit

GRID, RADIUS = 64, 1.0
SOLID_DENSITY = 50.0  # opaque over a hundredth of the scene
LOW_DENSITY = 5.0  # still opaque through the objects (> 0.5 opacity over 0.14 units)
FOG_DENSITY = 0.5  # renders transparent (opacity < 0.5 through the whole object)
REMOVED_PART = {"mug": "handle", "chair": "backrest", "snowman": "nose"}


def blur(rgb: Tensor, sigma: float = 1.0) -> Tensor:
    """Separable Gaussian blur of (V, 3, H, W) images, ``sigma`` in pixels."""
    r = int(3 * sigma)
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float32) / sigma) ** 2)
    k = (k / k.sum()).repeat(3, 1, 1, 1)
    x = F.conv2d(F.pad(rgb, (r, r, 0, 0), mode="replicate"), k.view(3, 1, 1, -1), groups=3)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(3, 1, -1, 1), groups=3)


def mean_albedo(spec: ObjectSpec, truth: Truth) -> Tensor:
    """(3,) mean albedo of the object's surface seen by the truth's cameras."""
    size = truth.mask.shape[-1]
    o, d = rays(truth.cameras, size, size)
    hit, _, p = trace(spec.shape, o.reshape(-1, 3), d.reshape(-1, 3))
    return albedo(spec, p[hit]).mean(0)


def flat_colour(spec: ObjectSpec, truth: Truth) -> Tensor:
    """The object shaded as the truth but in one colour: the mean of its visible albedo (a
    patterned object averaged to its mean colour, as a pattern-less guidance renders it)."""
    cams = truth.cameras
    lit = render(spec, cams, truth.mask.shape[-1], 4, shading=["textureless"] * len(cams)).rgb
    mean = mean_albedo(spec, truth)
    return quantise_8bit(lit * mean[None, :, None, None] * (truth.mask[:, None] > 0))


def oracle_assets(spec: ObjectSpec, truth: Truth, data_cfg) -> Dict[str, dict]:
    """name -> asset (rgb, mask, density, radius) for the truth and its known failures."""
    views = len(truth.mask)
    occ = occupancy(spec, GRID, RADIUS, 0.0).float()

    def asset(rgb, mask, density):
        return {"rgb": rgb, "mask": mask, "density": density, "radius": RADIUS}

    out = {
        "truth": asset(truth.rgb, truth.mask, occ * SOLID_DENSITY),
        "turned 180": asset(truth.rgb.roll(views // 2, 0), truth.mask.roll(views // 2, 0),
                            occupancy(spec, GRID, RADIUS, 180.0).float() * SOLID_DENSITY),
        "low-density solid": asset(truth.rgb, truth.mask, occ * LOW_DENSITY),
        "blurred 1 px": asset(quantise_8bit(blur(truth.rgb)), truth.mask, occ * SOLID_DENSITY),
        "flat colour": asset(flat_colour(spec, truth), truth.mask, occ * SOLID_DENSITY),
        "transparent fog": asset(quantise_8bit(truth.rgb * 0.3), quantise_8bit(truth.mask * 0.3),
                                 occ * FOG_DENSITY),
        "empty": asset(torch.zeros_like(truth.rgb), torch.zeros_like(truth.mask),
                       torch.zeros_like(occ)),
    }  # fmt: skip
    if spec.shape in REMOVED_PART:
        part = REMOVED_PART[spec.shape]
        less = ground_truth(spec, views, data_cfg, without=(part,))
        occ_less = occupancy(spec, GRID, RADIUS, 0.0, without=(part,)).float()
        out[f"without {part}"] = asset(less.rgb, less.mask, occ_less * SOLID_DENSITY)
    return out


def write_trial(trial: Path, asset: dict) -> Path:
    """A threestudio trial folder holding ``asset`` as a finished run leaves it: the last test
    pass (rgb | normal | opacity PNGs, the first view repeated last) and the density grid."""
    import imageio.v2 as imageio

    test = trial / "save" / "it1-test"
    test.mkdir(parents=True, exist_ok=True)
    rgb = asset["rgb"].permute(0, 2, 3, 1)
    opacity = asset["mask"][..., None].expand(-1, -1, -1, 3)
    normal = torch.full_like(rgb, 0.5)
    frames = torch.cat([rgb, normal, opacity], dim=2)
    frames = torch.cat([frames, frames[:1]])
    for i, frame in enumerate(frames):
        imageio.imwrite(test / f"{i}.png", (frame.clamp(0, 1) * 255).round().byte().numpy())
    np.savez_compressed(trial / f"density-{asset['density'].shape[0]}.npz",
                        density=asset["density"].numpy(), radius=asset["radius"])  # fmt: skip
    return trial


def score_oracles(
    spec: ObjectSpec, views: int, data_cfg, classifier, folder: Path
) -> Dict[str, dict]:
    """Every oracle of ``spec`` scored through the benchmark's file path."""
    from .scoring import score_run

    truth = ground_truth(spec, views, data_cfg)
    rows = {}
    for name, asset in oracle_assets(spec, truth, data_cfg).items():
        trial = write_trial(folder / name.replace(" ", "-"), asset)
        rows[name] = score_run(trial, spec, truth, classifier, grid=GRID)
    return rows
