"""One guidance step: noise the image, query the prior once, combine the paper's terms.

LMC-SDS and, through the same sampling, weighting and UNet call, the baselines it is compared
with: SDS, NFSD, DDS, multi-step SDS (one UNet call per denoising step) and CSD.
Threestudio-free and deterministic given ``t`` and the noise tensors, so the 2D experiments,
the threestudio guidance and the tests all run the same code.
"""

from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
from torch import Tensor

from . import gradients as G
from .corrective import CorrectiveUNet
from .prior import IFPrior

LOSS_TYPES = ("lmc-sds", "sds", "cond", "nfsd", "dds", "ms-sds", "csd")
NOISE_TYPES = ("random", "inversion")
CORRECTIVE_INPUTS = ("raw", "clamped")
Block = Tuple[Tensor, Tensor, Tensor]  # (noisy images, timesteps, text embeddings) of UNet rows


@torch.no_grad()
def corrective_output(corrective, z: Tensor, t: Tensor, mode: str = "raw") -> Tensor:
    """b_psi(z, t), or with ``mode="clamped"`` b_psi(clamp(z), t) + (z - clamp(z)): the
    corrective is trained on images in [-1, 1] and 3D renders leave it; the part outside passes
    through as the identity would (for a residual corrective, z + U(clamp(z), t))."""
    dtype = next(corrective.parameters()).dtype
    if mode == "raw":
        return corrective(z.to(dtype), t).float()
    inside = z.clamp(-1.0, 1.0)
    return corrective(inside.to(dtype), t).float() + (z - inside)


@dataclass
class StepConfig:
    """How the total gradient is formed: g_cond plus one second term per loss type."""

    # lmc-sds: + g_lmc | sds: + g_proj | cond: nothing | nfsd: + delta_D | dds: + the source
    # term | ms-sds: multi-step g_proj | csd: + the negative-prompt term (or nothing)
    loss_type: str = "lmc-sds"
    omega: float = 20.0  # guidance weight, paper convention (threestudio's scale + 1)
    normalization: G.Normalization = "global"  # Eq. 10 statistics; must match the corrective
    scale_by_omega: bool = True  # divide the total by omega, as in the paper's experiments
    weighting: str = "uniform"  # w(t)
    ms_steps: int = 5  # ms-sds: DDIM steps from t to 0 (the paper's comparison used 5)
    nfsd_t_small: int = 200  # nfsd: delta_D is eps_0 alone below this t (NFSD's 200 of 1000)
    csd_negative_weight: float = 0.0  # csd: omega_2 / omega_1, weight of the negative prompt
    # the step's noise: "random" (the caller's eps) or "inversion" (SDI: the noise that
    # DDIM-inverts z to t, see invert_noise), with its guidance weight, steps and eta
    noise: str = "random"
    inversion_omega: float = -6.5  # threestudio's sdi guidance's -7.5 in its convention
    inversion_steps: int = 10
    inversion_eta: float = 0.3
    # what the corrective sees: the render as it is ("raw", the paper) or clamped to [-1, 1]
    # with the part outside passed through unchanged ("clamped", see corrective_output)
    corrective_input: str = "raw"

    def __post_init__(self) -> None:
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {self.loss_type!r}")
        G.parse_normalization(self.normalization)  # validates it
        if not self.omega > 0:
            raise ValueError(f"guidance weight omega must be > 0, got {self.omega}")
        G.weight(torch.ones(1), self.weighting)  # validates the name
        if int(self.ms_steps) != self.ms_steps or self.ms_steps < 1:
            raise ValueError(
                f"ms_steps (denoising steps of ms-sds) must be >= 1, got {self.ms_steps}"
            )
        if self.noise not in NOISE_TYPES:
            raise ValueError(f"noise must be one of {NOISE_TYPES}, got {self.noise!r}")
        if int(self.inversion_steps) != self.inversion_steps or self.inversion_steps < 1:
            raise ValueError(f"inversion_steps must be >= 1, got {self.inversion_steps}")
        if self.inversion_eta < 0:
            raise ValueError(f"inversion_eta must be >= 0, got {self.inversion_eta}")
        if self.corrective_input not in CORRECTIVE_INPUTS:
            raise ValueError(
                f"corrective_input must be one of {CORRECTIVE_INPUTS}, got {self.corrective_input!r}"
            )

    @property
    def needs_negative(self) -> bool:
        """Whether a step needs a negative prompt's prediction (nfsd; csd with a weight)."""
        return self.loss_type == "nfsd" or (
            self.loss_type == "csd" and self.csd_negative_weight != 0
        )


@dataclass
class StepOutput:
    """The total gradient on z and the parts it was made of (for logs and visualisation)."""

    g: Tensor  # total gradient w.r.t. z, after 1/omega and w(t)
    g_cond: Tensor
    g_second: Optional[Tensor]  # the loss type's second term; None for cond (and csd alone)
    zt: Tensor  # noisy image the unconditional x0 prediction was made from
    zhat: Tensor  # zhat_t
    bhat: Optional[Tensor]  # normalised corrective output (lmc-sds only)
    unet_rows: int  # UNet rows evaluated per image (all calls of the step)


