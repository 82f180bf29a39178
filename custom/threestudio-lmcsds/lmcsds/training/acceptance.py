"""Acceptance check of a corrective: does LMC-SDS with it stay stable where 3D optimisation takes it?

A corrective's offline accuracy (``report.py``) is measured on in-range photos; a 3D run feeds
it renders that leave [-1, 1] (threestudio's albedo activation is unclamped), drift in colour
and brightness, and are far from any photo early on. What decides is the closed loop: a short
3D run (``lmcsds check-corrective`` trains them through launch.py), judged here from its
per-step guidance norms:

- **runaway**: ||g_lmc|| / ||g_cond|| (median over the second half of the run) above
  ``ratio_limit``, or ||g_lmc|| growing by ``growth_limit`` from the run's second quarter to its
  last: the corrective's term, not the prompt, drives the asset (the closed-form spectral
  corrective: 4 -> 1e5 within 150 steps, while g_cond fell to 1e-3);
- **spike**: the run's peak ||g_lmc|| above ``spike_limit`` times its median. Over 1600 steps a
  runaway is a burst late in the run that the medians above miss (a recipe seed's 3D runs: peaks
  of 1e5-4e6 times the median, ratio <= 0.35, growth <= 2.1); stable runs peak at 5-35 times
  their median (the warm-up's first large steps), the check's runaways at 224-849;
- **non-finite**: steps skipped for non-finite gradients or renders. Skips that begin only after
  the scene emptied are not counted (reported as ``skipped_when_empty``): threestudio's
  orientation loss divides by the total opacity, so an empty scene makes the loss 0/0 whatever the
  guidance (small-1 of the short-recipe study: emptied at step 27, g_lmc finite throughout, the
  first skip at step 57); the empty run itself is handled below.

A run whose ||g_lmc|| / ||g_cond|| lies between ``warn_ratio`` and ``ratio_limit`` warns.

A run whose scene **emptied** (threestudio's sparsity loss at its floor: every opacity ~0)
tested nothing: the bundled corrective, and SDS alike, empty the red cube at some seeds within
ten steps. The check then runs that prompt again at the next seeds (``reseeds``) and judges
every attempt; a prompt that empties at all of them warns.

A second, threestudio-free probe measures the stability gains of E[g_lmc] (as in the report:
positive means a descent step shrinks the perturbation) at images pushed past [-1, 1] in
contrast and brightness, and at their flat mean colour. It is reported, not judged: the
bundled corrective, which works in 3D, has negative gains there at t 900
(docs/results/corrective-check).
"""

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor

from ..core import gradients as G
from ..core.noise import seeded_generator
from ..core.prior import IFPrior
from .report import mc_zhat, stability_gain

DEFAULT_PROMPTS = (
    "a photo of a red cube",
    "a photo of a blue striped sphere",
    "a photo of a yellow checkered cylinder",
    "a photo of a blue striped cone",
)
GAIN_TS = (100, 300, 500, 700, 900)


def _centre(z: Tensor) -> Tensor:
    return z.mean(dim=(1, 2, 3), keepdim=True)


# images pushed past the prior's range, as 3D renders are: name -> perturbed z
OUT_OF_RANGE = {
    "contrast x1.6": lambda z: _centre(z) + 1.6 * (z - _centre(z)),
    "brightness +0.6": lambda z: z + 0.6,
    "brightness -0.6": lambda z: z - 0.6,
}


@dataclass
class Limits:
    """When a closed-loop run counts as run away (see the module docstring)."""

    ratio_limit: float = 10.0
    growth_limit: float = 10.0
    spike_limit: float = 100.0  # peak ||g_lmc|| over the run's median
    warn_ratio: float = 1.0  # warn: g_lmc outweighs g_cond over most of the second half
    reseeds: int = 2  # an emptied run is tried again at up to this many next seeds


# threestudio's sparsity loss is mean(sqrt(opacity^2 + 0.01)): 0.1 when every opacity is 0, and
# 0.1027 when three pixels of a 32 x 32 render are opaque
EMPTY_SPARSITY = 0.102


