"""Which way each guidance term pushes an object's renders: the mean of -g_cond, -g_proj and
-g_lmc over the object's pixels and over the backdrop, per timestep bucket (positive: brighter).

On renders of the true object, an exact corrective gives E_eps[g_lmc] = bhat - E[zhat_t] = 0;
a mean that does not vanish is the corrective's bias, which a 3D optimisation follows at every
step. g_proj is shown for comparison (SDS's second term, in noise units).

A second table shows where a bias comes from even for an exact corrective: Eq. 10 gives bhat
the spread sigma(zhat_t) of ONE noisy prediction, which exceeds the spread of E[zhat_t] where
the prior's error is large, so the normalised bhat overstates contrast by that ratio.

    python -m lmcsds term-bias --prompt "a photo of a red cube"
"""

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from ..core import gradients as G
from ..core.lmc_sds import StepConfig, lmc_sds_step

SPREAD_TIMESTEPS = (50, 300, 500, 700, 800, 900, 960)
BUCKETS = [(20, 100), (100, 200), (200, 400), (400, 600), (600, 800), (800, 980)]
TERMS = ("g_cond", "g_proj", "g_lmc")


@torch.no_grad()
def term_means(
    prior,
    corrective,
    z: Tensor,
    mask: Tensor,
    emb_y: Tensor,
    emb_0: Tensor,
    t_range: Tuple[int, int],
    samples: int,
    omega: float = 20.0,
    normalization: str = "global",
    generator: Optional[torch.Generator] = None,
) -> Dict[str, Tuple[float, float]]:
    """{term: (mean of -g over ``mask``, mean of -g elsewhere)} for images z (B, 3, H, W) in
    [-1, 1], averaged over ``samples`` draws of t ~ U[t_range) and eps (w(t) = 1, no 1/omega)."""
    n = len(z)
    emb_y, emb_0 = emb_y.expand(n, -1, -1), emb_0.expand(n, -1, -1)
    fg = mask.bool().expand_as(z)
    sums = {k: [0.0, 0.0] for k in TERMS}
    for _ in range(samples):
        t = torch.randint(*t_range, (n,), generator=generator).to(prior.device)
        eps = torch.randn(z.shape, generator=generator).to(z)
        steps = {}
        for loss_type in ("sds", "lmc-sds"):
            cfg = StepConfig(loss_type, omega, normalization, scale_by_omega=False)
            steps[loss_type] = lmc_sds_step(prior, corrective, z, t, emb_y, emb_0, eps, cfg)
        terms = {"g_cond": steps["sds"].g_cond, "g_proj": steps["sds"].g_second,
                 "g_lmc": steps["lmc-sds"].g_second}  # fmt: skip
        for k, g in terms.items():
            sums[k][0] += -g[fg].mean().item() / samples
            sums[k][1] += -g[~fg].mean().item() / samples
    return {k: (v[0], v[1]) for k, v in sums.items()}


def term_table(prior, corrective, z, mask, emb_y, emb_0, samples, omega, normalization,
               seed: int = 0, buckets: Sequence[Tuple[int, int]] = BUCKETS) -> List[dict]:  # fmt: skip
    """One row per t bucket: the object and backdrop means of every term."""
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for lo, hi in buckets:
        means = term_means(prior, corrective, z, mask, emb_y, emb_0, (lo, hi), samples, omega,
                           normalization, gen)  # fmt: skip
        row = {"t": f"{lo}-{hi}"}
        for k, (obj, bg) in means.items():
            row[f"{k}_object"], row[f"{k}_backdrop"] = obj, bg
        rows.append(row)
    return rows


@torch.no_grad()
def zhat_spread(prior, z: Tensor, emb_0: Tensor, t: int, samples: int,
                generator: Optional[torch.Generator] = None) -> Tuple[float, float]:  # fmt: skip
    """(E[sigma(zhat_t)], sigma(E[zhat_t])) at timestep t over ``samples`` noise draws, image
    statistics as Eq. 10's "global" (all channels), averaged over the images z."""
    from ..training.report import mc_zhat

    tt = torch.full((len(z),), t, device=prior.device)
    noises = [torch.randn(z.shape, generator=generator).to(z) for _ in range(samples)]
    zhats = torch.stack(mc_zhat(prior, z, tt, emb_0.expand(len(z), -1, -1), noises))
    one = G.image_stats(zhats.flatten(0, 1), "global")[1].mean().item()
    mean = G.image_stats(zhats.mean(0), "global")[1].mean().item()
    return one, mean


