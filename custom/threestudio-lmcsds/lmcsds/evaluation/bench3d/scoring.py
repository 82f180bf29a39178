"""Every score of one finished run against the true object (``metrics3d`` on its files)."""

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ...priors.cameras import VIEWS, rays
from ...priors.objects3d import ASYMMETRIC, ObjectSpec
from .. import metrics3d as M3
from ..compare import metric_rows
from .report import view_picks
from .truth import Truth, occupancy, part_cells, surface_points

EMPTY_AREA = 0.1  # an asset covering less than this share of the object's pixels is empty
# what an empty asset scores on the classifier's metrics (its renders are only the backdrop)
EMPTY_SCORES = {"shape_acc": 0.0, "colour_acc": 0.0, "pattern_acc": 0.0, "view_acc": 0.0,
                "janus_rate": 1.0, "faces_front": 0.0}  # fmt: skip
# how a record's detail_ratio was measured; a record of another is re-scored from its views.png
DETAIL_MEASURE = "interior high-pass at 32 px, the record's views"


def final_test_views(trial: Path, views: int) -> tuple:
    """(rgb (V, 3, H, W) in [0, 1], opacity (V, H, W)) of the last test pass."""
    tests = test_passes(trial)
    if not tests:
        raise FileNotFoundError(f"{trial / 'save'}: no it<N>-test folder (did the run finish?)")
    return test_views(tests[-1], views)


def test_passes(trial: Path) -> list:
    """The trial's ``save/it<N>-test`` folders by step N."""
    return sorted((p for p in (trial / "save").glob("it*-test") if p.is_dir()), key=pass_step)


def pass_step(folder: Path) -> int:
    """N of a test pass folder ``it<N>-test``."""
    return int(folder.name[2:].split("-")[0])


def test_views(folder: Path, views: int) -> tuple:
    """(rgb, opacity) of one test pass; threestudio saves rgb | normal | opacity side by side
    and its test orbit repeats the first view last."""
    import imageio.v2 as imageio

    frames = sorted(folder.glob("*.png"), key=lambda p: int(p.stem))[:views]
    if len(frames) < views:
        raise ValueError(f"{folder}: {len(frames)} test views, need {views} (data.n_test_views)")
    images = np.stack([imageio.imread(p) for p in frames]).astype(np.float32) / 255.0
    h = images.shape[1]
    rgb = torch.from_numpy(images[:, :, :h, :3]).permute(0, 3, 1, 2)
    opacity = torch.from_numpy(images[:, :, -h:, :3].mean(-1))
    return rgb, opacity


def density_field(trial: Path, resolution: int) -> dict:
    """The run's density grid (cached beside the run as ``density-<resolution>.npz``)."""
    cache = trial / f"density-{resolution}.npz"
    if not cache.is_file():
        env = dict(os.environ, LMCSDS_DEVICE=os.environ.get("LMCSDS_DEVICE", "cpu"))
        cmd = [sys.executable, "-m", "lmcsds.evaluation.asset_density", str(trial), str(cache),
               str(resolution)]  # fmt: skip
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"density extraction failed for {trial}:\n{out.stderr[-2000:]}")
    d = np.load(cache)
    return {k: d[k] for k in d.files}


