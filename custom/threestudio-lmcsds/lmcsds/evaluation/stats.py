"""Means with bootstrap confidence intervals over prompts and seeds (pure numpy).

The benchmark's unit is a run (prompt, seed). Prompts are a sample of objects and seeds a sample
of runs per object, so the interval resamples both: prompts with replacement, then seeds with
replacement within each drawn prompt (a two-level bootstrap). Paired differences are taken per
(prompt, seed) before resampling, so what two guidances share (the object, the seed's cameras)
cancels.
"""

from typing import Dict, Hashable, List, Sequence, Tuple

import numpy as np

Groups = Dict[Hashable, Sequence[float]]  # prompt -> one value per seed


def bootstrap_mean(
    groups: Groups, level: float = 0.95, resamples: int = 2000, seed: int = 0
) -> Tuple[float, float, float]:
    """(mean, low, high): the mean over all values and its two-level bootstrap interval.
    Non-finite values are left out (a metric that does not apply); groups left empty drop. One
    value has no interval: its bounds are NaN (never "a difference shown")."""
    values = [np.asarray([v for v in g if np.isfinite(v)], float) for g in groups.values()]
    values = [v for v in values if len(v)]
    if not values:
        return (float("nan"),) * 3
    mean = float(np.concatenate(values).mean())
    if sum(len(v) for v in values) < 2:
        return mean, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for i in range(resamples):
        drawn = [values[j] for j in rng.integers(0, len(values), len(values))]
        means[i] = np.concatenate([v[rng.integers(0, len(v), len(v))] for v in drawn]).mean()
    alpha = (1 - level) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return mean, float(low), float(high)


def paired_groups(rows: List[dict], metric: str, guidance: str, reference: str) -> Groups:
    """prompt -> (guidance - reference) per seed that both ran."""
    by = {(r["prompt"], r["seed"], r["guidance"]): r[metric] for r in rows}
    out: Dict[Hashable, List[float]] = {}
    for (prompt, seed, g), value in by.items():
        if g == guidance and (prompt, seed, reference) in by:
            out.setdefault(prompt, []).append(value - by[(prompt, seed, reference)])
    return out


def excludes_zero(low: float, high: float) -> bool:
    return bool(np.isfinite(low) and np.isfinite(high) and (low > 0 or high < 0))
