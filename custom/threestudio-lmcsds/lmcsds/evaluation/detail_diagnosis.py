"""Where score distillation loses a pattern or a part: what one guidance step does to it, per
timestep bucket, on renders between the object's failure and its truth.

A patterned object's renders z* (the truth) and z_f (its flat-colour version: the pink mug
every guidance makes of the red checkered one) differ by the pattern d = z* - z_f; for a part,
d is the part's contribution (the flat object with minus without its handle). On the states
z_a = z_f + a d (a = 0: the failure, 0.25: a faint pattern, 1: the truth), per loss and t
bucket, over noise draws at each of the views (training cameras, view-suffixed prompts),
with HP the part of an image above ``cutoff`` cycles per image:

- ``gain``: <E HP(-g), HP(d)> / ||HP(d)||^2, the step's component along the pattern (> 0: it
  adds the pattern, < 0: it removes it); at a = 0.25 a 3D asset can only grow a pattern if
  this is positive (a faint pattern must be amplified, not averaged away);
- ``pull``: cos(E HP(-g), HP(d)), how much of the averaged step is that pattern;
- ``coherence``: ||E HP(g)||^2 / E ||HP(g)||^2 over the draws: 1 when every draw asks for the
  same detail, 1 / draws when its phase is random (what an asset seeing all draws averages away);
- ``hf_share``: E ||HP(g)||^2 / E ||g||^2, how much of the step is detail at all;
- ``update``: w(t) E <HP(-g), HP(d)> / ||HP(d)||, the pattern added per step; its share over
  the buckets is how much of the pattern's update each t range gets under uniform t.

The supervised ceiling has gain 1 - a > 0 at every a by construction.

    python -m lmcsds detail-diagnosis --prompt "a photo of a red checkered mug"
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from ..commands import module_main
from ..core import gradients as G
from ..core.lmc_sds import StepConfig, lmc_sds_step
from .stats import bootstrap_mean
from .term_bias import add_object_arguments, object_setup

BUCKETS = [(20, 100), (100, 200), (200, 400), (400, 600), (600, 800), (800, 980)]
STATES = (0.0, 0.25, 1.0)
METRICS = ("gain", "pull", "coherence", "hf_share", "update")
VISIBLE = 0.1  # a view counts when ||HP(d)||^2 is at least this share of the largest view's


def highpass(x: Tensor, cutoff: float) -> Tensor:
    """The part of images (..., H, W) at spatial frequencies >= ``cutoff`` cycles per image."""
    h, w = x.shape[-2:]
    fy = torch.fft.fftfreq(h, d=1.0 / h, device=x.device)
    fx = torch.fft.fftfreq(w, d=1.0 / w, device=x.device)
    keep = (fy[:, None] ** 2 + fx[None, :] ** 2).sqrt() >= cutoff
    return torch.fft.ifft2(torch.fft.fft2(x.float()) * keep).real


def _dot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).flatten(1).sum(1)


@torch.no_grad()
def step_effect(
    prior,
    corrective,
    z: Tensor,
    d: Tensor,
    emb_y: Tensor,
    emb_0: Tensor,
    cfg: StepConfig,
    t_range: Tuple[int, int],
    draws: int,
    cutoff: float,
    generator: torch.Generator,
) -> Dict[str, List[float]]:
    """The metrics of the module docstring for images z (V, 3, H, W) and direction d, over
    ``draws`` draws of (t ~ U[t_range), eps) per view: one value per view, NaN for views in
    which HP(d) has less than ``VISIBLE`` of the largest view's energy."""
    steps, weights = [], []
    for _ in range(draws):
        t = torch.randint(*t_range, (len(z),), generator=generator).to(prior.device)
        eps = torch.randn(z.shape, generator=generator).to(z)
        g = lmc_sds_step(prior, corrective, z, t, emb_y, emb_0, eps, cfg).g
        steps.append(-g)
        weights.append(G.weight(prior.abar(t), cfg.weighting).flatten())
    g = torch.stack(steps)  # (D, V, 3, H, W): -g, w(t) applied
    hg, hd = highpass(g, cutoff), highpass(d, cutoff)
    mean = hg.mean(0)
    d2 = _dot(hd, hd).clamp_min(1e-12)
    energy = torch.stack([_dot(x, x) for x in hg]).mean(0)
    total = torch.stack([_dot(x, x) for x in g]).mean(0)
    along = _dot(mean, hd)
    # views where the direction is (nearly) invisible, e.g. a handle behind the cup, say nothing
    seen = d2 >= VISIBLE * d2.max()
    per_view = {
        "gain": along / d2,
        "pull": along / (_dot(mean, mean).sqrt() * d2.sqrt()).clamp_min(1e-12),
        "coherence": _dot(mean, mean) / energy.clamp_min(1e-12),
        "hf_share": energy / total.clamp_min(1e-12),
        "update": along / d2.sqrt(),
    }
    return {k: torch.where(seen, v, torch.nan).tolist() for k, v in per_view.items()}


