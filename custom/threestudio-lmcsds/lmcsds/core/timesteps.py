"""Timestep schedules: at which t each optimisation step distils.

``uniform``: t ~ U{t_min, ..., t_max} per image (SDS; the paper). ``linear``: one t per step,
falling linearly from t_max to t_min over training (SDI's ``t_anneal``). ``dreamtime``: one t
per step from DreamTime's time-prioritised schedule (Huang et al. 2023, "DreamTime: An Improved
Optimization Strategy for Diffusion-Guided 3D Generation"), which spends on each t a share of
the training proportional to p(t) = W_d(t) W_p(t) / Z, from high noise to low.
threestudio's ``min_step_percent`` / ``max_step_percent`` schedules move [t_min, t_max] itself
and combine with all three.
"""

from typing import Sequence, Tuple

import torch
from torch import Tensor

SCHEDULES = ("uniform", "linear", "dreamtime")
DREAMTIME_PARAMS = (800.0, 500.0, 300.0, 100.0)  # m1, m2, s1, s2 (DreamTime's defaults)


def w_p(t: Tensor, m1: float, m2: float, s1: float, s2: float) -> Tensor:
    """DreamTime's prior weight: 1 on [m2, m1], Gaussian tails of widths s1 above, s2 below."""
    t = t.double()
    above = torch.exp(-((t - m1) ** 2) / (2 * s1**2))
    below = torch.exp(-((t - m2) ** 2) / (2 * s2**2))
    return torch.where(t > m1, above, torch.where(t < m2, below, torch.ones_like(t)))


def w_d(abar: Tensor) -> Tensor:
    """DreamTime's diffusion weight sqrt((1 - abar) / abar), the prior's noise-to-signal ratio."""
    abar = abar.double()
    return ((1 - abar) / abar).sqrt()


def check_dreamtime_params(params: Sequence[float]) -> Tuple[float, float, float, float]:
    """(m1, m2, s1, s2) as floats; m2 <= m1 and s1, s2 > 0, else a ValueError naming them."""
    values = tuple(float(p) for p in params)
    if len(values) != 4 or not (values[1] <= values[0] and values[2] > 0 and values[3] > 0):
        raise ValueError(
            f"dreamtime_params must be [m1, m2, s1, s2] with m2 <= m1, s1, s2 > 0 (DreamTime's: "
            f"{list(DREAMTIME_PARAMS)}), got {list(params)}"
        )
    return values


def dreamtime_pdf(
    abar: Tensor,
    t_min: int,
    t_max: int,
    params: Sequence[float] = DREAMTIME_PARAMS,
    diffusion_weight: bool = True,
) -> Tensor:
    """p(t) over t = 0 .. T-1 (``abar``: alphas_cumprod, (T,)): W_d W_p, or W_p alone without
    ``diffusion_weight``, zero outside [t_min, t_max] and normalised to sum 1 (float64)."""
    m1, m2, s1, s2 = check_dreamtime_params(params)
    t = torch.arange(len(abar))
    w = w_p(t, m1, m2, s1, s2)
    if diffusion_weight:
        w = w * w_d(abar.cpu())
    w = torch.where((t >= t_min) & (t <= t_max), w, torch.zeros_like(w))
    return w / w.sum()


def dreamtime_t(pdf: Tensor, progress: float) -> int:
    """t(i) = argmin_t |sum_{t' >= t} p(t') - i / N| over the support of p (DreamTime's
    schedule; ``progress`` = i / N in [0, 1]): non-increasing in i, t_max at i = 0."""
    support = torch.nonzero(pdf > 0).flatten()
    lo, hi = int(support[0]), int(support[-1])
    tail = pdf[lo : hi + 1].flip(0).cumsum(0).flip(0)  # tail[k] = sum of p over t >= lo + k
    return lo + int(torch.argmin((tail - min(max(progress, 0.0), 1.0)).abs()))


def linear_t(progress: float, t_min: int, t_max: int) -> int:
    """t_max - (t_max - t_min) i / N, rounded (SDI's ``t_anneal``)."""
    progress = min(max(progress, 0.0), 1.0)
    return int(round(t_max - (t_max - t_min) * progress))
