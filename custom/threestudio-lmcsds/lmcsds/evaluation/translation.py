"""Scores of a translation network against the exact targets of the objects task.

Per split of ``priors/translation_task.py`` (held-out cameras; held-out shape/colour pairs),
against the true target render of every (source image, target class):

- ``delta_e``: per-pixel CIE76 Delta E on the object's pixels (0: the target's colours);
- ``psnr`` and ``ssim`` of the whole image (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5);
- ``target_accuracy``: the object classifier reads the target colour; ``shape_kept`` /
  ``pattern_kept``: it reads the source's shape / pattern (what must not change);
- ``detail_ratio``: band-limited spectral power of the output over the target's (1: as much);
- the paper's own kind, which needs no target: ``r_precision`` (the classifier's colour logits
  restricted to the K target colours pick the caption's) and ``source_delta_e`` (distance to
  the source, where the paper reports LPIPS).

The command trains (``training/translator.py``) on the training split, then scores:

    lmcsds train-translator --out results/translator/lmc-sds-s0 --preset cpu --loss-type lmc-sds
"""

import argparse
import json
from pathlib import Path
from typing import Dict, List

import torch
import torch.nn.functional as F
from torch import Tensor

from ..commands import module_main
from .metrics3d import delta_e_pixel, detail_ratio

PRIOR = "load/lmcsds/priors/objects-if-32"
CORRECTIVE = "load/lmcsds/correctives/objects-if-32.safetensors"
CLASSIFIER = "load/lmcsds/priors/objects-classifier.safetensors"
METRICS = ("delta_e", "psnr", "ssim", "target_accuracy", "shape_kept", "pattern_kept",
           "detail_ratio", "r_precision", "source_delta_e")  # fmt: skip
EVAL_SPLITS = ("heldout-cameras", "heldout-pairs")


def psnr(x: Tensor, y: Tensor) -> Tensor:
    """(N,) peak signal-to-noise ratio in dB of images in [0, 1]."""
    mse = (x - y).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1 / mse.clamp(min=1e-12))


