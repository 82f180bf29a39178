"""Text-to-3D against ground truth: guidances run through threestudio's ``launch.py`` on the
procedural-object prior, and each final asset scored against the true object.

For every prompt (objects of ``lmcsds.priors.objects3d``, some with captions never used in
training) and every guidance, one run of the base config (only the guidance differs), then:

- silhouettes: IoU of the final test renders' opacity with the object's masks over ``views``
  orbit views, at the best rotation about z (reported) and at the prompted front (shift 0);
- geometry: IoU of the density field's occupied part (``OCCUPIED_DENSITY``) with the object's
  occupancy, and the Chamfer distance between their surfaces, after that rotation;
- colour: CIE76 Delta E per pixel and of the mean foreground colour, chroma, clipped pixels;
- detail: high-frequency energy relative to the object's renders of the same views;
- the object classifier on the renders: shape / colour / pattern accuracy and, for the
  asymmetric shapes, view accuracy and the Janus rate (non-front cameras called "front");
- failures (empty scene, non-finite steps), wall time, and the diversity of fixed-eps seeds.

Writes ``renders-<prompt>.png`` (ground truth in the first row), ``per_prompt.md/csv``,
``summary.md/csv``, ``summary.png`` and ``COMMAND.md``. Finished runs and their scores are
reused, so an interrupted benchmark continues (``--force`` re-runs).

    LMCSDS_DEVICE=cpu python -m lmcsds bench3d --threestudio build/threestudio \\
        --config configs/lmcsds-dreamfusion-cpu.yaml --out results/bench3d --quick
"""

import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..core.gradients import NFSD_NEGATIVE_PROMPT
from ..priors.cameras import VIEWS, orbit_cameras, view_index
from ..priors.objects3d import ASYMMETRIC, ObjectSpec, parse_caption, sdf
from ..priors.objects_data import HELD_OUT
from ..priors.sdf_render import render
from . import metrics3d as M3
from .compare import (
    BUILTIN_GUIDANCE,
    RunSpec,
    _metric_rows,
    _steps_done,
    check_threestudio_dir,
    launch,
    write_config,
)

PROMPTS = [  # primitives, asymmetric objects, and captions never used in training
    ObjectSpec("cube", "red", "plain"),
    ObjectSpec("sphere", "blue", "striped"),
    ObjectSpec("cylinder", "yellow", "checkered"),
    ObjectSpec("mug", "green", "striped"),
    ObjectSpec("chair", "purple", "plain"),
    ObjectSpec("snowman", "orange", "plain"),
    ObjectSpec("cone", "blue", "striped"),  # held out
    ObjectSpec("mug", "red", "checkered"),  # held out
]
QUICK_PROMPTS = [ObjectSpec("cube", "red", "plain"), ObjectSpec("mug", "green", "striped")]
CSD_NEGATIVE_PROMPT = "oversaturated color, ugly, tiling, low quality, noisy"  # its IF config
QUICK_GUIDANCES = ["sds-builtin", "sds-w21", "lmc-sds-w20"]
FIXED_EPS = "lmc-sds-fixed-w20"
# A point is occupied where 0.1 world units of its density (the objects' thinnest parts: the
# mug's wall 0.08, the chair's legs 0.12) stop half the light, as the silhouettes' opacity 0.5.
OCCUPIED_LENGTH = 0.1
OCCUPIED_DENSITY = float(np.log(2.0) / OCCUPIED_LENGTH)


@dataclass
class BenchRun:
    spec: RunSpec
    seed: int

    @property
    def name(self) -> str:
        return f"{self.spec.label}-s{self.seed}"


