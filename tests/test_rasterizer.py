"""The pure-torch nvdiffrast stand-in (adapter/rasterizer.py) against analytic renders, finite
differences and threestudio's own rasterizer context and marching tetrahedra."""

import math

import numpy as np
import pytest
import torch

from lmcsds.adapter import rasterizer as dr
from lmcsds.adapter.tet_grid import tet_grid, write_tet_grids


def ndc(pixel: float, size: int) -> float:
    """NDC coordinate of a pixel-space coordinate (pixel centres at integers)."""
    return (pixel + 0.5) * 2.0 / size - 1.0


def quad(x0, x1, y0, y1, z=0.1, dtype=torch.float32):
    """An axis-aligned rectangle in pixel coordinates (w = 1), as two triangles."""
    pos = torch.tensor([[x0, y0, z, 1.0], [x1, y0, z, 1.0], [x1, y1, z, 1.0], [x0, y1, z, 1.0]],
                       dtype=dtype)  # fmt: skip
    return pos, torch.tensor([[0, 1, 2], [0, 2, 3]], dtype=torch.int32)


def to_ndc(pos, height, width):
    out = pos.clone()
    out[:, 0] = (pos[:, 0] + 0.5) * 2.0 / width - 1.0
    out[:, 1] = (pos[:, 1] + 0.5) * 2.0 / height - 1.0
    return out


def perspective(fovy=0.8, near=0.1, far=10.0):
    """OpenGL projection, camera at the origin looking down -z."""
    t = 1.0 / math.tan(fovy / 2)
    return torch.tensor([[t, 0, 0, 0], [0, t, 0, 0],
                         [0, 0, -(far + near) / (far - near), -2 * far * near / (far - near)],
                         [0, 0, -1.0, 0]])  # fmt: skip


def project(points, mvp):
    return torch.cat([points, torch.ones(len(points), 1)], 1) @ mvp.T


def test_coverage_ids_barycentrics_and_depth_at_known_pixels():
    """A rectangle from pixel x 2.3-9.6, y 1.2-5.7 at 16 x 12 px covers exactly the pixel
    centres inside it; a pixel's (u, v) are its barycentrics by hand; z / w is the plane's."""
    h, w = 12, 16
    pos, tri = quad(2.3, 9.6, 1.2, 5.7, z=0.25)
    rast, _ = dr.rasterize(None, to_ndc(pos, h, w)[None], tri, (h, w))
    covered = rast[0, ..., 3] > 0
    expected = torch.zeros(h, w, dtype=torch.bool)
    expected[2:6, 3:10] = True  # centres y 2..5, x 3..9
    assert torch.equal(covered, expected)
    assert set(rast[0, ..., 3][covered].tolist()) == {1.0, 2.0}
    assert torch.allclose(rast[0, ..., 2][covered], torch.tensor(0.25))
    # pixel (x 8, y 2): below the diagonal (0 -> 2), so in triangle 0 (vertices 0, 1, 2)
    u, v, _, ident = rast[0, 2, 8].tolist()
    a, b, c = (torch.tensor(p) for p in ([2.3, 1.2], [9.6, 1.2], [9.6, 5.7]))
    p = torch.tensor([8.0, 2.0])
    area = lambda p0, p1, p2: (p1 - p0)[0] * (p2 - p0)[1] - (p2 - p0)[0] * (p1 - p0)[1]
    assert ident == 1.0
    assert u == pytest.approx(float(area(p, b, c) / area(a, b, c)), abs=1e-5)
    assert v == pytest.approx(float(area(a, p, c) / area(a, b, c)), abs=1e-5)


def test_barycentrics_are_perspective_correct():
    """Interpolated world positions of a slanted triangle reproject to each pixel centre and
    its depth is the projected point's z / w (affine screen-space weights would miss both)."""
    mvp = perspective()
    world = torch.tensor([[-1.0, -0.8, -2.0], [1.2, -0.5, -4.0], [0.1, 1.0, -3.0]])
    tri = torch.tensor([[0, 1, 2]])
    rast, _ = dr.rasterize(None, project(world, mvp)[None], tri, (24, 24))
    out, _ = dr.interpolate(world[None], rast, tri)
    covered = rast[0, ..., 3] > 0
    assert covered.sum() > 100
    clip = project(out[0][covered], mvp)
    yy, xx = covered.nonzero(as_tuple=True)
    centres = torch.stack([(xx + 0.5) / 12 - 1, (yy + 0.5) / 12 - 1], 1)
    assert torch.allclose(clip[:, :2] / clip[:, 3:], centres, atol=1e-5)
    assert torch.allclose(clip[:, 2] / clip[:, 3], rast[0][covered][:, 2], atol=1e-5)


