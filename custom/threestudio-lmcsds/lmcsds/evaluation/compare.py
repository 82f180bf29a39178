"""Text-to-3D side by side: threestudio's built-in SDS against LMC-SDS, same prompt, seed, steps.

Each run is threestudio's own ``launch.py --train`` on a config derived from one base config
(only the guidance differs), in its own folder under ``OUT/runs``. Then:

- ``renders.png``: the final test renders, one row per run, views evenly spaced;
- ``strip.mp4``: the test videos side by side;
- ``curves.png``: loss_sds and the gradient norm per step;
- ``metrics.csv`` / ``metrics.md``: per run, the mean loss_sds and gradient norm (how the
  guidance balances against the regularisers), the non-finite steps, and scores of the renders.

A prompt that names one of the procedural objects ("a photo of a red checkered mug", the
bundled CPU prior's captions) has a ground truth: the pictures get its row first, a supervised
ceiling run is added (``supervised``: the same pipeline trained from the true renders), and the
scores are the 3D benchmark's against the object (``lmcsds bench3d``, docs/bench3d.md). Any
other prompt has none: the scores are the 2D harness's (Fashion-MNIST prompts) or image
statistics. The metric classifier defaults to the one trained beside the config's prior.

Runs whose final checkpoint exists are reused, so an interrupted comparison continues where it
stopped (``--force`` re-runs). Runs: ``sds-builtin`` (``deep-floyd-guidance`` at its default
scale), ``lmc-sds-w<omega>`` for each omega, and, when the prior's resolution is not the 64 px
that the built-in guidance resizes to, ``sds-matched``: the same SDS (threestudio's weighting,
omega = scale + 1, no 1/omega) through this package's guidance at the prior's own resolution.

    LMCSDS_DEVICE=cpu python -m lmcsds compare --threestudio build/threestudio \\
        --config configs/lmcsds-dreamfusion-cpu.yaml --prompt "a photo of a red striped mug" --steps 600
"""

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from . import metrics as M  # noqa: E402

BUILTIN_GUIDANCE = "deep-floyd-guidance"
BUILTIN_RESOLUTION = 64  # threestudio's deep-floyd-guidance resizes every render to 64x64
# guidance settings the built-in guidance shares with ours (everything else is ours only)
SHARED_KEYS = (
    "pretrained_model_name_or_path",
    "half_precision_weights",
    "enable_channels_last_format",
    "min_step_percent",
    "max_step_percent",
    "view_dependent_prompting",
    "max_items_eval",
)


@dataclass
class RunSpec:
    label: str
    guidance_type: str
    guidance: dict
    note: str = ""
    prompt_processor: dict = field(default_factory=dict)  # overrides, e.g. use_perp_neg


@dataclass
class Run:
    spec: RunSpec
    trial: Path
    frames: List[np.ndarray] = field(default_factory=list)  # final test renders, RGB uint8
    log: Dict[str, List[float]] = field(default_factory=dict)  # per-step training curves


def run_specs(
    guidance: dict,
    omegas: Sequence[float],
    prior_resolution: Optional[int],
    builtin_scale: Optional[float] = None,
) -> List[RunSpec]:
    """The runs of one comparison, from the base config's ``system.guidance`` section."""
    shared = {k: guidance[k] for k in SHARED_KEYS if k in guidance}
    builtin = dict(shared)
    if builtin_scale is not None:
        builtin["guidance_scale"] = builtin_scale
    specs = [RunSpec("sds-builtin", BUILTIN_GUIDANCE, builtin, "threestudio deep-floyd-guidance")]
    if prior_resolution is not None and prior_resolution != BUILTIN_RESOLUTION:
        scale = 20.0 if builtin_scale is None else builtin_scale  # the built-in's default
        matched = dict(guidance, loss_type="sds", guidance_scale=scale + 1.0)
        matched.update(scale_by_omega=False, weighting_strategy="sds", fixed_noise=False)
        specs.append(
            RunSpec("sds-matched", guidance_type="lmc-sds-deep-floyd-guidance", guidance=matched,
                    note=f"SDS as the built-in, at the prior's {prior_resolution} px")
        )  # fmt: skip
    for omega in omegas:
        specs.append(
            RunSpec(f"lmc-sds-w{omega:g}", "lmc-sds-deep-floyd-guidance",
                    dict(guidance, loss_type="lmc-sds", guidance_scale=float(omega)),
                    f"LMC-SDS, omega {omega:g}")
        )  # fmt: skip
    return specs


