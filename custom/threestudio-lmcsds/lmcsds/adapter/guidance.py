"""threestudio guidance ``lmc-sds-deep-floyd-guidance``: LMC-SDS on DeepFloyd IF stage I.

A drop-in for threestudio's ``deep-floyd-guidance`` (same call signature, ``loss_sds`` output),
so ``dreamfusion-system`` and the other systems use it unchanged. The math lives in
``lmcsds.core``; this class only adapts threestudio's inputs and schedules to it.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

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
from ..core.gradients import NFSD_NEGATIVE_PROMPT, loss_from_grad
from ..core.timesteps import (
    DREAMTIME_PARAMS,
    SCHEDULES,
    check_dreamtime_params,
    dreamtime_pdf,
    dreamtime_t,
    linear_t,
)

DEFAULT_CORRECTIVE = "load/lmcsds/correctives/IF-I-XL-v1.0.safetensors"
SECOND_TERM = {  # name of each loss type's second term in logs and eval images
    "lmc-sds": "g_lmc",
    "sds": "g_proj",
    "nfsd": "delta_d",
    "dds": "g_source",
    "ms-sds": "g_proj_multistep",
    "csd": "g_negative",
}


def load_source_image(path: str) -> torch.Tensor:
    """(1, 3, H, W) in the prior's range [-1, 1] from an image file (dds)."""
    import numpy as np
    from PIL import Image

    if not Path(path).is_file():
        raise FileNotFoundError(f"dds_source_image: no image file at {path!r}")
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(rgb).permute(2, 0, 1)[None] * 2.0 - 1.0


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
        loss_type: str = "lmc-sds"  # lmc-sds | sds | cond | nfsd | dds | ms-sds | csd
        corrective_path: str = DEFAULT_CORRECTIVE
        # Eq. 10 statistics: null takes the corrective's own; global | per_channel | none
        corrective_normalization: Optional[str] = None
        # clamped: the corrective sees the render clamped to [-1, 1], the part outside passes
        # through (no runaway on five recipe seeds, where raw ran away on three:
        # docs/results/corrective-seeds); raw: the render as it is (the paper). The same
        # wherever the render lies in [-1, 1]
        corrective_input: str = "clamped"
        scale_by_omega: bool = True  # total gradient / omega, as in the paper
        fixed_noise: bool = False  # one eps per batch slot, used inside g_cond only
        noise_seed: int = 0
        min_step_percent: Any = 0.02
        max_step_percent: Any = 0.98
        # t per step: uniform in [min_step, max_step] per image (the paper) | linear (from
        # max_step down to min_step over trainer_max_steps, SDI's t_anneal) | dreamtime (one t
        # per step from DreamTime's p(t) = W_d W_p, dreamtime_params = m1, m2, s1, s2 in
        # timesteps; dreamtime_diffusion_weight false: W_p alone)
        time_schedule: str = "uniform"
        dreamtime_params: List[float] = field(default_factory=lambda: list(DREAMTIME_PARAMS))
        dreamtime_diffusion_weight: bool = True
        trainer_max_steps: int = 10000  # set to ${trainer.max_steps} by the configs
        # the step's noise: random (SDS) | inversion (SDI: the noise that DDIM-inverts the
        # render to t, 2 UNet rows per inversion step; inversion_guidance_scale in the paper's
        # convention: threestudio's stable-diffusion-sdi-guidance's -7.5 is -6.5 here)
        noise: str = "random"
        inversion_guidance_scale: float = -6.5
        inversion_n_steps: int = 10
        inversion_eta: float = 0.3
        weighting_strategy: str = "uniform"  # uniform (paper) | sds | fantasia3d
        grad_clip: Optional[Any] = None
        half_precision_weights: bool = True
        enable_channels_last_format: bool = True
        # torch.compile the prior's UNet: compiled once per run (the cost is logged), then faster
        compile_unet: bool = False
        compile_mode: str = "reduce-overhead"  # | default | max-autotune | cudagraphs
        # baselines: nfsd and csd use the empty prompt as eps_0 and this negative prompt (null:
        # the prompt processor's negative_prompt); dds edits dds_source_image described by
        # dds_source_prompt; ms-sds denoises in ms_sds_steps DDIM steps
        negative_prompt: Optional[str] = None
        nfsd_t_small: int = 200
        csd_negative_weight: Any = 0.0  # omega_2 / omega_1; schedulable
        dds_source_image: Optional[str] = None
        dds_source_prompt: Optional[str] = None
        ms_sds_steps: int = 5
        grad_normalize: bool = False  # divide the gradient by its norm (CSD's public configs)
        view_dependent_prompting: bool = True
        max_items_eval: int = 4
        # a run whose renders hold NaN / inf this many steps in a row stops (0: never); such
        # renders get no gradient from the guidance and are counted in train/non_finite_renders
        max_non_finite_steps: int = 20

    cfg: Config

    def configure(self) -> None:
        cfg = self.cfg
        if cfg.compile_unet:
            check_compile_mode(cfg.compile_mode)
        if cfg.time_schedule not in SCHEDULES:
            raise ValueError(f"time_schedule must be one of {SCHEDULES}, got {cfg.time_schedule!r}")
        if cfg.time_schedule != "uniform" and cfg.trainer_max_steps < 1:
            raise ValueError(
                f"time_schedule {cfg.time_schedule!r} needs trainer_max_steps >= 1 (set it to "
                f"${{trainer.max_steps}}), got {cfg.trainer_max_steps}"
            )
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
            ms_steps=cfg.ms_sds_steps,
            nfsd_t_small=cfg.nfsd_t_small,
            csd_negative_weight=C(cfg.csd_negative_weight, 0, 0),
            noise=cfg.noise,
            inversion_omega=cfg.inversion_guidance_scale,
            inversion_steps=cfg.inversion_n_steps,
            inversion_eta=cfg.inversion_eta,
            corrective_input=cfg.corrective_input,
        )
        check_dreamtime_params(cfg.dreamtime_params)
        self.configure_baseline_prompts()
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
        if self.source_image is not None:  # dds: resized once, to the prior's resolution
            res = (self.prior.resolution,) * 2
            self.source_image = F.interpolate(
                self.source_image, res, mode="bilinear", antialias=True
            ).to(self.device)
        self.num_train_timesteps = self.prior.num_train_timesteps
        self.grad_clip_val: Optional[float] = None
        self.global_step, self.non_finite_run, self.non_finite_since = 0, 0, None
        self._warned_non_finite = False
        self.update_step(0, 0)
        threestudio.info(f"Loaded LMC-SDS guidance ({cfg.loss_type}, omega={cfg.guidance_scale})")

    def configure_baseline_prompts(self) -> None:
        """Embeddings (1, 77, d) of the prompts a baseline needs beyond threestudio's (the empty
        prompt, a negative or source prompt) and the dds source image; encoded before the UNet
        is loaded so the text encoder is freed first."""
        cfg, loss = self.cfg, self.cfg.loss_type
        self.emb_null = self.emb_neg = self.emb_src = self.source_image = None
        prompts = {}
        if loss in ("nfsd", "csd"):
            prompts["emb_null"] = ""
            if cfg.negative_prompt is not None:
                prompts["emb_neg"] = cfg.negative_prompt
        if loss == "dds":
            if cfg.dds_source_image is None or cfg.dds_source_prompt is None:
                raise ValueError(
                    "loss_type 'dds' edits a source: set system.guidance.dds_source_image (an "
                    "image file) and system.guidance.dds_source_prompt (a caption of it); in "
                    "text-to-3D without a reference image use another loss_type"
                )
            prompts["emb_src"] = cfg.dds_source_prompt
        if prompts:
            from .prompt_processor import cached_embeddings

            embs = cached_embeddings(cfg.pretrained_model_name_or_path, list(prompts.values()))
            for name, emb in zip(prompts, embs):
                setattr(self, name, emb[None].to(self.device))
        if loss == "dds":
            self.source_image = load_source_image(cfg.dds_source_image)
        self._warned_empty_negative = False

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
        finite = self.check_finite(rgb)
        rgb = torch.where(finite[:, None, None, None], rgb, torch.zeros_like(rgb))
        z = rgb.permute(0, 3, 1, 2) * 2.0 - 1.0  # [0, 1] -> the prior's [-1, 1]
        z = F.interpolate(z, (res, res), mode="bilinear", align_corners=False)
        t = self.sample_t(batch_size, z.device)
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
        emb_0, emb_neg, source = self.baseline_inputs(emb_0)
        out = lmc_sds_step(
            self.prior, self.corrective, z, t, emb_y, emb_0, eps, self.step_cfg, eps_cond,
            perp_neg, emb_neg, source,
        )  # fmt: skip
        g = torch.nan_to_num(out.g) * finite[:, None, None, None]  # none for non-finite renders
        if self.grad_clip_val is not None:
            g = g.clamp(-self.grad_clip_val, self.grad_clip_val)
        if self.cfg.grad_normalize:
            g = g / (g.norm() + 1e-8)
        second = SECOND_TERM.get(self.cfg.loss_type)
        result = {
            "loss_sds": loss_from_grad(z, g),
            "grad_norm": g.norm(),
            "g_cond_norm": out.g_cond.norm(),
            "min_step": float(self.min_step),  # floats: Lightning warns when logging ints
            "max_step": float(self.max_step),
            "timestep": t.float(),
        }
        if second is not None and out.g_second is not None:
            result[f"{second}_norm"] = out.g_second.norm()
        result["unet_rows"] = float(out.unet_rows)
        result["non_finite_renders"] = float((~finite).sum())
        if self.prior.compiled is not None:  # stays at its first value once warmed up
            result["unet_compiles"] = float(self.prior.compiled.compiles)
        if guidance_eval:
            result["eval"] = self.eval_images(out, t, elevation, azimuth, camera_distances)
        return result

    def sample_t(self, batch_size: int, device: torch.device) -> torch.Tensor:
        """(B,) timesteps of this step by ``time_schedule`` within [min_step, max_step]."""
        cfg = self.cfg
        if cfg.time_schedule == "uniform":
            return torch.randint(
                self.min_step, self.max_step + 1, [batch_size], dtype=torch.long, device=device
            )
        progress = self.global_step / cfg.trainer_max_steps
        if cfg.time_schedule == "linear":
            t = linear_t(progress, self.min_step, self.max_step)
        else:
            pdf = dreamtime_pdf(
                self.prior.alphas_cumprod, self.min_step, self.max_step,
                cfg.dreamtime_params, cfg.dreamtime_diffusion_weight,
            )  # fmt: skip
            t = dreamtime_t(pdf, progress)
        return torch.full([batch_size], t, dtype=torch.long, device=device)

    def check_finite(self, rgb: torch.Tensor) -> torch.Tensor:
        """(B,) True for renders without NaN / inf. Warns at the first step that has any; stops
        the run when every render was non-finite ``max_non_finite_steps`` steps in a row."""
        finite = torch.isfinite(rgb).flatten(1).all(1)
        if finite.all():
            self.non_finite_run, self.non_finite_since = 0, None
            return finite
        if not self._warned_non_finite:
            threestudio.warn(
                f"step {self.global_step}: {int((~finite).sum())} of {len(finite)} renders hold "
                f"NaN or inf; they get no gradient from the guidance (counted in "
                f"train/non_finite_renders; warned once per run)"
            )
            self._warned_non_finite = True
        if finite.any():
            self.non_finite_run, self.non_finite_since = 0, None
            return finite
        self.non_finite_run += 1
        if self.non_finite_since is None:
            self.non_finite_since = self.global_step
        limit = self.cfg.max_non_finite_steps
        if limit > 0 and self.non_finite_run >= limit:
            raise RuntimeError(
                f"every render has held NaN or inf for {self.non_finite_run} steps in a row "
                f"(since step {self.non_finite_since}): the scene's parameters have most likely "
                f"become NaN, from a loss term that divided by zero or a diverged optimiser "
                f"(lower system.optimizer.args.lr, check the regularisers' lambdas). Resume from "
                f"an earlier checkpoint, or set system.guidance.max_non_finite_steps=0 to go on."
            )
        return finite

    def baseline_inputs(self, emb_0: torch.Tensor):
        """(emb_0, emb_neg, source) of lmc_sds_step for this step's loss type: nfsd and csd
        take the empty prompt as eps_0 and the prompt processor's negative prompt as theirs
        unless the guidance sets one; dds its source image and prompt."""
        batch, loss = emb_0.shape[0], self.cfg.loss_type
        if loss == "dds":
            return emb_0, None, (self.source_image.expand(batch, -1, -1, -1),
                                 self.emb_src.expand(batch, -1, -1))  # fmt: skip
        if loss not in ("nfsd", "csd"):
            return emb_0, None, None
        emb_null = self.emb_null.to(emb_0).expand(batch, -1, -1)
        emb_neg = emb_0 if self.emb_neg is None else self.emb_neg.to(emb_0).expand(batch, -1, -1)
        if self.step_cfg.needs_negative and not self._warned_empty_negative:
            if torch.equal(emb_neg, emb_null):
                threestudio.warn(
                    f"loss_type {loss} with an empty negative prompt: its negative term is zero."
                    f" Set system.guidance.negative_prompt (NFSD's: {NFSD_NEGATIVE_PROMPT!r})"
                    " or system.prompt_processor.negative_prompt"
                )
            self._warned_empty_negative = True
        return emb_null, emb_neg, None

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
            name = f"imgs_{SECOND_TERM[self.cfg.loss_type]}"
            images[name] = _to_image(out.g_second[:n], signed=True)
        texts = [
            f"n{f:.02f}\ne{e.item():.01f}\na{a.item():.01f}\nc{c.item():.02f}"
            for f, e, a, c in zip(fracs, elevation, azimuth, camera_distances)
        ]
        return {"bs": n, "noise_levels": fracs, "texts": texts, **images}

    def update_step(self, epoch: int, global_step: int, on_load_weights: bool = False):
        self.global_step = global_step
        if self.cfg.grad_clip is not None:
            self.grad_clip_val = C(self.cfg.grad_clip, epoch, global_step)
        self.set_min_max_steps(
            C(self.cfg.min_step_percent, epoch, global_step),
            C(self.cfg.max_step_percent, epoch, global_step),
        )
        self.step_cfg.csd_negative_weight = C(self.cfg.csd_negative_weight, epoch, global_step)