def test_the_nearest_triangle_wins_in_either_order():
    h = w = 8
    near, _ = quad(0.5, 5.5, 0.5, 5.5, z=-0.2)
    far, _ = quad(2.5, 7.5, 2.5, 7.5, z=0.4)
    for first, second in ((near, far), (far, near)):
        pos = to_ndc(torch.cat([first, second]), h, w)[None]
        tri = torch.tensor([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]])
        rast, _ = dr.rasterize(None, pos, tri, (h, w))
        assert rast[0, 3, 3, 2] == pytest.approx(-0.2)  # both cover it: the near one
        assert rast[0, 6, 6, 2] == pytest.approx(0.4)  # only the far one
        assert rast[0, 0, 7, 3] == 0  # neither


def cube_mesh(half=0.5):
    corners = torch.tensor([[x, y, z] for x in (-half, half) for y in (-half, half)
                            for z in (-half, half)])  # fmt: skip
    quads = [[0, 1, 3, 2], [4, 6, 7, 5], [0, 4, 5, 1], [2, 3, 7, 6], [0, 2, 6, 4], [1, 5, 7, 3]]
    tri = torch.tensor([t for q in quads for t in ([q[0], q[1], q[2]], [q[0], q[2], q[3]])])
    return corners, tri


def uv_sphere(radius=1.0, rings=48, segments=96):
    theta = torch.linspace(0, math.pi, rings + 1)[1:-1]
    phi = torch.linspace(0, 2 * math.pi, segments + 1)[:-1]
    t, p = torch.meshgrid(theta, phi, indexing="ij")
    body = torch.stack([t.sin() * p.cos(), t.sin() * p.sin(), t.cos()], -1).reshape(-1, 3)
    verts = torch.cat([torch.tensor([[0, 0, 1.0]]), body, torch.tensor([[0, 0, -1.0]])]) * radius
    faces = []
    ring = lambda r, s: 1 + r * segments + s % segments
    for s in range(segments):
        faces.append([0, ring(0, s), ring(0, s + 1)])
        faces.append([len(verts) - 1, ring(rings - 2, s + 1), ring(rings - 2, s)])
        for r in range(rings - 2):
            a, b, c, d = ring(r, s), ring(r, s + 1), ring(r + 1, s), ring(r + 1, s + 1)
            faces += [[a, c, d], [a, d, b]]
    return verts, torch.tensor(faces)