def score_asset(
    rgb: Tensor, mask: Tensor, density: Tensor, radius: float, spec: ObjectSpec, truth: Truth,
    classifier,
) -> Dict[str, float]:  # fmt: skip
    """Every score of an asset (its test renders and density grid) against the object."""
    from ...priors.objects_classifier import predict

    views = len(truth.mask)
    if rgb.shape[-1] != truth.rgb.shape[-1]:
        raise ValueError(f"renders are {rgb.shape[-1]} px, ground truth {truth.rgb.shape[-1]} px "
                         f"(data.eval_height)")  # fmt: skip
    shift, ious = M3.best_turn(mask, truth.mask, rgb, truth.rgb)
    turn = M3.turn_degrees(shift, views)
    t_rgb, t_mask = truth.rgb.roll(shift, 0), truth.mask.roll(shift, 0)
    area = (mask > M3.THRESHOLD).float().mean().item()
    true_area = (truth.mask > M3.THRESHOLD).float().mean().item()
    empty = area < EMPTY_AREA * true_area
    asymmetric = spec.shape in ASYMMETRIC
    nan = float("nan")
    row = {
        "iou": ious[shift].item(),
        "turn_deg": turn,
        "iou_front": ious[0].item(),
        "faces_front": float(abs(turn) <= 45.0) if asymmetric else nan,
        "area_ratio": area / true_area,
        "empty": float(empty),
    }
    # geometry: the level set that matches the asset's own silhouettes, its visible surface
    size = mask.shape[-1]
    o, d = rays(truth.cameras, size, size)
    marched = M3.march(density, radius, o.reshape(-1, 3), d.reshape(-1, 3))
    level = M3.occupancy_level(marched["max_density"], mask)
    occupied = density > level
    grid = density.shape[0]
    row["occupancy_level"] = level
    row["volume_iou"] = M3.volume_iou(occupied, occupancy(spec, grid, radius, turn))
    hit = torch.isfinite(marched["depth"])
    points = o.reshape(-1, 3)[hit] + marched["depth"][hit][:, None] * d.reshape(-1, 3)[hit]
    row["chamfer"] = M3.chamfer_distance(points, surface_points(truth, turn), empty=2 * radius)
    parts = part_cells(spec, grid, radius, turn)
    if parts:
        row.update(M3.part_recall(occupied, parts))
    else:
        row["part_recall"], row["parts_found"] = nan, nan
    # colour, pattern, detail after the turn
    row.update(M3.colour_errors(rgb, mask, t_rgb, t_mask))
    row["clipped"] = M3.clipped_fraction_fg(rgb, mask)
    row["clipped_true"] = M3.clipped_fraction_fg(t_rgb, t_mask)
    picks = view_picks(views)
    row.update(detail_scores(rgb[picks], t_rgb[picks], spec))
    # the object classifier (at the prior's 32 px): shape, colour, pattern, view after the turn
    small = F.interpolate(rgb * 2 - 1, size=32, mode="bilinear", antialias=True)
    pred = predict(classifier, small)
    shape, colour, pattern = spec.labels
    row["shape_acc"] = (pred["shape"] == shape).float().mean().item()
    row["colour_acc"] = (pred["colour"] == colour).float().mean().item()
    row["pattern_acc"] = (pred["pattern"] == pattern).float().mean().item()
    row["view_acc"], row["janus_rate"] = nan, nan
    if asymmetric:
        j = M3.janus_scores(pred["view"], truth.view.roll(shift, 0), VIEWS.index("front"))
        row["view_acc"], row["janus_rate"] = j["view_accuracy"], j["janus_rate"]
    if empty:
        row.update({k: v for k, v in EMPTY_SCORES.items() if not np.isnan(row[k])})
    row["features"] = classifier.features(small).mean(0).tolist()  # for diversity
    return row


def detail_scores(rgb: Tensor, true_rgb: Tensor, spec: ObjectSpec) -> Dict[str, object]:
    """``detail_ratio`` of the record's views (``view_picks``, 8-bit: what ``views.png``
    keeps, so a record can be re-scored from its files alone) against the truth's same views
    after the turn; NaN for a plain object (no pattern to keep: its parts are scored instead)."""
    detail = M3.interior_detail(rgb, true_rgb) if spec.pattern != "plain" else float("nan")
    return {"detail_ratio": detail, "detail_measure": DETAIL_MEASURE}


def score_run(trial: Path, spec: ObjectSpec, truth: Truth, classifier, grid: int = 64) -> dict:
    """``score_asset`` on a finished threestudio trial folder."""
    rgb, mask = final_test_views(trial, len(truth.mask))
    field = density_field(trial, grid)
    density = torch.from_numpy(np.asarray(field["density"], dtype=np.float32))
    try:
        return score_asset(rgb, mask, density, float(field["radius"]), spec, truth, classifier)
    except ValueError as e:
        raise ValueError(f"{trial}: {e}") from None


def non_finite_steps(trial: Path) -> int:
    """Steps with a non-finite loss_sds, a NaN / inf render (``train/non_finite_renders``) or
    a skipped update: ``train/skipped_steps`` is a running count (and Lightning's CSV log
    repeats a metric's last value on later rows), so a step is skipped where it grows."""
    count, skipped = 0, 0.0
    for row in metric_rows(trial):
        now = float(row.get("train/skipped_steps") or 0.0)
        renders = float(row.get("train/non_finite_renders") or 0.0)
        count += (not np.isfinite(float(row["train/loss_sds"]))) or renders != 0.0 or now > skipped
        skipped = max(skipped, now)
    return int(count)
