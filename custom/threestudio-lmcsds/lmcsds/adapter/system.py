"""``dreamfusion-system`` and ``magic3d-system`` plus guidance visualisation during training.

``lmcsds-dreamfusion-system`` (the coarse NeRF stage) and ``lmcsds-magic3d-system`` (the mesh
stage, which parses the coarse stage's config and so must know its options) are threestudio's
own systems with what ``GuidedSystem`` adds; with the defaults they are exactly threestudio's.

- threestudio's systems never ask their guidance for ``guidance_eval``. These do, every
  ``guidance_eval_every`` steps, and save one grid per such step: the render, then every
  ``imgs_*`` image the guidance returns (for LMC-SDS: the noisy input, zhat_t, b-hat, g_cond
  and g_lmc; for the built-in guidance its one-step and final denoisings), one row per item.
- A guidance with ``needs_shading = True`` (the benchmark's supervised ceiling) also gets the
  batch's shading mode: drawn here by the material's own rule, with the same random draws, and
  passed to the material (also where the renderer does not pass it on) and the guidance alike.
- A step whose total loss is NaN or inf is skipped (no update), counted in
  ``train/skipped_steps`` (a running count, logged every step) and warned about once:
  ``dreamfusion-system``'s orientation loss divides by the number of pixels with opacity > 0,
  which is 0 once a guidance has emptied the scene, and one such step would otherwise turn
  every parameter into NaN for the rest of the run.
"""

import random
from contextlib import contextmanager
from dataclasses import dataclass

import threestudio
import torch
import torch.nn.functional as F
from threestudio.systems.dreamfusion import DreamFusion
from threestudio.systems.magic3d import Magic3D


class GuidedSystem:
    """The additions, mixed in before a threestudio system class."""

    def configure(self) -> None:
        super().configure()
        self.skipped_steps = 0

    def _guidance_eval_due(self) -> bool:
        every = self.cfg.guidance_eval_every
        return every > 0 and self.true_global_step % every == 0

    def training_step(self, batch, batch_idx):
        out = self.guided_training_step(batch, batch_idx)
        finite = bool(torch.isfinite(out["loss"]).all())
        self.skipped_steps += not finite
        self.log("train/skipped_steps", float(self.skipped_steps))  # a running count
        if finite:
            return out
        if self.skipped_steps == 1:
            threestudio.warn(
                f"step {self.true_global_step}: the total loss is {out['loss'].item()}, so the "
                f"step is skipped (no update; counted in train/skipped_steps, warned once). "
                f"The usual cause: the scene is empty (every opacity 0), where loss_orient "
                f"divides by zero"
            )
        return None  # Lightning skips the backward pass and the update

    def guided_training_step(self, batch, batch_idx):
        if getattr(self.guidance, "needs_shading", False):
            shading = draw_shading(self.material)
            with material_shading(self.material, shading):  # renderers that do not pass it on
                return self._step(dict(batch, shading=shading), batch_idx)
        return self._step(batch, batch_idx)

    def _step(self, batch, batch_idx):
        if not self._guidance_eval_due():
            return super().training_step(batch, batch_idx)
        guidance = self.guidance

        def guidance_with_eval(rgb, *args, **kwargs):
            out = guidance(rgb, *args, **kwargs, guidance_eval=True)
            self.save_guidance_images(rgb, out.pop("eval"))
            return out

        # swap the guidance for this one call (it is a plain attribute, or a submodule that an
        # instance attribute shadows), then put back exactly what was there
        state = self.__dict__
        had, previous = "guidance" in state, state.get("guidance")
        state["guidance"] = guidance_with_eval
        try:
            return super().training_step(batch, batch_idx)
        finally:
            if had:
                state["guidance"] = previous
            else:
                del state["guidance"]

    @torch.no_grad()
    def save_guidance_images(self, rgb: torch.Tensor, eval_out: dict) -> str:
        """One grid: rows = batch items, columns = the render and each ``imgs_*`` image."""
        n, size = eval_out["bs"], max(rgb.shape[1], 128)  # small renders upscaled to read
        names = [k for k in eval_out if k.startswith("imgs_")]  # in the guidance's order

        def column(x: torch.Tensor) -> torch.Tensor:  # (n, h, w, 3) -> (n * size, size, 3)
            x = F.interpolate(x[:n].permute(0, 3, 1, 2).float(), (size, size), mode="nearest")
            return x.permute(0, 2, 3, 1).reshape(-1, size, 3)

        images = [column(rgb.detach())] + [column(eval_out[k]) for k in names]
        return self.save_image_grid(
            f"it{self.true_global_step}-guidance.png",
            [{"type": "rgb", "img": img, "kwargs": {"data_format": "HWC"}} for img in images],
            name="guidance_eval",
            step=self.true_global_step,
            texts=eval_out.get("texts"),
        )


@threestudio.register("lmcsds-dreamfusion-system")
class GuidanceVisualisingDreamFusion(GuidedSystem, DreamFusion):
    @dataclass
    class Config(DreamFusion.Config):
        guidance_eval_every: int = 0  # save the guidance images every N training steps; 0: never

    cfg: Config


@threestudio.register("lmcsds-magic3d-system")
class GuidanceVisualisingMagic3D(GuidedSystem, Magic3D):
    @dataclass
    class Config(Magic3D.Config):
        guidance_eval_every: int = 0  # save the guidance images every N training steps; 0: never

    cfg: Config


@contextmanager
def material_shading(material, shading: str):
    """Within the block the material shades with ``shading`` unless a caller names one:
    threestudio's ``nvdiff-rasterizer`` calls the material without the batch's options."""
    forward = material.forward

    def with_shading(*args, **kwargs):
        return forward(*args, **{"shading": shading, **kwargs})

    material.forward = with_shading
    try:
        yield
    finally:
        del material.forward


def draw_shading(material) -> str:
    """The shading mode ``diffuse-with-point-light-material`` picks for a training batch, with
    the same draws from Python's ``random`` (so a run's random stream is unchanged)."""
    cfg = material.cfg
    if material.ambient_only or random.random() > cfg.diffuse_prob:
        return "albedo"
    if random.random() < cfg.textureless_prob:
        return "textureless"
    return "diffuse"
