"""A pure-PyTorch stand-in for ``nvdiffrast.torch``: rasterize, interpolate and antialias.

threestudio's ``NVDiffRasterizerContext`` (``threestudio/utils/rasterize.py``), and through it the
``nvdiff-rasterizer`` renderer, ``tetrahedra-sdf-grid`` refinement and ``magic3d-system``, call
these three functions; nvdiffrast needs CUDA. The CPU mode (``cpu_mode.py``) registers this
module as ``nvdiffrast.torch`` when nvdiffrast is not installed, so that threestudio's mesh stage
runs unmodified on the CPU. The GPU path never sees it.

nvdiffrast's conventions (Laine et al. 2020, "Modular Primitives for High-Performance
Differentiable Rendering", and its documentation), followed here:

- ``pos``: clip-space vertices (B, Nv, 4); pixel (px, py) has its centre at NDC
  ((px + 0.5) / W * 2 - 1, (py + 0.5) / H * 2 - 1), so row 0 is NDC y = -1;
- ``rast`` (B, H, W, 4): perspective-correct barycentrics (u, v) of the triangle's first two
  vertices (the third gets 1 - u - v), the depth z / w, and the triangle index + 1 (0: empty);
  the nearest triangle (smallest z / w in [-1, 1]) wins, both faces are drawn;
- ``rast_db`` (B, H, W, 4): du/dX, du/dY, dv/dX, dv/dY in pixels;
- ``antialias``: where two neighbouring pixels (right or down) show different triangles, the
  front one's silhouette edge (no neighbour across it, or a neighbour folded away from the
  camera) that crosses the segment between the pixel centres at distance ``dc`` from the
  front pixel blends the two colours by ``0.5 - dc``, which makes a covered area's summed
  coverage its exact area and gives vertex positions a gradient at silhouettes.

Gradients come from autograd: (u, v, z/w) are recomputed differentiably from ``pos`` for the
triangle each pixel shows, and the antialiasing blend is a differentiable function of ``pos``
and ``color``. Not supported: range mode (2-D ``pos``), ``texture``, and triangles with a
vertex behind the camera (w <= 0), which are dropped instead of clipped against the near plane.
"""

from typing import Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

PAIR_CHUNK = 1 << 22  # (triangle, pixel) candidates tested at a time
EDGE_EPS = 1.0 / 16.0  # crossing tolerance of antialias, in pixels (as nvdiffrast's)


class RasterizeCudaContext:
    """A context object as nvdiffrast's; nothing to hold on the CPU."""

    def __init__(self, device=None, **kwargs) -> None:
        self.device = device


class RasterizeGLContext(RasterizeCudaContext):
    pass


def _resolution(resolution: Union[int, Sequence[int]]) -> Tuple[int, int]:
    if isinstance(resolution, int):
        return resolution, resolution
    height, width = (int(r) for r in resolution)
    return height, width


def _screen(v: Tensor, height: int, width: int) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Pixel coordinates (pixel centres at integers), z / w and w of clip-space points."""
    w = v[..., 3]
    x = (v[..., 0] / w + 1.0) * (width / 2.0) - 0.5
    y = (v[..., 1] / w + 1.0) * (height / 2.0) - 0.5
    return x, y, v[..., 2] / w, w


def _edge_weights(x: Tensor, y: Tensor, px: Tensor, py: Tensor) -> Tuple[Tensor, Tensor]:
    """Screen-space barycentrics (..., 3) of points (px, py) in triangles (x, y: (..., 3)) and
    the triangles' doubled signed areas."""
    area = (x[..., 1] - x[..., 0]) * (y[..., 2] - y[..., 0]) - (x[..., 2] - x[..., 0]) * (
        y[..., 1] - y[..., 0]
    )
    weights = []
    for i in range(3):
        j, k = (i + 1) % 3, (i + 2) % 3
        edge = (x[..., j] - px) * (y[..., k] - py) - (x[..., k] - px) * (y[..., j] - py)
        weights.append(edge / area)
    return torch.stack(weights, -1), area


