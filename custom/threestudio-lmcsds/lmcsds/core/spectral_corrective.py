"""A closed-form corrective: a per-timestep linear filter in Fourier space.

bhat(z, t) = F^-1[A_t(f) F[z](f)], one complex 3x3 colour matrix A_t(f) per rfft2 frequency f
and timestep bin (fitted by ``training/spectral.py``). More accurate offline than the bundled
U-Net corrective, and yet it runs away in 3D: the negative control of the acceptance check.
"""

import torch
from torch import Tensor, nn


class SpectralCorrective(nn.Module):
    """bhat(z, t) with one filter per bin of ``num_train_timesteps / bins`` timesteps."""

    @classmethod
    def empty(cls, bins: int, resolution: int, num_train_timesteps: int) -> "SpectralCorrective":
        """Identity filters of the right shape, to load a state dict into."""
        eye = torch.eye(3, dtype=torch.complex64)
        return cls(
            eye.expand(bins, resolution, resolution // 2 + 1, 3, 3).clone(), num_train_timesteps
        )

    def __init__(self, filters: Tensor, num_train_timesteps: int):
        """``filters``: (bins, H, W // 2 + 1, 3, 3) complex."""
        super().__init__()
        # (bins, H, W//2+1, 3, 3) complex, stored as real pairs; a (frozen) parameter so that
        # callers can read the corrective's dtype and device from it as from a network's
        self.filters = nn.Parameter(torch.view_as_real(filters).contiguous(), requires_grad=False)
        self.num_train_timesteps = num_train_timesteps

    @property
    def bins(self) -> int:
        return self.filters.shape[0]

    def forward(self, z: Tensor, t: Tensor) -> Tensor:
        A = torch.view_as_complex(self.filters)
        i = (t.long() * self.bins // self.num_train_timesteps).clamp(0, self.bins - 1)
        Z = torch.fft.rfft2(z.float()).permute(0, 2, 3, 1)  # (B, H, W', 3)
        out = (A[i] @ Z.unsqueeze(-1)).squeeze(-1).permute(0, 3, 1, 2)
        return torch.fft.irfft2(out, s=z.shape[-2:]).to(z.dtype)
