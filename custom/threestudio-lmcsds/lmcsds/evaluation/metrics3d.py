"""Scores of a text-to-3D asset against the true object: silhouettes, geometry, parts, colour,
pattern, detail, views. Pure functions on tensors.

Images are (V, 3, H, W) in [0, 1] and masks (V, H, W) in [0, 1], one per orbit camera (V
cameras evenly spaced in azimuth, the first at azimuth 0). Each metric has an oracle in
``tests/test_oracles.py``: the truth scores best, a known failure worse. An empty asset is
scored as what it shows (black), so it is the worst case in every mean and never dropped.
"""

from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.spectra import radial_power_spectrum

THRESHOLD = 0.5  # a pixel (or a ray) is covered where its opacity exceeds this
TIE_IOU = 0.02  # turns whose silhouettes fit within this of the best are told apart by colour


def silhouette_iou(mask: Tensor, true_mask: Tensor) -> Tensor:
    """(V,) intersection over union of the binarised masks, per view (1 where both are empty)."""
    a, b = mask > THRESHOLD, true_mask > THRESHOLD
    inter, union = (a & b).flatten(1).sum(1).float(), (a | b).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def srgb_to_lab(rgb: Tensor) -> Tensor:
    """CIE L*a*b* (D65) of sRGB colours in [0, 1], channels in dim -3 (..., 3, H, W)."""
    rgb = rgb.clamp(0, 1).movedim(-3, -1)
    linear = torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    m = rgb.new_tensor(
        [[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]
    )
    xyz = linear @ m.T / rgb.new_tensor([0.95047, 1.0, 1.08883])
    d = 6 / 29
    f = torch.where(xyz > d**3, xyz.clamp(min=1e-12) ** (1 / 3), xyz / (3 * d * d) + 4 / 29)
    lab = torch.stack(
        [116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1
    )
    return lab.movedim(-1, -3)


def delta_e_pixel(rgb: Tensor, true_rgb: Tensor, true_mask: Tensor) -> float:
    """Mean CIE76 Delta E over the object's pixels, against whatever the asset shows there (its
    colour, or the backdrop where it misses the object): 0 only for the truth's colours."""
    fg = true_mask > THRESHOLD
    return (srgb_to_lab(rgb) - srgb_to_lab(true_rgb)).norm(dim=1)[fg].mean().item()


def _fg_lab(rgb: Tensor, mask: Tensor) -> Tensor:
    """(N, 3) Lab colours of the covered pixels; the backdrop's (the images' median colour)
    when none is covered."""
    fg = mask > THRESHOLD
    lab = srgb_to_lab(rgb).movedim(1, -1)
    return lab[fg] if fg.any() else lab.reshape(-1, 3).median(0).values[None]


def colour_errors(
    rgb: Tensor, mask: Tensor, true_rgb: Tensor, true_mask: Tensor
) -> Dict[str, float]:
    """Per-pixel Delta E (the headline), Delta E of the mean foreground colours, each one's
    chroma (saturation) and the colour spread: mean Delta E of the foreground pixels to their
    mean, the asset's over the truth's (pattern contrast: 1 as the truth, ~0 for a flat colour).
    An empty asset shows the backdrop."""
    lab, true_lab = _fg_lab(rgb, mask), _fg_lab(true_rgb, true_mask)

    def spread(x: Tensor) -> Tensor:
        return (x - x.mean(0)).norm(dim=1).mean()

    return {
        "delta_e_pixel": delta_e_pixel(rgb, true_rgb, true_mask),
        "delta_e_mean": (lab.mean(0) - true_lab.mean(0)).norm().item(),
        "chroma": lab[:, 1:].norm(dim=1).mean().item(),
        "chroma_true": true_lab[:, 1:].norm(dim=1).mean().item(),
        "pattern_contrast": (spread(lab) / spread(true_lab).clamp(min=1e-6)).item(),
    }


def best_turn(
    mask: Tensor, true_mask: Tensor, rgb: Optional[Tensor] = None, true_rgb: Optional[Tensor] = None
) -> Tuple[int, Tensor]:
    """The rotation about z that best aligns the asset with the object: shift k (in views) such
    that asset view i is compared with true view i - k, i.e. the asset is the object turned by
    k * 360 / V degrees. The best silhouette fit; among turns within ``TIE_IOU`` of it (a
    symmetric silhouette) the one with the lowest per-pixel Delta E. Returns (k, mean IoU per k)."""
    ious = torch.stack(
        [silhouette_iou(mask, true_mask.roll(k, 0)).mean() for k in range(len(mask))]
    )
    tied = (ious >= ious.max() - TIE_IOU).nonzero().flatten().tolist()
    if rgb is None or len(tied) == 1:
        return int(ious.argmax()), ious
    errors = [delta_e_pixel(rgb, true_rgb.roll(k, 0), true_mask.roll(k, 0)) for k in tied]
    return tied[int(torch.tensor(errors).argmin())], ious


def turn_degrees(shift: int, views: int) -> float:
    """A shift in views as a turn in (-180, 180] degrees."""
    deg = shift * 360.0 / views
    return deg - 360.0 if deg > 180.0 else deg


def turn_shift(turn_deg: float, views: int) -> int:
    """The orbit shift a turn of ``turn_deg`` is (the inverse of ``turn_degrees``)."""
    return round(turn_deg * views / 360.0) % views


def clipped_fraction_fg(rgb: Tensor, mask: Tensor) -> float:
    """Fraction of foreground pixels with a channel at 0 or 1 (<= 1/255 from the ends); an
    empty asset counts as all clipped (it shows only the black backdrop)."""
    fg = mask > THRESHOLD
    if not fg.any():
        return 1.0
    clipped = ((rgb <= 1 / 255) | (rgb >= 254 / 255)).any(dim=1)
    return clipped[fg].float().mean().item()


def detail_ratio(rgb: Tensor, true_rgb: Tensor, resolution: int = 32, cutoff: float = 0.5) -> float:
    """Spectral power of the renders in the upper half of the band below Nyquist, relative to
    the object's renders of the same views, both seen at ``resolution`` (the prior's: finer
    detail than it resolves can never come from its guidance). 1: as much detail as the
    truth, < 1: flatter, blurrier or fainter (an empty scene: 0), > 1: noisier."""

    def band_power(x: Tensor) -> Tensor:
        if x.shape[-1] != resolution:
            x = F.interpolate(x, size=resolution, mode="area")
        spectrum = radial_power_spectrum(x * 2 - 1)
        return spectrum[:, int(spectrum.shape[1] * cutoff) :].sum(1).mean()

    return (band_power(rgb) / band_power(true_rgb).clamp(min=1e-20)).item()


# a pixel of a render on the black backdrop shows the asset where a channel exceeds this
LIT = 8 / 255


def interior_detail(rgb: Tensor, true_rgb: Tensor, resolution: int = 32) -> float:
    """Detail inside the object, relative to the truth's at the same views: the energy of a
    3x3 binomial high-pass at ``resolution`` (the prior's: the upper part of the band it
    resolves), averaged over the pixels whose whole 3x3 neighbourhood shows the asset (lit on
    the black backdrop), so that the outline, holes and fragments add nothing, only the
    pattern and the shading inside. 1: as much as the truth, < 1 flatter, blurrier or
    fainter (no interior pixel: 0), > 1 noisier. Measures amount, not correctness: a wrong
    pattern of the right sharpness scores 1."""

    def interior_power(x: Tensor) -> Tensor:
        lit = (x.amax(1, keepdim=True) > LIT).float()
        x = F.interpolate(x * 2 - 1, size=resolution, mode="area")
        lit = (F.interpolate(lit, size=resolution, mode="area") > 0.5).float()
        inner = -F.max_pool2d(-lit, 3, stride=1, padding=1)  # the 3x3 support is all object
        k = torch.tensor([1.0, 2.0, 1.0])
        k = (k[:, None] * k[None, :] / 16).expand(x.shape[1], 1, 3, 3)
        high = x - F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k, groups=x.shape[1])
        return (high.pow(2).sum(1, keepdim=True) * inner).sum() / inner.sum().clamp(min=1)

    return (interior_power(rgb) / interior_power(true_rgb).clamp(min=1e-20)).item()


# --- geometry: density fields on a grid ------------------------------------------------------


def sample_grid(field: Tensor, radius: float, points: Tensor) -> Tensor:
    """Trilinear samples of an (R, R, R) field over [-radius, radius]^3 (x-major, cell centres,
    as ``asset_density.grid_points``) at points (..., 3); 0 outside the grid."""
    coords = (points / radius).flip(-1).reshape(1, -1, 1, 1, 3)  # grid_sample wants (z, y, x)
    out = F.grid_sample(field[None, None].float(), coords, align_corners=False,
                        padding_mode="zeros")  # fmt: skip
    return out.reshape(points.shape[:-1])


def march(
    field: Tensor, radius: float, rays_o: Tensor, rays_d: Tensor, samples: int = 128
) -> Dict[str, Tensor]:
    """Rays (N, 3) through a density field between the entry and exit of its bounding sphere:
    the accumulated opacity, the largest density on the ray and the depth where the opacity
    first reaches ``THRESHOLD`` (inf where it never does)."""
    b = (rays_o * rays_d).sum(-1)
    disc = (b * b - (rays_o * rays_o).sum(-1) + radius**2).clamp(min=0)
    near, far = (-b - disc.sqrt()).clamp(min=0), -b + disc.sqrt()
    u = (torch.arange(samples, dtype=rays_o.dtype) + 0.5) / samples
    t = near[:, None] + (far - near)[:, None] * u  # (N, S) midpoints
    delta = ((far - near) / samples)[:, None]
    sigma = sample_grid(field, radius, rays_o[:, None] + t[..., None] * rays_d[:, None]).clamp(
        min=0
    )
    alpha = 1 - torch.exp(-sigma * delta)
    opacity = 1 - torch.cumprod(1 - alpha, dim=1)
    reached = opacity >= THRESHOLD
    first = reached.float().argmax(1)
    depth = torch.where(
        reached.any(1), t.gather(1, first[:, None])[:, 0], torch.full_like(near, float("inf"))
    )
    return {"opacity": opacity[:, -1], "max_density": sigma.max(1).values, "depth": depth}


def occupancy_level(max_density: Tensor, mask: Tensor) -> float:
    """The density level whose occupied set {density > level} has silhouettes closest (IoU) to
    the asset's own rendered ones: a ray sees the level set iff its largest density exceeds the
    level. So fog that renders transparent stays empty, and a solid counts as solid however
    low its density. inf for an asset that covers no pixel."""
    covered = mask.flatten() > THRESHOLD
    if not covered.any():
        return float("inf")
    m = max_density.flatten()
    levels = torch.quantile(m[covered], torch.linspace(0.0, 0.99, 100)).unique() * (1 - 1e-6)
    ious = torch.stack([((m > lv) & covered).sum() / ((m > lv) | covered).sum() for lv in levels])
    return levels[ious.argmax()].item()


def volume_iou(occupied: Tensor, true_occupied: Tensor) -> float:
    """IoU of two boolean occupancy grids."""
    inter = (occupied & true_occupied).sum().item()
    union = (occupied | true_occupied).sum().item()
    return inter / union if union else 1.0


def chamfer_distance(
    points: Tensor, true_points: Tensor, empty: float, queries: int = 4000, chunk: int = 1024
) -> float:
    """Symmetric mean nearest-neighbour distance between two point sets (N, 3), (M, 3), each
    way estimated on at most ``queries`` points of one set (a fixed subsample) against all of
    the other; ``empty`` (the scene's diameter, larger than any other value) when ``points``
    is empty."""
    if len(points) == 0:
        return float(empty)

    def one_way(a: Tensor, b: Tensor) -> Tensor:
        if len(a) > queries:
            a = a[torch.randperm(len(a), generator=torch.Generator().manual_seed(0))[:queries]]
        return torch.cat([torch.cdist(a[i : i + chunk], b).min(1).values
                          for i in range(0, len(a), chunk)]).mean()  # fmt: skip

    return 0.5 * (one_way(points, true_points) + one_way(true_points, points)).item()


def part_recall(occupied: Tensor, parts: Dict[str, Tensor], dilate: int = 1) -> Dict[str, float]:
    """Per part (boolean grids of the cells only that part fills): the fraction of its cells
    with an occupied cell within ``dilate`` cells. ``part_recall``: the mean over parts;
    ``parts_found``: the fraction of parts recalled at least half."""
    near = F.max_pool3d(occupied[None, None].float(), 2 * dilate + 1, 1, dilate)[0, 0] > 0
    recall = {
        name: near[cells].float().mean().item() for name, cells in parts.items() if cells.any()
    }
    return {
        "part_recall": sum(recall.values()) / len(recall),
        "parts_found": sum(r >= 0.5 for r in recall.values()) / len(recall),
        **{f"recall_{name}": r for name, r in recall.items()},
    }


def janus_scores(predicted_view: Tensor, true_view: Tensor, front: int) -> Dict[str, float]:
    """View accuracy of an asymmetric object's renders, and the Janus rate: the share of cameras
    that do not look at the front but whose render the classifier calls a front view. Pass the
    true views after the best turn, so that a turned object is not multi-faced."""
    not_front = true_view != front
    janus = (predicted_view[not_front] == front).float().mean().item() if not_front.any() else 0.0
    return {
        "view_accuracy": (predicted_view == true_view).float().mean().item(),
        "janus_rate": janus,
    }
