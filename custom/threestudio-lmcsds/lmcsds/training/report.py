"""Evaluation report of a trained corrective on held-out photos (markdown + PNG + JSON).

- validation L_k (Eq. 10) against the identity baseline bhat(z) = z, per t bucket;
- relative error of bhat against a Monte-Carlo estimate of E_eps[zhat_t | z, t] (K prior
  passes per image and t), per t bucket, again against the identity baseline;
- the size of the expected gradient E_eps[g_lmc] relative to E[zhat_t] (0 for an exact
  corrective): unlike the relative error, it keeps Eq. 10's rescaling to each noisy zhat_t,
  which overstates contrast where zhat_t is noisy (docs/objects3d.md);
- stability gains per t bucket: how the mean gradient responds to the image's contrast and to
  small colour and brightness offsets, and its mean (drift) at the image itself, for g_lmc and
  for the (unweighted) SDS projection z - zhat_t. Positive:
  a descent step shrinks that component (restoring); negative: it grows it, and an optimisation
  with that gradient runs away along it (the colour collapse in docs/results-2d.md);
- radially averaged power spectra of z, zhat_t and bhat for several t (paper Fig. 1 right);
- a grid of samples (z, zhat_t, bhat) at several t.
"""

import json
from pathlib import Path
from typing import List, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from ..core import gradients as G  # noqa: E402
from ..core.checkpoint import load_corrective  # noqa: E402
from ..core.noise import seeded_generator  # noqa: E402
from ..core.prior import IFPrior  # noqa: E402
from ..core.spectra import radial_power_spectrum  # noqa: E402
from .images import CropSampler  # noqa: E402

BUCKETS = [(20, 200), (200, 400), (400, 600), (600, 800), (800, 981)]
# small offsets of z whose response the stability gains measure
OFFSETS = {"colour": (0.0, 0.15, -0.15), "brightness": (0.15, 0.15, 0.15)}