@dataclass
class Target:
    """What is lost: its name, the failure render z_f and the truth z* (V, 3, H, W), [-1, 1]."""

    name: str
    failure: Tensor
    truth: Tensor


def diagnose(
    prior,
    corrective,
    target: Target,
    emb_y: Tensor,
    emb_0: Tensor,
    losses: Dict[str, StepConfig],
    draws: int = 8,
    cutoff: float = 3.0,
    states: Sequence[float] = STATES,
    buckets: Sequence[Tuple[int, int]] = BUCKETS,
    seed: int = 0,
) -> List[dict]:
    """One row per (loss, state a, t bucket) with the metrics' means over the views and their
    95% bootstrap intervals (``<metric>_low``, ``_high``); ``update_share`` is the bucket's
    share of the pattern added per step over all buckets (uniform t: equal bucket widths are
    weighted by their width)."""
    from tqdm import tqdm

    d = target.truth - target.failure
    rows = []
    bar = tqdm(total=len(losses) * len(states) * len(buckets), desc=target.name, unit="bucket")
    for name, cfg in losses.items():
        for a in states:
            gen = torch.Generator().manual_seed(seed)
            z = target.failure + a * d
            block = []
            for lo, hi in buckets:
                per_view = step_effect(prior, corrective, z, d, emb_y, emb_0, cfg, (lo, hi),
                                       draws, cutoff, gen)  # fmt: skip
                bar.update()
                row = dict(target=target.name, loss=name, a=a, t=f"{lo}-{hi}", width=hi - lo)
                for key, values in per_view.items():  # mean and 95% interval over the views
                    row[key], row[f"{key}_low"], row[f"{key}_high"] = bootstrap_mean(
                        {i: [v] for i, v in enumerate(values)}
                    )
                block.append(row)
            total = sum(abs(r["update"]) * r["width"] for r in block)
            for r in block:
                r["update_share"] = r["update"] * r["width"] / max(total, 1e-12)
            rows += block
    bar.close()
    return rows


