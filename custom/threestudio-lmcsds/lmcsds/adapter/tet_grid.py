"""Tetrahedral grids in threestudio's ``load/tets/<N>_tets.npz`` format, without quartet.

threestudio's ``tetrahedra-sdf-grid`` (DMTet) loads ``vertices`` (V, 3) and ``indices`` (T, 4)
and maps the vertices from ``MarchingTetrahedraHelper.points_range`` (0, 1) onto its bounding
box, and it takes a half tet edge to be about 1 / N (its deformation bound). threestudio does
not ship the files (they are made with the quartet binary). Here: a regular grid of N / 2 cubes
per side over [0, 1]^3 (so a cube edge is 2 / N), each cube split into the 6 tetrahedra around
its main diagonal (Kuhn's split: neighbouring cubes share their faces' diagonals, so the grid
is conforming), every tetrahedron with positive volume. N = 128 gives 274,625 vertices and
1,572,864 tetrahedra (quartet's file for 128: about 277k and 1.5M).

    lmcsds tet-grids --out load/tets --resolutions 32 64 128
"""

import itertools
from pathlib import Path
from typing import Sequence, Tuple

import numpy as np

from ..commands import module_main

# the cube's corners as bits (x, y, z); each tetrahedron walks from corner 0 to corner 7
# along one ordering of the three axes
_CORNER = {axes: [0, 1 << axes[0], (1 << axes[0]) | (1 << axes[1]), 7]
           for axes in itertools.permutations(range(3))}  # fmt: skip


def tet_grid(resolution: int) -> Tuple[np.ndarray, np.ndarray]:
    """(vertices (V, 3) float32 in [0, 1]^3, indices (T, 4) int32) for ``resolution`` N:
    N / 2 cubes per side, 6 tetrahedra per cube."""
    if resolution < 2 or resolution % 2:
        raise ValueError(f"tet grid resolution {resolution}: must be an even number >= 2")
    cells = resolution // 2
    side = cells + 1
    axis = np.linspace(0.0, 1.0, side, dtype=np.float32)
    vertices = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    i, j, k = (a.ravel() for a in np.meshgrid(*[np.arange(cells)] * 3, indexing="ij"))

    def corner(bits: int) -> np.ndarray:
        x, y, z = bits & 1, (bits >> 1) & 1, (bits >> 2) & 1
        return ((i + x) * side + (j + y)) * side + (k + z)

    tets = np.concatenate([np.stack([corner(b) for b in path], 1) for path in _CORNER.values()])
    a, b, c, d = (vertices[tets[:, n]] for n in range(4))
    volume = np.einsum("ij,ij->i", np.cross(b - a, c - a), d - a)
    tets[volume < 0] = tets[volume < 0][:, [0, 2, 1, 3]]  # every tetrahedron positive
    return vertices, tets.astype(np.int32)


def write_tet_grids(out: Path, resolutions: Sequence[int] = (32, 64, 128),
                    overwrite: bool = False) -> list:  # fmt: skip
    """Write ``<N>_tets.npz`` for each N into ``out``; existing files are kept unless
    ``overwrite``. Returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for n in resolutions:
        path = out / f"{n}_tets.npz"
        if path.exists() and not overwrite:
            continue
        vertices, indices = tet_grid(n)
        tmp = path.with_name(path.stem + ".tmp.npz")
        np.savez_compressed(tmp, vertices=vertices, indices=indices)
        tmp.replace(path)
        written.append(path)
    return written


def add_arguments(p) -> None:
    p.add_argument("--out", default="load/tets", help="folder (threestudio's load/tets)")
    p.add_argument("--resolutions", type=int, nargs="+", default=[32, 64, 128],
                   help="grid resolutions N (even): N / 2 cubes per side")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace existing files")


def run(args) -> None:
    for path in write_tet_grids(Path(args.out), args.resolutions, args.overwrite):
        print(f"tet_grid: wrote {path}")


def main(argv=None) -> None:
    module_main(__doc__, add_arguments, run, argv)


if __name__ == "__main__":
    main()