def ssim(x: Tensor, y: Tensor, window: int = 11, sigma: float = 1.5) -> Tensor:
    """(N,) structural similarity of images in [0, 1] (Wang et al. 2004), Gaussian-weighted
    local statistics without padding, averaged over pixels and channels."""
    c1, c2 = 0.01**2, 0.03**2
    g = torch.exp(-((torch.arange(window) - window // 2) ** 2) / (2 * sigma**2)).to(x)
    g = (g / g.sum())[:, None] * (g / g.sum())[None, :]
    k = g.expand(x.shape[1], 1, window, window)

    def blur(a: Tensor) -> Tensor:
        return F.conv2d(a, k, groups=x.shape[1])

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1)


@torch.no_grad()
def translation_scores(
    output: Tensor, target: Tensor, source: Tensor, mask: Tensor, target_class: Tensor,
    source_labels: Tensor, classifier,
) -> Dict[str, float]:  # fmt: skip
    """Means over N rows; images in [-1, 1] (N, 3, H, W), mask (N, 1, H, W) in [0, 1],
    ``source_labels`` (N, 3) shape, colour, pattern indices of the source object."""
    from ..priors.objects3d import COLOURS
    from ..priors.translation_task import TARGET_COLOURS

    out01, tgt01, src01 = [(a.clamp(-1, 1) + 1) / 2 for a in (output, target, source)]
    chunks = [classifier(output[i : i + 512].clamp(-1, 1)) for i in range(0, len(output), 512)]
    logits = {k: torch.cat([c[k] for c in chunks]) for k in ("shape", "colour", "pattern")}
    colour_ids = torch.tensor([list(COLOURS).index(c) for c in TARGET_COLOURS])
    true_colour = colour_ids[target_class]
    m = mask[:, 0]
    return {
        "delta_e": delta_e_pixel(out01, tgt01, m),
        "psnr": psnr(out01, tgt01).mean().item(),
        "ssim": ssim(out01, tgt01).mean().item(),
        "target_accuracy": (logits["colour"].argmax(1) == true_colour).float().mean().item(),
        "shape_kept": (logits["shape"].argmax(1) == source_labels[:, 0]).float().mean().item(),
        "pattern_kept": (logits["pattern"].argmax(1) == source_labels[:, 2]).float().mean().item(),
        "detail_ratio": detail_ratio(out01, tgt01, resolution=output.shape[-1]),
        "r_precision": (logits["colour"][:, colour_ids].argmax(1) == target_class)
        .float().mean().item(),
        "source_delta_e": delta_e_pixel(out01, src01, m),
    }  # fmt: skip


@torch.no_grad()
def evaluate(net, data, classifier, splits=EVAL_SPLITS, batch: int = 256) -> Dict[str, dict]:
    """split -> scores of ``net`` (None: the identity, i.e. the source itself) on that split."""
    from ..priors.translation_task import class_condition

    table = torch.tensor([s.labels for s in data.specs])
    result = {}
    for split in splits:
        pairs = data.pairs(split)
        src, tgt, mask = data.batch(pairs)
        if net is None:
            out = src
        else:
            out = torch.cat([net(src[i : i + batch], class_condition(pairs[i : i + batch, 1]))
                             for i in range(0, len(pairs), batch)])  # fmt: skip
        labels = table[data.spec[pairs[:, 0]]]
        result[split] = translation_scores(out, tgt, src, mask, pairs[:, 1], labels, classifier)
        result[split]["rows"] = len(pairs)
        objects = {}  # per source object: the unit of the comparison's intervals
        for o in data.spec[pairs[:, 0]].unique().tolist():
            r = data.spec[pairs[:, 0]] == o
            objects[data.specs[o].caption()] = translation_scores(
                out[r], tgt[r], src[r], mask[r], pairs[r, 1], labels[r], classifier
            )
        result[split]["objects"] = objects
    return result


def compare_runs(root: Path, reference: str = "lmc-sds") -> str:
    """Markdown tables of every ``<loss>-s<seed>/scores.json`` under ``root``: per split the
    mean of each metric over source objects and seeds with its 95% interval (two-level
    bootstrap: objects, then seeds), and each loss minus ``reference`` paired per object and
    seed; a difference is claimed only where its interval excludes 0."""
    import re

    from .stats import bootstrap_mean, excludes_zero, paired_groups

    runs = []
    for path in sorted(root.glob("*-s*/scores.json")):
        m = re.fullmatch(r"(.+)-s(\d+)", path.parent.name)
        if m:
            runs.append((m.group(1), int(m.group(2)), json.loads(path.read_text())))
    if not runs:
        raise FileNotFoundError(f"no <loss>-s<seed>/scores.json under {root}")
    losses = list(dict.fromkeys(loss for loss, _, _ in runs))
    lines = [f"# Translation networks against exact targets ({root})", ""]
    for split in EVAL_SPLITS:
        rows = [dict(prompt=obj, seed=seed, guidance=loss, **values)
                for loss, seed, scores in runs
                for obj, values in scores[split]["objects"].items()]  # fmt: skip
        lines += [f"## {split}", "", "| loss | seeds | " + " | ".join(METRICS) + " |",
                  "|---" * (len(METRICS) + 2) + "|"]  # fmt: skip
        for loss in losses:
            seeds = sorted({seed for lo, seed, _ in runs if lo == loss})
            cells = []
            for metric in METRICS:
                groups: Dict[str, List[float]] = {}
                for r in rows:
                    if r["guidance"] == loss:
                        groups.setdefault(r["prompt"], []).append(r[metric])
                mean, lo, hi = bootstrap_mean(groups)
                cells.append(f"{mean:.3f} [{lo:.3f}, {hi:.3f}]")
            lines.append(f"| {loss} | {len(seeds)} | " + " | ".join(cells) + " |")
        if reference in losses and len(losses) > 1:
            lines += ["", f"Paired differences, loss minus {reference} (same object and seed); "
                      "**bold**: the interval excludes 0.", "",
                      "| loss | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 1) + "|"]  # fmt: skip
            for loss in losses:
                if loss == reference:
                    continue
                cells = []
                for metric in METRICS:
                    mean, lo, hi = bootstrap_mean(paired_groups(rows, metric, loss, reference))
                    cell = f"{mean:+.3f} [{lo:+.3f}, {hi:+.3f}]"
                    cells.append(f"**{cell}**" if excludes_zero(lo, hi) else cell)
                lines.append(f"| {loss} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def write_scores(scores: Dict[str, dict], out: Path, title: str) -> None:
    """scores.json and scores.md in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "scores.json").write_text(json.dumps(scores, indent=1))
    lines = [f"# {title}", "", "| split | rows | " + " | ".join(METRICS) + " |",
             "|---" * (len(METRICS) + 2) + "|"]  # fmt: skip
    for split, s in scores.items():
        lines.append(f"| {split} | {s['rows']} | " + " | ".join(f"{s[m]:.3f}" for m in METRICS)
                     + " |")  # fmt: skip
    (out / "scores.md").write_text("\n".join(lines) + "\n")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..core.lmc_sds import LOSS_TYPES
    from ..training.translator import PRESETS

    parser.add_argument("--out", required=True, help="run folder (checkpoints, samples, scores)")
    parser.add_argument(
        "--preset",
        default="cpu",
        choices=sorted(PRESETS),
        help="paper: supplementary A's settings; cpu: small network, 3000 steps",
    )
    parser.add_argument(
        "--loss-type",
        default="lmc-sds",
        choices=LOSS_TYPES,
        help="the guidance loss the network is trained with",
    )
    parser.add_argument("--omega", type=float, default=None, help="guidance weight (15)")
    parser.add_argument("--seed", type=int, default=None, help="weights, data order, noise (0)")
    parser.add_argument("--steps", type=int, default=None, help="training steps (the preset's)")
    parser.add_argument("--views", type=int, default=64, help="training renders per object")
    parser.add_argument("--eval-views", type=int, default=16, help="held-out renders per object")
    parser.add_argument("--prior", default=PRIOR, help="IF-shaped prior folder")
    parser.add_argument("--corrective", default=CORRECTIVE, help="bhat_psi (lmc-sds only)")
    parser.add_argument("--classifier", default=CLASSIFIER, help="object classifier weights")
    parser.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="torch device of the prior and the network",
    )
    parser.add_argument("--resume", action="store_true", help="continue from OUT's checkpoint")
    parser.add_argument("--eval-only", action="store_true", help="score OUT's checkpoint only")
    parser.add_argument(
        "--table",
        action="store_true",
        help="only tabulate OUT's <loss>-s<seed> runs into OUT/summary.md",
    )


def config_from_args(args: argparse.Namespace):
    from ..training.translator import PRESETS, TranslatorConfig

    kw = dict(PRESETS[args.preset], out=args.out, loss_type=args.loss_type)
    for name in ("omega", "seed", "steps"):
        if getattr(args, name) is not None:
            kw[name] = getattr(args, name)
    return TranslatorConfig(**kw)


def run(args: argparse.Namespace) -> None:
    from ..priors.objects_classifier import load_object_classifier
    from ..priors.translation_task import load_or_render_translation
    from ..training.translator import Guidance, load_translator, setup, train_translator

    if args.table:
        text = compare_runs(Path(args.out))
        (Path(args.out) / "summary.md").write_text(text)
        print(text)
        return
    for path in (args.prior, args.classifier):
        if not Path(path).exists():
            raise SystemExit(f"{path} is missing: run from the repository root or pass it")
    if not args.eval_only:
        cfg = config_from_args(args)
        data = load_or_render_translation("train", args.views)
        prior, corrective, normalization = setup(args.prior, args.corrective, cfg.loss_type,
                                                 args.device)  # fmt: skip
        guidance = Guidance(prior, corrective, normalization, data, cfg, args.prior)
        train_translator(cfg, data, guidance, resume=args.resume)
    net, cfg, step = load_translator(args.out)
    data = load_or_render_translation("heldout-cameras", args.eval_views)
    scores = evaluate(net, data, load_object_classifier(args.classifier))
    write_scores(scores, Path(args.out), f"{cfg.loss_type}, omega {cfg.omega:g}, seed "
                 f"{cfg.seed}, step {step}")  # fmt: skip
    print((Path(args.out) / "scores.md").read_text())
    print(f"samples: {Path(args.out) / 'samples'}")


def main(argv=None) -> None:
    """Train an image-to-image translation network with a guidance loss (paper Sec. 5.2) on
    the objects task and score it against the exact targets."""
    module_main(main.__doc__, add_arguments, run, argv)


if __name__ == "__main__":
    main()
