"""threestudio's random-camera distribution and view-dependent prompt rule, without threestudio.

The procedural 3D data is rendered under exactly the cameras that ``random-camera-datamodule``
draws during training (``threestudio/data/uncond.py``), and captioned with the view suffix that
threestudio's prompt processor picks for that camera (``prompt_processors/base.py``). Conventions
are threestudio's: z up, azimuth from +x towards +y, OpenGL camera (looks along -z, y up), so an
object whose front faces +x is seen from the front at azimuth 0.
"""

import math
import random
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

VIEWS = ["side", "front", "back", "overhead"]  # threestudio's direction order (index = label)


@dataclass
class CameraDistribution:
    """``random-camera-datamodule`` settings; defaults are ``configs/lmcsds-dreamfusion-cpu.yaml``'s."""

    elevation_range: Tuple[float, float] = (-10.0, 45.0)
    azimuth_range: Tuple[float, float] = (-180.0, 180.0)
    camera_distance_range: Tuple[float, float] = (2.2, 2.6)
    fovy_range: Tuple[float, float] = (40.0, 50.0)
    camera_perturb: float = 0.1
    center_perturb: float = 0.2
    up_perturb: float = 0.02
    light_position_perturb: float = 1.0
    light_distance_range: Tuple[float, float] = (0.8, 1.5)
    batch_uniform_azimuth: bool = True


@dataclass
class Cameras:
    c2w: Tensor  # (B, 4, 4) camera to world
    fovy_deg: Tensor  # (B,)
    light_positions: Tensor  # (B, 3)
    elevation_deg: Tensor  # (B,) before perturbation, as the prompt processor sees it
    azimuth_deg: Tensor  # (B,)
    distance: Tensor  # (B,)

    @property
    def positions(self) -> Tensor:
        return self.c2w[:, :3, 3]

    def __len__(self) -> int:
        return len(self.c2w)


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator) -> Tensor:
    return torch.rand(n, generator=gen) * (hi - lo) + lo


def look_at(position: Tensor, center: Tensor, up: Tensor) -> Tensor:
    """(B, 4, 4) camera-to-world matrices of cameras at ``position`` looking at ``center``."""
    forward = F.normalize(center - position, dim=-1)
    right = F.normalize(torch.cross(forward, up, dim=-1), dim=-1)
    true_up = F.normalize(torch.cross(right, forward, dim=-1), dim=-1)
    c2w = torch.zeros(len(position), 4, 4)
    c2w[:, :3, :3] = torch.stack([right, true_up, -forward], dim=-1)
    c2w[:, :3, 3] = position
    c2w[:, 3, 3] = 1.0
    return c2w


def spherical_to_cartesian(elevation_deg: Tensor, azimuth_deg: Tensor, distance: Tensor) -> Tensor:
    ele, azi = torch.deg2rad(elevation_deg), torch.deg2rad(azimuth_deg)
    return torch.stack(
        [distance * ele.cos() * azi.cos(), distance * ele.cos() * azi.sin(), distance * ele.sin()],
        dim=-1,
    )


def sample_cameras(
    dist: CameraDistribution, n: int, gen: torch.Generator, rng: random.Random
) -> Cameras:
    """``n`` cameras drawn as threestudio's ``RandomCameraIterableDataset.collate`` draws a batch.

    The draws happen in threestudio's order, so ``gen`` / ``rng`` seeded like torch's and Python's
    global generators give threestudio's cameras exactly (tested against threestudio).
    """
    lo, hi = dist.elevation_range
    if rng.random() < 0.5:  # uniform in elevation angle
        elevation_deg = _uniform(n, lo, hi, gen)
    else:  # uniform on the sphere (inverse transform sampling)
        s_lo, s_hi = math.sin(math.radians(lo)), math.sin(math.radians(hi))
        elevation_deg = torch.rad2deg(torch.asin(_uniform(n, s_lo, s_hi, gen)))
    a_lo, a_hi = dist.azimuth_range
    if dist.batch_uniform_azimuth:  # stratified over the batch
        azimuth_deg = (torch.rand(n, generator=gen) + torch.arange(n)) / n * (a_hi - a_lo) + a_lo
    else:
        azimuth_deg = _uniform(n, a_lo, a_hi, gen)
    distance = _uniform(n, *dist.camera_distance_range, gen)
    position = spherical_to_cartesian(elevation_deg, azimuth_deg, distance)
    position = position + (torch.rand(n, 3, generator=gen) * 2 - 1) * dist.camera_perturb
    center = torch.randn(n, 3, generator=gen) * dist.center_perturb
    up = torch.tensor([0.0, 0.0, 1.0]) + torch.randn(n, 3, generator=gen) * dist.up_perturb
    fovy_deg = _uniform(n, *dist.fovy_range, gen)
    light_distance = _uniform(n, *dist.light_distance_range, gen)
    light_dir = F.normalize(
        position + torch.randn(n, 3, generator=gen) * dist.light_position_perturb, dim=-1
    )  # threestudio's "dreamfusion" light strategy
    return Cameras(
        c2w=look_at(position, center, up),
        fovy_deg=fovy_deg,
        light_positions=light_dir * light_distance[:, None],
        elevation_deg=elevation_deg,
        azimuth_deg=azimuth_deg,
        distance=distance,
    )


