"""Bootstrap intervals over prompts and seeds, and paired differences."""

import numpy as np
import pytest

from lmcsds.evaluation.stats import bootstrap_mean, excludes_zero, paired_groups


def test_bootstrap_mean_is_the_mean_and_its_interval_covers_it():
    groups = {"a": [1.0, 2.0, 3.0], "b": [4.0, 5.0, 6.0]}
    mean, lo, hi = bootstrap_mean(groups)
    assert mean == pytest.approx(3.5) and lo < mean < hi
    assert bootstrap_mean({"a": [2.0, 2.0], "b": [2.0]}) == (2.0, 2.0, 2.0)  # no spread
    assert bootstrap_mean(groups) == bootstrap_mean(groups)  # seeded: reproducible
    # non-finite values (a metric that does not apply) drop, as do groups left empty
    assert bootstrap_mean({"a": [1.0, np.nan], "b": [np.nan]})[0] == 1.0
    assert np.isnan(bootstrap_mean({"a": [np.nan]})[0])


def test_one_value_has_a_mean_but_no_interval():
    """One run (e.g. a metric that applies to one prompt, at one seed): resampling it gives a
    zero-width interval that would read as a difference shown; it has none."""
    mean, lo, hi = bootstrap_mean({"mug": [-0.05], "cube": [np.nan]})
    assert mean == -0.05 and np.isnan(lo) and np.isnan(hi)
    assert not excludes_zero(lo, hi)


def test_the_interval_resamples_prompts_not_only_runs():
    """Two prompts far apart, many seeds each: a bootstrap over runs alone would be narrow;
    resampling prompts keeps the between-prompt spread in the interval (which then covers
    most of [0, 10])."""
    groups = {"easy": [10.0] * 20, "hard": [0.0] * 20}
    mean, lo, hi = bootstrap_mean(groups, resamples=4000)
    assert mean == 5.0 and lo == 0.0 and hi == 10.0


def test_paired_differences_cancel_what_the_runs_share():
    """Guidance b is a's score + 0.1 on every prompt and seed: unpaired intervals overlap
    widely, the paired one is exactly 0.1."""
    rng = np.random.default_rng(0)
    rows = []
    for p in range(4):
        for s in range(3):
            base = rng.uniform(0, 1)
            rows += [{"prompt": p, "seed": s, "guidance": "a", "iou": base},
                     {"prompt": p, "seed": s, "guidance": "b", "iou": base + 0.1}]  # fmt: skip
    rows.append({"prompt": 9, "seed": 0, "guidance": "b", "iou": 5.0})  # unpaired: left out
    groups = paired_groups(rows, "iou", "b", "a")
    assert sum(len(v) for v in groups.values()) == 12
    mean, lo, hi = bootstrap_mean(groups)
    assert mean == pytest.approx(0.1) and lo == pytest.approx(0.1) and hi == pytest.approx(0.1)
    assert excludes_zero(lo, hi) and not excludes_zero(-0.1, 0.2)
    assert not excludes_zero(float("nan"), 1.0)