def prior_resolution(run_dir: Path, name_or_path: str) -> Optional[int]:
    """The UNet's sample_size from a local prior folder; None for hub ids (not downloaded)."""
    for base in (run_dir, Path.cwd()):
        config = base / name_or_path / "unet" / "config.json"
        if config.is_file():
            return int(json.loads(config.read_text())["sample_size"])
    return None


def check_threestudio_dir(run_dir: Path) -> Path:
    """The absolute threestudio folder; a clear error when it holds no launch.py."""
    run_dir = run_dir.resolve()
    if not (run_dir / "launch.py").is_file():
        raise FileNotFoundError(
            f"--threestudio {run_dir}: no launch.py there; pass the threestudio folder the "
            f"extension is linked into (scripts/setup.sh prints it)"
        )
    return run_dir


def write_config(base_config: Path, spec: RunSpec, out: Path) -> Path:
    """The base config with its guidance replaced by the run's (interpolations kept)."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(base_config)
    cfg.system.guidance_type = spec.guidance_type
    cfg.system.guidance = OmegaConf.create(spec.guidance)
    for key, value in spec.prompt_processor.items():
        cfg.system.prompt_processor[key] = value
    out.parent.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, out)
    return out


def steps_done(trial: Path) -> int:
    ckpt = trial / "ckpts" / "last.ckpt"
    if not ckpt.is_file():
        return 0
    return int(torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"])


def _logged_steps(trial: Path) -> int:
    return sum(1 for _ in metric_rows(trial))


def launch(
    run_dir: Path,
    config: Path,
    overrides: List[str],
    log_path: Path,
    steps: int,
    label: str,
    trial: Path,
    threads: Optional[int] = None,
    position: Optional[int] = None,
) -> None:
    """threestudio's launch.py --train in ``run_dir``; a progress bar follows its CSV log.
    ``threads`` sets the run's CPU threads (OMP_NUM_THREADS), ``position`` its bar's line.
    The run starts from an empty ``trial`` folder: an unfinished attempt's logs are not its own."""
    shutil.rmtree(trial, ignore_errors=True)
    env = dict(os.environ)
    if not torch.cuda.is_available():
        env.setdefault("LMCSDS_DEVICE", "cpu")
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, "launch.py", "--config", str(config.resolve()), "--train", *overrides]
    bar = tqdm(total=steps, desc=label, unit="step", position=position, leave=position is None)
    with open(log_path, "w") as log, bar:
        log.write(" ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, cwd=run_dir, env=env, stdout=log, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            time.sleep(2.0)
            bar.update(min(_logged_steps(trial), steps) - bar.n)
        bar.update(min(_logged_steps(trial), steps) - bar.n)
    if proc.returncode != 0:
        tail = log_path.read_text()[-3000:]
        raise RuntimeError(f"run {label} failed (exit {proc.returncode}); log {log_path}:\n{tail}")


def in_slots(jobs: int, work, items) -> None:
    """``work(slot, *item)`` for every item, ``jobs`` at a time (slot: the progress bar's line)."""
    if jobs <= 1:
        for item in items:
            work(0, *item)
        return
    from concurrent.futures import ThreadPoolExecutor
    from queue import Queue

    slots: Queue = Queue()
    for j in range(jobs):
        slots.put(j)

    def in_slot(item):
        j = slots.get()
        try:
            work(j, *item)
        finally:
            slots.put(j)

    with ThreadPoolExecutor(jobs) as pool:
        for f in [pool.submit(in_slot, item) for item in items]:
            f.result()


def metric_rows(trial: Path, key: str = "train/loss_sds"):
    """The rows of a trial's CSV logs in which ``key`` was logged."""
    for path in sorted(trial.glob("csv_logs/version_*/metrics.csv")):
        with open(path) as f:
            for row in csv.DictReader(f):
                if row.get(key):
                    yield row


def training_curves(trial: Path) -> Dict[str, List[float]]:
    """step, loss_sds and grad_norm per logged training step (resumed runs: last value wins)."""
    by_step: Dict[int, dict] = {}
    for row in metric_rows(trial):
        by_step[int(row["step"])] = row
    steps = sorted(by_step)
    return {
        "step": [float(s) for s in steps],
        "loss_sds": [float(by_step[s]["train/loss_sds"]) for s in steps],
        "grad_norm": [float(by_step[s].get("train/grad_norm") or "nan") for s in steps],
    }


def final_test_frames(trial: Path) -> List[np.ndarray]:
    """RGB part of each frame of the last test pass (threestudio saves rgb | normal | opacity)."""
    import imageio.v2 as imageio

    tests = sorted(
        (p for p in (trial / "save").glob("it*-test") if p.is_dir()),
        key=lambda p: int(p.name[2:].split("-")[0]),
    )
    if not tests:
        raise FileNotFoundError(f"{trial / 'save'}: no it<N>-test folder (did the run finish?)")
    frames = sorted(tests[-1].glob("*.png"), key=lambda p: int(p.stem))
    images = [imageio.imread(p)[..., :3] for p in frames]
    return [img[:, : img.shape[0]] for img in images]


def frames_to_tensor(frames: List[np.ndarray], size: int) -> torch.Tensor:
    """uint8 HWC frames -> (N, 3, size, size) in [-1, 1] (the prior's range)."""
    x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    if x.shape[-1] != size:
        x = torch.nn.functional.interpolate(x, size, mode="bilinear", antialias=True)
    return x


def foreground_fraction(images: torch.Tensor, threshold: float = -0.9) -> float:
    """Fraction of pixels brighter than the black backdrop (in [-1, 1]): 0 for an empty scene,
    whatever a classifier makes of a black image."""
    return (images.max(dim=1).values > threshold).float().mean().item()


def _fashion_mnist_class(prompt: str) -> Optional[int]:
    from ..priors.fmnist_data import CLASS_NAMES, TEMPLATES, class_prompt

    for c in range(len(CLASS_NAMES)):
        if any(prompt.strip().lower() == class_prompt(c, k) for k in range(len(TEMPLATES))):
            return c
    return None


def render_metrics(
    runs: List[Run], prompt: str, size: int, classifier_path: Optional[str]
) -> List[dict]:
    """The 2D harness's metrics on the final renders; against real Fashion-MNIST images of the
    prompt's class when the prompt is one of the bundled prior's, absolute statistics otherwise."""
    cls = _fashion_mnist_class(prompt)
    real, classifier = None, None
    if cls is not None:
        from ..priors.fmnist_data import load_split

        x, y = load_split("test")
        real = x[y == cls][:200]
        if classifier_path and Path(classifier_path).is_file():
            from ..priors.fmnist_classifier import load_classifier

            classifier = load_classifier(classifier_path)
    rows = []
    for run in runs:
        images = frames_to_tensor(run.frames, size)
        row = {"run": run.spec.label, "foreground_fraction": foreground_fraction(images)}
        if real is not None:
            row["foreground_fraction_real"] = foreground_fraction(real)
            target = torch.full((len(images),), cls)
            row.update(M.image_metrics(images, real, classifier, target))
        else:
            row["hf_energy"] = M.high_frequency_energy(images).mean().item()
            row["clipped_fraction"] = M.clipped_fraction(images)
            row["std"] = images.flatten(1).std(1).mean().item()
        row.update(training_stats(run))
        rows.append(row)
    return rows


def save_renders(runs: List[Run], path: Path, columns: int = 8) -> None:
    n = len(runs[0].frames)
    picks = np.linspace(0, n - 1, min(columns, n)).round().astype(int)
    fig, axes = plt.subplots(
        len(runs), len(picks), figsize=(1.3 * len(picks) + 1.8, 1.35 * len(runs)), squeeze=False
    )
    for r, run in enumerate(runs):
        for c, i in enumerate(picks):
            ax = axes[r, c]
            ax.imshow(run.frames[i]), ax.set_xticks([]), ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(run.spec.label, rotation=0, ha="right", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save_strip(runs: List[Run], path: Path, fps: int = 12) -> None:
    """The test videos side by side (frames upscaled to at least 128 px)."""
    import imageio.v2 as imageio

    scale = max(1, 128 // runs[0].frames[0].shape[0])
    n = min(len(run.frames) for run in runs)
    video = [
        np.concatenate([run.frames[i] for run in runs], axis=1).repeat(scale, 0).repeat(scale, 1)
        for i in range(n)
    ]
    imageio.mimsave(path, video, fps=fps)


def save_curves(runs: List[Run], path: Path, smooth: int = 20) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for key, ax in zip(("loss_sds", "grad_norm"), axes):
        for run in runs:
            steps, values = np.array(run.log["step"]), np.array(run.log[key])
            (line,) = ax.plot(steps, values, alpha=0.2, lw=0.8)
            if len(values) >= smooth:
                kernel = np.ones(smooth) / smooth
                ax.plot(steps[smooth - 1 :], np.convolve(values, kernel, "valid"),
                        color=line.get_color(), label=run.spec.label)  # fmt: skip
            else:
                line.set_label(run.spec.label)
        ax.set_yscale("log"), ax.set_xlabel("step"), ax.set_title(key)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# the 3D benchmark's scores shown for an object prompt (docs/bench3d.md, "The metrics")
OBJECT_METRICS = ("iou", "chamfer", "part_recall", "delta_e_pixel", "pattern_contrast",
                  "detail_ratio", "shape_acc", "colour_acc", "pattern_acc", "faces_front",
                  "janus_rate", "clipped", "empty")  # fmt: skip


def object_of(prompt: str):
    """The procedural object a prompt names ("a photo of a red striped mug"), else None."""
    from ..priors.objects3d import parse_caption

    try:
        return parse_caption(prompt)
    except ValueError:
        return None


def default_classifier(run_dir: Path, prior: str) -> Optional[str]:
    """The metric classifier trained beside a bundled prior: ``<name>-classifier.safetensors``
    next to ``<name>-if-<resolution>``; None when there is none (e.g. DeepFloyd IF)."""
    name = Path(prior).name.split("-if-")[0]
    for base in (run_dir, Path.cwd()):
        path = base / Path(prior).parent / f"{name}-classifier.safetensors"
        if "-if-" in Path(prior).name and path.is_file():
            return str(path)
    return None


def check_reusable(trial: Path, prompt: str, seed: int) -> None:
    """A finished run is reused only if it was trained on the same prompt and seed."""
    from omegaconf import OmegaConf

    parsed = trial / "configs" / "parsed.yaml"
    if not parsed.is_file():
        return
    cfg = OmegaConf.load(parsed)
    was = (cfg.system.prompt_processor.prompt, cfg.seed)
    if was != (prompt, seed):
        raise ValueError(f"{trial} holds a run of prompt {was[0]!r}, seed {was[1]}, not "
                         f"{prompt!r}, seed {seed}: pass another --out, or --force to retrain")  # fmt: skip


def object_metrics(runs: List[Run], spec, truth, classifier_path: str, views: int) -> List[dict]:
    """The 3D benchmark's scores of each run against the true object."""
    from ..priors.objects_classifier import load_object_classifier
    from .bench3d.scoring import score_run

    classifier = load_object_classifier(classifier_path)
    rows = []
    for run in runs:
        scores = score_run(run.trial, spec, truth, classifier)
        rows.append({"run": run.spec.label, **{k: scores[k] for k in OBJECT_METRICS}})
    return rows


def training_stats(run: Run) -> dict:
    """Mean loss_sds and gradient norm (the guidance against the regularisers), non-finite steps."""
    losses = np.array(run.log["loss_sds"])
    finite = np.isfinite(losses)
    return {"mean_loss_sds": float(np.mean(losses[finite])) if finite.any() else np.nan,
            "mean_grad_norm": float(np.nanmean(run.log["grad_norm"])),
            "non_finite_steps": int((~finite).sum())}  # fmt: skip


def compare(
    run_dir: Path,
    base_config: Path,
    prompt: str,
    out: Path,
    steps: int,
    omegas: Sequence[float] = (10.0, 20.0),
    seed: int = 0,
    builtin_scale: Optional[float] = None,
    overrides: Sequence[str] = (),
    classifier: Optional[str] = None,
    force: bool = False,
    ceiling: bool = True,
    matched: bool = True,
    jobs: int = 1,
    views: int = 24,
) -> List[dict]:
    """Train the runs, then write the pictures and the metric table. An object prompt of the
    procedural-object prior gets the true object's row, the supervised ceiling (``ceiling``)
    and the 3D benchmark's scores; any other prompt image statistics only. ``classifier``:
    default the one trained beside the config's prior."""
    from omegaconf import OmegaConf

    run_dir, out = check_threestudio_dir(run_dir), out.resolve()
    base = OmegaConf.load(base_config)
    guidance = OmegaConf.to_container(base.system.guidance, resolve=False)
    prior = guidance["pretrained_model_name_or_path"]
    resolution = prior_resolution(run_dir, prior)
    specs = run_specs(guidance, omegas, resolution, builtin_scale)
    if not matched:
        specs = [s for s in specs if s.label != "sds-matched"]
    classifier = classifier or default_classifier(run_dir, prior)
    obj = object_of(prompt)
    extra = []
    if obj is None:
        print(f"no ground truth for {prompt!r}: only captions of the procedural objects "
              f"('a photo of a <colour> [striped|checkered] <shape>') have one; showing the "
              f"renders and image statistics")  # fmt: skip
    else:
        from .bench3d.runs import supervised_spec

        if ceiling:
            specs = [supervised_spec(), *specs]
        extra = [f"data.n_test_views={views + 1}"]  # threestudio's orbit repeats its first view
    (out / "configs").mkdir(parents=True, exist_ok=True)
    (out / "logs").mkdir(exist_ok=True)

    def trial_of(spec: RunSpec) -> Path:
        return out / "runs" / "compare" / spec.label

    def train(slot: int, spec: RunSpec) -> None:
        config = write_config(base_config, spec, out / "configs" / f"{spec.label}.yaml")
        common = [
            f"exp_root_dir={out / 'runs'}", "name=compare", f"tag={spec.label}",
            "use_timestamp=false", f"seed={seed}", f"trainer.max_steps={steps}",
            f"system.prompt_processor.prompt={prompt}", *extra, *overrides,
        ]  # fmt: skip
        if jobs == 1:
            print(f"== {spec.label}: {spec.note}")
        launch(run_dir, config, common, out / "logs" / f"{spec.label}.log", steps, spec.label,
               trial_of(spec), threads=max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None,
               position=slot if jobs > 1 else None)  # fmt: skip
        if obj is not None:  # the density grid for the scores, while the other runs train
            from .bench3d.scoring import density_field

            density_field(trial_of(spec), 64)

    todo = [(s,) for s in specs if force or steps_done(trial_of(s)) < steps]
    # the built-in works at 64 px, where a step costs the most: start it first
    todo.sort(key=lambda item: item[0].guidance_type != BUILTIN_GUIDANCE)
    for spec in specs:
        if (spec,) not in todo:
            check_reusable(trial_of(spec), prompt, seed)
    for spec in specs:
        if (spec,) not in todo:
            print(f"== {spec.label}: reusing the finished run in {trial_of(spec)}")
    in_slots(jobs, train, todo)
    runs = [Run(s, trial_of(s), final_test_frames(trial_of(s)), training_curves(trial_of(s)))
            for s in specs]  # fmt: skip

    title = f"Text-to-3D: {prompt!r}, {steps} steps, seed {seed}"
    if obj is None:
        save_renders(runs, out / "renders.png")
        save_strip(runs, out / "strip.mp4")
        rows = render_metrics(runs, prompt, resolution or BUILTIN_RESOLUTION, classifier)
    else:
        from .bench3d.report import save_renders as save_with_truth
        from .bench3d.report import view_picks
        from .bench3d.scoring import final_test_views
        from .bench3d.truth import ground_truth

        data = OmegaConf.merge(base, OmegaConf.from_dotlist([o for o in overrides if "=" in o]))
        truth = ground_truth(obj, views, data.data)
        picks = view_picks(views)
        rows = [("ground truth", truth.rgb[picks])]
        rows += [(r.spec.label, final_test_views(r.trial, views)[0][picks]) for r in runs]
        save_with_truth(title, rows, out / "renders.png", views)
        frames = (truth.rgb.permute(0, 2, 3, 1).clamp(0, 1) * 255).round().byte().numpy()
        truth_run = Run(RunSpec("ground truth", "", {}), out, list(frames))
        save_strip([truth_run] + runs, out / "strip.mp4")
        if classifier is None:
            raise FileNotFoundError(f"no object classifier beside {prior}: pass --classifier")
        rows = object_metrics(runs, obj, truth, classifier, views)
        for row, run in zip(rows, runs):
            row.update(training_stats(run))
    save_curves(runs, out / "curves.png")
    from .experiments import write_tables

    write_tables(rows, out, title)
    notes = [f"- `{r.spec.label}`: {r.spec.note}" for r in runs]
    if obj is not None:
        notes.append("- scores: the 3D benchmark's against the true object (docs/bench3d.md); "
                     "one seed, so no interval: `lmcsds bench3d` gives them")  # fmt: skip
    with open(out / "metrics.md", "a") as f:
        f.write("\n" + "\n".join(notes) + "\n")
    print((out / "metrics.md").read_text())
    print(f"wrote {out}/renders.png, strip.mp4, curves.png, metrics.md; the test videos are "
          f"{out}/runs/compare/<run>/save/it{steps}-test.mp4")  # fmt: skip
    return rows


def add_arguments(p) -> None:
    p.add_argument("--threestudio", default=".", help="threestudio folder with the extension")
    p.add_argument("--config", required=True, help="base config (LMC-SDS); guidance swapped")
    p.add_argument("--prompt", required=True, help="text prompt of every run")
    p.add_argument("--out", required=True, help="output folder (finished runs are reused)")
    p.add_argument("--steps", type=int, default=600, help="training steps per run")
    p.add_argument("--omegas", default="10,20", help="LMC-SDS guidance weights (paper's omega)")
    p.add_argument("--seed", type=int, default=0, help="threestudio seed of every run")
    p.add_argument(
        "--builtin-scale",
        type=float,
        default=None,
        help="built-in guidance_scale (default: the built-in's own default, 20)",
    )
    p.add_argument(
        "--classifier",
        default=None,
        help="metric classifier (default: the one trained beside the config's prior)",
    )
    p.add_argument(
        "--no-ceiling", action="store_true", help="object prompts: skip the supervised ceiling run"
    )
    p.add_argument(
        "--no-matched",
        action="store_true",
        help="skip SDS at the prior's own resolution (sds-matched)",
    )
    p.add_argument("--jobs", type=int, default=1, help="runs trained at once, sharing the cores")
    p.add_argument("--views", type=int, default=24, help="object prompts: orbit views scored")
    p.add_argument("--force", action="store_true", help="re-run finished runs")
    p.add_argument("overrides", nargs="*", help="extra threestudio overrides, key=value")  # fmt: skip


def run(args) -> None:
    compare(
        Path(args.threestudio), Path(args.config), args.prompt, Path(args.out), args.steps,
        [float(w) for w in args.omegas.split(",") if w], args.seed, args.builtin_scale,
        args.overrides, args.classifier, args.force, not args.no_ceiling, not args.no_matched,
        args.jobs, args.views,
    )  # fmt: skip
