"""The density field of a finished threestudio run, on a regular grid (needs threestudio).

A NeRF's density is evaluated at the grid's cell centres; a mesh-stage run's DMTet surface
(``tetrahedra-sdf-grid``) becomes a solid: ``SOLID`` inside the closed mesh, 0 outside.
Runs in its own process (``python -m lmcsds.evaluation.asset_density TRIAL OUT.npz``) because
threestudio is imported with the CPU-mode placeholders there; the benchmark calls it.
"""

from pathlib import Path

import numpy as np
import torch

from ..commands import module_main

SOLID = 1000.0  # the density of a mesh's inside: opaque at any step size


def grid_points(resolution: int, radius: float) -> torch.Tensor:
    """(R^3, 3) cell centres of a cube [-radius, radius]^3, x-major (index = (i*R + j)*R + k)."""
    axis = (torch.arange(resolution, dtype=torch.float32) + 0.5) / resolution * 2 - 1
    x, y, z = torch.meshgrid(axis * radius, axis * radius, axis * radius, indexing="ij")
    return torch.stack([x, y, z], -1).reshape(-1, 3)


def mesh_occupancy(vertices: torch.Tensor, faces: torch.Tensor, resolution: int,
                   radius: float) -> torch.Tensor:  # fmt: skip
    """(R, R, R) bool, x-major as ``grid_points``: the cell centres inside a closed mesh, by
    the parity of its surface crossings along z below each centre (every column's crossings
    found by rasterising the mesh orthographically onto the grid's x-y cells)."""
    from ..adapter.rasterizer import covered_pixels

    pos = torch.cat([vertices / radius, torch.ones(len(vertices), 1)], 1)[None].float()
    below = torch.zeros(resolution * resolution * (resolution + 1), dtype=torch.long)
    for column, _, z in covered_pixels(pos, faces.long(), resolution, resolution):
        # a crossing at z counts for the cells whose centres lie above it: from index
        # floor(u + 0.5) on, u = z in cell units (centres at k + 0.5)
        first = torch.floor((z + 1) / 2 * resolution + 0.5).long().clamp(0, resolution)
        below.index_add_(0, column * (resolution + 1) + first, torch.ones_like(first))
    crossings = below.view(resolution, resolution, resolution + 1)[..., :-1].cumsum(-1)
    inside = crossings % 2 == 1  # (y, x, z): the rasteriser's rows are y
    return inside.permute(1, 0, 2).contiguous()


@torch.no_grad()
def extract(trial: Path, resolution: int = 64) -> dict:
    import threestudio
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(trial / "configs" / "parsed.yaml")
    if cfg.system.geometry_type == "tetrahedra-sdf-grid":
        return mesh_solid(trial, cfg, resolution)
    geometry = threestudio.find(cfg.system.geometry_type)(cfg.system.geometry).cpu().eval()
    load_geometry(geometry, trial)
    radius = float(cfg.system.geometry.radius)
    points = grid_points(resolution, radius)
    density = torch.cat([geometry.forward_density(p).reshape(-1) for p in points.split(65536)])
    return {
        "density": density.reshape(resolution, resolution, resolution).numpy(),
        "radius": radius,
    }


def load_geometry(geometry, trial: Path) -> None:
    """The run's geometry weights (``ckpts/last.ckpt``) into ``geometry``."""
    state = torch.load(trial / "ckpts" / "last.ckpt", map_location="cpu", weights_only=False)
    prefix = "geometry."
    weights = {k[len(prefix) :]: v for k, v in state["state_dict"].items() if k.startswith(prefix)}
    geometry.load_state_dict(weights, strict=False)


def mesh_solid(trial: Path, cfg, resolution: int) -> dict:
    """A mesh-stage run's surface as a solid density grid. Its DMTet grid is rebuilt with
    ``tet_grid`` (the grids ``make setup`` writes; the checkpoint holds only per-vertex values)."""
    import os
    import tempfile

    import threestudio

    from ..adapter.tet_grid import write_tet_grids

    here = Path.cwd()
    with tempfile.TemporaryDirectory() as tmp:
        write_tet_grids(
            Path(tmp) / "load" / "tets", [int(cfg.system.geometry.isosurface_resolution)]
        )
        os.chdir(tmp)  # threestudio reads load/tets/<N>_tets.npz relative to the working folder
        try:
            geometry = threestudio.find(cfg.system.geometry_type)(cfg.system.geometry).cpu().eval()
        finally:
            os.chdir(here)
    load_geometry(geometry, trial)  # the SDF, the deformation and the bounding box
    mesh = geometry.isosurface()
    radius = float(cfg.system.geometry.radius)
    inside = mesh_occupancy(mesh.v_pos, mesh.t_pos_idx, resolution, radius)
    return {"density": (inside.float() * SOLID).numpy(), "radius": radius}


def add_arguments(parser) -> None:
    parser.add_argument("trial", help="threestudio trial folder (with ckpts/last.ckpt)")
    parser.add_argument("out", help="output .npz (density, radius)")
    parser.add_argument("resolution", type=int, nargs="?", default=64, help="grid cells per axis")


def run(args) -> None:
    np.savez_compressed(args.out, **extract(Path(args.trial), args.resolution))


def main(argv=None) -> None:
    module_main(__doc__, add_arguments, run, argv)


if __name__ == "__main__":
    main()