def markdown(rows: List[dict], title: str) -> str:
    keys = ["loss", "a", "t", *METRICS, "update_share"]
    lines = [f"### {title}", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        cells = [r["loss"], f"{r['a']:g}", r["t"]]
        cells += [
            f"{r[k]:+.3f} [{r[k + '_low']:+.3f}, {r[k + '_high']:+.3f}]" for k in ("gain", "pull")
        ]
        cells += [f"{r[k]:+.3f}" for k in keys[5:]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def gain_table(rows: List[dict], target: str) -> str:
    """Markdown: one row per t bucket, one column per (loss, a), the gain and its interval."""
    sub = [r for r in rows if r["target"] == target]
    columns = list(dict.fromkeys((r["loss"], r["a"]) for r in sub))
    buckets = list(dict.fromkeys(r["t"] for r in sub))
    cell = {(r["loss"], r["a"], r["t"]): r for r in sub}
    lines = ["| t | " + " | ".join(f"{loss} a={a:g}" for loss, a in columns) + " |",
             "|---|" + "---|" * len(columns)]  # fmt: skip
    for t in buckets:
        cells = [cell[(loss, a, t)] for loss, a in columns]
        lines.append(f"| {t} | " + " | ".join(
            f"{c['gain']:+.3f} [{c['gain_low']:+.3f}, {c['gain_high']:+.3f}]" for c in cells) + " |")  # fmt: skip
    return "\n".join(lines) + "\n"


def plot(rows: List[dict], path: Path) -> None:
    """gain (with its interval) and coherence per t bucket: colour = state a, line = loss;
    one column per target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = sorted({r["target"] for r in rows}, key=[r["target"] for r in rows].index)
    losses = sorted({r["loss"] for r in rows}, key=[r["loss"] for r in rows].index)
    states = sorted({r["a"] for r in rows})
    fig, axes = plt.subplots(2, len(targets), figsize=(5 * len(targets), 7), squeeze=False)
    for j, target in enumerate(targets):
        for li, loss in enumerate(losses):
            for si, a in enumerate(states):
                line = [r for r in rows if (r["target"], r["loss"], r["a"]) == (target, loss, a)]
                x = np.arange(len(line)) + 0.08 * (li - (len(losses) - 1) / 2)
                kw = dict(color=f"C{si}", ls=["-", "--", ":", "-."][li % 4], marker="o", ms=4)
                gain = np.array([r["gain"] for r in line])
                err = [gain - [r.get("gain_low", g) for r, g in zip(line, gain)],
                       [r.get("gain_high", g) for r, g in zip(line, gain)] - gain]  # fmt: skip
                axes[0, j].errorbar(x, gain, yerr=err, capsize=2, label=f"{loss}, a={a:g}", **kw)
                axes[1, j].plot(x, [r["coherence"] for r in line], **kw)
        ticks = [
            r["t"]
            for r in rows
            if (r["target"], r["loss"], r["a"]) == (target, losses[0], states[0])
        ]
        for i, key in enumerate(("gain", "coherence")):
            axes[i, j].set_xticks(np.arange(len(ticks)), ticks, fontsize=8)
            axes[i, j].set_ylabel(key)
        axes[0, j].axhline(0, color="k", lw=0.5)
        axes[0, j].set_title(target)
        axes[1, j].set_xlabel("t bucket")
        axes[0, j].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def targets_for(spec, cams, resolution: int) -> List[Target]:
    """The pattern (truth vs its mean colour) when the object has one, and its removable part
    (the flat object with vs without it); renders in the prior's range, black backdrop."""
    from ..priors.sdf_render import render
    from .bench3d.oracles import REMOVED_PART, flat_colour, mean_albedo
    from .bench3d.truth import Truth, quantise_8bit

    out = render(spec, cams, resolution=resolution, supersample=4)
    full = Truth(quantise_8bit(out.rgb), out.mask[:, 0], out.depth[:, 0],
                 torch.zeros(len(cams)), cams)  # fmt: skip
    flat = flat_colour(spec, full)
    targets = []
    if spec.pattern != "plain":
        targets.append(Target(f"{spec.pattern} pattern", flat * 2 - 1, full.rgb * 2 - 1))
    part = REMOVED_PART.get(spec.shape)
    if part is not None:
        lit = render(spec, cams, resolution, 4, shading=["textureless"] * len(cams),
                     without=(part,)).rgb  # fmt: skip
        without = quantise_8bit(lit * mean_albedo(spec, full)[None, :, None, None])
        targets.append(Target(part, without * 2 - 1, flat * 2 - 1))
    return targets


LOSSES = ("sds-w21", "lmc-sds-w10", "sds-w21-sdi", "lmc-sds-w10-sdi", "cond-w21", "cond-w10")


def loss_config(name: str, normalization: str) -> StepConfig:
    """The benchmark's runs of that name, as its CPU config forms them: w(t) = 1 - abar, no
    1 / omega; "-sdi": SDI's inverted noise (10 steps, omega -6.5, eta 0.3); "cond-w<omega>":
    g_cond alone, the term the two losses share (their second terms are the difference)."""
    if name not in LOSSES:
        raise ValueError(f"--losses: {name!r} is not one of {LOSSES}")
    base, sdi = name.removesuffix("-sdi"), name.endswith("-sdi")
    loss, omega = {"sds-w21": ("sds", 21.0), "lmc-sds-w10": ("lmc-sds", 10.0),
                   "cond-w21": ("cond", 21.0), "cond-w10": ("cond", 10.0)}[base]  # fmt: skip
    noise = dict(noise="inversion", inversion_omega=-6.5, inversion_steps=10, inversion_eta=0.3)
    return StepConfig(loss, omega, normalization, scale_by_omega=False, weighting="sds",
                      **(noise if sdi else {}))  # fmt: skip


def add_arguments(p) -> None:
    add_object_arguments(p, "a photo of a red checkered mug",
                         "caption of a procedural object with a pattern or a part")  # fmt: skip
    p.add_argument("--draws", type=int, default=8, help="draws of (t, eps) per view and bucket")
    p.add_argument("--cutoff", type=float, default=3.0,
                   help="detail = spatial frequencies from this many cycles per image")  # fmt: skip
    p.add_argument("--losses", default="sds-w21,lmc-sds-w10",
                   help=f"comma-separated, of {', '.join(LOSSES)}")  # fmt: skip
    p.add_argument("--targets", default="all",
                   help="all, pattern, or the part (e.g. handle): what to diagnose")  # fmt: skip
    p.add_argument("--view-suffix", default="matched", choices=["matched", "none", "wrong"],
                   help="prompts as threestudio words them per camera, without the view, or "
                        "with a view the camera does not have")  # fmt: skip
    p.add_argument("--out", default=None, help="folder for detail.md / .json / .png")


def run(args) -> None:
    from ..core.text import encode_prompts
    from ..priors.cameras import view_index, with_view

    spec, prior, corrective, normalization, cams = object_setup(args)
    targets = targets_for(spec, cams, prior.resolution)
    if args.targets != "all":  # "pattern" or a part's name
        targets = [t for t in targets if args.targets in t.name]
    if not targets:
        raise ValueError(f"--prompt {args.prompt!r}: the object has no pattern and no part")
    views = view_index(cams.elevation_deg, cams.azimuth_deg).tolist()
    if args.view_suffix == "wrong":  # side -> front -> back -> side; overhead -> side
        views = [{0: 1, 1: 2, 2: 0, 3: 0}[v] for v in views]
    prompts = [with_view(spec.caption(), None if args.view_suffix == "none" else v)
               for v in views]  # fmt: skip
    emb = encode_prompts(args.prior, prompts + [""], prior.device, prior.dtype)
    emb_y, emb_0 = emb[:-1], emb[-1:].expand(len(prompts), -1, -1)
    losses = {name: loss_config(name, normalization) for name in args.losses.split(",")}
    rows, text = [], [f"# What one step does to the detail of {spec.caption()}", ""]
    for target in targets:
        part = diagnose(prior, corrective, target, emb_y.to(prior.device),
                        emb_0.to(prior.device), losses, args.draws, args.cutoff, seed=args.seed)  # fmt: skip
        rows += part
        title = f"{target.name}: {args.views} views x {args.draws} draws, {args.view_suffix} views"
        text += [f"## {target.name}: gain per t bucket", "", gain_table(part, target.name)]
        text.append(markdown(part, title))
    print("\n".join(text))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "detail.md").write_text("\n".join(text))
        (out / "detail.json").write_text(json.dumps(rows, indent=1))
        plot(rows, out / "detail.png")


def main(argv: Optional[List[str]] = None) -> None:
    module_main(__doc__, add_arguments, run, argv)


if __name__ == "__main__":
    main()
