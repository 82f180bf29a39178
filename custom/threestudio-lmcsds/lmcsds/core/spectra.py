"""Radially averaged power spectra (the paper's Fig. 1 right and Fig. 6 statistics)."""

import torch
from torch import Tensor


def radial_power_spectrum(x: Tensor) -> Tensor:
    """(B, C, H, W) images -> (B, min(H, W) // 2) mean power per integer frequency radius.

    The per-image mean is removed and a Hann window applied (so the image border does not
    count as an edge); the power is averaged over channels; radius 0 (DC) is dropped, so
    entry k is frequency k + 1 cycles per image.
    """
    h, w = x.shape[-2:]
    window = torch.hann_window(h, periodic=False, device=x.device)[:, None] * torch.hann_window(
        w, periodic=False, device=x.device
    )
    x = (x.float() - x.float().mean(dim=(-2, -1), keepdim=True)) * window
    power = torch.fft.fft2(x, norm="ortho").abs().pow(2).mean(1)  # (B, H, W)
    fy = torch.fft.fftfreq(h, d=1.0 / h, device=x.device)
    fx = torch.fft.fftfreq(w, d=1.0 / w, device=x.device)
    radius = torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2).round().long()
    n = min(h, w) // 2
    flat, r = power.flatten(1), radius.flatten()
    keep = (r >= 1) & (r <= n)
    sums = torch.zeros(power.shape[0], n + 1, device=x.device).index_add_(1, r[keep], flat[:, keep])
    counts = torch.bincount(r[keep], minlength=n + 1).clamp_min(1)
    return (sums / counts)[:, 1:]


def high_frequency_energy(x: Tensor, cutoff: float = 0.5) -> Tensor:
    """Fraction of (non-DC) spectral power above ``cutoff`` of the Nyquist radius, per image."""
    spectrum = radial_power_spectrum(x)
    k = int(spectrum.shape[1] * cutoff)
    return spectrum[:, k:].sum(1) / spectrum.sum(1).clamp_min(1e-20)