def _median(x: Sequence[float]) -> float:
    v = sorted(x)
    return v[len(v) // 2] if v else float("nan")


def emptied_at(sparsity: Sequence[float]) -> Optional[int]:
    """The logged step from which the scene stayed empty (the median sparsity loss of the
    run's last quarter at its floor), or None when it did not empty."""
    n = len(sparsity)
    if n < 4 or _median(sparsity[3 * n // 4 :]) >= EMPTY_SPARSITY:
        return None
    last_full = max((i for i, v in enumerate(sparsity) if v >= EMPTY_SPARSITY), default=-1)
    return last_full + 1


def trace_summary(
    g_lmc: Sequence[float],
    g_cond: Sequence[float],
    skipped: float,
    sparsity: Sequence[float] = (),
    skipped_from: Optional[int] = None,
) -> dict:
    """A run's numbers from its per-step ||g_lmc||, ||g_cond||, skipped-step count, (when
    logged) sparsity loss and the logged step of its first skip (None: unknown or none)."""
    n = len(g_lmc)
    half = range(n // 2, n)
    ratio = _median([g_lmc[i] / max(g_cond[i], 1e-12) for i in half])
    growth = _median(g_lmc[3 * n // 4 :]) / max(_median(g_lmc[n // 4 : n // 2]), 1e-12)
    peak = max(g_lmc, default=float("nan"))
    empty = emptied_at(sparsity)
    when_empty = empty is not None and skipped_from is not None and skipped_from >= empty
    return {"steps": n, "ratio": ratio, "growth": growth,
            "skipped": 0.0 if when_empty else skipped,
            "skipped_when_empty": skipped if when_empty else 0.0, "peak_g_lmc": peak,
            "spike": peak / max(_median(g_lmc), 1e-12), "emptied_at": empty}  # fmt: skip


def ran_away(row: dict, limits: Limits) -> bool:
    """A run whose g_lmc broke the ratio, growth or spike limit (non-finite steps aside)."""
    return not (row["ratio"] <= limits.ratio_limit and row["growth"] <= limits.growth_limit
                and row["spike"] <= limits.spike_limit)  # fmt: skip


def run_reasons(row: dict, limits: Limits, name: str) -> List[str]:
    """Why a run failed (empty when it did not)."""
    if row["steps"] < 8:
        return [f"{name}: only {row['steps']} logged steps, too few to judge"]
    reasons = []
    if row["skipped"] > 0:
        reasons.append(f"{name}: {row['skipped']:.0f} steps skipped for non-finite values")
    if not row["ratio"] <= limits.ratio_limit:
        reasons.append(
            f"{name}: ||g_lmc|| / ||g_cond|| is {row['ratio']:.3g} over the second half "
            f"(limit {limits.ratio_limit:g}): the corrective, not the prompt, drives the asset"
        )
    if not row["growth"] <= limits.growth_limit:
        reasons.append(
            f"{name}: ||g_lmc|| grew {row['growth']:.3g}x from the second quarter to the last "
            f"(limit {limits.growth_limit:g})"
        )
    if not row["spike"] <= limits.spike_limit:
        reasons.append(
            f"{name}: ||g_lmc|| peaked at {row['peak_g_lmc']:.3g}, {row['spike']:.3g}x its "
            f"median (limit {limits.spike_limit:g})"
        )
    return reasons


@torch.no_grad()
def mean_g_lmc(prior, corrective, normalization, z, t, emb_0, noises) -> Tensor:
    """E[g_lmc] at z over the given noises (Monte Carlo)."""
    b = corrective(z, t).float()
    samples = mc_zhat(prior, z, t, emb_0, noises)
    return torch.stack([G.g_lmc(G.bhat(b, s, normalization, t), s) for s in samples]).mean(0)


@torch.no_grad()
def out_of_range_gains(
    prior: IFPrior, corrective, normalization: str, z: Tensor, emb_0: Tensor, mc_samples: int = 4
) -> List[Dict[str, float]]:
    """Stability gains of E[g_lmc] from in-range images z (N, 3, res, res) to their
    out-of-range versions, and from their flat mean colour to a contrast increase (paired
    noises); ``emb_0`` (1, 77, d): the empty prompt's embedding."""
    gen = seeded_generator(4321, 0)
    emb = emb_0.expand(z.shape[0], -1, -1)
    flat = z.mean(dim=(2, 3), keepdim=True).expand_as(z).contiguous()
    cases = {name: (z, f(z)) for name, f in OUT_OF_RANGE.items()}
    cases["flat colour -> +contrast"] = (flat, flat + 0.25 * (z - flat))
    rows = []
    for tv in GAIN_TS:
        t = torch.full((z.shape[0],), tv, device=prior.device)
        noises = [torch.randn(z.shape, generator=gen).to(prior.device) for _ in range(mc_samples)]
        for name, (a, moved) in cases.items():
            g_a = mean_g_lmc(prior, corrective, normalization, a, t, emb, noises)
            g_m = mean_g_lmc(prior, corrective, normalization, moved, t, emb, noises)
            rows.append({"case": name, "t": tv, "gain": stability_gain(g_m - g_a, moved - a)})
    return rows


def run_warnings(row: dict, limits: Limits, name: str) -> List[str]:
    """Signs short of a runaway (empty when there are none)."""
    if limits.warn_ratio < row["ratio"] <= limits.ratio_limit:
        return [
            f"{name}: ||g_lmc|| / ||g_cond|| is {row['ratio']:.3g} over the second half "
            f"(warn above {limits.warn_ratio:g}): the corrective's term outweighs the prompt's"
        ]
    return []  # fmt: skip


def verdict(failures: List[str], warnings: List[str]) -> str:
    return "fail" if failures else "warn" if warnings else "pass"
