"""threestudio guidance ``lmc-sds-deep-floyd-guidance``: LMC-SDS on DeepFloyd IF stage I.

A drop-in for threestudio's ``deep-floyd-guidance`` (same call signature, ``loss_sds`` output),
so ``dreamfusion-system`` and the other systems use it unchanged. The math lives in
``lmcsds.core``; this class only adapts threestudio's inputs and schedules to it.
"""

from dataclasses import dataclass
from typing import Any, Optional

import threestudio
import torch
import torch.nn.functional as F
from threestudio.utils.base import BaseObject
from threestudio.utils.misc import C

from ..core import (
    FixedNoise,
    IFPrior,
    StepConfig,
    lmc_sds_step,
    load_corrective,
    prior_id,
    read_meta,
)
from ..core.compiled_unet import check_compile_mode
from ..core.gradients import loss_from_grad

DEFAULT_CORRECTIVE = "load/lmcsds/correctives/IF-I-XL-v1.0.safetensors"


def _to_image(x: torch.Tensor, signed: bool = False) -> torch.Tensor:
    """(B, 3, H, W) -> (B, H, W, 3) in [0, 1]; gradients are scaled by their max magnitude."""
    if signed:
        x = x / x.abs().amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
    return (x * 0.5 + 0.5).clamp(0, 1).permute(0, 2, 3, 1)