def orbit_cameras(
    n_views: int,
    elevation_deg: float = 15.0,
    distance: float = 2.75,
    fovy_deg: float = 45.0,
    azimuth_offset_deg: float = 0.0,
) -> Cameras:
    """``n_views`` unperturbed cameras evenly spaced in azimuth (first at ``azimuth_offset_deg``),
    with the light at the camera, as threestudio's evaluation cameras place it."""
    azimuth_deg = torch.arange(n_views) * (360.0 / n_views) + azimuth_offset_deg
    elevation = torch.full((n_views,), float(elevation_deg))
    dist_ = torch.full((n_views,), float(distance))
    position = spherical_to_cartesian(elevation, azimuth_deg, dist_)
    up = torch.tensor([[0.0, 0.0, 1.0]]).expand(n_views, 3)
    return Cameras(
        c2w=look_at(position, torch.zeros_like(position), up),
        fovy_deg=torch.full((n_views,), float(fovy_deg)),
        light_positions=position.clone(),
        elevation_deg=elevation,
        azimuth_deg=azimuth_deg,
        distance=dist_,
    )


def rays(cameras: Cameras, height: int, width: int) -> Tuple[Tensor, Tensor]:
    """(B, H, W, 3) world-space ray origins and unit directions through the pixel centres."""
    focal = 0.5 * height / torch.tan(0.5 * torch.deg2rad(cameras.fovy_deg))  # (B,)
    x = torch.arange(width, dtype=torch.float32) + 0.5 - width / 2
    y = torch.arange(height, dtype=torch.float32) + 0.5 - height / 2
    yy, xx = torch.meshgrid(y, x, indexing="ij")
    dirs = torch.stack(
        [
            xx[None] / focal[:, None, None],
            -yy[None] / focal[:, None, None],
            -torch.ones(len(cameras), height, width),
        ],
        dim=-1,
    )  # camera space, OpenGL
    rays_d = F.normalize((dirs[..., None, :] * cameras.c2w[:, None, None, :3, :3]).sum(-1), dim=-1)
    rays_o = cameras.positions[:, None, None, :].expand_as(rays_d)
    return rays_o, rays_d


def shift_azimuth_deg(azimuth_deg: Tensor) -> Tensor:
    return (azimuth_deg + 180) % 360 - 180


def view_index(
    elevation_deg: Tensor,
    azimuth_deg: Tensor,
    front_threshold: float = 45.0,
    back_threshold: float = 45.0,
    overhead_threshold: float = 60.0,
) -> Tensor:
    """threestudio's view rule (thresholds are its defaults): index into ``VIEWS``; later wins."""
    azi = shift_azimuth_deg(azimuth_deg)
    index = torch.zeros_like(azi, dtype=torch.long)  # side
    index[(azi > -front_threshold) & (azi < front_threshold)] = VIEWS.index("front")
    index[(azi > 180 - back_threshold) | (azi < -180 + back_threshold)] = VIEWS.index("back")
    index[elevation_deg > overhead_threshold] = VIEWS.index("overhead")
    return index


def with_view(prompt: str, view: Optional[int]) -> str:
    """The prompt as threestudio's prompt processor words it for a view (suffix form)."""
    return prompt if view is None else f"{prompt}, {VIEWS[view]} view"


def view_prompts(prompt: str) -> List[str]:
    return [with_view(prompt, v) for v in range(len(VIEWS))]
