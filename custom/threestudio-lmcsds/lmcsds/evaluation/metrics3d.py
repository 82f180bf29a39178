"""Scores of a text-to-3D asset against the true object: silhouettes, geometry, colour, detail,
views. Images are (V, 3, H, W) in [0, 1] and masks (V, H, W) in [0, 1], one per orbit camera
(V cameras evenly spaced in azimuth, the first at azimuth 0); pure functions on tensors.
"""

from typing import Dict, Tuple

import torch
from torch import Tensor

from .metrics import relative_hf_energy


def silhouette_iou(mask: Tensor, true_mask: Tensor, threshold: float = 0.5) -> Tensor:
    """(V,) intersection over union of the binarised masks, per view (1 where both are empty)."""
    a, b = mask > threshold, true_mask > threshold
    inter, union = (a & b).flatten(1).sum(1).float(), (a | b).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def best_azimuth_shift(mask: Tensor, true_mask: Tensor) -> Tuple[int, Tensor]:
    """The rotation about z that best aligns the asset with the object: shift k (in views) such
    that asset view i is compared with true view i - k, i.e. the asset is the object turned by
    k * 360 / V degrees; returns (k, mean IoU for every k)."""
    scores = torch.stack(
        [silhouette_iou(mask, true_mask.roll(k, 0)).mean() for k in range(len(mask))]
    )
    return int(scores.argmax()), scores


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


def colour_errors(
    rgb: Tensor, mask: Tensor, true_rgb: Tensor, true_mask: Tensor, threshold: float = 0.5
) -> Dict[str, float]:
    """Delta E (CIE76) between the asset and the object: per pixel where both cover the pixel,
    and between their mean foreground colours; plus the mean chroma of each (saturation)."""
    lab, true_lab = srgb_to_lab(rgb), srgb_to_lab(true_rgb)
    both = (mask > threshold) & (true_mask > threshold)
    fg, true_fg = mask > threshold, true_mask > threshold
    nan = float("nan")
    per_pixel = (lab - true_lab).norm(dim=1)[both].mean().item() if both.any() else nan
    if not fg.any():
        return {"delta_e_pixel": nan, "delta_e_mean": nan, "chroma": nan,
                "chroma_true": _chroma(true_lab, true_fg)}  # fmt: skip
    mean, true_mean = lab.movedim(1, -1)[fg].mean(0), true_lab.movedim(1, -1)[true_fg].mean(0)
    return {
        "delta_e_pixel": per_pixel,
        "delta_e_mean": (mean - true_mean).norm().item(),
        "chroma": _chroma(lab, fg),
        "chroma_true": _chroma(true_lab, true_fg),
    }


def _chroma(lab: Tensor, fg: Tensor) -> float:
    return lab[:, 1:].norm(dim=1)[fg].mean().item()


def clipped_fraction_fg(rgb: Tensor, mask: Tensor, threshold: float = 0.5) -> float:
    """Fraction of foreground pixels with a channel at 0 or 1 (<= 1/255 from the ends)."""
    fg = mask > threshold
    if not fg.any():
        return float("nan")
    clipped = ((rgb <= 1 / 255) | (rgb >= 254 / 255)).any(dim=1)
    return clipped[fg].float().mean().item()


def detail_ratio(rgb: Tensor, true_rgb: Tensor) -> float:
    """High-frequency energy of the renders relative to the object's renders of the same views
    (1: as detailed as the truth, < 1: blurrier, > 1: noisier)."""
    return relative_hf_energy(rgb * 2 - 1, true_rgb * 2 - 1)


def volume_iou(occupied: Tensor, true_occupied: Tensor) -> float:
    """IoU of two boolean occupancy grids."""
    inter = (occupied & true_occupied).sum().item()
    union = (occupied | true_occupied).sum().item()
    return inter / union if union else 1.0


def chamfer_distance(points: Tensor, true_points: Tensor, chunk: int = 4096) -> float:
    """Symmetric mean nearest-neighbour distance between two point sets (N, 3), (M, 3)."""
    if len(points) == 0 or len(true_points) == 0:
        return float("nan")

    def one_way(a: Tensor, b: Tensor) -> Tensor:
        return torch.cat([torch.cdist(a[i : i + chunk], b).min(1).values
                          for i in range(0, len(a), chunk)])  # fmt: skip

    return 0.5 * (one_way(points, true_points).mean() + one_way(true_points, points).mean()).item()


def janus_scores(
    predicted_view: Tensor,
    true_view: Tensor,
    front: int,
) -> Dict[str, float]:
    """View accuracy of an asymmetric object's renders, and the Janus rate: the share of cameras
    that do not look at the front but whose render the classifier calls a front view."""
    not_front = true_view != front
    janus = (predicted_view[not_front] == front).float().mean().item() if not_front.any() else 0.0
    return {
        "view_accuracy": (predicted_view == true_view).float().mean().item(),
        "janus_rate": janus,
    }