def test_a_cube_and_a_sphere_cover_their_projected_areas():
    """A unit cube seen face-on from distance 3 covers the pixel centres inside its front
    face's projection (the back face projects inside it); a sphere of radius 1 at distance 4
    covers pi r^2 of the disc its tangent cone projects to (within the mesh's polygon error)."""
    mvp = perspective(fovy=0.9)
    t, size = 1 / math.tan(0.45), 64
    verts, tri = cube_mesh()
    rast, _ = dr.rasterize(None, project(verts + torch.tensor([0, 0, -3.0]), mvp)[None], tri,
                           (size, size))  # fmt: skip
    half = t * 0.5 / 2.5  # the front face, at depth 2.5, in NDC
    centres = (torch.arange(size) + 0.5) / size * 2 - 1
    inside = (centres.abs() < half).sum().item()
    assert (rast[0, ..., 3] > 0).sum().item() == inside**2
    front = project(torch.tensor([[0.0, 0.0, -2.5]]), mvp)[0]
    assert rast[0, size // 2, size // 2, 2] == pytest.approx((front[2] / front[3]).item(), abs=1e-5)

    verts, tri = uv_sphere()
    rast, _ = dr.rasterize(None, project(verts + torch.tensor([0, 0, -4.0]), mvp)[None], tri,
                           (size, size))  # fmt: skip
    radius_px = t * math.tan(math.asin(1 / 4)) * size / 2
    assert (rast[0, ..., 3] > 0).sum().item() == pytest.approx(math.pi * radius_px**2, rel=0.03)


def test_rast_db_matches_a_sub_pixel_shift():
    """du/dX, du/dY, dv/dX, dv/dY: moving the triangle by d pixels changes (u, v) at a fixed
    pixel by -d times the derivative (second order in d)."""
    mvp = perspective()
    world = torch.tensor([[-1.0, -0.8, -2.0], [1.2, -0.5, -4.0], [0.1, 1.0, -3.0]],
                         dtype=torch.float64)  # fmt: skip
    clip = (torch.cat([world, torch.ones(3, 1, dtype=torch.float64)], 1) @ mvp.double().T)[None]
    tri = torch.tensor([[0, 1, 2]])
    size, d = 32, 1e-3
    rast, db = dr.rasterize(None, clip, tri, (size, size))
    covered = rast[0, ..., 3] > 0
    for axis, cols in ((0, [0, 2]), (1, [1, 3])):
        moved = clip.clone()
        moved[..., axis] += d * 2.0 / size * moved[..., 3]  # d pixels along the axis
        shifted, _ = dr.rasterize(None, moved, tri, (size, size))
        both = covered & (shifted[0, ..., 3] > 0)
        change = (shifted[0][both][:, :2] - rast[0][both][:, :2]) / d
        assert torch.allclose(change, -db[0][both][:, cols], atol=1e-5)


def test_interpolate_derivatives_of_a_screen_affine_attribute():
    """With w = 1 an attribute equal to the pixel x coordinate has d/dX 1 and d/dY 0."""
    h = w = 10
    pos, tri = quad(0.7, 8.2, 1.3, 8.9)
    rast, db = dr.rasterize(None, to_ndc(pos, h, w)[None], tri, (h, w))
    attr = torch.stack([pos[:, 0], 2 * pos[:, 1]], -1)  # x, 2 y in pixels
    out, da = dr.interpolate(attr, rast, tri, rast_db=db, diff_attrs="all")
    covered = rast[0, ..., 3] > 0
    yy, xx = covered.nonzero(as_tuple=True)
    assert torch.allclose(out[0][covered], torch.stack([xx, 2 * yy], -1).float(), atol=1e-4)
    assert torch.allclose(da[0][covered], torch.tensor([1.0, 0.0, 0.0, 2.0]), atol=1e-4)
    assert da.shape == (1, h, w, 4) and (out[0][~covered] == 0).all()
    only, da1 = dr.interpolate(attr, rast, tri, rast_db=db, diff_attrs=[1])
    assert da1.shape == (1, h, w, 2) and torch.equal(only, out)


@pytest.mark.parametrize("edge", [4.2, 4.5, 4.8, 5.3])
def test_antialiased_coverage_is_the_exact_area_at_straight_edges(edge):
    """A rectangle whose left edge lies at pixel x ``edge`` (between two centres) and whose top
    edge lies at y ``edge - 1.1``: every row's antialiased coverage sums to its exact width,
    every column's to its exact height (rasterised: whole pixels only)."""
    h = w = 16
    right, bottom = 20.0, 20.0  # beyond the image
    pos, tri = quad(edge, right, edge - 1.1, bottom)
    pos = to_ndc(pos, h, w)[None]
    rast, _ = dr.rasterize(None, pos, tri, (h, w))
    aa = dr.antialias((rast[..., 3:] > 0).float(), rast, pos, tri)[0, ..., 0]
    row, col = 12, 12
    assert aa[row].sum().item() == pytest.approx(w - 0.5 - edge, abs=1e-5)
    assert aa[:, col].sum().item() == pytest.approx(h - 0.5 - (edge - 1.1), abs=1e-5)


def test_antialias_gives_vertex_positions_the_area_gradient():
    """d(summed coverage) / d(left edge x) is minus the rows it spans, in pixels; and for a
    slanted triangle the autograd gradient of the summed antialiased colour equals finite
    differences (the blend is piecewise linear in the vertices)."""
    h = w = 16
    pos, tri = quad(4.3, 20.0, -5.0, 20.0)
    pos = to_ndc(pos, h, w)[None].requires_grad_(True)
    rast, _ = dr.rasterize(None, pos, tri, (h, w))
    dr.antialias((rast[..., 3:] > 0).float(), rast, pos, tri).sum().backward()
    assert pos.grad[0, [0, 3], 0].sum().item() == pytest.approx(-h * w / 2, abs=1e-3)

    tri = torch.tensor([[0, 1, 2]])
    base = torch.tensor([[[-0.71, -0.62, 0.1, 1.0], [0.83, -0.35, 0.1, 1.0],
                          [-0.12, 0.77, 0.1, 1.0]]], dtype=torch.float64)  # fmt: skip
    colour = torch.rand(1, h, w, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def summed(p):
        rast, _ = dr.rasterize(None, p, tri, (h, w))
        mask = (rast[..., 3:] > 0).to(p.dtype)
        return (dr.antialias(mask * colour, rast, p, tri) * torch.tensor([1.0, 2.0, 3.0])).sum()

    p = base.clone().requires_grad_(True)
    summed(p).backward()
    fd = torch.zeros_like(base)
    for v in range(3):
        for axis in range(2):
            step = torch.zeros_like(base)
            step[0, v, axis] = 1e-6
            fd[0, v, axis] = (summed(base + step) - summed(base - step)) / 2e-6
    assert p.grad[..., :2].abs().sum() > 1.0
    assert torch.allclose(p.grad[..., :2], fd[..., :2], atol=1e-5)


def test_only_silhouette_edges_are_blended():
    """A flat two-triangle patch over a far backdrop plane, both larger than the image: the
    patch's shared diagonal is no silhouette (its triangles lie side by side), so nothing is
    blended. Folded over the same edge (the second triangle's far vertex moved under the first
    one), the backdrop shows beyond the diagonal, which is now a silhouette and is blended."""
    h = w = 12
    patch = torch.tensor([[-2.0, -2.0, 0.0, 1.0], [2.0, 2.0, 0.0, 1.0], [2.0, -2.0, 0.0, 1.0],
                          [-2.0, 2.0, 0.0, 1.0]])  # fmt: skip
    backdrop = torch.tensor([[-3.0, -3.0, 0.9, 1.0], [3.0, -3.0, 0.9, 1.0], [3.0, 3.0, 0.9, 1.0],
                             [-3.0, 3.0, 0.9, 1.0]])  # fmt: skip
    tri = torch.tensor([[0, 1, 2], [0, 1, 3], [4, 5, 6], [4, 6, 7]])
    folded = patch.clone()
    folded[3] = torch.tensor([1.5, -0.5, 0.5, 1.0])  # under triangle 0, in front of the backdrop
    for top, blended in ((patch, False), (folded, True)):
        pos = torch.cat([top, backdrop])[None]
        rast, _ = dr.rasterize(None, pos, tri, (h, w))
        assert set(rast[0, ..., 3].unique().tolist()) == ({1.0, 4.0} if blended else {1.0, 2.0})
        white = (rast[..., 3:] == 1).float()  # triangle 0 white, the rest black
        out = dr.antialias(white, rast, pos, tri)
        assert bool((out != white).any()) == blended


def test_opposite_vertices_of_a_tetrahedron_surface():
    tri = torch.tensor([[0, 1, 2], [0, 3, 1], [1, 3, 2], [0, 2, 3]])
    opp = dr.opposite_vertices(tri)
    for f, face in enumerate(tri.tolist()):
        for i in range(3):
            edge = {face[(i + 1) % 3], face[(i + 2) % 3]}
            other = [g for g in tri.tolist() if g != face and edge <= set(g)][0]
            assert opp[f, i].item() == (set(other) - edge).pop()
    assert (dr.opposite_vertices(torch.tensor([[0, 1, 2]])) == -1).all()


def test_threestudio_rasterizer_context_uses_the_cpu_stand_in(cpu_threestudio):
    """threestudio's own NVDiffRasterizerContext (imported as it would be on a GPU) works on
    the CPU in CPU mode and gives what the stand-in gives."""
    from threestudio.utils.rasterize import NVDiffRasterizerContext

    ctx = NVDiffRasterizerContext("cuda", torch.device("cpu"))
    verts, tri = cube_mesh()
    mvp = (perspective() @ torch.tensor([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, -3.0],
                                         [0, 0, 0, 1]]))[None]  # fmt: skip
    clip = ctx.vertex_transform(verts, mvp)
    rast, _ = ctx.rasterize(clip, tri, (32, 32))
    direct, _ = dr.rasterize(None, project(verts + torch.tensor([0, 0, -3.0]), perspective())[None],
                             tri, (32, 32))  # fmt: skip
    assert torch.allclose(rast, direct, atol=1e-5) and (rast[..., 3] > 0).any()
    normals, _ = ctx.interpolate_one(verts, rast, tri)
    aa = ctx.antialias(normals, rast, clip, tri)
    assert aa.shape == (1, 32, 32, 3) and torch.isfinite(aa).all()


# --- tet grids -------------------------------------------------------------------------------


def test_tet_grid_is_conforming_positive_and_sized_as_threestudio_expects():
    vertices, indices = tet_grid(8)  # 4 cubes per side
    assert vertices.shape == (125, 3) and indices.shape == (6 * 64, 4)
    assert vertices.min() == 0.0 and vertices.max() == 1.0 and indices.dtype == np.int32
    a, b, c, d = (vertices[indices[:, n]] for n in range(4))
    volume = np.einsum("ij,ij->i", np.cross(b - a, c - a), d - a) / 6
    assert (volume > 0).all() and volume.sum() == pytest.approx(1.0)
    # conforming: every triangle is shared by two tetrahedra, or lies on the boundary
    faces = np.sort(np.concatenate([indices[:, [0, 1, 2]], indices[:, [0, 1, 3]],
                                    indices[:, [0, 2, 3]], indices[:, [1, 2, 3]]]), 1)  # fmt: skip
    unique, counts = np.unique(faces, axis=0, return_counts=True)
    corners = vertices[unique]  # (faces, 3 vertices, 3 coordinates)
    boundary = (np.isin(corners, (0.0, 1.0)) & (corners == corners[:, :1])).all(1).any(1)
    assert set(counts[boundary]) == {1} and set(counts[~boundary]) == {2}
    assert boundary.sum() == 6 * 4 * 4 * 2  # two triangles per boundary square
    with pytest.raises(ValueError, match="even"):
        tet_grid(7)


def test_threestudio_marching_tets_on_the_grid_give_a_closed_outward_sphere(
    tmp_path, cpu_threestudio
):
    """threestudio's own MarchingTetrahedraHelper on the written 64 grid: a sphere SDF
    (negative inside, threestudio's convention) gives a closed mesh of the right radius with
    every face normal pointing out."""
    from threestudio.models.isosurface import MarchingTetrahedraHelper

    assert [p.name for p in write_tet_grids(tmp_path, [32, 64])] == ["32_tets.npz", "64_tets.npz"]
    assert write_tet_grids(tmp_path, [32]) == []  # kept
    helper = MarchingTetrahedraHelper(64, str(tmp_path / "64_tets.npz"))
    centre, radius = 0.5, 0.3
    sdf = (helper.grid_vertices - centre).norm(dim=-1, keepdim=True) - radius
    mesh = helper(sdf)
    v, f = mesh.v_pos, mesh.t_pos_idx
    assert len(f) > 1000
    assert ((v - centre).norm(dim=-1) - radius).abs().max() < 0.01  # cube edge 1/32
    edges = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]).sort(1)[0]
    assert set(torch.unique(edges, dim=0, return_counts=True)[1].tolist()) == {2}
    normal = torch.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]], dim=-1)
    assert ((normal * (v[f].mean(1) - centre)).sum(-1) > 0).all()


def test_mesh_occupancy_fills_closed_meshes_exactly():
    """The scorer's solid of a mesh-stage asset: cell centres inside a box (anisotropic, off
    centre) are exactly the box's cells; a sphere's are the ball's."""
    from lmcsds.evaluation.asset_density import grid_points, mesh_occupancy

    res, radius = 32, 1.0
    centres = grid_points(res, radius).view(res, res, res, 3)
    verts, tri = cube_mesh(0.5)
    size, shift = torch.tensor([1.0, 0.5, 0.8]), torch.tensor([0.13, 0.07, -0.21])
    occupied = mesh_occupancy(verts * size + shift, tri, res, radius)
    box = ((centres > shift - size / 2) & (centres < shift + size / 2)).all(-1)
    assert torch.equal(occupied, box) and box.sum() > 1000
    verts, tri = uv_sphere(0.6)
    occupied = mesh_occupancy(verts + shift, tri, res, radius)
    ball = (centres - shift).norm(dim=-1) < 0.6
    assert ((occupied & ball).sum() / (occupied | ball).sum()) > 0.97