def spread_markdown(prior, z: Tensor, emb_0: Tensor, samples: int, seed: int = 0,
                    timesteps: Sequence[int] = SPREAD_TIMESTEPS) -> str:  # fmt: skip
    """Table: the spread of one zhat_t against that of E[zhat_t], and their ratio (the factor by
    which Eq. 10 stretches an exact corrective's contrast)."""
    gen = torch.Generator().manual_seed(seed)
    lines = ["| t | E[sigma(zhat_t)] | sigma(E[zhat_t]) | Eq. 10 stretch |", "|---|---|---|---|"]
    for t in timesteps:
        one, mean = zhat_spread(prior, z, emb_0, t, samples, gen)
        lines.append(f"| {t} | {one:.3f} | {mean:.3f} | {one / max(mean, 1e-8):.2f} |")
    return "\n".join(lines) + "\n"


def markdown(rows: List[dict], title: str) -> str:
    keys = ["t"] + [f"{k}_{where}" for k in TERMS for where in ("object", "backdrop")]
    lines = [f"# {title}", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        lines.append("| " + " | ".join([r["t"]] + [f"{r[k]:+.3f}" for k in keys[1:]]) + " |")
    return "\n".join(lines) + "\n"


def add_object_arguments(p, prompt: str, prompt_help: str) -> None:
    """The prior, its corrective, a procedural object and its training-camera views."""
    p.add_argument("--prior", default="load/lmcsds/priors/objects-if-32", help="IF prior folder")
    p.add_argument("--corrective", default="load/lmcsds/correctives/objects-if-32.safetensors",
                   help="corrective of that prior")  # fmt: skip
    p.add_argument("--prompt", default=prompt, help=prompt_help)
    p.add_argument("--views", type=int, default=8, help="training-camera renders of the object")
    p.add_argument("--seed", type=int, default=0, help="seed of cameras, t and eps")


def object_setup(args):
    """(object spec, prior, corrective, its normalisation, cameras) of ``add_object_arguments``."""
    from ..priors.cameras import CameraDistribution, sample_cameras
    from ..priors.objects3d import parse_caption
    from .experiments import _prior_and_corrective

    spec = parse_caption(args.prompt)
    prior, corrective, normalization = _prior_and_corrective(args.prior, args.corrective)
    if corrective is None:
        raise FileNotFoundError(f"--corrective {args.corrective} not found")
    gen = torch.Generator().manual_seed(args.seed)
    cams = sample_cameras(CameraDistribution(), args.views, gen, np.random.default_rng(args.seed))
    return spec, prior, corrective, normalization, cams


def add_arguments(p) -> None:
    add_object_arguments(p, "a photo of a red cube",
                         "caption of a procedural object (lmcsds.priors.objects3d)")  # fmt: skip
    p.add_argument("--samples", type=int, default=8, help="draws of (t, eps) per bucket")
    p.add_argument("--omega", type=float, default=20.0, help="guidance weight of g_cond")
    p.add_argument("--out", default=None, help="folder for term-bias.md / .json (default: print)")


def run(args) -> None:
    from ..core.text import encode_prompts
    from ..priors.sdf_render import render

    spec, prior, corrective, normalization, cams = object_setup(args)
    shot = render(spec, cams, resolution=prior.resolution)
    z, mask = (shot.rgb * 2 - 1).to(prior.device), (shot.mask > 0.5).to(prior.device)
    emb = encode_prompts(args.prior, [spec.caption(), ""], prior.device, prior.dtype)
    rows = term_table(prior, corrective, z, mask, emb[:1], emb[1:], args.samples, args.omega,
                      normalization, args.seed)  # fmt: skip
    text = markdown(rows, f"Mean of -g over the object / backdrop: {spec.caption()}, "
                          f"{args.views} renders, omega {args.omega:g}, w(t) = 1")  # fmt: skip
    text += (
        f"\nSpread of the prior's one-step prediction ({args.samples} noise draws per t): "
        "Eq. 10 scales bhat to the first column, E[zhat_t] has the second.\n\n"
    )
    text += spread_markdown(prior, z, emb[1:], args.samples, args.seed)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "term-bias.md").write_text(text)
        (out / "term-bias.json").write_text(json.dumps(rows, indent=1))
