"""The U-Net shared by the corrective (Sec. 4) and the translation network (Sec. 5.2).

Both are, per supplementary A, a standard U-Net: ``depth`` encoder levels of two 3x3 Conv/ReLU
blocks followed by MaxPool, a bottleneck, ``depth`` decoder levels with skip connections, and a
final Conv with tanh; the first level has ``base_channels`` filters, doubled per encoder level
(up to ``max_channels``) and halved per decoder level. A scalar condition per image (the
corrective's t / T, the translator's class id) enters as a frequency encoding concatenated to
every pixel.
"""

import math
from typing import Optional

import torch
import torch.nn as nn
from torch import Tensor


def frequency_encoding(x: Tensor, frequencies: int) -> Tensor:
    """[sin(2^k pi x), cos(2^k pi x)]_k of a scalar per image x (B,), (B, 2 frequencies)."""
    angles = x.float()[:, None] * math.pi * 2.0 ** torch.arange(frequencies, device=x.device)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def _double_conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1),
        nn.ReLU(inplace=True),
    )


class ConditionedUNet(nn.Module):
    """tanh(U(x, c)) or, with ``residual``, x + U(x, c) with a zero-initialised last layer (the
    identity at initialisation); x: (B, C, H, W), c: (B,) scalars, encoded with
    ``frequencies`` sin/cos pairs."""

    def __init__(
        self,
        image_channels: int,
        base_channels: int,
        depth: int,
        frequencies: int,
        residual: bool = False,
        max_channels: Optional[int] = None,
    ):
        super().__init__()
        self.frequencies, self.depth, self.residual = frequencies, depth, residual
        widths = [base_channels * 2**i for i in range(depth + 1)]
        if max_channels is not None:
            widths = [min(w, max_channels) for w in widths]
        c_in = image_channels + 2 * frequencies
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
        self.out = nn.Conv2d(widths[0], image_channels, 1)
        if residual:
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    @property
    def min_resolution_multiple(self) -> int:
        return 2**self.depth

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        """x: (B, C, H, W), H and W divisible by 2^depth; c: (B,) condition scalars."""
        b, _, h, w = x.shape
        m = self.min_resolution_multiple
        if h % m or w % m:
            raise ValueError(f"U-Net input must be a multiple of {m} pixels, got {h}x{w}")
        enc = frequency_encoding(c, self.frequencies).to(x.dtype)
        y = torch.cat([x, enc[:, :, None, None].expand(b, -1, h, w)], dim=1)
        skips = []
        for block in self.down:
            y = block(y)
            skips.append(y)
            y = self.pool(y)
        y = self.bottleneck(y)
        for up, block, skip in zip(self.up, self.decode, reversed(skips)):
            y = block(torch.cat([up(y), skip], dim=1))
        return x + self.out(y) if self.residual else torch.tanh(self.out(y))
