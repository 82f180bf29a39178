"""The density field of a finished threestudio run, on a regular grid (needs threestudio).

Runs in its own process (``python -m lmcsds.evaluation.asset_density TRIAL OUT.npz``) because
threestudio is imported with the CPU-mode placeholders there; the benchmark calls it.
"""

from pathlib import Path

import numpy as np
import torch

from ..commands import module_main


def grid_points(resolution: int, radius: float) -> torch.Tensor:
    """(R^3, 3) cell centres of a cube [-radius, radius]^3, x-major (index = (i*R + j)*R + k)."""
    axis = (torch.arange(resolution, dtype=torch.float32) + 0.5) / resolution * 2 - 1
    x, y, z = torch.meshgrid(axis * radius, axis * radius, axis * radius, indexing="ij")
    return torch.stack([x, y, z], -1).reshape(-1, 3)


@torch.no_grad()
def extract(trial: Path, resolution: int = 64) -> dict:
    import threestudio
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(trial / "configs" / "parsed.yaml")
    geometry = threestudio.find(cfg.system.geometry_type)(cfg.system.geometry).cpu().eval()
    state = torch.load(trial / "ckpts" / "last.ckpt", map_location="cpu", weights_only=False)
    prefix = "geometry."
    weights = {k[len(prefix) :]: v for k, v in state["state_dict"].items() if k.startswith(prefix)}
    geometry.load_state_dict(weights, strict=False)
    radius = float(cfg.system.geometry.radius)
    points = grid_points(resolution, radius)
    density = torch.cat([geometry.forward_density(p).reshape(-1) for p in points.split(65536)])
    return {
        "density": density.reshape(resolution, resolution, resolution).numpy(),
        "radius": radius,
    }


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
