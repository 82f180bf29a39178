"""One guidance step: noise the image, query the prior once, combine the paper's terms.

Threestudio-free and deterministic given ``t`` and the noise tensors, so the 2D experiments,
the threestudio guidance and the tests all run the same code.
"""

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import Tensor

from . import gradients as G
from .corrective import CorrectiveUNet
from .prior import IFPrior

LOSS_TYPES = ("lmc-sds", "sds", "cond")


@dataclass
class StepConfig:
    """How the total gradient is formed."""

    loss_type: str = "lmc-sds"  # lmc-sds: g_cond + g_lmc | sds: g_cond + g_proj | cond: g_cond
    omega: float = 20.0  # guidance weight, paper convention (threestudio's scale + 1)
    normalization: G.Normalization = "global"  # Eq. 10 statistics; must match the corrective
    scale_by_omega: bool = True  # divide the total by omega, as in the paper's experiments
    weighting: str = "uniform"  # w(t)

    def __post_init__(self) -> None:
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {self.loss_type!r}")
        G.parse_normalization(self.normalization)  # validates it
        if not self.omega > 0:
            raise ValueError(f"guidance weight omega must be > 0, got {self.omega}")
        G.weight(torch.ones(1), self.weighting)  # validates the name


@dataclass
class StepOutput:
    """The total gradient on z and the parts it was made of (for logs and visualisation)."""

    g: Tensor  # total gradient w.r.t. z, after 1/omega and w(t)
    g_cond: Tensor
    g_second: Optional[Tensor]  # g_lmc (lmc-sds), g_proj (sds) or None (cond)
    zt: Tensor  # noisy image the unconditional x0 prediction was made from
    zhat: Tensor  # zhat_t
    bhat: Optional[Tensor]  # normalised corrective output (lmc-sds only)
    unet_rows: int  # UNet rows evaluated per image


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
) -> StepOutput:
    """Gradient on the image z (B, 3, H, W) at timesteps t (B,).

    ``eps`` is this step's fresh noise. ``eps_cond`` (fixed-epsilon mode) replaces it inside
    g_cond only; with ``loss_type="sds"`` or ``"cond"`` there is no separate term, so it
    replaces it everywhere. ``perp_neg``: (embeddings (B, K, L, D), weights (B, K)) of K
    negative prompts per image, which turn g_cond into Perp-Neg's. Rows per image: 2, plus 1
    for LMC-SDS with ``eps_cond``, plus K with ``perp_neg``; all in one UNet call.
    """
    if cfg.loss_type == "lmc-sds" and corrective is None:
        raise ValueError("loss_type 'lmc-sds' needs a corrective network")
    z = z.detach()
    abar = prior.abar(t)
    separate = cfg.loss_type == "lmc-sds" and eps_cond is not None
    eps_c = eps if eps_cond is None else eps_cond
    zt_c = G.z_t(z, eps_c, abar)
    rows, ts, embs = [zt_c, zt_c], [t, t], [emb_y, emb_0]
    if separate:
        zt_u = G.z_t(z, eps, abar)
        rows, ts, embs = rows + [zt_u], ts + [t], embs + [emb_0]
    if perp_neg is not None:  # image b's K negatives are rows b K .. b K + K - 1 of this block
        emb_neg, k = perp_neg[0], perp_neg[0].shape[1]
        rows += [zt_c.repeat_interleave(k, 0)]
        ts += [t.repeat_interleave(k, 0)]
        embs += [emb_neg.flatten(0, 1)]
    sizes = [r.shape[0] for r in rows]
    eps_all = prior.eps(torch.cat(rows), torch.cat(ts), torch.cat(embs)).split(sizes)
    eps_y, eps_0 = eps_all[0], eps_all[1]
    eps_0_u, zt_u = (eps_all[2], zt_u) if separate else (eps_0, zt_c)

    if perp_neg is None:
        g_c = G.g_cond(eps_y, eps_0, cfg.omega)
    else:
        eps_neg = eps_all[-1].unflatten(0, (z.shape[0], k))
        g_c = G.g_cond_perp_neg(eps_y, eps_0, eps_neg, perp_neg[1], cfg.omega)
    zhat = G.zhat_t(zt_u, eps_0_u, abar)
    b_hat = second = None
    if cfg.loss_type == "sds":
        second = G.g_proj(eps_0, eps_c)
    elif cfg.loss_type == "lmc-sds":
        with torch.no_grad():
            b = corrective(z.to(next(corrective.parameters()).dtype), t).float()
        b_hat = G.bhat(b, zhat, cfg.normalization, t)
        second = G.g_lmc(b_hat, zhat)
    g = g_c if second is None else g_c + second
    if cfg.scale_by_omega:
        g = g / cfg.omega
    g = G.weight(abar, cfg.weighting) * g
    return StepOutput(g, g_c, second, zt_u, zhat, b_hat, sum(sizes) // z.shape[0])
