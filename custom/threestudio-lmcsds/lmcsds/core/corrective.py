"""The corrective network bhat_psi(z, t) (paper Sec. 4 and supplementary A).

A standard U-Net: ``depth`` encoder levels of two 3x3 Conv/ReLU blocks followed by MaxPool,
a bottleneck, ``depth`` decoder levels with skip connections, and a final Conv with tanh.
The first level has ``base_channels`` filters, doubled per encoder level and halved per
decoder level (the paper: depth 4, 32 filters, i.e. nine levels in all). The timestep enters
as a 10-dimensional frequency encoding of t / T concatenated to every pixel.
"""

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
from torch import Tensor


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

    def to_dict(self) -> dict:
        return asdict(self)


def t_encoding(t: Tensor, num_train_timesteps: int, frequencies: int) -> Tensor:
    """Frequency encoding [sin(2^k pi t/T), cos(2^k pi t/T)]_k of integer timesteps, (B, 2F)."""
    x = t.float()[:, None] / num_train_timesteps
    angles = x * math.pi * 2.0 ** torch.arange(frequencies, device=t.device)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def _double_conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1),
        nn.ReLU(inplace=True),
    )


class CorrectiveUNet(nn.Module):
    """bhat_psi: predicts E_eps[zhat_t | z, t] from a clean image z and timestep t.

    With ``residual=True`` it predicts a correction to z. At small t, E[zhat_t] is almost z, and
    an under-trained tanh network that misses part of z (colour, contrast) turns g_lmc into an
    amplifier of exactly that part (see docs/results-2d.md); the residual form starts
    at g_lmc = z - zhat_t, the SDS projection direction without its weight, and learns the bias.
    """

    def __init__(
        self, config: CorrectiveConfig = CorrectiveConfig(), num_train_timesteps: int = 1000
    ):
        super().__init__()
        self.config = config
        self.num_train_timesteps = num_train_timesteps
        widths = [config.base_channels * 2**i for i in range(config.depth + 1)]
        c_in = config.image_channels + 2 * config.t_frequencies
        self.down = nn.ModuleList()
        for w in widths[:-1]:
            self.down.append(_double_conv(c_in, w))
            c_in = w
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = _double_conv(widths[-2], widths[-1])
        self.up = nn.ModuleList()
        self.decode = nn.ModuleList()
        for w_skip, w in zip(reversed(widths[:-1]), reversed(widths[1:])):
            self.up.append(nn.ConvTranspose2d(w, w_skip, 2, stride=2))
            self.decode.append(_double_conv(2 * w_skip, w_skip))
        self.out = nn.Conv2d(widths[0], config.image_channels, 1)
        if config.residual:
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    @property
    def min_resolution_multiple(self) -> int:
        return 2**self.config.depth

    def forward(self, z: Tensor, t: Tensor) -> Tensor:
        """z: (B, 3, H, W) in [-1, 1], H and W divisible by 2^depth; t: (B,) integer timesteps."""
        b, _, h, w = z.shape
        m = self.min_resolution_multiple
        if h % m or w % m:
            raise ValueError(f"corrective input must be a multiple of {m} pixels, got {h}x{w}")
        enc = t_encoding(t, self.num_train_timesteps, self.config.t_frequencies)
        x = torch.cat([z, enc.to(z.dtype)[:, :, None, None].expand(b, -1, h, w)], dim=1)
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for up, block, skip in zip(self.up, self.decode, reversed(skips)):
            x = block(torch.cat([up(x), skip], dim=1))
        if self.config.residual:
            return z + self.out(x)
        return torch.tanh(self.out(x))
