"""The paper's 2D experiments (Sec. 5.1) on any IF-shaped prior: LMC-SDS against SDS and the
baselines (NFSD, DDS in editing, multi-step SDS, CSD), each through the same step function.

Synthesis: from 50% grey, per prompt, across losses, guidance weights omega, seeds, and standard
vs fixed epsilon. Editing: from held-out images of one class towards a prompt of another, with
and without the L2 term. Metrics come from ``metrics.py`` against real images of the target
class, with the Fashion-MNIST classifier for faithfulness and features. Output: CSV + markdown
tables, PNG grids and plots.

    python -m lmcsds.evaluation.experiments synthesis --out results/synthesis
    python -m lmcsds.evaluation.experiments edit --out results/editing
"""

import argparse
import csv
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from ..commands import module_main
from ..core.checkpoint import load_corrective  # noqa: E402
from ..core.gradients import NFSD_NEGATIVE_PROMPT  # noqa: E402
from ..core.lmc_sds import StepConfig  # noqa: E402
from ..core.prior import IFPrior  # noqa: E402
from ..core.spectra import radial_power_spectrum  # noqa: E402
from ..core.text import encode_prompts  # noqa: E402
from . import metrics as M  # noqa: E402
from .optimise import OptimConfig, optimise  # noqa: E402

PRIOR = "load/lmcsds/priors/fmnist-if-32"
CORRECTIVE = "load/lmcsds/correctives/fmnist-if-32.safetensors"
CLASSIFIER = "load/lmcsds/priors/fmnist-classifier.safetensors"
LABELS = {"lmc-sds": "LMC-SDS", "sds": "SDS", "cond": "cond only", "nfsd": "NFSD", "dds": "DDS",
          "ms-sds": "MS-SDS", "csd": "CSD"}  # fmt: skip


@dataclass
class Setup:
    """The prior, its corrective, prompts per class, real images per class, classifier."""

    prior: IFPrior
    corrective: object
    prompts: List[str]
    emb_y: torch.Tensor  # (n_classes, 77, d)
    emb_0: torch.Tensor  # (1, 77, d)
    real: Dict[int, torch.Tensor] = field(default_factory=dict)
    classifier: Optional[torch.nn.Module] = None
    normalization: str = "global"  # Eq. 10 statistics of the corrective
    labels: List[int] = field(default_factory=list)  # classifier label of each prompt
    clip: Optional[Callable] = None  # optional CLIP score / R-precision
    lpips: Optional[Callable] = None  # optional LPIPS to the source (editing)
    emb_neg: Optional[torch.Tensor] = None  # (1, 77, d) NFSD's negative prompt


def _prior_and_corrective(prior_path: str, corrective_path: str):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    prior = IFPrior.from_pretrained(prior_path, device=device, half_precision=device == "cuda")
    corrective, normalization = None, "global"
    if Path(corrective_path).exists():
        corrective, meta = load_corrective(
            corrective_path, prior.prior_id, prior.resolution, device
        )
        normalization = meta.normalization
    return prior, corrective, normalization


def prompt_setup(
    prior_path: str, corrective_path: str, prompts: List[str], clip_weights: Optional[str] = None
) -> Setup:
    """Any IF prior (e.g. DeepFloyd/IF-I-XL-v1.0 on a GPU) with free-form prompts: no real
    reference images; CLIP and LPIPS metrics when available locally."""
    from .optional_metrics import clip_scorer, lpips_distance

    prior, corrective, normalization = _prior_and_corrective(prior_path, corrective_path)
    emb = encode_prompts(prior_path, list(prompts) + ["", NFSD_NEGATIVE_PROMPT], prior.device,
                         prior.dtype)  # fmt: skip
    return Setup(
        prior,
        corrective,
        list(prompts),
        emb[:-2],
        emb[-2:-1],
        normalization=normalization,
        clip=clip_scorer(clip_weights),
        lpips=lpips_distance(),
        emb_neg=emb[-1:],
    )