def guidance_runs(
    guidance: dict,
    fixed_seeds: int = 3,
    fixed_omega: float = 20.0,
    seeds: int = 1,
    steps: int = 400,
) -> List[BenchRun]:
    """Built-in SDS at its default scale and at DreamFusion's 100 (64 px renders), SDS at the
    prior's resolution with the same two weights, LMC-SDS at omega 10 and 20 (each over
    ``seeds`` seeds), and LMC-SDS with fixed eps over ``fixed_seeds`` seeds; then the
    baselines at their published settings: NFSD (omega 7.5, its negative prompt), multi-step
    SDS (5 steps, omega 21), CSD (omega 10, the public DeepFloyd config's negative prompt with
    its weight annealed 0 -> 1 over the first half of ``steps``), and LMC-SDS omega 10 with
    Perp-Neg prompts. DDS needs a source image, which text-to-3D has not. ``guidance`` is the
    base config's guidance section."""
    shared = {k: guidance[k] for k in ("pretrained_model_name_or_path", "half_precision_weights",
                                       "min_step_percent", "max_step_percent",
                                       "view_dependent_prompting") if k in guidance}  # fmt: skip
    sds = dict(guidance, loss_type="sds", scale_by_omega=False, weighting_strategy="sds",
               fixed_noise=False)  # fmt: skip
    lmc = dict(guidance, loss_type="lmc-sds", fixed_noise=False)
    specs = [
        RunSpec("sds-builtin", BUILTIN_GUIDANCE, dict(shared), "built-in, scale 20 (omega 21), 64 px"),
        RunSpec("sds-builtin-s100", BUILTIN_GUIDANCE, dict(shared, guidance_scale=100.0),
                "built-in, DreamFusion's scale 100, 64 px"),
        RunSpec("sds-w21", "lmc-sds-deep-floyd-guidance", dict(sds, guidance_scale=21.0),
                "SDS as the built-in (omega 21) at the prior's resolution"),
        RunSpec("sds-w101", "lmc-sds-deep-floyd-guidance", dict(sds, guidance_scale=101.0),
                "SDS at omega 101 (scale 100) at the prior's resolution"),
        RunSpec("lmc-sds-w10", "lmc-sds-deep-floyd-guidance", dict(lmc, guidance_scale=10.0),
                "LMC-SDS, omega 10"),
        RunSpec("lmc-sds-w20", "lmc-sds-deep-floyd-guidance", dict(lmc, guidance_scale=20.0),
                "LMC-SDS, omega 20"),
    ]  # fmt: skip
    lmcsds = "lmc-sds-deep-floyd-guidance"
    specs += [
        RunSpec("nfsd-w7.5", lmcsds, dict(guidance, loss_type="nfsd", guidance_scale=7.5,
                fixed_noise=False, negative_prompt=NFSD_NEGATIVE_PROMPT),
                "NFSD, its nominal omega 7.5 and negative prompt"),
        RunSpec("ms-sds-w21", lmcsds, dict(sds, loss_type="ms-sds", guidance_scale=21.0,
                ms_sds_steps=5), "multi-step SDS, 5 DDIM steps, omega 21"),
        RunSpec("csd-w10", lmcsds, dict(guidance, loss_type="csd", guidance_scale=10.0,
                fixed_noise=False, negative_prompt=CSD_NEGATIVE_PROMPT,
                csd_negative_weight=[0, 0.0, 1.0, steps // 2]),
                "CSD, omega 10, negative prompt weighted 0 -> 1 over the first half"),
        RunSpec("lmc-sds-w10-perpneg", lmcsds, dict(lmc, guidance_scale=10.0),
                "LMC-SDS, omega 10, Perp-Neg prompts", {"use_perp_neg": True}),
        RunSpec("csd-public", lmcsds, dict(guidance, loss_type="csd", guidance_scale=1.0,
                fixed_noise=False, negative_prompt=CSD_NEGATIVE_PROMPT, grad_normalize=True,
                weighting_strategy="uniform", csd_negative_weight=[0, 0.0, 1.0, steps // 2]),
                "CSD as its public DeepFloyd config: omega_1 1, w = 1, normalised gradient, "
                "Perp-Neg", {"use_perp_neg": True}),
    ]  # fmt: skip
    runs = [BenchRun(s, seed) for s in specs for seed in range(seeds)]
    fixed = RunSpec(FIXED_EPS, "lmc-sds-deep-floyd-guidance",
                    dict(lmc, guidance_scale=fixed_omega, fixed_noise=True),
                    f"LMC-SDS, omega {fixed_omega:g}, fixed eps (one run per seed)")  # fmt: skip
    runs += [BenchRun(fixed, s) for s in range(fixed_seeds)]
    return runs


def slug(spec: ObjectSpec) -> str:
    """Folder name of an object, e.g. "green-striped-mug"."""
    return "-".join([spec.colour] + [spec.pattern] * (spec.pattern != "plain") + [spec.shape])


# --- ground truth ---------------------------------------------------------------------------


@dataclass
class Truth:
    rgb: torch.Tensor  # (V, 3, H, W) in [0, 1]
    mask: torch.Tensor  # (V, H, W)
    view: torch.Tensor  # (V,) threestudio view label of each orbit camera


EVAL_DEFAULTS = dict(eval_elevation_deg=15.0, eval_camera_distance=1.5, eval_fovy_deg=70.0,
                     eval_height=512)  # random-camera-datamodule's defaults  # fmt: skip


def ground_truth(spec: ObjectSpec, views: int, data_cfg) -> Truth:
    """The object under threestudio's test cameras (light at the camera, "diffuse" shading)."""
    e = {k: data_cfg.get(k, v) for k, v in EVAL_DEFAULTS.items()}
    cams = orbit_cameras(views, e["eval_elevation_deg"], e["eval_camera_distance"],
                         e["eval_fovy_deg"])  # fmt: skip
    out = render(spec, cams, resolution=int(e["eval_height"]), supersample=4)
    return Truth(out.rgb, out.mask[:, 0], view_index(cams.elevation_deg, cams.azimuth_deg))


def occupancy(spec: ObjectSpec, resolution: int, radius: float, turn_deg: float) -> torch.Tensor:
    """The object's occupancy on the asset's density grid, turned by ``turn_deg`` about z."""
    from .asset_density import grid_points

    p = grid_points(resolution, radius)
    a = torch.deg2rad(torch.tensor(-turn_deg))
    rot = torch.tensor([[a.cos(), -a.sin(), 0.0], [a.sin(), a.cos(), 0.0], [0.0, 0.0, 1.0]])
    return (sdf(spec.shape, p @ rot.T) < 0).reshape(resolution, resolution, resolution)


def surface_points(field: np.ndarray, level: float, radius: float, limit: int = 20000):
    """Marching-cubes vertices of ``field`` at ``level`` in world units (at most ``limit``)."""
    import mcubes

    if not (field.min() < level < field.max()):
        return torch.zeros(0, 3)
    verts, _ = mcubes.marching_cubes(field, level)
    res = field.shape[0]
    pts = torch.from_numpy((verts + 0.5) / res * 2 - 1).float() * radius
    if len(pts) > limit:
        pts = pts[torch.randperm(len(pts), generator=torch.Generator().manual_seed(0))[:limit]]
    return pts


# --- one run's final asset ------------------------------------------------------------------


def final_test_views(trial: Path, views: int) -> tuple:
    """(rgb (V, 3, H, W) in [0, 1], opacity (V, H, W)) of the last test pass; threestudio saves
    rgb | normal | opacity side by side and its test orbit repeats the first view last."""
    import imageio.v2 as imageio

    tests = sorted((p for p in (trial / "save").glob("it*-test") if p.is_dir()),
                   key=lambda p: int(p.name[2:].split("-")[0]))  # fmt: skip
    if not tests:
        raise FileNotFoundError(f"{trial / 'save'}: no it<N>-test folder (did the run finish?)")
    frames = sorted(tests[-1].glob("*.png"), key=lambda p: int(p.stem))[:views]
    if len(frames) < views:
        raise ValueError(f"{tests[-1]}: {len(frames)} test views, need {views} (data.n_test_views)")
    images = np.stack([imageio.imread(p) for p in frames]).astype(np.float32) / 255.0
    h = images.shape[1]
    rgb = torch.from_numpy(images[:, :, :h, :3]).permute(0, 3, 1, 2)
    opacity = torch.from_numpy(images[:, :, -h:, :3].mean(-1))
    return rgb, opacity


def density_field(trial: Path, resolution: int) -> dict:
    """The run's density grid (cached beside the run)."""
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


def score_run(
    trial: Path, spec: ObjectSpec, truth: Truth, classifier, grid: int = 64
) -> Dict[str, float]:
    """Every score of one finished run against the true object."""
    from ..priors.objects_classifier import predict

    views = len(truth.mask)
    rgb, mask = final_test_views(trial, views)
    if rgb.shape[-1] != truth.rgb.shape[-1]:
        raise ValueError(f"{trial}: renders are {rgb.shape[-1]} px, ground truth "
                         f"{truth.rgb.shape[-1]} px (data.eval_height)")  # fmt: skip
    shift, ious = M3.best_azimuth_shift(mask, truth.mask)
    t_rgb, t_mask = truth.rgb.roll(shift, 0), truth.mask.roll(shift, 0)
    area, true_area = (mask > 0.5).float().mean().item(), (truth.mask > 0.5).float().mean().item()
    row = {
        "iou": ious[shift].item(),
        "turn_deg": shift * 360.0 / views,
        "iou_front": ious[0].item(),
        "area_ratio": area / true_area,
        "empty": float(area < 0.1 * true_area),
    }
    field = density_field(trial, grid)
    occupied = torch.from_numpy(field["density"] > OCCUPIED_DENSITY)
    true_occ = occupancy(spec, grid, float(field["radius"]), row["turn_deg"])
    row["volume_iou"] = M3.volume_iou(occupied, true_occ)
    row["chamfer"] = M3.chamfer_distance(
        surface_points(field["density"], OCCUPIED_DENSITY, float(field["radius"])),
        surface_points(true_occ.float().numpy(), 0.5, float(field["radius"])),
    )
    row.update(M3.colour_errors(rgb, mask, t_rgb, t_mask))
    row["clipped"] = M3.clipped_fraction_fg(rgb, mask)
    row["clipped_true"] = M3.clipped_fraction_fg(t_rgb, t_mask)
    row["detail_ratio"] = M3.detail_ratio(rgb, t_rgb)
    small = F.interpolate(rgb * 2 - 1, size=32, mode="bilinear", antialias=True)
    pred = predict(classifier, small)
    shape, colour, pattern = spec.labels
    row["shape_acc"] = (pred["shape"] == shape).float().mean().item()
    row["colour_acc"] = (pred["colour"] == colour).float().mean().item()
    row["pattern_acc"] = (pred["pattern"] == pattern).float().mean().item()
    nan = float("nan")
    row["view_acc"], row["janus_rate"] = nan, nan
    if spec.shape in ASYMMETRIC:
        j = M3.janus_scores(pred["view"], truth.view, VIEWS.index("front"))
        row["view_acc"], row["janus_rate"] = j["view_accuracy"], j["janus_rate"]
    row["features"] = classifier.features(small).mean(0).tolist()  # for diversity
    return row


def non_finite_steps(trial: Path) -> int:
    values = [float(r["train/loss_sds"]) for r in _metric_rows(trial)]
    return int(sum(not np.isfinite(v) for v in values))


# --- the benchmark ------------------------------------------------------------------------


METRICS = ["iou", "iou_front", "turn_deg", "volume_iou", "chamfer", "delta_e_mean",
           "delta_e_pixel", "chroma", "chroma_true", "clipped", "clipped_true", "detail_ratio", "shape_acc",
           "colour_acc", "pattern_acc", "view_acc", "janus_rate", "empty", "non_finite",
           "wall_s"]  # fmt: skip


def bench3d(
    run_dir: Path,
    base_config: Path,
    out: Path,
    steps: int,
    prompts: Sequence[ObjectSpec] = PROMPTS,
    guidances: Optional[Sequence[str]] = None,
    fixed_seeds: int = 3,
    views: int = 24,
    classifier_path: str = "load/lmcsds/priors/objects-classifier.safetensors",
    overrides: Sequence[str] = (),
    force: bool = False,
    jobs: int = 1,
    seeds: int = 1,
) -> List[dict]:
    from omegaconf import OmegaConf

    from ..priors.objects_classifier import load_object_classifier

    run_dir, out = check_threestudio_dir(run_dir), out.resolve()
    if not Path(classifier_path).is_file():
        raise FileNotFoundError(
            f"--classifier {classifier_path} not found: train it with "
            f"`python -m lmcsds.priors.objects_classifier`"
        )
    classifier = load_object_classifier(classifier_path)
    base = OmegaConf.load(base_config)
    effective = OmegaConf.merge(base, OmegaConf.from_dotlist([o for o in overrides if "=" in o]))
    runs = guidance_runs(OmegaConf.to_container(base.system.guidance, resolve=False), fixed_seeds,
                         seeds=seeds, steps=steps)  # fmt: skip
    if guidances:
        unknown = set(guidances) - {r.spec.label for r in runs}
        if unknown:
            raise ValueError(f"unknown guidance(s) {sorted(unknown)}; choose from "
                             f"{sorted({r.spec.label for r in runs})}")  # fmt: skip
        runs = [r for r in runs if r.spec.label in guidances]
    (out / "configs").mkdir(parents=True, exist_ok=True)
    (out / "logs").mkdir(exist_ok=True)
    configs = {r.spec.label: write_config(base_config, r.spec, out / "configs" / f"{r.spec.label}.yaml")
               for r in runs}  # fmt: skip
    todo = [(spec, run) for spec in prompts for run in runs
            if force or _steps_done(out / "runs" / slug(spec) / run.name) < steps]  # fmt: skip

    def train(job: int, spec: ObjectSpec, run: BenchRun) -> None:
        trial = out / "runs" / slug(spec) / run.name
        common = [
            f"exp_root_dir={out / 'runs'}", f"name={slug(spec)}", f"tag={run.name}",
            "use_timestamp=false", f"seed={run.seed}", f"trainer.max_steps={steps}",
            f"system.prompt_processor.prompt={spec.caption()}",
            f"data.n_test_views={views + 1}", *overrides,
        ]  # fmt: skip
        start = time.time()
        launch(run_dir, configs[run.spec.label], common,
               out / "logs" / f"{slug(spec)}-{run.name}.log", steps, f"{slug(spec)}/{run.name}",
               trial, threads=max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None,
               position=job if jobs > 1 else None)  # fmt: skip
        (trial / "wall_time.json").write_text(
            json.dumps({"wall_s": time.time() - start, "jobs": jobs})
        )
        (trial / "scores.json").unlink(missing_ok=True)

    if jobs > 1:
        from concurrent.futures import ThreadPoolExecutor
        from queue import Queue

        slots: Queue = Queue()
        for j in range(jobs):
            slots.put(j)

        def in_slot(spec, run):
            j = slots.get()
            try:
                train(j, spec, run)
            finally:
                slots.put(j)

        with ThreadPoolExecutor(jobs) as pool:
            for f in [pool.submit(in_slot, spec, run) for spec, run in todo]:
                f.result()
    else:
        for spec, run in todo:
            print(f"== {slug(spec)}/{run.name}: {run.spec.note}")
            train(0, spec, run)

    rows = []
    for spec in prompts:
        truth = ground_truth(spec, views, effective.data)
        finished = []
        for run in runs:
            trial = out / "runs" / slug(spec) / run.name
            scores_path = trial / "scores.json"
            if not scores_path.is_file():
                row = score_run(trial, spec, truth, classifier)
                row["non_finite"] = non_finite_steps(trial)
                wall = trial / "wall_time.json"
                row["wall_s"] = (
                    json.loads(wall.read_text())["wall_s"] if wall.is_file() else float("nan")
                )
                scores_path.write_text(json.dumps(row))
            row = json.loads(scores_path.read_text())
            row.update(prompt=spec.caption(), guidance=run.spec.label, seed=run.seed,
                       held_out=spec in HELD_OUT)  # fmt: skip
            rows.append(row)
            finished.append((run, trial))
        save_renders(spec, truth, finished, out / f"renders-{slug(spec)}.png", views)
    write_results(rows, out, steps, views)
    write_command(out, run_dir, base_config, steps, prompts, guidances, fixed_seeds, views,
                  overrides, jobs, seeds)  # fmt: skip
    return rows


def save_renders(spec, truth: Truth, finished, path: Path, views: int, columns: int = 8) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(columns, views)
    picks = np.linspace(0, views, columns, endpoint=False).astype(int)
    rows = [("ground truth", truth.rgb)] + [
        (run.name, final_test_views(trial, views)[0]) for run, trial in finished
    ]
    fig, axes = plt.subplots(len(rows), columns, figsize=(1.1 * columns + 2.0, 1.15 * len(rows)),
                             squeeze=False)  # fmt: skip
    for r, (label, rgb) in enumerate(rows):
        for c, i in enumerate(picks):
            ax = axes[r, c]
            ax.imshow(rgb[i].permute(1, 2, 0).clamp(0, 1).numpy())
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(f"{i * 360 // views} deg", fontsize=7)
            if c == 0:
                ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)
    held = " (caption never used in training)" if spec in HELD_OUT else ""
    fig.suptitle(f"{spec.caption()}{held}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def diversity(rows: List[dict]) -> Dict[str, float]:
    """Mean pairwise classifier-feature distance between the seeds of one guidance, averaged
    over prompts (only guidances with several seeds)."""
    from .metrics import mean_pairwise_distance

    out: Dict[str, List[float]] = {}
    for g in {r["guidance"] for r in rows}:
        for p in {r["prompt"] for r in rows}:
            feats = [r["features"] for r in rows if r["guidance"] == g and r["prompt"] == p]
            if len(feats) > 1:
                out.setdefault(g, []).append(mean_pairwise_distance(torch.tensor(feats)))
    return {g: float(np.mean(v)) for g, v in out.items()}


def summarise(rows: List[dict]) -> List[dict]:
    """Mean of every metric per guidance over prompts and seeds, plus held-out-caption IoU."""
    div = diversity(rows)
    summary = []
    for g in dict.fromkeys(r["guidance"] for r in rows):
        mine = [r for r in rows if r["guidance"] == g]
        entry = {"guidance": g, "runs": len(mine)}
        for k in METRICS:
            values = np.array([r[k] for r in mine], dtype=float)
            entry[k] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
        held = [r["iou"] for r in mine if r["held_out"]]
        entry["iou_held_out"] = float(np.mean(held)) if held else float("nan")
        entry["diversity"] = div.get(g, float("nan"))
        summary.append(entry)
    return summary


def _table(rows: List[dict], keys: List[str], title: str) -> str:
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = [f"# {title}", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(r.get(k, "")) for k in keys) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_results(rows: List[dict], out: Path, steps: int, views: int) -> None:
    import csv

    keys = ["prompt", "guidance", "seed", "held_out"] + METRICS
    with open(out / "per_prompt.csv", "w", newline="") as f:
        w = csv.DictWriter(f, keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    (out / "per_prompt.md").write_text(
        _table(rows, keys, f"Text-to-3D vs ground truth, per prompt ({steps} steps, {views} views)")
    )
    summary = summarise(rows)
    skeys = ["guidance", "runs", "iou", "iou_held_out", "iou_front", "volume_iou", "chamfer",
             "delta_e_mean", "chroma", "clipped", "detail_ratio", "shape_acc", "colour_acc",
             "pattern_acc", "view_acc", "janus_rate", "empty", "non_finite", "diversity",
             "wall_s"]  # fmt: skip
    with open(out / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, skeys, extrasaction="ignore")
        w.writeheader()
        w.writerows(summary)
    (out / "summary.md").write_text(
        _table(
            summary,
            skeys,
            f"Text-to-3D vs ground truth: mean over {len({r['prompt'] for r in rows})} prompts",
        )
        + "\nchroma of the true objects' renders: "
        + f"{np.nanmean([r['chroma_true'] for r in rows]):.1f}\n"
    )
    plot_summary(summary, out / "summary.png")
    plot_iou_grid(rows, out / "iou.png")


def plot_summary(summary: List[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("iou", "silhouette IoU (best turn)"), ("volume_iou", "volume IoU"),
              ("delta_e_mean", "Delta E of mean colour"), ("clipped", "clipped fraction"),
              ("detail_ratio", "HF energy / truth"), ("janus_rate", "Janus rate (asymmetric)")]  # fmt: skip
    fig, axes = plt.subplots(1, len(panels), figsize=(3.0 * len(panels), 3.2))
    names = [s["guidance"] for s in summary]
    for ax, (key, title) in zip(axes, panels):
        ax.bar(range(len(names)), [s[key] for s in summary], color="C0")
        ax.set_xticks(range(len(names)), names, rotation=70, fontsize=7)
        ax.set_title(title, fontsize=9)
    axes[4].axhline(1.0, color="k", lw=0.8, ls="--")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_iou_grid(rows: List[dict], path: Path) -> None:
    """Silhouette IoU per prompt (rows) and guidance (columns), mean over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    prompts = list(dict.fromkeys(r["prompt"] for r in rows))
    guidances = list(dict.fromkeys(r["guidance"] for r in rows))
    grid = np.array([[np.mean([r["iou"] for r in rows if r["prompt"] == p and r["guidance"] == g]
                               or [np.nan]) for g in guidances] for p in prompts])  # fmt: skip
    fig, ax = plt.subplots(figsize=(0.8 * len(guidances) + 3.4, 0.4 * len(prompts) + 1.9))
    im = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    for (i, j), v in np.ndenumerate(grid):
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                color="white" if v < 0.6 else "black")  # fmt: skip
    labels = [p.replace("a photo of ", "") + (" *" if parse_caption(p) in HELD_OUT else "")
              for p in prompts]  # fmt: skip
    ax.set_yticks(range(len(prompts)), labels, fontsize=8)
    ax.set_xticks(range(len(guidances)), guidances, rotation=60, ha="right", fontsize=8)
    ax.set_title("silhouette IoU vs the true object (* caption never trained on)", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_command(out, run_dir, base_config, steps, prompts, guidances, fixed_seeds, views,
                  overrides, jobs=1, seeds=1) -> None:  # fmt: skip
    cmd = ["LMCSDS_DEVICE=cpu", "python", "-m", "lmcsds", "bench3d", "--threestudio",
           str(run_dir), "--config", str(base_config), "--out", str(out), "--steps", str(steps),
           "--prompts", ";".join(p.caption() for p in prompts), "--fixed-seeds",
           str(fixed_seeds), "--views", str(views)]  # fmt: skip
    if guidances:
        cmd += ["--guidances", ",".join(guidances)]
    if seeds > 1:
        cmd += ["--seeds", str(seeds)]
    if jobs > 1:
        cmd += ["--jobs", str(jobs)]
    cmd += list(overrides)
    (out / "COMMAND.md").write_text(
        "Made with:\n\n    "
        + " ".join(shlex.quote(c) if i > 0 else c for i, c in enumerate(cmd))
        + "\n"
    )


def add_arguments(p) -> None:
    p.add_argument("--threestudio", default=".", help="threestudio folder with the extension")
    p.add_argument("--config", default="configs/lmcsds-dreamfusion-cpu.yaml",
                   help="base config (LMC-SDS on the procedural-object prior); guidance swapped")  # fmt: skip
    p.add_argument("--out", required=True, help="output folder (reused runs are kept there)")
    p.add_argument("--quick", action="store_true",
                   help=f"{len(QUICK_PROMPTS)} prompts x {', '.join(QUICK_GUIDANCES)}")  # fmt: skip
    p.add_argument("--steps", type=int, default=400, help="training steps per run")
    p.add_argument("--prompts", default=None,
                   help="';'-separated captions of procedural objects (default: the 8 of PROMPTS)")  # fmt: skip
    p.add_argument("--guidances", default=None, help="comma-separated subset of the run labels")
    p.add_argument("--fixed-seeds", type=int, default=3, help="seeds of the fixed-eps LMC-SDS run")
    p.add_argument("--seeds", type=int, default=1,
                   help="seeds of every other run (> 1: their spread and diversity too)")  # fmt: skip
    p.add_argument("--views", type=int, default=24, help="orbit views scored per asset")
    p.add_argument("--classifier", default="load/lmcsds/priors/objects-classifier.safetensors",
                   help="procedural-object classifier (shape, colour, pattern, view)")  # fmt: skip
    p.add_argument("--force", action="store_true", help="re-run finished runs")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs trained at once, sharing the CPU cores (2 on a 2-core machine: "
                        "~1.35x the throughput; wall times are then per run under that load)")  # fmt: skip
    p.add_argument("overrides", nargs="*", help="extra threestudio overrides, key=value")


def run(args) -> None:
    prompts = QUICK_PROMPTS if args.quick else PROMPTS
    if args.prompts:
        prompts = [parse_caption(p) for p in args.prompts.split(";") if p.strip()]
    guidances = QUICK_GUIDANCES if args.quick else None
    if args.guidances:
        guidances = [g for g in args.guidances.split(",") if g]
    if args.jobs < 1 or args.seeds < 1:
        raise ValueError(f"--jobs and --seeds must be >= 1, got {args.jobs} and {args.seeds}")
    bench3d(Path(args.threestudio), Path(args.config), Path(args.out), args.steps, prompts,
            guidances, args.fixed_seeds, args.views, args.classifier, args.overrides, args.force,
            args.jobs, args.seeds)  # fmt: skip