@threestudio.register("lmc-sds-deep-floyd-guidance")
class LMCSDSDeepFloydGuidance(BaseObject):
    @dataclass
    class Config(BaseObject.Config):
        pretrained_model_name_or_path: str = "DeepFloyd/IF-I-XL-v1.0"
        # omega in the PAPER's convention: eps_0 + omega (eps_y - eps_0). threestudio's
        # deep-floyd-guidance uses eps_y + s (eps_y - eps_0), i.e. omega = s + 1.
        guidance_scale: float = 20.0
        loss_type: str = "lmc-sds"  # lmc-sds | sds | cond
        corrective_path: str = DEFAULT_CORRECTIVE
        # Eq. 10 statistics: null takes the corrective's own; global | per_channel | none
        corrective_normalization: Optional[str] = None
        scale_by_omega: bool = True  # total gradient / omega, as in the paper
        fixed_noise: bool = False  # one eps per batch slot, used inside g_cond only
        noise_seed: int = 0
        min_step_percent: Any = 0.02
        max_step_percent: Any = 0.98
        weighting_strategy: str = "uniform"  # uniform (paper) | sds | fantasia3d
        grad_clip: Optional[Any] = None
        half_precision_weights: bool = True
        enable_channels_last_format: bool = True
        # torch.compile the prior's UNet: compiled once per run (the cost is logged), then faster
        compile_unet: bool = False
        compile_mode: str = "reduce-overhead"  # | default | max-autotune | cudagraphs
        view_dependent_prompting: bool = True
        max_items_eval: int = 4

    cfg: Config

    def configure(self) -> None:
        cfg = self.cfg
        if cfg.compile_unet:
            check_compile_mode(cfg.compile_mode)
        normalization = cfg.corrective_normalization
        if cfg.loss_type == "lmc-sds":  # fail before loading the prior when the file is bad
            meta = read_meta(cfg.corrective_path)
            if normalization is not None and normalization != meta.normalization:
                raise ValueError(
                    f"corrective_normalization={normalization!r}, but {cfg.corrective_path} "
                    f"was trained with {meta.normalization!r}; the two must match (Eq. 10). "
                    f"Leave corrective_normalization unset to use the file's."
                )
            normalization = meta.normalization
        self.step_cfg = StepConfig(
            loss_type=cfg.loss_type,
            omega=cfg.guidance_scale,
            normalization=normalization or "global",
            scale_by_omega=cfg.scale_by_omega,
            weighting=cfg.weighting_strategy,
        )
        threestudio.info(f"Loading DeepFloyd IF stage I from {cfg.pretrained_model_name_or_path}")
        self.prior = IFPrior.from_pretrained(
            cfg.pretrained_model_name_or_path,
            device=self.device,
            half_precision=cfg.half_precision_weights,
            channels_last=cfg.enable_channels_last_format,
        )
        if cfg.compile_unet:
            self.prior.compile(cfg.compile_mode, log=threestudio.info)
        self.corrective = None
        if cfg.loss_type == "lmc-sds":
            self.corrective, _ = load_corrective(
                cfg.corrective_path,
                expected_prior_id=prior_id(cfg.pretrained_model_name_or_path),
                expected_resolution=self.prior.resolution,
                map_location=self.device,
            )
        self.fixed_noise = FixedNoise(cfg.noise_seed) if cfg.fixed_noise else None
        self.num_train_timesteps = self.prior.num_train_timesteps
        self.grad_clip_val: Optional[float] = None
        self.update_step(0, 0)
        threestudio.info(f"Loaded LMC-SDS guidance ({cfg.loss_type}, omega={cfg.guidance_scale})")

    def set_min_max_steps(self, min_step_percent: float, max_step_percent: float) -> None:
        if not 0.0 <= min_step_percent <= max_step_percent < 1.0:
            raise ValueError(
                f"need 0 <= min_step_percent <= max_step_percent < 1, got "
                f"{min_step_percent} and {max_step_percent}"
            )
        self.min_step = int(self.num_train_timesteps * min_step_percent)
        self.max_step = int(self.num_train_timesteps * max_step_percent)

    def __call__(
        self,
        rgb: torch.Tensor,
        prompt_utils,
        elevation: torch.Tensor,
        azimuth: torch.Tensor,
        camera_distances: torch.Tensor,
        rgb_as_latents: bool = False,
        guidance_eval: bool = False,
        **kwargs,
    ) -> dict:
        if rgb_as_latents:
            raise ValueError("DeepFloyd IF works in pixel space: rgb_as_latents must be False")
        batch_size, res = rgb.shape[0], self.prior.resolution
        z = rgb.permute(0, 3, 1, 2) * 2.0 - 1.0  # [0, 1] -> the prior's [-1, 1]
        z = F.interpolate(z, (res, res), mode="bilinear", align_corners=False)
        t = torch.randint(
            self.min_step, self.max_step + 1, [batch_size], dtype=torch.long, device=z.device
        )
        perp_neg = None
        if prompt_utils.use_perp_neg:  # rows: positive (B), unconditional (B), negatives (B K)
            emb, neg_weights = prompt_utils.get_text_embeddings_perp_neg(
                elevation, azimuth, camera_distances, self.cfg.view_dependent_prompting
            )
            emb_y, emb_0, emb_neg = (
                emb[:batch_size],
                emb[batch_size : 2 * batch_size],
                emb[2 * batch_size :],
            )
            perp_neg = (emb_neg.unflatten(0, (batch_size, -1)), neg_weights)
        else:
            emb_y, emb_0 = prompt_utils.get_text_embeddings(
                elevation, azimuth, camera_distances, self.cfg.view_dependent_prompting
            ).chunk(2)
        eps = torch.randn(z.shape, device=z.device, dtype=z.dtype)  # drawn after t
        eps_cond = self.fixed_noise(z) if self.fixed_noise is not None else None
        out = lmc_sds_step(
            self.prior, self.corrective, z, t, emb_y, emb_0, eps, self.step_cfg, eps_cond, perp_neg
        )
        g = torch.nan_to_num(out.g)
        if self.grad_clip_val is not None:
            g = g.clamp(-self.grad_clip_val, self.grad_clip_val)
        second = {"lmc-sds": "g_lmc_norm", "sds": "g_proj_norm"}.get(self.cfg.loss_type)
        result = {
            "loss_sds": loss_from_grad(z, g),
            "grad_norm": g.norm(),
            "g_cond_norm": out.g_cond.norm(),
            "min_step": float(self.min_step),  # floats: Lightning warns when logging ints
            "max_step": float(self.max_step),
            "timestep": t.float(),
        }
        if second is not None:
            result[second] = out.g_second.norm()
        if self.prior.compiled is not None:  # stays at its first value once warmed up
            result["unet_compiles"] = float(self.prior.compiled.compiles)
        if guidance_eval:
            result["eval"] = self.eval_images(out, t, elevation, azimuth, camera_distances)
        return result

    @torch.no_grad()
    def eval_images(self, out, t, elevation, azimuth, camera_distances) -> dict:
        """Images (B, H, W, 3) in [0, 1] of the step's inputs and gradient terms."""
        n = t.shape[0] if self.cfg.max_items_eval <= 0 else min(self.cfg.max_items_eval, len(t))
        fracs = (t[:n].float() / self.num_train_timesteps).tolist()
        images = {
            "imgs_noisy": _to_image(out.zt[:n]),
            "imgs_zhat": _to_image(out.zhat[:n]),
            "imgs_g_cond": _to_image(out.g_cond[:n], signed=True),
        }
        if out.bhat is not None:
            images["imgs_bhat"] = _to_image(out.bhat[:n])
        if out.g_second is not None:
            name = "imgs_g_lmc" if self.cfg.loss_type == "lmc-sds" else "imgs_g_proj"
            images[name] = _to_image(out.g_second[:n], signed=True)
        texts = [
            f"n{f:.02f}\ne{e.item():.01f}\na{a.item():.01f}\nc{c.item():.02f}"
            for f, e, a, c in zip(fracs, elevation, azimuth, camera_distances)
        ]
        return {"bs": n, "noise_levels": fracs, "texts": texts, **images}

    def update_step(self, epoch: int, global_step: int, on_load_weights: bool = False):
        if self.cfg.grad_clip is not None:
            self.grad_clip_val = C(self.cfg.grad_clip, epoch, global_step)
        self.set_min_max_steps(
            C(self.cfg.min_step_percent, epoch, global_step),
            C(self.cfg.max_step_percent, epoch, global_step),
        )
