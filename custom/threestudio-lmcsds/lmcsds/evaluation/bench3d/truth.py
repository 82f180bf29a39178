"""The true object under the benchmark's test cameras and on an asset's density grid."""

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Tuple

import torch
from torch import Tensor

from ...core.atomic import atomic_write
from ...priors import cameras as _cameras
from ...priors import objects3d as _objects3d
from ...priors import sdf_render as _sdf_render
from ...priors.cameras import Cameras, orbit_cameras, rays, view_index
from ...priors.objects3d import PARTS, ObjectSpec, sdf
from ...priors.sdf_render import render
from ..asset_density import grid_points

EVAL_DEFAULTS = dict(eval_elevation_deg=15.0, eval_camera_distance=1.5, eval_fovy_deg=70.0,
                     eval_height=512)  # random-camera-datamodule's defaults  # fmt: skip


@dataclass
class Truth:
    rgb: Tensor  # (V, 3, H, W) in [0, 1], 8-bit levels as every asset's PNGs
    mask: Tensor  # (V, H, W) coverage, 8-bit levels
    depth: Tensor  # (V, H, W) ray distance to the surface, inf where the ray misses
    view: Tensor  # (V,) threestudio view label of each orbit camera
    cameras: Cameras


def quantise_8bit(x: Tensor) -> Tensor:
    """Values as a PNG stores them, so the truth meets the same thresholds as an asset."""
    return (x.clamp(0, 1) * 255).round() / 255


def eval_cameras(views: int, data_cfg) -> Tuple[Cameras, int]:
    """threestudio's test orbit (light at the camera) and its image size."""
    e = {k: data_cfg.get(k, v) for k, v in EVAL_DEFAULTS.items()}
    cams = orbit_cameras(views, e["eval_elevation_deg"], e["eval_camera_distance"],
                         e["eval_fovy_deg"])  # fmt: skip
    return cams, int(e["eval_height"])


def truth_cache_dir() -> Path:
    """Where rendered truths are kept: ``$LMCSDS_CACHE/truth`` (default ``~/.cache/lmcsds``)."""
    return Path(os.environ.get("LMCSDS_CACHE", Path.home() / ".cache" / "lmcsds")) / "truth"


def _truth_key(spec: ObjectSpec, views: int, data_cfg, without: Tuple[str, ...]) -> str:
    """Everything a truth depends on: the object, the cameras, the rendering code, torch."""
    e = {k: float(data_cfg.get(k, v)) for k, v in EVAL_DEFAULTS.items()}
    h = hashlib.sha256(repr((spec, views, sorted(e.items()), tuple(without),
                             torch.__version__)).encode())  # fmt: skip
    for module in (_cameras, _objects3d, _sdf_render):
        h.update(Path(module.__file__).read_bytes())
    h.update(Path(__file__).read_bytes())
    return h.hexdigest()[:24]


def ground_truth(spec: ObjectSpec, views: int, data_cfg, without: Tuple[str, ...] = ()) -> Truth:
    """The object under threestudio's test cameras ("diffuse" shading, 4x4 rays per pixel),
    rendered once and then read from ``truth_cache_dir()`` (every report of a benchmark needs
    it; the key covers the object, the cameras and the rendering code)."""
    path = truth_cache_dir() / f"{_truth_key(spec, views, data_cfg, without)}.pt"
    if path.is_file():
        try:
            return Truth(**torch.load(path, weights_only=False))
        except Exception:  # a damaged file: render again and replace it
            pass
    cams, size = eval_cameras(views, data_cfg)
    out = render(spec, cams, resolution=size, supersample=4, without=without)
    truth = Truth(quantise_8bit(out.rgb), quantise_8bit(out.mask[:, 0]), out.depth[:, 0],
                  view_index(cams.elevation_deg, cams.azimuth_deg), cams)  # fmt: skip
    try:
        atomic_write(path, lambda tmp: torch.save(vars(truth), tmp))
    except OSError:  # a read-only home: no cache
        pass
    return truth


def turned_points(points: Tensor, turn_deg: float) -> Tensor:
    """Points of the object's frame in the frame of an asset that is the object turned by
    ``turn_deg`` about z (and the inverse for ``-turn_deg``)."""
    a = torch.deg2rad(torch.tensor(float(turn_deg)))
    rot = torch.tensor([[a.cos(), -a.sin(), 0.0], [a.sin(), a.cos(), 0.0], [0.0, 0.0, 1.0]])
    return points @ rot.T


def occupancy(
    spec: ObjectSpec, resolution: int, radius: float, turn_deg: float, without: Tuple[str, ...] = ()
) -> Tensor:
    """The object's occupancy on the asset's density grid, turned by ``turn_deg`` about z."""
    p = turned_points(grid_points(resolution, radius), -turn_deg)
    return (sdf(spec.shape, p, without) < 0).reshape(resolution, resolution, resolution)


def part_cells(
    spec: ObjectSpec, resolution: int, radius: float, turn_deg: float, margin_cells: float = 1.5
) -> Dict[str, Tensor]:
    """Per part of ``PARTS[spec.shape]``: the grid cells inside that part and more than
    ``margin_cells`` cells from every other part (so that a neighbour, within the recall's
    one-cell tolerance, never counts for it); {} for the primitives."""
    if spec.shape not in PARTS:
        return {}
    p = turned_points(grid_points(resolution, radius), -turn_deg)
    margin = margin_cells * 2 * radius / resolution
    distance = {name: f(p) for name, f in PARTS[spec.shape].items()}
    cells = {}
    for name, d in distance.items():
        others = torch.stack([v for k, v in distance.items() if k != name]).min(0).values
        cells[name] = ((d < 0) & (others > margin)).reshape(resolution, resolution, resolution)
    return cells


def surface_points(truth: Truth, turn_deg: float) -> Tensor:
    """(N, 3) visible surface points of the object (where the test rays hit it), in the frame
    of an asset turned by ``turn_deg``."""
    size = truth.mask.shape[-1]
    o, d = rays(truth.cameras, size, size)
    hit = torch.isfinite(truth.depth) & (truth.mask > 0.5)
    return turned_points(o[hit] + truth.depth[hit][:, None] * d[hit], turn_deg)
