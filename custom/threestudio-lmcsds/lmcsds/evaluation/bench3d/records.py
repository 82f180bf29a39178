"""A finished run's record: its scores (``scores.json``) and the views the renders figure shows
(``views.png``), written as soon as the run ends. The record alone counts as finished, so a
benchmark's records can be committed without the checkpoints and renders they were scored
from, and the benchmark continued on another machine or re-reported from them."""

import json
import shutil
from pathlib import Path

import numpy as np
import torch

from ...core.atomic import atomic_write
from ...training import acceptance as A
from .. import metrics3d as M3
from ..check_corrective import guidance_traces
from ..compare import steps_done
from .report import view_picks
from .scoring import DETAIL_MEASURE, detail_scores, final_test_views, non_finite_steps, score_run

SCORES, VIEWS = "scores.json", "views.png"


def run_finished(trial: Path, steps: int) -> bool:
    """The run reached ``steps``: its record says so, or (before it is scored) its checkpoint."""
    record = trial / SCORES
    if record.is_file() and json.loads(record.read_text()).get("steps") == steps:
        return True
    return steps_done(trial) >= steps


def write_record(trial: Path, spec, truth, classifier, steps: int) -> dict:
    """Score the finished run in ``trial`` and save its record (the views first: a record with
    scores is complete). The wall time comes from ``wall_time.json`` less any ``paused_s``."""
    write_views(trial, len(truth.mask))
    row = score_run(trial, spec, truth, classifier)
    wall = trial / "wall_time.json"
    timing = json.loads(wall.read_text()) if wall.is_file() else {}
    row.update(non_finite=non_finite_steps(trial), steps=steps,
               wall_s=timing.get("wall_s", float("nan")) - timing.get("paused_s", 0.0))  # fmt: skip
    row.update(corrective_norms(trial))
    atomic_write(trial / SCORES, lambda tmp: Path(tmp).write_text(json.dumps(row)))
    return row


def write_views(trial: Path, views: int) -> None:
    """``views.png``: the last test pass's ``view_picks(views)`` views side by side."""
    import imageio.v2 as imageio

    rgb = final_test_views(trial, views)[0][view_picks(views)]
    strip = torch.cat(list(rgb), dim=-1).permute(1, 2, 0)  # (H, C W, 3)
    strip = (strip.clamp(0, 1) * 255).round().byte().numpy()
    atomic_write(trial / VIEWS, lambda tmp: imageio.imwrite(tmp, strip, format="png"))


def corrective_norms(trial: Path) -> dict:
    """An LMC-SDS run's ||g_lmc|| over the whole run, by the acceptance check's rules
    (``training/acceptance.py``): median ratio to ||g_cond||, growth, peak over median, and
    ``runaway`` (1: a limit broken). Empty for guidances without a g_lmc term."""
    traces = guidance_traces(trial)
    if not traces["g_lmc"]:
        return {}
    s = A.trace_summary(**traces)
    return {"g_lmc_ratio": s["ratio"], "g_lmc_growth": s["growth"], "g_lmc_spike": s["spike"],
            "runaway": float(A.ran_away(s, A.Limits()))}  # fmt: skip


def read_views(trial: Path, views: int) -> torch.Tensor:
    """The record's ``view_picks(views)`` views, (C, 3, H, W) in [0, 1]."""
    import imageio.v2 as imageio

    strip = imageio.imread(trial / VIEWS)[..., :3].astype(np.float32) / 255.0
    count = len(view_picks(views))
    if strip.shape[1] != count * strip.shape[0]:
        raise ValueError(f"{trial / VIEWS}: {strip.shape[1] // strip.shape[0]} views, expected "
                         f"{count} (was it recorded with --views {views}?)")  # fmt: skip
    rgb = torch.from_numpy(strip).permute(2, 0, 1)  # (3, H, C W)
    return torch.stack(rgb.chunk(count, dim=-1))


def current_record(trial: Path, spec, truth) -> dict:
    """The record's scores, its detail re-scored from ``views.png`` first (and saved) if it
    was measured another way (``scoring.DETAIL_MEASURE``): records committed before a change
    of the measure stay comparable with new ones without their renders."""
    row = json.loads((trial / SCORES).read_text())
    if row.get("detail_measure") == DETAIL_MEASURE:
        return row
    views = len(truth.mask)
    true_views = truth.rgb.roll(M3.turn_shift(row["turn_deg"], views), 0)[view_picks(views)]
    row.update(detail_scores(read_views(trial, views), true_views, spec))
    atomic_write(trial / SCORES, lambda tmp: Path(tmp).write_text(json.dumps(row)))
    return row


def copy_empty_record(coarse: Path, fine: Path, steps: int) -> dict:
    """The mesh stage of a coarse asset that covers no pixel (occupancy level inf: no surface
    to convert) is as empty: its record is the coarse one (the same scores and views) at the
    mesh stage's ``steps``, marked, so that its (prompt, seed) cell stays complete. Wall time
    0: nothing was trained."""
    row = json.loads((coarse / SCORES).read_text())
    if row.get("occupancy_level") != float("inf"):
        raise ValueError(f"{coarse}: the coarse asset covers pixels (occupancy level "
                         f"{row.get('occupancy_level')}): refine it")  # fmt: skip
    row.update(steps=steps, wall_s=0.0, non_finite=0, refined="no: the coarse asset is empty")
    fine.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(coarse / VIEWS, fine / VIEWS)
    atomic_write(fine / SCORES, lambda tmp: Path(tmp).write_text(json.dumps(row)))
    return row