def covered_pixels(
    pos: Tensor, tri: Tensor, height: int, width: int
) -> Iterator[Tuple[Tensor, Tensor, Tensor]]:
    """(pixel index b H W + y W + x, triangle index, z / w) of every pixel centre inside a
    triangle, with no depth test, in chunks: each triangle's pixel bounding box, tested with
    its edge functions."""
    batch, faces = pos.shape[0], tri.shape[0]
    x, y, z, w = _screen(pos[:, tri], height, width)  # (B, F, 3)
    area = (x[..., 1] - x[..., 0]) * (y[..., 2] - y[..., 0]) - (x[..., 2] - x[..., 0]) * (
        y[..., 1] - y[..., 0]
    )
    x0 = x.amin(-1).ceil().clamp(0, width - 1).long()
    x1 = x.amax(-1).floor().clamp(-1, width - 1).long()
    y0 = y.amin(-1).ceil().clamp(0, height - 1).long()
    y1 = y.amax(-1).floor().clamp(-1, height - 1).long()
    nx, ny = (x1 - x0 + 1).clamp_min(0), (y1 - y0 + 1).clamp_min(0)
    drawable = (w > 0).all(-1) & (area != 0) & torch.isfinite(area)
    counts = torch.where(drawable, nx * ny, torch.zeros_like(nx)).flatten()
    which = counts.nonzero().squeeze(1)
    if len(which) == 0:
        return
    ends = counts[which].cumsum(0)
    start = 0
    while start < len(which):
        base = ends[start - 1] if start > 0 else torch.zeros((), dtype=torch.long)
        stop = int(torch.searchsorted(ends, base + PAIR_CHUNK, right=True))
        stop = max(stop, start + 1)
        group = which[start:stop]
        n = counts[group]
        owner = torch.repeat_interleave(torch.arange(len(group)), n)
        offset = torch.arange(int(n.sum())) - torch.repeat_interleave(n.cumsum(0) - n, n)
        flat = group[owner]  # index into (B * F)
        b, f = flat // faces, flat % faces
        width_f = nx.flatten()[flat]
        px = x0.flatten()[flat] + offset % width_f
        py = y0.flatten()[flat] + offset // width_f
        bary, _ = _edge_weights(x[b, f], y[b, f], px.to(x.dtype), py.to(x.dtype))
        depth = (bary * z[b, f]).sum(-1)
        inside = (bary >= 0).all(-1) & (depth >= -1.0) & (depth <= 1.0)
        pixel = (b * height + py) * width + px
        yield pixel[inside], f[inside], depth[inside]
        start = stop


def _visible_triangles(pos: Tensor, tri: Tensor, height: int, width: int) -> Tensor:
    """The triangle index each pixel shows (B, H, W), -1 for none: a z-buffer over the
    candidates (nearest z / w; equal depths: the lower index)."""
    pixels = pos.shape[0] * height * width
    zbuf = torch.full((pixels,), float("inf"), dtype=pos.dtype)
    for pixel, _, depth in covered_pixels(pos, tri, height, width):
        zbuf.scatter_reduce_(0, pixel, depth, "amin")
    faces = tri.shape[0]
    ids = torch.full((pixels,), faces, dtype=torch.long)
    for pixel, f, depth in covered_pixels(pos, tri, height, width):
        front = depth == zbuf[pixel]
        ids.scatter_reduce_(0, pixel[front], f[front], "amin")
    ids[ids == faces] = -1
    return ids.view(pos.shape[0], height, width)


def rasterize(
    glctx,
    pos: Tensor,
    tri: Tensor,
    resolution: Union[int, Sequence[int]],
    ranges: Optional[Tensor] = None,
    grad_db: bool = True,
) -> Tuple[Tensor, Tensor]:
    """(rast, rast_db) of the triangles ``tri`` (F, 3) with clip-space vertices ``pos``."""
    if pos.dim() != 3 or ranges is not None:
        raise NotImplementedError("the CPU rasteriser supports instance mode only (pos: B, Nv, 4)")
    height, width = _resolution(resolution)
    tri = tri.long()
    with torch.no_grad():
        ids = _visible_triangles(pos.detach().float(), tri, height, width)
    b, py, px = (ids >= 0).nonzero(as_tuple=True)
    f = ids[b, py, px]
    x, y, z, w = _screen(pos[b[:, None], tri[f]], height, width)  # (N, 3)
    lam, area = _edge_weights(x, y, px.to(x.dtype), py.to(x.dtype))
    q = lam / w  # perspective correction: weights of the clip-space vertices
    bary = q / q.sum(-1, keepdim=True)
    depth = (lam * z).sum(-1)
    values = torch.stack([bary[:, 0], bary[:, 1], depth, (f + 1).to(pos.dtype)], -1)
    rast = torch.zeros(pos.shape[0], height, width, 4, dtype=pos.dtype)
    rast = rast.index_put((b, py, px), values)
    # d lambda_i / dX, dY of the affine screen-space weights, then through the correction
    j, k = [1, 2, 0], [2, 0, 1]
    dlam_dx = (y[:, j] - y[:, k]) / area[:, None]
    dlam_dy = (x[:, k] - x[:, j]) / area[:, None]
    total = q.sum(-1, keepdim=True)
    db = []
    for dlam in (dlam_dx, dlam_dy):
        dq = dlam / w
        db.append((dq - bary * dq.sum(-1, keepdim=True)) / total)
    derivs = torch.stack([db[0][:, 0], db[1][:, 0], db[0][:, 1], db[1][:, 1]], -1)
    if not grad_db:
        derivs = derivs.detach()
    rast_db = torch.zeros_like(rast).index_put((b, py, px), derivs)
    return rast, rast_db


