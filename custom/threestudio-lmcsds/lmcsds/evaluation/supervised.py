"""threestudio guidance ``lmcsds-supervised-guidance``: the benchmark's ceiling.

Not a score distillation: an L2 loss between the render and the true procedural object rendered
under exactly the batch's cameras, light and shading mode. Everything else (config, geometry,
renderer, regularisers, optimiser, steps) is the benchmark's, so the asset it reaches is the
most the pipeline can represent at that budget, and each guidance can be read as a fraction of
it. The system draws the batch's shading mode by the material's own rule and passes it to both
the material and this guidance (``needs_shading``; ``adapter/system.py``).
"""

from dataclasses import dataclass

import threestudio
import torch
from threestudio.utils.base import BaseObject

from ..core.gradients import loss_from_grad
from ..priors.cameras import Cameras
from ..priors.objects3d import parse_caption
from ..priors.sdf_render import render


def cameras_from_batch(batch: dict) -> Cameras:
    """The cameras and lights of a threestudio ``random-camera-datamodule`` batch."""

    def get(key: str) -> torch.Tensor:
        return batch[key].detach().float().cpu()

    return Cameras(c2w=get("c2w"), fovy_deg=torch.rad2deg(get("fovy")),
                   light_positions=get("light_positions"), elevation_deg=get("elevation"),
                   azimuth_deg=get("azimuth"), distance=get("camera_distances"))  # fmt: skip


@threestudio.register("lmcsds-supervised-guidance")
class SupervisedGuidance(BaseObject):
    @dataclass
    class Config(BaseObject.Config):
        object_caption: str = ""  # the procedural object's caption (the run's prompt)
        supersample: int = 2  # rays per pixel side of the true renders (the prior's data: 2)

    cfg: Config
    needs_shading = True  # the system passes the material's shading mode of each batch

    def configure(self) -> None:
        self.spec = parse_caption(self.cfg.object_caption)
        threestudio.info(f"supervised ceiling: L2 to the true {self.spec.caption()!r}")

    def true_renders(self, batch: dict, height: int, width: int) -> torch.Tensor:
        """(B, H, W, 3) in [0, 1]: the object under the batch's cameras, light and shading."""
        if height != width:
            raise ValueError(f"supervised ceiling: square renders only, got {height}x{width}")
        cams = cameras_from_batch(batch)
        if "shading" not in batch:
            raise ValueError(
                "lmcsds-supervised-guidance needs the batch's shading mode, which "
                "system_type lmcsds-dreamfusion-system passes; set system_type to it"
            )
        shading = [batch["shading"]] * len(cams)
        out = render(self.spec, cams, height, self.cfg.supersample, shading)
        return out.rgb.permute(0, 2, 3, 1)

    def __call__(
        self, rgb: torch.Tensor, prompt_utils, guidance_eval: bool = False, **batch
    ) -> dict:
        truth = self.true_renders(batch, rgb.shape[1], rgb.shape[2]).to(rgb)
        z = rgb.permute(0, 3, 1, 2) * 2.0 - 1.0  # the guidances' [-1, 1] space
        g = z.detach() - (truth.permute(0, 3, 1, 2) * 2.0 - 1.0)
        out = {"loss_sds": loss_from_grad(z, g), "grad_norm": g.norm()}
        if guidance_eval:  # the system's guidance images: the render beside its target
            out["eval"] = {"bs": len(rgb), "imgs_truth": truth}
        return out

    def update_step(self, epoch: int, global_step: int, on_load_weights: bool = False) -> None:
        pass
