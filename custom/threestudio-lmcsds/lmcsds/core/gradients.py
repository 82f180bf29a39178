"""SDS and LMC-SDS gradients as small pure functions on tensors.

Alldieck, Kolotouros, Sminchisescu: "Score Distillation Sampling with Learned Manifold
Corrective", ECCV 2024 (arXiv 2401.05293). Equation numbers refer to that paper.

Conventions: images are (B, C, H, W) in the prior's pixel range [-1, 1]; ``abar`` is
``alphas_cumprod[t]`` shaped to broadcast, e.g. (B, 1, 1, 1); ``omega`` is the guidance
weight in the paper's convention (``eps^omega = omega eps_y + (1 - omega) eps_0``, which is
threestudio's ``guidance_scale`` plus one). Every ``g_*`` is a gradient with respect to the
rendered image ``z`` with the UNet Jacobian dropped, as in SDS.
"""

import re
from typing import Literal, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

Normalization = Literal["global", "per_channel", "none"]  # or "<statistics><T>", see below
NORMALIZATIONS: Tuple[str, ...] = ("global", "per_channel", "none")
_BELOW_T = re.compile(r"^(global|per_channel)<(\d+)$")


def parse_normalization(mode: str) -> Tuple[str, Optional[int]]:
    """("global" | "per_channel" | "none", T or None). "global<700": Eq. 10 with global
    statistics where t < 700, none from t = 700 on (where one noisy zhat_t's spread overstates
    E[zhat_t]'s, docs/objects3d.md)."""
    if mode in NORMALIZATIONS:
        return mode, None
    m = _BELOW_T.match(str(mode))
    if m is None:
        raise ValueError(
            f"normalization must be one of {NORMALIZATIONS} or '<global|per_channel><T>' "
            f"(e.g. 'global<700'), got {mode!r}"
        )
    return m.group(1), int(m.group(2))


def z_t(z: Tensor, eps: Tensor, abar: Tensor) -> Tensor:
    """Forward diffusion (DDPM): z_t = sqrt(abar) z + sqrt(1 - abar) eps."""
    return abar.sqrt() * z + (1 - abar).sqrt() * eps


def zhat_t(zt: Tensor, eps_0: Tensor, abar: Tensor) -> Tensor:
    """Unconditional one-step x0 prediction from the noisy image zt (Sec. 3, Eq. 7)."""
    return (zt - (1 - abar).sqrt() * eps_0) / abar.sqrt()


def ddim_sigma(abar: Tensor, abar_next: Tensor) -> Tensor:
    """DDIM's noise scale at eta = 1 between a less noisy abar and a noisier abar_next (Song et
    al. 2021, Eq. 16): sqrt((1 - abar) / (1 - abar_next) (1 - abar_next / abar))."""
    return ((1 - abar) / (1 - abar_next) * (1 - abar_next / abar)).clamp_min(0).sqrt()


def eps_omega(eps_y: Tensor, eps_0: Tensor, omega: float) -> Tensor:
    """Classifier-free guidance (Eq. 4): omega eps_y + (1 - omega) eps_0."""
    return omega * eps_y + (1 - omega) * eps_0


def g_sds(eps_y: Tensor, eps_0: Tensor, eps: Tensor, omega: float) -> Tensor:
    """SDS gradient with w(t) = 1 (Eq. 3)."""
    return eps_omega(eps_y, eps_0, omega) - eps


def g_cond(eps_y: Tensor, eps_0: Tensor, omega: float) -> Tensor:
    """Prompt-agreement term of the SDS split (Eq. 6)."""
    return omega * (eps_y - eps_0)


def perpendicular(x: Tensor, y: Tensor) -> Tensor:
    """The component of x perpendicular to y, per image (Perp-Neg's projection)."""
    dot = (x * y).sum(dim=(1, 2, 3), keepdim=True)
    return x - dot / (y * y).sum(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6) * y


def g_cond_perp_neg(
    eps_y: Tensor, eps_0: Tensor, eps_neg: Tensor, weights: Tensor, omega: float
) -> Tensor:
    """g_cond with Perp-Neg negative prompts (Armandpour et al. 2023, "Re-imagine the Negative
    Prompt Algorithm"), as threestudio's deep-floyd-guidance forms it: omega (e + sum_i w_i
    perp(eps_neg_i - eps_0, e)), e = eps_y - eps_0; eps_neg (B, K, C, H, W), weights (B, K)."""
    e = eps_y - eps_0
    negatives = sum(
        weights[:, i].view(-1, 1, 1, 1) * perpendicular(eps_neg[:, i] - eps_0, e)
        for i in range(eps_neg.shape[1])
    )
    return omega * (e + negatives)


# --- the baselines, each in this file's convention (gradient on z, w(t) and 1/omega applied by
# the caller; eps_0 the empty prompt's prediction, omega the paper's guidance weight) --------

NFSD_NEGATIVE_PROMPT = (
    "unrealistic, blurry, low quality, out of focus, ugly, low contrast, dull, dark, "
    "low-resolution, gloomy"
)  # Katzir et al. 2023


