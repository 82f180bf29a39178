"""Image metrics for the 2D experiments. Images are (B, C, H, W) in [-1, 1].

Each metric compares results with real images (of the target class) where the paper does:
sharpness (high-frequency energy, Fig. 1), natural-image statistics (vertical-derivative
histograms, Fig. 6), saturation, a feature distance to the real distribution (KID's role),
and diversity across seeds.
"""

from typing import Optional

import torch
from torch import Tensor

from ..core.spectra import high_frequency_energy

DERIVATIVE_RANGE, DERIVATIVE_BINS = 1.0, 100


def relative_hf_energy(x: Tensor, real: Tensor, cutoff: float = 0.5) -> float:
    """Mean high-frequency energy fraction of x divided by that of real images (1 = as sharp)."""
    return (
        high_frequency_energy(x, cutoff).mean() / high_frequency_energy(real, cutoff).mean()
    ).item()


def vertical_derivative_histogram(x: Tensor) -> Tensor:
    """Normalised histogram of d/dy over [-1, 1] (100 bins; larger steps land in the end bins),
    pooled over images and channels."""
    r = DERIVATIVE_RANGE
    dy = (x[:, :, 1:, :] - x[:, :, :-1, :]).flatten().float().clamp(-r, r)
    hist = torch.histc(dy, bins=DERIVATIVE_BINS, min=-r, max=r)
    return hist / hist.sum().clamp_min(1)


def derivative_histogram_distance(x: Tensor, real: Tensor) -> float:
    """Total-variation distance (0..1) between the vertical-derivative histograms."""
    return (
        0.5
        * (vertical_derivative_histogram(x) - vertical_derivative_histogram(real))
        .abs()
        .sum()
        .item()
    )


def clipped_fraction(x: Tensor, threshold: float = 0.98) -> float:
    """Fraction of pixel values at the ends of the range (|x| >= threshold): saturation."""
    return (x.abs() >= threshold).float().mean().item()


def contrast_ratio(x: Tensor, real: Tensor) -> float:
    """Mean per-image standard deviation of x divided by that of real images (1 = as real)."""
    return (x.flatten(1).std(1).mean() / real.flatten(1).std(1).mean()).item()


def mmd(f_x: Tensor, f_y: Tensor) -> float:
    """Biased squared MMD with KID's polynomial kernel (x.y / d + 1)^3; 0 for identical sets."""
    d = f_x.shape[1]
    k = lambda a, b: (a @ b.T / d + 1) ** 3  # noqa: E731
    return (k(f_x, f_x).mean() + k(f_y, f_y).mean() - 2 * k(f_x, f_y).mean()).item()


def mean_pairwise_distance(f: Tensor) -> float:
    """Mean L2 distance between distinct rows of f: diversity across seeds (0 if all equal)."""
    n = f.shape[0]
    if n < 2:
        return 0.0
    dist = torch.cdist(f.double(), f.double())
    return (dist.sum() / (n * (n - 1))).item()


def feature_distance(f_x: Tensor, f_y: Tensor) -> Tensor:
    """Per-pair L2 distance of features (the paper's LPIPS-to-source role)."""
    return (f_x - f_y).norm(dim=1)


@torch.no_grad()
def class_scores(classifier, x: Tensor, target: Tensor, batch: int = 512) -> dict:
    """Accuracy and mean probability of the target class under the classifier."""
    probs = torch.cat([classifier(x[i : i + batch]).softmax(1) for i in range(0, len(x), batch)])
    return {
        "accuracy": (probs.argmax(1) == target).float().mean().item(),
        "target_probability": probs.gather(1, target[:, None]).mean().item(),
    }


def image_metrics(
    x: Tensor, real: Tensor, classifier=None, target: Optional[Tensor] = None
) -> dict:
    """All single-set metrics of results x against real images of the same class."""
    out = {
        "relative_hf_energy": relative_hf_energy(x, real),
        "derivative_hist_distance": derivative_histogram_distance(x, real),
        "clipped_fraction": clipped_fraction(x),
        "clipped_fraction_real": clipped_fraction(real),
        "contrast_ratio": contrast_ratio(x, real),
    }
    if classifier is not None:
        fx, fr = classifier.features(x), classifier.features(real)
        out["feature_mmd"] = mmd(fx, fr)
        out["diversity"] = mean_pairwise_distance(fx)
        out["diversity_real"] = mean_pairwise_distance(fr)
        if target is not None:
            out.update(class_scores(classifier, x, target))
    return out
