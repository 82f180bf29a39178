"""The corrective network bhat_psi(z, t) (paper Sec. 4 and supplementary A).

The U-Net of ``unet.py`` (the paper: depth 4, 32 filters, i.e. nine levels in all) with the
timestep as a 10-dimensional frequency encoding of t / T concatenated to every pixel.
"""

from dataclasses import asdict, dataclass

from torch import Tensor

from .unet import ConditionedUNet, frequency_encoding


@dataclass(frozen=True)
class CorrectiveConfig:
    """Architecture of bhat_psi; stored in checkpoint metadata."""

    base_channels: int = 32
    depth: int = 4
    t_frequencies: int = 5  # 2 * 5 = 10 encoding channels, as in the paper
    image_channels: int = 3
    # False: the paper's network, tanh(U(z, t)). True: z + U(z, t) with a zero-initialised last
    # layer, i.e. the identity at initialisation (not in the paper; see ``CorrectiveUNet``).
    residual: bool = False
    # "unet": this file's network; "spectral": the closed-form linear filter of
    # ``spectral_corrective.py`` with ``t_bins`` timestep bins (the other fields unused)
    kind: str = "unet"
    t_bins: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ("unet", "spectral"):
            raise ValueError(f"corrective kind must be 'unet' or 'spectral', got {self.kind!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def t_encoding(t: Tensor, num_train_timesteps: int, frequencies: int) -> Tensor:
    """Frequency encoding [sin(2^k pi t/T), cos(2^k pi t/T)]_k of integer timesteps, (B, 2F)."""
    return frequency_encoding(t.float() / num_train_timesteps, frequencies)


class CorrectiveUNet(ConditionedUNet):
    """bhat_psi: predicts E_eps[zhat_t | z, t] from a clean image z and timestep t.

    With ``residual=True`` it predicts a correction to z. At small t, E[zhat_t] is almost z, and
    an under-trained tanh network that misses part of z (colour, contrast) turns g_lmc into an
    amplifier of exactly that part (see docs/results-2d.md); the residual form starts
    at g_lmc = z - zhat_t, the SDS projection direction without its weight, and learns the bias.
    """

    def __init__(
        self, config: CorrectiveConfig = CorrectiveConfig(), num_train_timesteps: int = 1000
    ):
        super().__init__(
            config.image_channels,
            config.base_channels,
            config.depth,
            config.t_frequencies,
            config.residual,
        )
        self.config = config
        self.num_train_timesteps = num_train_timesteps

    def forward(self, z: Tensor, t: Tensor) -> Tensor:
        """z: (B, 3, H, W) in [-1, 1], H and W divisible by 2^depth; t: (B,) integer timesteps."""
        return super().forward(z, t.float() / self.num_train_timesteps)
