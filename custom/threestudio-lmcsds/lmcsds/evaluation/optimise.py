"""Image optimisation with a guidance step (the paper's 2D experiments, Sec. 5.1).

Synthesis starts from 50% grey; editing from a photo, optionally with an L2 pull to it.
Images larger than the prior's resolution follow the paper's patch strategy: the whole image
downscaled to the prior's resolution first, then random patches at that resolution.
Adam is element-wise, so a batch of images is a batch of independent runs (one per seed).
"""

import math
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.corrective import CorrectiveUNet
from ..core.gradients import loss_from_grad
from ..core.lmc_sds import StepConfig, lmc_sds_step
from ..core.noise import FixedNoise, seeded_generator
from ..core.prior import IFPrior


@dataclass
class OptimConfig:
    """Paper synthesis defaults: 500 Adam steps, lr 0.1 cosine-decayed to 0.03 over 300
    steps, the first 150 steps on the whole (downscaled) image, then 2 patches per step."""

    steps: int = 500
    lr: float = 0.1
    lr_end: float = 0.03
    decay_steps: int = 300
    whole_steps: int = 150
    patches: int = 2
    l2_weight: float = 0.0  # editing: pull towards the initial image
    clamp: bool = True  # keep pixels in the prior's range [-1, 1]

    def lr_at(self, step: int) -> float:
        """Cosine decay from lr to lr_end over decay_steps, constant after."""
        frac = min(step, self.decay_steps) / max(self.decay_steps, 1)
        return self.lr_end + 0.5 * (self.lr - self.lr_end) * (1 + math.cos(math.pi * frac))


def _views(
    images: List[Tensor], res: int, whole: bool, patches: int, gen: torch.Generator
) -> List[Tensor]:
    """The guidance inputs of this step for each of ``images`` (the same crops for all): the
    downscaled images, or random res x res patches."""
    size = images[0].shape[-1]
    if size == res:
        return images
    if whole:
        return [
            F.interpolate(x, (res, res), mode="bilinear", antialias=True, align_corners=False)
            for x in images
        ]
    corners = [
        torch.randint(0, size - res + 1, (2,), generator=gen).tolist() for _ in range(patches)
    ]
    # patch-major: rows [p0 of all images, p1 of all images, ...]
    return [torch.cat([x[:, :, y : y + res, c : c + res] for y, c in corners]) for x in images]


def optimise(
    prior: IFPrior,
    corrective: Optional[CorrectiveUNet],
    init: Tensor,
    emb_y: Tensor,
    emb_0: Tensor,
    step_cfg: StepConfig,
    cfg: OptimConfig = OptimConfig(),
    seed: int = 0,
    fixed_noise: bool = False,
    t_range=(0.02, 0.98),
    progress=None,
    emb_neg: Optional[Tensor] = None,
    source: Optional[Tuple[Tensor, Tensor]] = None,
    stats: Optional[dict] = None,
) -> Tensor:
    """Optimise images ``init`` (B, 3, S, S) under prompt embeddings ``emb_y`` (B, 77, d).

    ``emb_neg`` (1, 77, d): the negative prompt of nfsd / csd; ``source``: (images (B, 3, S, S),
    prompt embeddings (B, 77, d)) of dds, cropped like the images. ``stats`` receives the UNet
    rows per guidance input (timings: ``lmcsds.bench.guidance``)."""
    device = prior.device
    image = init.clone().to(device).requires_grad_(True)
    original = init.detach().to(device)
    opt = torch.optim.Adam([image], lr=cfg.lr)
    fixed = FixedNoise(seed) if fixed_noise else None
    T = prior.num_train_timesteps
    lo, hi = int(T * t_range[0]), int(T * t_range[1])
    res = prior.resolution
    for step in range(cfg.steps):
        gen = seeded_generator(seed, step)
        for group in opt.param_groups:
            group["lr"] = cfg.lr_at(step)
        whole = step < cfg.whole_steps
        if source is None:
            (z,) = _views([image], res, whole, cfg.patches, gen)
        else:
            z, z_src = _views([image, source[0].to(device)], res, whole, cfg.patches, gen)
        reps = z.shape[0] // image.shape[0]
        t = torch.randint(lo, hi + 1, (z.shape[0],), generator=gen).to(device)
        eps = torch.randn(z.shape, generator=gen).to(device)
        eps_cond = fixed(z) if fixed is not None else None
        out = lmc_sds_step(
            prior, corrective, z, t, emb_y.repeat(reps, 1, 1), emb_0.expand(z.shape[0], -1, -1),
            eps, step_cfg, eps_cond,
            emb_neg=None if emb_neg is None else emb_neg.expand(z.shape[0], -1, -1),
            source=None if source is None else (z_src, source[1].repeat(reps, 1, 1)),
        )  # fmt: skip
        loss = loss_from_grad(z, torch.nan_to_num(out.g)) * reps
        if cfg.l2_weight > 0:
            loss = (
                loss + cfg.l2_weight * F.mse_loss(image, original, reduction="sum") / image.shape[0]
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if cfg.clamp:
            with torch.no_grad():
                image.clamp_(-1, 1)
        if progress is not None:
            progress.update(1)
    if stats is not None:
        stats["unet_rows"] = out.unet_rows
    return image.detach()