def fashion_mnist_setup(
    prior_path=PRIOR,
    corrective_path=CORRECTIVE,
    classifier_path=CLASSIFIER,
    classes: Sequence[int] = tuple(range(10)),
    real_per_class: int = 200,
    prompts: Optional[List[str]] = None,
) -> Setup:
    """The Fashion-MNIST prior scored per class; ``prompts`` (one per entry of ``classes``)
    replace the class prompts, e.g. other wordings of the same classes."""
    from ..priors.fmnist_classifier import load_classifier
    from ..priors.fmnist_data import class_prompt, load_split

    prior, corrective, normalization = _prior_and_corrective(prior_path, corrective_path)
    if prompts is not None and len(prompts) != len(classes):
        raise ValueError(f"{len(prompts)} prompts for {len(classes)} class labels")
    prompts = list(prompts) if prompts is not None else [class_prompt(c) for c in classes]
    emb = encode_prompts(prior_path, prompts + ["", NFSD_NEGATIVE_PROMPT])
    x, y = load_split("test")
    real = {i: x[y == c][:real_per_class] for i, c in enumerate(classes)}  # by prompt index
    classifier = load_classifier(classifier_path) if Path(classifier_path).exists() else None
    return Setup(
        prior,
        corrective,
        prompts,
        emb[:-2],
        emb[-2:-1],
        real,
        classifier,
        normalization,
        labels=list(classes),
        emb_neg=emb[-1:],
    )


@dataclass
class Run:
    loss: str
    omega: float
    fixed_noise: bool = False
    l2_weight: float = 0.0

    @property
    def name(self) -> str:
        extra = (" fixed-eps" if self.fixed_noise else "") + (
            f" L2 {self.l2_weight}" if self.l2_weight else ""
        )
        return f"{LABELS[self.loss]} w={self.omega:g}{extra}"


def run_grid(
    setup: Setup,
    runs: Sequence[Run],
    init: torch.Tensor,
    targets: torch.Tensor,
    cfg: OptimConfig,
    seed: int = 0,
    sources: Optional[torch.Tensor] = None,
    stats: Optional[Dict[str, dict]] = None,
) -> Dict[str, torch.Tensor]:
    """Optimise ``init`` (N, 3, S, S) towards class ``targets`` (N,) once per run; dds edits
    ``sources`` (N,) (prompt indices of the images ``init``), the others need none. ``stats``
    receives each run's UNet rows per image."""
    results = {}
    total = cfg.steps * len(runs)
    with tqdm(total=total, desc="optimising", unit="step") as bar:
        for run in runs:
            if run.loss == "lmc-sds" and setup.corrective is None:
                raise FileNotFoundError(f"{CORRECTIVE}: LMC-SDS needs the prior's corrective")
            if run.loss == "dds" and sources is None:
                raise ValueError("dds edits a source image: run `experiments edit`")
            step_cfg = StepConfig(run.loss, run.omega, setup.normalization)
            run_cfg = OptimConfig(**{**asdict(cfg), "l2_weight": run.l2_weight})
            source = (init, setup.emb_y[sources]) if run.loss == "dds" else None
            run_stats = {}
            results[run.name] = optimise(
                setup.prior, setup.corrective, init, setup.emb_y[targets], setup.emb_0, step_cfg,
                run_cfg, seed=seed, fixed_noise=run.fixed_noise, progress=bar,
                emb_neg=setup.emb_neg, source=source, stats=run_stats,
            )  # fmt: skip
            if stats is not None:
                stats[run.name] = run_stats
    return results


def grid_metrics(
    setup: Setup,
    results: Dict[str, torch.Tensor],
    targets: torch.Tensor,
    sources: Optional[torch.Tensor] = None,
    stats: Optional[Dict[str, dict]] = None,
) -> List[dict]:
    """One row per run: metrics pooled over target classes (each against its own real images),
    and the UNet rows per image of a step where recorded."""
    rows = []
    res = setup.prior.resolution
    labels = torch.tensor(setup.labels)[targets] if setup.labels else targets
    for name, images in results.items():
        images = images.float().cpu()
        small = images
        if small.shape[-1] != res:
            small = torch.nn.functional.interpolate(small, res, mode="bilinear", antialias=True)
        row = {"run": name}
        if setup.real:  # pooled over target classes, each against its own real images
            per_class = []
            for c in targets.unique().tolist():
                sel = targets == c
                per_class.append(
                    M.image_metrics(small[sel], setup.real[c], setup.classifier, labels[sel])
                )
            row.update({k: sum(p[k] for p in per_class) / len(per_class) for k in per_class[0]})
        else:  # no reference images: absolute statistics
            row["hf_energy"] = M.high_frequency_energy(small).mean().item()
            row["clipped_fraction"] = M.clipped_fraction(small)
            row["std"] = small.flatten(1).std(1).mean().item()
        if setup.clip is not None:
            row.update(setup.clip(images, [setup.prompts[t] for t in targets.tolist()]))
        if sources is not None and setup.classifier is not None:
            row["feature_distance_to_source"] = (
                M.feature_distance(
                    setup.classifier.features(small), setup.classifier.features(sources)
                )
                .mean()
                .item()
            )
        if sources is not None and setup.lpips is not None:
            row["lpips_to_source"] = setup.lpips(images, sources).mean().item()
        if stats is not None and name in stats:
            row["unet_rows"] = stats[name]["unet_rows"]
        rows.append(row)
    return rows