def _rel_err(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image ||pred - target|| / ||target - mean(target)||."""
    centred = target - target.mean(dim=(1, 2, 3), keepdim=True)
    return (pred - target).flatten(1).norm(dim=1) / centred.flatten(1).norm(dim=1).clamp_min(1e-8)


def stability_gain(response: torch.Tensor, direction: torch.Tensor) -> float:
    """<response, direction> / <direction, direction>, pooled over the batch."""
    return ((response * direction).sum() / (direction * direction).sum().clamp_min(1e-12)).item()


def mc_zhat(prior, z, t, emb, noises: List[torch.Tensor]) -> List[torch.Tensor]:
    """One-pass unconditional x0 predictions of z at t, one per noise."""
    abar, out = prior.abar(t), []
    for eps in noises:
        zt = G.z_t(z, eps, abar)
        out.append(G.zhat_t(zt, prior.eps(zt, t, emb), abar))
    return out


@torch.no_grad()
def corrective_report(
    checkpoint: str,
    prior: IFPrior,
    emb_0: torch.Tensor,
    val_paths: List[str],
    out_dir: str,
    num_images: int = 32,
    mc_samples: int = 8,
    spectrum_ts: Sequence[int] = (100, 300, 500, 700, 900),
    seed: int = 1234,
) -> dict:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model, meta = load_corrective(
        checkpoint, prior.prior_id, prior.resolution, map_location=prior.device
    )
    mode = meta.normalization
    sampler = CropSampler(val_paths, prior.resolution, seed=seed, photos_per_batch=num_images)
    z = sampler.batch(0, num_images).to(prior.device)  # one photo per crop
    gen = seeded_generator(seed, 1)
    rows = []
    for lo, hi in BUCKETS:
        t = torch.randint(lo, hi, (num_images,), generator=gen).to(prior.device)
        emb = emb_0.to(prior.device).expand(num_images, -1, -1)
        noises = [torch.randn(z.shape, generator=gen).to(prior.device) for _ in range(mc_samples)]
        samples = mc_zhat(prior, z, t, emb, noises)
        zhat, mc_mean = samples[0], torch.stack(samples).mean(0)
        b = model(z, t)
        g_lmc = torch.stack([G.g_lmc(G.bhat(b, s, mode, t), s) for s in samples]).mean(0)
        g_identity = torch.stack([G.g_lmc(G.bhat(z, s, mode, t), s) for s in samples]).mean(0)
        spread = (mc_mean - mc_mean.mean(dim=(1, 2, 3), keepdim=True)).flatten(1).norm(dim=1)
        proj = z - mc_mean  # E[z - zhat_t]: the SDS projection without its weight
        contrast = z - z.mean(dim=(1, 2, 3), keepdim=True)
        row = {
            "t": f"{lo}-{hi - 1}",
            "loss_k": G.loss_k(b, zhat, mode, t).item(),
            "loss_k_identity": G.loss_k(z, zhat, mode, t).item(),
            "rel_err_mc": _rel_err(G.bhat(b, mc_mean, mode, t), mc_mean).mean().item(),
            "rel_err_mc_identity": _rel_err(G.bhat(z, mc_mean, mode, t), mc_mean).mean().item(),
            "bias_lmc": (g_lmc.flatten(1).norm(dim=1) / spread).mean().item(),
            "bias_identity": (g_identity.flatten(1).norm(dim=1) / spread).mean().item(),
            "contrast_gain_lmc": stability_gain(g_lmc, contrast),
            "contrast_gain_proj": stability_gain(proj, contrast),
            "mean_lmc": g_lmc.mean().item(),  # > 0: a descent step darkens the image
            "mean_proj": proj.mean().item(),
        }
        # the response to an offset, with the same noises (paired: the difference is the
        # response to the offset, not noise)
        for name, offset in OFFSETS.items():
            zo = (z + torch.tensor(offset, device=z.device).view(1, 3, 1, 1)).clamp(-1, 1)
            samples_o = mc_zhat(prior, zo, t, emb, noises)
            bo = model(zo, t)
            g_lmc_o = torch.stack([G.g_lmc(G.bhat(bo, s, mode, t), s) for s in samples_o]).mean(0)
            proj_o = zo - torch.stack(samples_o).mean(0)
            row[f"{name}_gain_lmc"] = stability_gain(g_lmc_o - g_lmc, zo - z)
            row[f"{name}_gain_proj"] = stability_gain(proj_o - proj, zo - z)
        rows.append(row)
    overall = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0] if k != "t"}

    # spectra and sample grid at fixed t
    n_show = min(4, num_images)
    fig, axes = plt.subplots(1, len(spectrum_ts), figsize=(3.2 * len(spectrum_ts), 3), sharey=True)
    grid = []
    spec_z = radial_power_spectrum(z).mean(0).cpu()
    for ax, tv in zip(axes, spectrum_ts):
        t = torch.full((num_images,), tv, device=prior.device)
        abar = prior.abar(t)
        eps = torch.randn(z.shape, generator=gen).to(prior.device)
        zt = G.z_t(z, eps, abar)
        zhat = G.zhat_t(
            zt, prior.eps(zt, t, emb_0.to(prior.device).expand(num_images, -1, -1)), abar
        )
        bh = G.bhat(model(z, t), zhat, mode, t)
        freqs = torch.arange(1, spec_z.shape[0] + 1)
        for name, x, style in (("z", z, "k-"), ("zhat_t", zhat, "r-"), ("bhat", bh, "b--")):
            spec = spec_z if name == "z" else radial_power_spectrum(x).mean(0).cpu()
            ax.loglog(freqs, spec, style, label=name)
        ax.set_title(f"t = {tv}")
        ax.set_xlabel("frequency (cycles / image)")
        grid.append(torch.cat([z[:n_show], zhat[:n_show].clamp(-1, 1), bh[:n_show].clamp(-1, 1)]))
    axes[0].set_ylabel("power")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out / "spectra.png", dpi=100)
    plt.close(fig)
    _save_grid(grid, spectrum_ts, n_show, out / "samples.png")

    report = {
        "checkpoint": str(checkpoint),
        "prior_id": meta.prior_id,
        "training_steps": meta.training_steps,
        "normalization": mode,
        "num_images": num_images,
        "mc_samples": mc_samples,
        "buckets": rows,
        "overall": overall,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(_markdown(report))
    return report


def negative_gains(report: dict) -> List[str]:
    """The stability gains of E[g_lmc] below zero, as "contrast at t 800-980 (-0.021)".

    An optimisation runs away along such a component (on the objects prior, the one corrective
    with a negative gain turned 3D assets into white speckle), whatever the relative error says.
    """
    return [
        f"{name} at t {row['t']} ({row[f'{name}_gain_lmc']:+.3f})"
        for row in report["buckets"]
        for name in ("contrast", "colour", "brightness")
        if row[f"{name}_gain_lmc"] < 0
    ]


def _save_grid(grid, ts, n_show, path: Path) -> None:
    fig, axes = plt.subplots(len(ts), 3 * n_show, figsize=(1.2 * 3 * n_show, 1.3 * len(ts)))
    titles = ["z", "zhat_t", "bhat"]
    for r, (block, tv) in enumerate(zip(grid, ts)):
        for c in range(3 * n_show):
            kind, i = divmod(c, n_show)
            img = block[kind * n_show + i].permute(1, 2, 0).cpu().numpy() * 0.5 + 0.5
            ax = axes[r, c]
            ax.imshow(img.clip(0, 1))
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[kind], fontsize=8)
            if c == 0:
                ax.set_ylabel(f"t={tv}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _markdown(report: dict) -> str:
    lines = [
        f"# Corrective report: {report['prior_id']}",
        "",
        f"Checkpoint `{report['checkpoint']}`, {report['training_steps']} training steps, "
        f"normalization `{report['normalization']}`; {report['num_images']} held-out crops, "
        f"{report['mc_samples']} prior passes per image and t for the Monte-Carlo mean.",
        "",
        "| t | L_k bhat | L_k identity | rel. error to E[zhat_t] bhat | rel. error identity "
        "| size of E[g_lmc] bhat | size of E[g_lmc] identity |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report["buckets"] + [dict(report["overall"], t="all")]:
        lines.append(
            f"| {r['t']} | {r['loss_k']:.5f} | {r['loss_k_identity']:.5f} | "
            f"{r['rel_err_mc']:.3f} | {r['rel_err_mc_identity']:.3f} | "
            f"{r.get('bias_lmc', float('nan')):.3f} | {r.get('bias_identity', float('nan')):.3f} |"
        )
    lines += [
        "",
        "Identity: bhat(z) = z (no corrective). Relative error: ||bhat - m|| / ||m - mean(m)|| "
        "with m the Monte-Carlo mean of zhat_t, both sides normalised as in Eq. 10 to m's "
        "statistics. Size of E[g_lmc]: ||mean over the K passes of bhat - zhat_t|| / "
        "||m - mean(m)||, bhat normalised to each pass's zhat_t as the guidance does (0 for an "
        "exact corrective; what an optimisation follows on average).",
        "",
        "Stability gains of the mean gradient (positive: a descent step shrinks the component, "
        "negative: it grows it, and optimisation runs away along it). Projection: z - zhat_t, "
        "the SDS term without its sqrt(abar/(1-abar)) weight. Colour / brightness: per-channel "
        f"offsets {OFFSETS['colour']} / {OFFSETS['brightness']} added to the images. Mean: the "
        "mean of the gradient at the image itself (positive: a descent step darkens it).",
        "",
        "| t | contrast g_lmc | contrast proj. | colour g_lmc | colour proj. "
        "| brightness g_lmc | brightness proj. | mean g_lmc | mean proj. |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["buckets"] + [dict(report["overall"], t="all")]:
        lines.append(
            f"| {r['t']} | {r['contrast_gain_lmc']:+.3f} | {r['contrast_gain_proj']:+.3f} | "
            f"{r['colour_gain_lmc']:+.3f} | {r['colour_gain_proj']:+.3f} | "
            f"{r['brightness_gain_lmc']:+.3f} | {r['brightness_gain_proj']:+.3f} | "
            f"{r['mean_lmc']:+.3f} | {r['mean_proj']:+.3f} |"
        )
    lines += [
        "",
        "![power spectra](spectra.png)",
        "",
        "![samples](samples.png)",
        "",
    ]
    return "\n".join(lines)
