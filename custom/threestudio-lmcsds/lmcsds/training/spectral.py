"""Fitting the closed-form spectral corrective (``core/spectral_corrective.py``) by least squares.

bhat(z, t) = F^-1[A_t(f) F[z](f)], one complex 3x3 colour matrix A_t(f) per rfft2 frequency f
and timestep bin, fitted to triplets (z, zhat_t, t) as A = (sum Zhat Z^H)(sum Z Z^H + lam I)^-1,
the sums pooled over neighbouring t bins with Gaussian weights. It is the best linear
shift-invariant predictor of zhat_t from z, fitted in minutes, and more accurate offline than
the bundled U-Net corrective. With the paper's raw corrective input it runs away in 3D (the
acceptance check's negative control, ``training/acceptance.py``); with the guidance's default
clamped input it passes the check and the 3D benchmark (docs/results/corrective-check).
"""

from typing import Iterable, Tuple

import torch
from torch import Tensor

from ..core.spectral_corrective import SpectralCorrective


def fit_spectral(
    triplets: Iterable[Tuple[Tensor, Tensor, Tensor]],
    num_train_timesteps: int,
    bins: int = 50,
    smooth_bins: float = 2.0,
    ridge: float = 1e-3,
) -> SpectralCorrective:
    """Least-squares filters from batches of (z, zhat_t, t); ``smooth_bins``: the Gaussian's
    sigma over t bins; ``ridge``: lam relative to the mean power per frequency."""
    zz = zx = None
    for z, zhat, t in triplets:
        Z = torch.fft.rfft2(z.double()).permute(0, 2, 3, 1)  # (B, H, W', 3)
        Zh = torch.fft.rfft2(zhat.double()).permute(0, 2, 3, 1)
        i = (t.long() * bins // num_train_timesteps).clamp(0, bins - 1).cpu()
        if zz is None:
            shape = (bins,) + Z.shape[1:] + (3,)
            zz = torch.zeros(shape, dtype=Z.dtype)
            zx = torch.zeros(shape, dtype=Z.dtype)
        outer_zz = Z.unsqueeze(-1) * Z.conj().unsqueeze(-2)  # Z Z^H per sample and frequency
        outer_zx = Zh.unsqueeze(-1) * Z.conj().unsqueeze(-2)  # Zhat Z^H
        zz.index_add_(0, i, outer_zz.cpu())
        zx.index_add_(0, i, outer_zx.cpu())
    if zz is None:
        raise ValueError("fit_spectral: no triplets given")
    centres = torch.arange(bins, dtype=torch.float64)
    w = torch.exp(-0.5 * ((centres[:, None] - centres[None, :]) / smooth_bins) ** 2)
    w = w.to(zz.dtype)
    zz = torch.einsum("ab,b...->a...", w, zz)
    zx = torch.einsum("ab,b...->a...", w, zx)
    power = zz.diagonal(dim1=-2, dim2=-1).real.mean(-1, keepdim=True).unsqueeze(-1)
    eye = torch.eye(3, dtype=zz.dtype)
    A = zx @ torch.linalg.inv(zz + ridge * power.clamp_min(1e-12) * eye)
    return SpectralCorrective(A.to(torch.complex64), num_train_timesteps)


def fit_from_prior(
    prior, image_paths, emb_0: Tensor, triplets: int = 8192, batch_size: int = 128,
    seed: int = 0, progress: bool = True, **fit_kwargs,
) -> SpectralCorrective:  # fmt: skip
    """Filters fitted to ``triplets`` fresh triplets of ``prior`` on crops of ``image_paths``,
    drawn as the U-Net corrective's training draws them (``triplets.OnTheFly``)."""
    from tqdm import tqdm

    from .images import CropSampler
    from .triplets import OnTheFly

    source = OnTheFly(prior, CropSampler(list(image_paths), prior.resolution, seed=seed),
                      emb_0, batch_size, seed)  # fmt: skip
    steps = -(-triplets // batch_size)

    def batches():
        for step in tqdm(range(steps), desc="fit spectral corrective", disable=not progress):
            with torch.no_grad():
                yield source.finish(source.prepare(step, 0), step, 0, "cpu")

    return fit_spectral(batches(), prior.num_train_timesteps, **fit_kwargs)


def save_spectral(path: str, model: SpectralCorrective, prior, normalization: str) -> None:
    """Write the filters in the corrective format, loadable as ``corrective_path``."""
    from ..core.checkpoint import CorrectiveMeta, save_corrective
    from ..core.corrective import CorrectiveConfig

    meta = CorrectiveMeta(
        prior_id=prior.prior_id,
        resolution=prior.resolution,
        normalization=normalization,
        training_steps=0,
        num_train_timesteps=prior.num_train_timesteps,
        architecture=CorrectiveConfig(kind="spectral", t_bins=model.bins),
    )
    save_corrective(path, model, meta)


def add_arguments(parser) -> None:
    parser.add_argument("--prior", required=True, help="diffusers IF pipeline folder or hub id")
    parser.add_argument("--images", required=True, help="folder of training photos / renders")
    parser.add_argument("--out", required=True, help="output .safetensors file")
    parser.add_argument("--triplets", type=int, default=8192, help="fresh triplets to fit from")
    parser.add_argument("--batch-size", type=int, default=128, help="prior passes per batch")
    parser.add_argument("--bins", type=int, default=50, help="timestep bins (one filter each)")
    parser.add_argument("--smooth-bins", type=float, default=2.0,
                        help="Gaussian sigma over t bins pooling the least-squares sums")  # fmt: skip
    parser.add_argument("--normalization", default="global<700",
                        help="Eq. 10 normalisation the guidance applies to its output")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="crop and noise seed")
    parser.add_argument("--device", default="cpu", help="torch device")
    parser.add_argument("--half", action="store_true", help="fp16 prior weights (GPU)")


def run(args) -> None:
    from ..core.prior import IFPrior
    from ..core.text import encode_prompts
    from .images import scan_images

    scan = scan_images(args.images, 0)
    if not scan.usable:
        raise SystemExit(f"--images {args.images}: no readable images found")
    prior = IFPrior.from_pretrained(args.prior, device=args.device, half_precision=args.half)
    emb_0 = encode_prompts(args.prior, [""], device=args.device)
    model = fit_from_prior(prior, scan.usable, emb_0, args.triplets, args.batch_size, args.seed,
                           bins=args.bins, smooth_bins=args.smooth_bins)  # fmt: skip
    save_spectral(args.out, model, prior, args.normalization)
    print(f"spectral corrective: {args.out} ({model.bins} t bins, {args.triplets} triplets)")


def main(argv=None) -> None:
    from ..commands import module_main

    module_main(__doc__, add_arguments, run, argv)


if __name__ == "__main__":
    main()