def write_tables(rows: List[dict], out: Path, title: str) -> None:
    keys = list(rows[0])
    with open(out / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, keys)
        writer.writeheader()
        writer.writerows(rows)

    def fmt(v) -> str:  # small values in scientific notation, not as 0.000
        if not isinstance(v, float):
            return str(v)
        return f"{v:.2e}" if 0 < abs(v) < 0.01 else f"{v:.3f}"

    lines = [f"# {title}", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(r[k]) for k in keys) + " |" for r in rows]
    (out / "metrics.md").write_text("\n".join(lines) + "\n")


def save_grid(
    results: Dict[str, torch.Tensor],
    real: Optional[torch.Tensor],
    path: Path,
    columns: int,
    col_titles: Optional[List[str]] = None,
) -> None:
    """One row per run (first ``columns`` images), plus a row of real images if given."""
    rows = list(results.items()) + ([("real", real)] if real is not None else [])
    fig, axes = plt.subplots(
        len(rows), columns, figsize=(1.1 * columns + 1.6, 1.15 * len(rows)), squeeze=False
    )
    for r, (name, imgs) in enumerate(rows):
        for c in range(columns):
            ax = axes[r, c]
            ax.set_xticks([]), ax.set_yticks([])
            if c < len(imgs):
                ax.imshow((imgs[c].permute(1, 2, 0).cpu().numpy() * 0.5 + 0.5).clip(0, 1))
            if c == 0:
                ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=7)
            if r == 0 and col_titles:
                ax.set_title(col_titles[c], fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_statistics(
    setup: Setup, results: Dict[str, torch.Tensor], targets: torch.Tensor, out: Path
) -> None:
    """Radially averaged spectra and vertical-derivative histograms against real images."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    freqs = torch.arange(1, setup.prior.resolution // 2 + 1)
    centers = torch.linspace(-M.DERIVATIVE_RANGE, M.DERIVATIVE_RANGE, M.DERIVATIVE_BINS)
    if setup.real:
        real = torch.cat([setup.real[c] for c in targets.unique().tolist()])
        a1.loglog(freqs, radial_power_spectrum(real).mean(0), "k-", lw=2, label="real")
        a2.semilogy(centers, M.vertical_derivative_histogram(real) + 1e-6, "k-", lw=2, label="real")
    for name, images in results.items():
        small = images.float().cpu()
        if images.shape[-1] != setup.prior.resolution:
            small = torch.nn.functional.interpolate(
                images, setup.prior.resolution, mode="bilinear", antialias=True
            )
        a1.loglog(freqs, radial_power_spectrum(small).mean(0), label=name, lw=1)
        a2.semilogy(centers, M.vertical_derivative_histogram(small) + 1e-6, label=name, lw=1)
    a1.set_xlabel("frequency (cycles / image)"), a1.set_ylabel("power")
    a1.set_title("radially averaged power spectrum")
    a2.set_xlabel("vertical derivative"), a2.set_ylabel("frequency")
    a2.set_title("vertical-derivative histogram")
    a2.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out / "statistics.png", dpi=110)
    plt.close(fig)


def plot_vs_omega(rows: List[dict], runs: Sequence[Run], out: Path) -> None:
    keys = [
        k
        for k in ("accuracy", "relative_hf_energy", "clipped_fraction", "feature_mmd")
        if k in rows[0]
    ]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.4 * len(keys), 3), squeeze=False)
    by_name = {r["run"]: r for r in rows}
    series = {}
    for run in runs:
        series.setdefault((run.loss, run.fixed_noise, run.l2_weight), []).append(run)
    for ax, key in zip(axes[0], keys):
        for (loss, fixed, l2), members in series.items():
            xs = [m.omega for m in members]
            ys = [by_name[m.name][key] for m in members]
            label = LABELS[loss] + (" fixed-eps" if fixed else "") + (f" L2 {l2}" if l2 else "")
            ax.plot(xs, ys, "o-", label=label)
        ax.set_xscale("log"), ax.set_xlabel("omega"), ax.set_title(key)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "vs_omega.png", dpi=110)
    plt.close(fig)


def synthesis(
    setup: Setup,
    out: Path,
    losses=("sds", "lmc-sds"),
    omegas=(2, 5, 10, 20, 50),
    seeds: int = 4,
    fixed: Sequence[bool] = (False,),
    cfg: OptimConfig = OptimConfig(),
    size: Optional[int] = None,
    seed: int = 0,
) -> List[dict]:
    """Images from 50% grey, ``seeds`` per prompt; ``seed`` picks the noise (t, eps) streams."""
    out.mkdir(parents=True, exist_ok=True)
    n_classes = len(setup.prompts)
    size = size or setup.prior.resolution
    targets = torch.arange(n_classes).repeat_interleave(seeds)  # class-major, `seeds` per class
    init = torch.zeros(len(targets), 3, size, size)  # 50% grey
    runs = [Run(loss, float(w), f) for loss in losses for f in fixed for w in omegas]
    start, stats = time.time(), {}
    results = run_grid(setup, runs, init, targets, cfg, seed, stats=stats)
    rows = grid_metrics(setup, results, targets, stats=stats)
    write_tables(rows, out, f"Synthesis: {n_classes} prompts x {seeds} seeds, {cfg.steps} steps")
    first = {k: v[::seeds] for k, v in results.items()}  # seed 0 of each class
    real = None
    if setup.real:
        real = torch.stack([setup.real[c][0] for c in range(n_classes)])
        if size != setup.prior.resolution:
            real = torch.nn.functional.interpolate(real, size, mode="bilinear")
    save_grid(
        first,
        real,
        out / "grid.png",
        n_classes,
        [p.replace("a photo of ", "") for p in setup.prompts],
    )
    plot_statistics(setup, results, targets, out)
    plot_vs_omega(rows, runs, out)
    torch.save({k: v.half() for k, v in results.items()}, out / "images.pt")
    (out / "config.json").write_text(json.dumps({
        "losses": list(losses), "omegas": list(omegas), "seeds": seeds, "seed": seed,
        "fixed": list(fixed),
        "size": size, "optim": asdict(cfg), "seconds": time.time() - start,
    }, indent=2))  # fmt: skip
    return rows


def plot_editing(rows: List[dict], runs: Sequence[Run], out: Path) -> None:
    """The paper's Fig. 5 (right): accuracy against distance to the source, one line per loss
    (and L2 weight) over omega."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    by_name = {r["run"]: r for r in rows}
    series: Dict[tuple, List[Run]] = {}
    for run in runs:
        series.setdefault((run.loss, run.l2_weight), []).append(run)
    colours = {loss: f"C{i}" for i, loss in enumerate(dict.fromkeys(r.loss for r in runs))}
    for (loss, l2), members in series.items():
        xs = [by_name[m.name]["feature_distance_to_source"] for m in members]
        ys = [by_name[m.name]["accuracy"] for m in members]
        label = LABELS[loss] + (f" L2 {l2:g}" if l2 else "")
        ax.plot(xs, ys, "s--" if l2 else "o-", color=colours[loss], label=label)
        for x, y, m in zip(xs, ys, members):
            ax.annotate(f"{m.omega:g}", (x, y), fontsize=6, xytext=(3, 2),
                        textcoords="offset points")  # fmt: skip
    ax.set_xlabel("feature distance to source (lower: closer)")
    ax.set_ylabel("target-class accuracy")
    ax.set_title("editing; numbers: omega", fontsize=8)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out / "distance_vs_accuracy.png", dpi=110)
    plt.close(fig)