def _corner_values(attr: Tensor, rast: Tensor, tri: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """(covered (B, H, W), the three corners' attributes (B, H, W, 3, C)) of each pixel."""
    ids = rast[..., 3].detach().long() - 1
    covered = (ids >= 0) & (ids < tri.shape[0])
    corners = tri[ids.clamp(0, tri.shape[0] - 1)]  # (B, H, W, 3)
    if attr.dim() == 2:
        attr = attr[None]
    batch = torch.arange(rast.shape[0]).view(-1, 1, 1, 1) if attr.shape[0] > 1 else 0
    return covered, attr[batch, corners], ids


def interpolate(
    attr: Tensor,
    rast: Tensor,
    tri: Tensor,
    rast_db: Optional[Tensor] = None,
    diff_attrs: Optional[Union[str, List[int]]] = None,
) -> Tuple[Tensor, Tensor]:
    """Per-pixel attributes u a0 + v a1 + (1 - u - v) a2 (0 where empty) and, for
    ``diff_attrs`` ('all' or indices), their pixel derivatives (da/dX, da/dY per attribute)."""
    tri = tri.long()
    covered, corners, _ = _corner_values(attr, rast, tri)
    u, v = rast[..., 0:1], rast[..., 1:2]
    a0, a1, a2 = corners.unbind(-2)
    mask = covered[..., None].to(attr.dtype)
    out = (u * a0 + v * a1 + (1.0 - u - v) * a2) * mask
    if diff_attrs is None:
        return out, torch.zeros(*out.shape[:-1], 0, dtype=out.dtype)
    if rast_db is None:
        raise ValueError("interpolate: diff_attrs needs rast_db")
    picks = list(range(attr.shape[-1])) if diff_attrs == "all" else list(diff_attrs)
    da = []
    for c in picks:
        e0, e1 = a0[..., c] - a2[..., c], a1[..., c] - a2[..., c]
        da.append(rast_db[..., 0] * e0 + rast_db[..., 2] * e1)  # d/dX
        da.append(rast_db[..., 1] * e0 + rast_db[..., 3] * e1)  # d/dY
    return out, torch.stack(da, -1) * mask


def opposite_vertices(tri: Tensor) -> Tensor:
    """(F, 3): for edge i of each triangle (the edge facing its vertex i), the vertex of the
    triangle across that edge that is not on it, or -1 where no triangle shares the edge."""
    faces = tri.shape[0]
    tri = tri.long()
    a = torch.stack([tri[:, 1], tri[:, 2], tri[:, 0]], 1)
    b = torch.stack([tri[:, 2], tri[:, 0], tri[:, 1]], 1)
    lo, hi = torch.minimum(a, b).flatten(), torch.maximum(a, b).flatten()
    keys = lo * (int(tri.max()) + 1 if faces else 1) + hi
    order = keys.argsort()
    same = (keys[order][1:] == keys[order][:-1]).nonzero().squeeze(1)
    third = tri.flatten()  # entry (f, i) of the flattened edges faces vertex tri[f, i]
    opposite = torch.full((faces * 3,), -1, dtype=torch.long)
    first, second = order[same], order[same + 1]
    opposite[first], opposite[second] = third[second], third[first]
    return opposite.view(faces, 3)


_OPPOSITE: dict = {}


def _cached_opposite_vertices(tri: Tensor) -> Tensor:
    """``opposite_vertices`` of the last topology seen: a renderer antialiases several images
    of one mesh per step (nvdiffrast's ``topology_hash`` serves the same purpose)."""
    key = (tri.data_ptr(), tuple(tri.shape), tri._version)
    if _OPPOSITE.get("key") != key or not torch.equal(_OPPOSITE["tri"], tri):
        _OPPOSITE.update(key=key, tri=tri.clone(), opposite=opposite_vertices(tri))
    return _OPPOSITE["opposite"]


def _signed_area(x: Tensor, y: Tensor) -> Tensor:
    return (x[..., 1] - x[..., 0]) * (y[..., 2] - y[..., 0]) - (x[..., 2] - x[..., 0]) * (
        y[..., 1] - y[..., 0]
    )


def _blend(color: Tensor, rast: Tensor, pos: Tensor, tri: Tensor, opp: Tensor, down: bool):
    """(target pixel index, added colour) of every pixel pair (right or down neighbours)
    that a silhouette edge separates."""
    batch, height, width, channels = color.shape
    ids = rast[..., 3].detach().long() - 1
    ids = torch.where(ids < tri.shape[0], ids, torch.full_like(ids, -1))
    zw = rast[..., 2].detach()
    if down:
        t0, t1, z0, z1 = ids[:, :-1], ids[:, 1:], zw[:, :-1], zw[:, 1:]
    else:
        t0, t1, z0, z1 = ids[:, :, :-1], ids[:, :, 1:], zw[:, :, :-1], zw[:, :, 1:]
    b, py, px = (t0 != t1).nonzero(as_tuple=True)
    t0, t1 = t0[b, py, px], t1[b, py, px]
    z0, z1 = z0[b, py, px], z1[b, py, px]
    first = (t0 >= 0) & ((t1 < 0) | (z0 < z1))  # the front triangle is pixel 0's
    front = torch.where(first, t0, t1)
    sign = first.to(color.dtype) * 2.0 - 1.0  # +1: measured from pixel 0 towards pixel 1
    cx = px + (~first).long() * (not down)  # the front pixel's centre
    cy = py + (~first).long() * down
    corners = tri[front]
    vb = b[:, None]
    x, y, _, _ = _screen(pos[vb, corners], height, width)
    others = torch.where(opp[front] >= 0, opp[front], corners)
    ox, oy, _, _ = _screen(pos[vb, others], height, width)
    x, y = x - cx[:, None], y - cy[:, None]
    ox, oy = ox - cx[:, None], oy - cy[:, None]
    own = _signed_area(x, y)
    silhouette = []
    for i in range(3):  # the vertex across edge i in place of vertex i: same side = folded
        wx, wy = x.clone(), y.clone()
        wx[:, i], wy[:, i] = ox[:, i], oy[:, i]
        silhouette.append((_signed_area(wx, wy) > 0) == (own > 0))
    silhouette = torch.stack(silhouette, -1)
    if down:  # measure along y: swap the axes
        x, y = y, x
    j, k = [1, 2, 0], [2, 0, 1]
    xa, ya, xb, yb = x[:, j], y[:, j], x[:, k], y[:, k]
    straddles = (ya > 0) != (yb > 0)
    dy = torch.where(straddles, yb - ya, torch.ones_like(ya))
    cross = xa - ya * (xb - xa) / dy  # where edge i meets the line through both centres
    dist = sign[:, None] * cross
    dist = torch.where(straddles, dist, torch.full_like(dist, -float("inf")))
    edge = dist.detach().argmax(-1, keepdim=True)
    dc = dist.gather(1, edge).squeeze(1)
    steep = ((yb - ya).abs() >= (xb - xa).abs()).gather(1, edge).squeeze(1)
    ok = silhouette.gather(1, edge).squeeze(1) & steep & (dc > -EDGE_EPS) & (dc < 1 + EDGE_EPS)
    b, py, px, sign, dc = b[ok], py[ok], px[ok], sign[ok], dc[ok].clamp(0.0, 1.0)
    alpha = sign * (0.5 - dc)
    qy, qx = py + int(down), px + int(not down)
    c0, c1 = color[b, py, px], color[b, qy, qx]
    to_first = alpha.detach() > 0
    ty = torch.where(to_first, py, qy)
    tx = torch.where(to_first, px, qx)
    return (b * height + ty) * width + tx, alpha[:, None] * (c1 - c0)


def antialias(
    color: Tensor,
    rast: Tensor,
    pos: Tensor,
    tri: Tensor,
    topology_hash=None,
    pos_gradient_boost: float = 1.0,
) -> Tensor:
    """``color`` (B, H, W, C) with silhouette edges blended analytically (see the module)."""
    if pos.dim() != 3:
        raise NotImplementedError("the CPU rasteriser supports instance mode only (pos: B, Nv, 4)")
    tri = tri.long()
    if pos_gradient_boost != 1.0:  # same value, gradient scaled
        pos = pos * pos_gradient_boost - pos.detach() * (pos_gradient_boost - 1.0)
    batch, height, width, channels = color.shape
    opp = _cached_opposite_vertices(tri)
    out = color.reshape(-1, channels)
    for down in (False, True):
        target, delta = _blend(color, rast, pos, tri, opp, down)
        out = out.index_add(0, target, delta.to(out.dtype))
    return out.view(batch, height, width, channels)


def texture(*args, **kwargs):
    raise NotImplementedError(
        "nvdiffrast.torch.texture is not provided by the CPU rasteriser (lmcsds CPU mode)"
    )
