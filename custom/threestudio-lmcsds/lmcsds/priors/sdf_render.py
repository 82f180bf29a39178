"""Sphere tracing of the procedural objects with threestudio's shading.

Colour = albedo * (ambient + diffuse * max(0, n . l)) with a point light (threestudio's
``diffuse-with-point-light-material`` in its "diffuse" mode), the albedo alone ("albedo"
mode), or the light alone on a white object ("textureless"), on a solid backdrop. Pixels are anti-aliased by rendering ``supersample``^2 rays per pixel.
"""

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .cameras import Cameras, rays
from .objects3d import ObjectSpec, albedo, sdf

AMBIENT = 0.3  # the CPU config sets the material's light colours to these
DIFFUSE = 0.7
BOUND = 1.0  # threestudio's bounding sphere radius


@dataclass
class Render:
    rgb: Tensor  # (B, 3, H, W) in [0, 1]
    mask: Tensor  # (B, 1, H, W) coverage in [0, 1]
    depth: Tensor  # (B, 1, H, W) ray distance to the surface (inf where empty, before pooling)


@torch.no_grad()
def trace(
    shape: str,
    rays_o: Tensor,
    rays_d: Tensor,
    steps: int = 96,
    eps: float = 1e-3,
    without: Tuple[str, ...] = (),
) -> tuple:
    """Sphere-trace rays (N, 3) against ``shape`` (less the parts ``without``); returns
    (hit (N,), t (N,), points (N, 3))."""
    # start where the ray enters the bounding sphere
    b = (rays_o * rays_d).sum(-1)
    c = (rays_o * rays_o).sum(-1) - BOUND**2
    disc = b * b - c
    t = (-b - disc.clamp(min=0).sqrt()).clamp(min=0)
    t_far = -b + disc.clamp(min=0).sqrt()
    alive = disc > 0
    hit = torch.zeros_like(alive)
    for _ in range(steps):
        if not alive.any():
            break
        idx = alive.nonzero().squeeze(1)
        d = sdf(shape, rays_o[idx] + t[idx, None] * rays_d[idx], without)
        t[idx] = t[idx] + 0.9 * d  # 0.9: safety for the unions' inexact distances
        done = d < eps
        hit[idx[done]] = True
        alive[idx[done | (t[idx] > t_far[idx])]] = False
    return hit, t, rays_o + t[:, None] * rays_d


def normals(shape: str, p: Tensor, h: float = 1e-3, without: Tuple[str, ...] = ()) -> Tensor:
    """Unit outward normals by central differences of the SDF."""
    offsets = torch.eye(3, dtype=p.dtype) * h
    grad = torch.stack(
        [sdf(shape, p + offsets[i], without) - sdf(shape, p - offsets[i], without)
         for i in range(3)], -1
    )  # fmt: skip
    return F.normalize(grad, dim=-1)


SHADINGS = ("diffuse", "albedo", "textureless")  # the material's coloured shading modes


@torch.no_grad()
def render(
    spec: ObjectSpec,
    cameras: Cameras,
    resolution: int = 32,
    supersample: int = 2,
    shading: Optional[Sequence[str]] = None,
    background: float = 0.0,
    without: Tuple[str, ...] = (),
) -> Render:
    """Render ``spec`` from every camera. ``shading``: one of ``SHADINGS`` per camera (default
    all "diffuse"), as the material's modes; ``without``: parts of the object left out."""
    n, res = len(cameras), resolution * supersample
    rays_o, rays_d = rays(cameras, res, res)
    rays_o, rays_d = rays_o.reshape(-1, 3), rays_d.reshape(-1, 3)
    modes = ["diffuse"] * n if shading is None else list(shading)
    if len(modes) != n or set(modes) - set(SHADINGS):
        raise ValueError(f"shading: need one of {SHADINGS} per camera ({n}), got {modes}")
    hit, t, p = trace(spec.shape, rays_o, rays_d, without=without)
    rgb = torch.full((len(hit), 3), float(background))
    depth = torch.full((len(hit),), float("inf"))
    if hit.any():
        ph = p[hit]
        base = albedo(spec, ph)
        light = cameras.light_positions[:, None, :].expand(n, res * res, 3).reshape(-1, 3)[hit]
        lambert = normals(spec.shape, ph, without=without) * F.normalize(light - ph, dim=-1)
        light_colour = (AMBIENT + DIFFUSE * lambert.sum(-1).clamp(min=0))[:, None]
        mode = torch.tensor([SHADINGS.index(m) for m in modes])
        mode = mode[:, None].expand(n, res * res).reshape(-1)[hit, None]
        rgb[hit] = torch.where(mode == 0, base * light_colour,
                               torch.where(mode == 1, base, light_colour.expand_as(base)))  # fmt: skip
        depth[hit] = t[hit]
    rgb = rgb.view(n, res, res, 3).permute(0, 3, 1, 2)
    mask = hit.float().view(n, 1, res, res)
    depth = depth.view(n, 1, res, res)
    if supersample > 1:
        rgb = F.avg_pool2d(rgb, supersample)
        mask = F.avg_pool2d(mask, supersample)
        depth = -F.max_pool2d(-depth, supersample)
    return Render(rgb=rgb, mask=mask, depth=depth)