def editing(
    setup: Setup,
    out: Path,
    losses=("sds", "lmc-sds"),
    omegas: Sequence[float] = (15.0,),
    l2_weights=(0.0, 0.1),
    per_class: int = 2,
    cfg: OptimConfig = OptimConfig(
        steps=500, lr=0.02, lr_end=0.016, decay_steps=500, whole_steps=200
    ),
    seed: int = 0,
) -> List[dict]:
    """Held-out images of class c edited towards class (c + 5) % 10 (e.g. t-shirt -> sandal)."""
    out.mkdir(parents=True, exist_ok=True)
    n = len(setup.prompts)
    sources = torch.cat([setup.real[c][-per_class:] for c in range(n)])  # not the metric refs
    src_class = torch.arange(n).repeat_interleave(per_class)
    targets = (src_class + n // 2) % n
    runs = [Run(loss, float(w), False, l2) for loss in losses for w in omegas for l2 in l2_weights]
    stats = {}
    results = run_grid(setup, runs, sources, targets, cfg, seed, src_class, stats)
    rows = grid_metrics(setup, results, targets, sources, stats)
    write_tables(
        rows,
        out,
        f"Editing: {len(sources)} held-out images, omega {', '.join(f'{w:g}' for w in omegas)}, "
        f"{cfg.steps} steps",
    )
    save_grid(
        {"source": sources[::per_class], **{k: v[::per_class] for k, v in results.items()}},
        None,
        out / "grid.png",
        n,
    )
    if "accuracy" in rows[0]:
        plot_editing(rows, runs, out)
    return rows


def read_prompts(path: str) -> Tuple[List[str], Optional[List[int]]]:
    """Prompts of a --prompts file, one per line, each optionally "LABEL | prompt" with LABEL a
    Fashion-MNIST class (0-9 or its name); labels must be given on every line or on none."""
    from ..priors.fmnist_data import CLASS_NAMES

    names = {n: i for i, n in enumerate(CLASS_NAMES)}
    lines = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"--prompts {path}: no prompts in the file")
    split = [line.split("|", 1) for line in lines]
    labelled = [len(parts) == 2 for parts in split]
    if not any(labelled):
        return lines, None
    if not all(labelled):
        bad = lines[labelled.index(False)]
        raise ValueError(f"--prompts {path}: line {bad!r} has no 'LABEL | ' while others do")
    prompts, labels = [], []
    for label, prompt in split:
        label = label.strip().lower()
        if label.isdigit() and int(label) < len(CLASS_NAMES):
            labels.append(int(label))
        elif label in names:
            labels.append(names[label])
        else:
            raise ValueError(
                f"--prompts {path}: unknown class label {label!r}; use 0-9 or one of "
                f"{', '.join(CLASS_NAMES)}"
            )
        prompts.append(prompt.strip())
    return prompts, labels


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=["synthesis", "edit"], help="which experiment")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--prior", default=PRIOR, help="IF-shaped prior folder or hub id")
    parser.add_argument("--corrective", default=CORRECTIVE, help="corrective of that prior")
    parser.add_argument("--classifier", default=CLASSIFIER, help="metric classifier")
    parser.add_argument("--losses", default="sds,lmc-sds",
                        help="comma-separated loss types: lmc-sds, sds, cond, nfsd, ms-sds, csd; "
                        "edit also dds")  # fmt: skip
    parser.add_argument("--omegas", default=None,
                        help="comma-separated omegas (synthesis: 2,5,10,20,50; edit: 15)")  # fmt: skip
    parser.add_argument("--seeds", type=int, default=4, help="images per prompt and setting")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the noise (t, eps)")
    parser.add_argument("--fixed", default="false", choices=["false", "true", "both"],
                        help="fixed eps (Sec. 4) off, on or both")  # fmt: skip
    parser.add_argument("--steps", type=int, default=500, help="optimisation steps")
    parser.add_argument("--size", type=int, default=None, help="> prior resolution: patches")
    parser.add_argument(
        "--prompts",
        help="text file, one prompt per line: any prior (e.g. DeepFloyd IF on a GPU), scored "
        "with CLIP where available; 'LABEL | prompt' lines (LABEL a Fashion-MNIST class, 0-9 or "
        "its name) are scored like the class prompts, against that class",
    )
    parser.add_argument("--clip-weights", help="local open_clip ViT-B/16 weights (optional)")


