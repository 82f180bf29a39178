"""Speed of the CPU rasteriser (``adapter/rasterizer.py``) on DMTet meshes like the refine
stage's: threestudio's marching tetrahedra on a ``tet_grid`` of resolution 64 and 128 with a
sphere SDF, rendered as ``nvdiff-rasterizer`` does (rasterize, interpolate the normals,
antialias the mask and the colour) forward and backward, at 64 and 128 px, batch 1 and 4.
Each row is the median of ``--repeats`` timed calls after one warm-up; the last column is
the time relative to the first row.

    lmcsds bench-rasterizer --out bench-results/rasterizer.json
"""

import json
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch

from ..adapter import rasterizer as dr
from ..adapter.tet_grid import write_tet_grids
from ..commands import module_main


def sphere_mesh(resolution: int, folder: Path):
    from ..adapter.cpu_mode import install_cuda_placeholders

    install_cuda_placeholders()
    from threestudio.models.isosurface import MarchingTetrahedraHelper

    write_tet_grids(folder, [resolution])
    helper = MarchingTetrahedraHelper(resolution, str(folder / f"{resolution}_tets.npz"))
    sdf = (helper.grid_vertices - 0.5).norm(dim=-1, keepdim=True) - 0.35
    mesh = helper(sdf)
    return (mesh.v_pos - 0.5) * 2.0, mesh.t_pos_idx  # radius 0.7 around the origin


def mvp_matrices(batch: int) -> torch.Tensor:
    t, near, far = 1 / math.tan(0.35), 0.1, 10.0
    proj = torch.tensor([[t, 0, 0, 0], [0, -t, 0, 0],
                         [0, 0, -(far + near) / (far - near), -2 * far * near / (far - near)],
                         [0, 0, -1.0, 0]])  # fmt: skip
    out = []
    for b in range(batch):
        a = 2 * math.pi * b / max(batch, 1)
        rot = torch.tensor([[math.cos(a), 0, math.sin(a), 0], [0, 1, 0, 0],
                            [-math.sin(a), 0, math.cos(a), -2.5], [0, 0, 0, 1.0]])  # fmt: skip
        out.append(proj @ rot)
    return torch.stack(out)


def render_step(verts: torch.Tensor, tri: torch.Tensor, mvp: torch.Tensor, size: int) -> None:
    verts = verts.clone().requires_grad_(True)
    clip = torch.cat([verts, torch.ones(len(verts), 1)], 1) @ mvp.permute(0, 2, 1)
    rast, _ = dr.rasterize(None, clip, tri, (size, size))
    mask = (rast[..., 3:] > 0).float()
    normal, _ = dr.interpolate(verts[None], rast, tri)
    colour = torch.lerp(torch.full_like(normal, 0.5), normal * 0.5 + 0.5, mask)
    out = dr.antialias(mask, rast, clip, tri).sum() + dr.antialias(colour, rast, clip, tri).sum()
    out.backward()


def add_arguments(p) -> None:
    p.add_argument("--out", default="bench-results/rasterizer.json", help="results (.json)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per row (median)")


def run(args) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        meshes = {n: sphere_mesh(n, Path(tmp)) for n in (64, 128)}
    for grid, (verts, tri) in meshes.items():
        for size in (64, 128):
            for batch in (1, 4):
                mvp = mvp_matrices(batch)
                render_step(verts, tri, mvp, size)  # warm-up
                times = []
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    render_step(verts, tri, mvp, size)
                    times.append(time.perf_counter() - start)
                rows.append({"tet_grid": grid, "faces": len(tri), "px": size, "batch": batch,
                             "seconds": statistics.median(times)})  # fmt: skip
    print("| tet grid | faces | px | batch | ms per forward + backward | x first row |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['tet_grid']} | {r['faces']} | {r['px']} | {r['batch']} | "
              f"{1000 * r['seconds']:.1f} | {r['seconds'] / rows[0]['seconds']:.2f} |")  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"threads": torch.get_num_threads(), "rows": rows}, indent=1))


def main(argv=None) -> None:
    module_main(__doc__, add_arguments, run, argv)


if __name__ == "__main__":
    main()
