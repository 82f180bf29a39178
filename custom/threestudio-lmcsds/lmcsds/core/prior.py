"""The diffusion prior: DeepFloyd IF stage I (UNet + DDPM scheduler) through diffusers."""

import logging
from typing import Callable, Optional, Union

import torch
from torch import Tensor

from .checkpoint import prior_id
from .compiled_unet import CompiledUNet

logger = logging.getLogger(__name__)


class IFPrior:
    """Noise predictions of an IF stage-I UNet; all rows of a step go through ONE UNet call.

    The UNet returns 6 channels: predicted noise (first 3) and a learned variance (last 3,
    unused here). Weights are frozen; predictions are returned in float32.
    """

    def __init__(self, unet: torch.nn.Module, scheduler, name_or_path: str):
        self.unet = unet.eval().requires_grad_(False)
        self.scheduler = scheduler
        self.name_or_path = str(name_or_path)
        param = next(unet.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.alphas_cumprod = scheduler.alphas_cumprod.to(self.device, torch.float32)
        self.compiled: Optional[CompiledUNet] = None

    def compile(self, mode: str = "default", log: Optional[Callable[[str], None]] = None):
        """Route every UNet call through ``torch.compile`` (see ``compiled_unet``)."""
        self.compiled = CompiledUNet(self.unet, mode, log)
        return self.compiled

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        device: Union[str, torch.device] = "cuda",
        half_precision: bool = True,
        channels_last: bool = True,
    ) -> "IFPrior":
        """Load like threestudio's deep-floyd-guidance: ``IFPipeline`` without text encoder.

        ``half_precision`` loads the fp16 weight variant where the repository has one; on a
        CPU it is ignored (fp16 convolutions are slow or unsupported there).
        """
        from diffusers import IFPipeline

        device = torch.device(device)
        if half_precision and device.type == "cpu":
            logger.warning("half_precision_weights ignored on CPU; using float32")
            half_precision = False
        dtype = torch.float16 if half_precision else torch.float32
        kwargs = dict(
            text_encoder=None,
            safety_checker=None,
            watermarker=None,
            feature_extractor=None,
            requires_safety_checker=False,
            torch_dtype=dtype,
        )
        try:
            pipe = IFPipeline.from_pretrained(
                name_or_path, variant="fp16" if half_precision else None, **kwargs
            )
        except (OSError, ValueError) as e:
            if not half_precision or "variant" not in str(e):
                raise
            logger.warning(f"{name_or_path} has no fp16 variant; casting its weights to fp16")
            pipe = IFPipeline.from_pretrained(name_or_path, **kwargs)
        unet = pipe.unet.to(device)
        if channels_last:
            unet = unet.to(memory_format=torch.channels_last)
        return cls(unet, pipe.scheduler, name_or_path)

    @property
    def prior_id(self) -> str:
        return prior_id(self.name_or_path)

    @property
    def resolution(self) -> int:
        return int(self.unet.config.sample_size)

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler.config.num_train_timesteps)

    def abar(self, t: Tensor) -> Tensor:
        """alphas_cumprod[t] shaped (B, 1, 1, 1)."""
        return self.alphas_cumprod[t].view(-1, 1, 1, 1)

    @torch.no_grad()
    def eps(self, zt: Tensor, t: Tensor, embeddings: Tensor) -> Tensor:
        """Predicted noise for N rows (N noisy images, N timesteps, N text embeddings)."""
        inputs = (zt.to(self.device, self.dtype), t.to(self.device))
        embeddings = embeddings.to(self.device, self.dtype)
        if self.compiled is not None:
            out = self.compiled(*inputs, embeddings)
        else:
            out = self.unet(*inputs, encoder_hidden_states=embeddings).sample
        return out[:, : zt.shape[1]].float()