def _predict(prior: IFPrior, blocks: List[Block]) -> List[Tensor]:
    """Noise predictions of all blocks in ONE UNet call, split back per block."""
    sizes = [b[0].shape[0] for b in blocks]
    eps = prior.eps(*(torch.cat([b[i] for b in blocks]) for i in range(3)))
    return list(eps.split(sizes))


def _cond_blocks(
    zt: Tensor, t: Tensor, emb_y: Tensor, emb_0: Tensor, perp_neg: Optional[Tuple[Tensor, Tensor]]
) -> List[Block]:
    """Rows of g_cond: prompt, empty prompt, and image b's K Perp-Neg negatives at b K + i."""
    blocks = [(zt, t, emb_y), (zt, t, emb_0)]
    if perp_neg is not None:
        k = perp_neg[0].shape[1]
        blocks.append(
            (zt.repeat_interleave(k, 0), t.repeat_interleave(k, 0), perp_neg[0].flatten(0, 1))
        )
    return blocks


def _g_cond(eps: List[Tensor], perp_neg: Optional[Tuple[Tensor, Tensor]], omega: float) -> Tensor:
    """g_cond (Eq. 6) or its Perp-Neg form from the predictions of ``_cond_blocks``."""
    if perp_neg is None:
        return G.g_cond(eps[0], eps[1], omega)
    eps_neg = eps[2].unflatten(0, (eps[0].shape[0], -1))
    return G.g_cond_perp_neg(eps[0], eps[1], eps_neg, perp_neg[1], omega)