def main(argv=None) -> None:
    module_main(__doc__, add_arguments, run, argv)


def run(args: argparse.Namespace) -> None:
    prompts, labels = read_prompts(args.prompts) if args.prompts else (None, None)
    if labels is not None:
        setup = fashion_mnist_setup(
            args.prior, args.corrective, args.classifier, labels, prompts=prompts
        )
    elif prompts is not None:
        setup = prompt_setup(args.prior, args.corrective, prompts, args.clip_weights)
    else:
        setup = fashion_mnist_setup(args.prior, args.corrective, args.classifier)
    losses = args.losses.split(",")
    if args.kind == "synthesis":
        scale = args.steps / 500  # keep the paper's schedule proportions at fewer steps
        cfg = OptimConfig(
            steps=args.steps, decay_steps=round(300 * scale), whole_steps=round(150 * scale)
        )
        fixed = {"false": (False,), "true": (True,), "both": (False, True)}[args.fixed]
        synthesis(
            setup,
            Path(args.out),
            losses,
            [float(w) for w in (args.omegas or "2,5,10,20,50").split(",")],
            args.seeds,
            fixed,
            cfg,
            args.size,
            args.seed,
        )
    else:
        cfg = OptimConfig(
            steps=args.steps,
            lr=0.02,
            lr_end=0.016,
            decay_steps=args.steps,
            whole_steps=round(0.4 * args.steps),
        )
        omegas = [float(w) for w in (args.omegas or "15").split(",")]
        editing(setup, Path(args.out), losses, omegas, cfg=cfg, seed=args.seed)
    print((Path(args.out) / "metrics.md").read_text())


if __name__ == "__main__":
    main()