def delta_d(eps_0: Tensor, eps_neg: Tensor, t: Tensor, t_small: int = 200) -> Tensor:
    """NFSD's domain direction (Katzir et al. 2023, "Noise-Free Score Distillation"):
    eps_0 where t < t_small, eps_0 - eps_neg (negative prompt) elsewhere; NFSD = delta_D + g_cond.
    """
    small = (t < t_small).view(-1, 1, 1, 1).to(eps_0.device)
    return torch.where(small, eps_0, eps_0 - eps_neg)


def g_dds_source(eps_src_y: Tensor, eps_src_0: Tensor, eps_0: Tensor, omega: float) -> Tensor:
    """DDS's source term (Hertz et al. 2023, "Delta Denoising Score"): eps_0 minus the
    source's guided prediction eps^omega(zhat_t; y_src). DDS = g_cond + this: eps^omega(z_t; y)
    - eps^omega(zhat_t; y_src), the same t and eps for both noisy images."""
    return eps_0 - eps_omega(eps_src_y, eps_src_0, omega)


def g_csd_negative(eps_neg: Tensor, eps_0: Tensor, omega: float, weight: float) -> Tensor:
    """CSD's negative-prompt term (Yu et al. 2023, "Text-to-3D with Classifier Score
    Distillation"): -omega weight (eps_neg - eps_0); CSD = g_cond + this, with weight =
    omega_2 / omega_1 of the paper (omega = omega_1)."""
    return -omega * weight * (eps_neg - eps_0)


def g_ms_sds(zt: Tensor, x0: Tensor, eps: Tensor, abar: Tensor) -> Tensor:
    """Multi-step SDS (Zhou & Tulsiani 2023, SparseFusion) in SDS's eps form: the
    noise that maps the multi-step estimate x0 to zt, minus eps (= sqrt(abar / (1 - abar))
    (z - x0)); with x0 the one-step guided estimate it is g_sds (Eq. 3)."""
    return (zt - abar.sqrt() * x0) / (1 - abar).sqrt() - eps


def g_proj(eps_0: Tensor, eps: Tensor) -> Tensor:
    """Projection term of the SDS split (Eq. 6); equals sqrt(abar/(1-abar)) (z - zhat_t) (Eq. 7)."""
    return eps_0 - eps


def image_stats(x: Tensor, mode: Normalization) -> Tuple[Tensor, Tensor]:
    """Mean and standard deviation per image ("global") or per image and channel."""
    dims = (1, 2, 3) if mode == "global" else (2, 3)
    return x.mean(dims, keepdim=True), x.std(dims, keepdim=True, unbiased=False)


def bhat(
    b: Tensor, zhat: Tensor, mode: Normalization = "global", t: Optional[Tensor] = None
) -> Tensor:
    """Corrective output matched to the statistics of zhat_t (Eq. 10).

    ``sigma(zhat) / sigma(b) * (b - mu(b)) + mu(b)``: the spread of the prediction ``b`` is
    taken from ``zhat``, its mean is kept. ``mode="none"`` returns ``b`` unchanged;
    ``"global<T"`` normalises only the images whose timestep ``t`` (B,) is below T.
    """
    stats, t_max = parse_normalization(mode)
    if stats == "none":
        return b
    mu_b, sigma_b = image_stats(b, stats)
    _, sigma_zhat = image_stats(zhat, stats)
    out = sigma_zhat / sigma_b.clamp_min(1e-6) * (b - mu_b) + mu_b
    if t_max is None:
        return out
    if t is None:
        raise ValueError(f"normalization {mode!r} depends on t: pass the timesteps")
    return torch.where((t < t_max).view(-1, 1, 1, 1).to(out.device), out, b)


def g_lmc(bhat: Tensor, zhat: Tensor) -> Tensor:
    """Learned manifold corrective, weighting sqrt(abar/(1-abar)) dropped (Eq. 9)."""
    return bhat - zhat


def loss_k(
    b: Tensor, zhat: Tensor, mode: Normalization = "global", t: Optional[Tensor] = None
) -> Tensor:
    """Training loss of the corrective, mean over pixels (Eq. 10)."""
    return F.mse_loss(bhat(b, zhat, mode, t), zhat)


def weight(abar: Tensor, strategy: str) -> Tensor:
    """w(t): 1 ("uniform", the paper's), 1 - abar ("sds") or sqrt(abar)(1 - abar) ("fantasia3d")."""
    if strategy == "uniform":
        return torch.ones_like(abar)
    if strategy == "sds":
        return 1 - abar
    if strategy == "fantasia3d":
        return abar.sqrt() * (1 - abar)
    raise ValueError(
        f"weighting_strategy must be 'uniform', 'sds' or 'fantasia3d', got {strategy!r}"
    )


def loss_from_grad(z: Tensor, g: Tensor) -> Tensor:
    """Reparameterised loss whose gradient w.r.t. z is g / B: 0.5 ||z - sg(z - g)||^2 / B."""
    target = (z - g).detach()
    return 0.5 * F.mse_loss(z, target, reduction="sum") / z.shape[0]