def multistep_x0(
    prior: IFPrior,
    zt: Tensor,
    t: Tensor,
    eps_guided: Tensor,
    steps: int,
    emb_y: Tensor,
    emb_0: Tensor,
    omega: float,
    perp_neg: Optional[Tuple[Tensor, Tensor]] = None,
) -> Tuple[Tensor, int]:
    """x0 after ``steps`` deterministic DDIM steps (eta = 0) from (zt, t) at timesteps
    round(t (steps - i) / steps), guided like g_cond; ``eps_guided`` is the first step's
    prediction. Returns x0 and the UNet rows the later steps used."""
    x, tau, e, rows = zt, t, eps_guided, 0
    for i in range(1, steps):
        x0 = G.zhat_t(x, e, prior.abar(tau))  # Eq. 7's estimate with the guided prediction
        tau = torch.div(t * (steps - i) + steps // 2, steps, rounding_mode="floor")
        x = G.z_t(x0, e, prior.abar(tau))  # DDIM: re-noise x0 with the predicted noise
        blocks = _cond_blocks(x, tau, emb_y, emb_0, perp_neg)
        eps = _predict(prior, blocks)
        e = eps[1] + _g_cond(eps, perp_neg, omega)  # eps^omega (Eq. 4), Perp-Neg's if given
        rows += sum(b[0].shape[0] for b in blocks)
    return G.zhat_t(x, e, prior.abar(tau)), rows


def invert_noise(
    prior: IFPrior,
    z: Tensor,
    t: Tensor,
    emb_y: Tensor,
    emb_0: Tensor,
    omega: float,
    steps: int,
    eta: float = 0.0,
    generator: Optional[torch.Generator] = None,
) -> Tuple[Tensor, Tensor, int]:
    """SDI's noise (Lukoianov et al. 2024, "Score Distillation via Reparametrized DDIM"):
    DDIM-invert the image z from timestep 0 to t (B,) at timesteps 0, T / steps, 2 T / steps,
    ..., t, each step guided with ``omega`` (eps^omega, Eq. 4); eta > 0 adds eta sigma (DDIM's
    Eq. 16) of fresh noise per step. Returns (z_t, kappa, UNet rows) with z_t = sqrt(abar_t) z +
    sqrt(1 - abar_t) kappa: kappa replaces SDS's random eps."""
    stride = max(prior.num_train_timesteps // int(steps), 1)
    x, tau, rows = z, torch.zeros_like(t), 0
    while bool((tau < t).any()):
        tau_next = torch.minimum(tau + stride, t)  # images already at their t take identity steps
        eps = _predict(prior, _cond_blocks(x, tau, emb_y, emb_0, None))
        e = G.eps_omega(eps[0], eps[1], omega)
        abar, abar_next = prior.abar(tau), prior.abar(tau_next)
        x = G.z_t(G.zhat_t(x, e, abar), e, abar_next)  # one deterministic DDIM step, reversed
        if eta > 0:
            xi = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = x + eta * G.ddim_sigma(abar, abar_next) * xi
        tau, rows = tau_next, rows + 2 * z.shape[0]
    abar_t = prior.abar(t)
    return x, (x - abar_t.sqrt() * z) / (1 - abar_t).sqrt(), rows


def lmc_sds_step(
    prior: IFPrior,
    corrective: Optional[CorrectiveUNet],
    z: Tensor,
    t: Tensor,
    emb_y: Tensor,
    emb_0: Tensor,
    eps: Tensor,
    cfg: StepConfig,
    eps_cond: Optional[Tensor] = None,
    perp_neg: Optional[Tuple[Tensor, Tensor]] = None,
    emb_neg: Optional[Tensor] = None,
    source: Optional[Tuple[Tensor, Tensor]] = None,
    generator: Optional[torch.Generator] = None,
) -> StepOutput:
    """Gradient on the image z (B, 3, H, W) at timesteps t (B,).

    ``eps`` is this step's fresh noise. ``eps_cond`` (fixed-epsilon mode) replaces it inside
    g_cond only; with the other loss types there is no separate term, so it replaces it
    everywhere. ``perp_neg``: (embeddings (B, K, L, D), weights (B, K)) of K negative prompts
    per image, which turn g_cond into Perp-Neg's. ``emb_neg`` (B, L, D): the negative prompt
    of nfsd and csd. ``source``: (image (B, 3, H, W), prompt embeddings (B, L, D)) of dds.
    Rows per image: 2, +1 for LMC-SDS with ``eps_cond``, +K with ``perp_neg``, +1 for a
    negative prompt, +2 for dds, all in one UNet call; ms-sds adds (2 + K) per further step.
    With ``cfg.noise == "inversion"`` the inverted noise kappa (``invert_noise``, its eta noise
    from ``generator``) replaces ``eps``, 2 rows per inversion step before that call.
    """
    loss = cfg.loss_type
    if loss == "lmc-sds" and corrective is None:
        raise ValueError("loss_type 'lmc-sds' needs a corrective network")
    if cfg.needs_negative and emb_neg is None:
        raise ValueError(f"loss_type {loss!r} needs a negative prompt's embeddings (emb_neg)")
    if loss == "dds" and source is None:
        raise ValueError("loss_type 'dds' needs a source image and source prompt (source=...)")
    z = z.detach()
    inversion_rows = 0
    if cfg.noise == "inversion":
        if eps_cond is not None and loss != "lmc-sds":
            raise ValueError(
                f"loss_type {loss!r}: a fixed eps would replace the inverted noise everywhere; "
                f"use fixed noise or noise inversion, not both"
            )
        _, eps, inversion_rows = invert_noise(
            prior, z, t, emb_y, emb_0, cfg.inversion_omega, cfg.inversion_steps,
            cfg.inversion_eta, generator,
        )  # fmt: skip
    abar = prior.abar(t)
    separate = loss == "lmc-sds" and eps_cond is not None
    eps_c = eps if eps_cond is None else eps_cond
    zt_c = G.z_t(z, eps_c, abar)
    blocks = _cond_blocks(zt_c, t, emb_y, emb_0, perp_neg)
    n_cond = len(blocks)
    if separate:
        zt_u = G.z_t(z, eps, abar)
        blocks.append((zt_u, t, emb_0))
    if cfg.needs_negative:
        blocks.append((zt_c, t, emb_neg))
    if loss == "dds":  # the source image noised with the same t and eps
        zt_src = G.z_t(source[0].detach().to(z), eps_c, abar)
        blocks += [(zt_src, t, source[1]), (zt_src, t, emb_0)]
    predictions = _predict(prior, blocks)
    rows = sum(b[0].shape[0] for b in blocks) + inversion_rows
    eps_0 = predictions[1]
    g_c = _g_cond(predictions[:n_cond], perp_neg, cfg.omega)
    extra = iter(predictions[n_cond:])
    eps_0_u, zt_u = (next(extra), zt_u) if separate else (eps_0, zt_c)
    eps_neg = next(extra) if cfg.needs_negative else None

    zhat = G.zhat_t(zt_u, eps_0_u, abar)
    b_hat = second = None
    if loss == "sds":
        second = G.g_proj(eps_0, eps_c)
    elif loss == "lmc-sds":
        b = corrective_output(corrective, z, t, cfg.corrective_input)
        b_hat = G.bhat(b, zhat, cfg.normalization, t)
        second = G.g_lmc(b_hat, zhat)
    elif loss == "nfsd":
        second = G.delta_d(eps_0, eps_neg, t, cfg.nfsd_t_small)
    elif loss == "dds":
        eps_src_y, eps_src_0 = next(extra), next(extra)
        second = G.g_dds_source(eps_src_y, eps_src_0, eps_0, cfg.omega)
    elif loss == "csd" and eps_neg is not None:
        second = G.g_csd_negative(eps_neg, eps_0, cfg.omega, cfg.csd_negative_weight)
    elif loss == "ms-sds":
        x0, more = multistep_x0(
            prior, zt_c, t, eps_0 + g_c, int(cfg.ms_steps), emb_y, emb_0, cfg.omega, perp_neg
        )
        second, rows = G.g_ms_sds(zt_c, x0, eps_c, abar) - g_c, rows + more
    g = g_c if second is None else g_c + second
    if cfg.scale_by_omega:
        g = g / cfg.omega
    g = G.weight(abar, cfg.weighting) * g
    return StepOutput(g, g_c, second, zt_u, zhat, b_hat, rows // z.shape[0])
