"""The benchmark's tables and figures: per-run scores, means with 95% intervals (two-level
bootstrap over prompts and seeds), differences to a reference guidance paired per prompt and
seed, the render grids and the summary plots."""

import csv
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

from ...priors.objects3d import parse_caption
from ...priors.objects_data import HELD_OUT
from ..stats import bootstrap_mean, excludes_zero, paired_groups

# (metric, better): the headline scores, each with its interval; "+" higher is better
HEADLINE = [("iou", "+"), ("chamfer", "-"), ("part_recall", "+"), ("delta_e_pixel", "-"),
            ("pattern_contrast", "1"), ("detail_ratio", "1"), ("janus_rate", "-"),
            ("faces_front", "+"), ("empty", "-")]  # fmt: skip
SECONDARY = ["volume_iou", "iou_front", "parts_found", "delta_e_mean", "chroma", "clipped",
             "shape_acc", "colour_acc", "pattern_acc", "view_acc", "non_finite", "runaway",
             "wall_s"]  # fmt: skip
METRICS = ["iou", "iou_front", "turn_deg", "faces_front", "area_ratio", "occupancy_level",
           "volume_iou", "chamfer", "part_recall", "parts_found", "delta_e_pixel",
           "delta_e_mean", "chroma", "chroma_true", "pattern_contrast", "clipped",
           "clipped_true", "detail_ratio", "shape_acc", "colour_acc", "pattern_acc",
           "view_acc", "janus_rate", "empty", "non_finite", "runaway", "wall_s"]  # fmt: skip
BETTER = {"+": "higher is better", "-": "lower is better", "1": "1 is the truth"}


def _groups(rows: List[dict], guidance: str, metric: str) -> Dict[str, List[float]]:
    out: Dict[str, List[float]] = {}
    for r in rows:
        if r["guidance"] == guidance:
            out.setdefault(r["prompt"], []).append(float(r.get(metric, float("nan"))))
    return out


def diversity(rows: List[dict]) -> Dict[str, float]:
    """Mean pairwise classifier-feature distance between the seeds of one guidance, averaged
    over prompts (guidances with several seeds)."""
    from ..metrics import mean_pairwise_distance

    out: Dict[str, List[float]] = {}
    for g in {r["guidance"] for r in rows}:
        for p in {r["prompt"] for r in rows}:
            feats = [r["features"] for r in rows if r["guidance"] == g and r["prompt"] == p]
            if len(feats) > 1:
                out.setdefault(g, []).append(mean_pairwise_distance(torch.tensor(feats)))
    return {g: float(np.mean(v)) for g, v in out.items()}


def summarise(rows: List[dict]) -> List[dict]:
    """Per guidance: runs, seeds, every metric's mean, the headline metrics' 95% intervals
    (``<metric>_lo`` / ``_hi``), held-out-caption IoU and seed diversity."""
    div = diversity(rows)
    summary = []
    for g in dict.fromkeys(r["guidance"] for r in rows):
        mine = [r for r in rows if r["guidance"] == g]
        entry = {"guidance": g, "runs": len(mine), "seeds": len({r["seed"] for r in mine})}
        for k in METRICS:
            entry[k], lo, hi = bootstrap_mean(_groups(rows, g, k))
            if k in dict(HEADLINE):
                entry[f"{k}_lo"], entry[f"{k}_hi"] = lo, hi
        held = [r["iou"] for r in mine if r["held_out"]]
        entry["iou_held_out"] = float(np.mean(held)) if held else float("nan")
        entry["diversity"] = div.get(g, float("nan"))
        summary.append(entry)
    return summary


def _paired_entry(rows: List[dict], guidance: str, reference: str) -> dict:
    """(guidance - reference) of each headline metric, paired per prompt and seed: mean, 95%
    interval and whether it excludes 0."""
    entry = {"guidance": guidance}
    for k, _ in HEADLINE:
        groups = paired_groups(rows, k, guidance, reference)
        entry["pairs"] = max(entry.get("pairs", 0), sum(len(v) for v in groups.values()))
        mean, lo, hi = bootstrap_mean(groups)
        entry[k], entry[f"{k}_lo"], entry[f"{k}_hi"] = mean, lo, hi
        entry[f"{k}_shown"] = excludes_zero(lo, hi)
    return entry


def paired(rows: List[dict], reference: str) -> List[dict]:
    """Per guidance: (guidance - reference), paired per prompt and seed."""
    guidances = dict.fromkeys(r["guidance"] for r in rows)
    return [_paired_entry(rows, g, reference) for g in guidances if g != reference]


def stage_gains(rows: List[dict]) -> List[dict]:
    """Per guidance with a mesh stage: (``<g>-refine`` - ``<g>``), the mesh stage's change over
    its own coarse run, paired per prompt and seed."""
    guidances = dict.fromkeys(r["guidance"] for r in rows)
    return [_paired_entry(rows, f"{g}-refine", g) for g in guidances if f"{g}-refine" in guidances]


CEILING = "supervised"


def against_ceiling(rows: List[dict], ceiling: str = CEILING) -> List[dict]:
    """Per prompt and guidance: detail as a fraction of the ceiling's (``detail_of_ceiling``,
    each run's detail ratio over the ceiling's at the same seed), part recall and silhouette
    IoU; means with 95% intervals over the prompt's seeds. Empty without ceiling runs."""
    if ceiling not in {r["guidance"] for r in rows}:
        return []
    top = {(r["prompt"], r["seed"]): float(r["detail_ratio"]) for r in rows
           if r["guidance"] == ceiling}  # fmt: skip
    out = []
    for prompt in dict.fromkeys(r["prompt"] for r in rows):
        for g in dict.fromkeys(r["guidance"] for r in rows):
            mine = [r for r in rows if r["prompt"] == prompt and r["guidance"] == g]
            if g == ceiling or not mine:
                continue
            entry = {"prompt": prompt, "guidance": g, "seeds": len(mine)}
            fraction = [float(r["detail_ratio"]) / top.get((prompt, r["seed"]), float("nan"))
                        for r in mine]  # fmt: skip
            values = {"detail_of_ceiling": fraction}
            values.update({k: [float(r[k]) for r in mine] for k in ("part_recall", "iou")})
            for k, v in values.items():
                entry[k], entry[f"{k}_lo"], entry[f"{k}_hi"] = bootstrap_mean({prompt: v})
            out.append(entry)
    return out


def _fmt(v) -> str:
    if isinstance(v, bool):
        return str(v)
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _interval(e: dict, k: str, mark: bool = False) -> str:
    if not np.isfinite(e.get(k, float("nan"))):
        return "n/a"
    if not np.isfinite(e.get(f"{k}_lo", float("nan"))):
        return f"{e[k]:.3f} (one run)"
    star = " *" if mark and e.get(f"{k}_shown") else ""
    return f"{e[k]:.3f} [{e[f'{k}_lo']:.3f}, {e[f'{k}_hi']:.3f}]{star}"


def _table(rows: List[dict], keys: List[str], cells=None) -> str:
    cells = cells or (lambda r, k: _fmt(r.get(k, "")))
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    return "\n".join(lines + ["| " + " | ".join(cells(r, k) for k in keys) + " |" for r in rows])


def _paired_cell(r: dict, k: str) -> str:
    return _interval(r, k, mark=True) if k in dict(HEADLINE) else _fmt(r.get(k, ""))


def _paired_section(title: str, entries: List[dict], intro: str) -> List[str]:
    keys = ["guidance", "pairs"] + [k for k, _ in HEADLINE]
    return ["", f"## {title}", "", intro, "", _table(entries, keys, _paired_cell)]


def summary_markdown(
    rows: List[dict], summary: List[dict], diffs: Optional[List[dict]], steps: int, views: int,
    reference: Optional[str],
) -> str:  # fmt: skip
    prompts = len({r["prompt"] for r in rows})
    seeds = sorted({r["seed"] for r in rows})
    head = ["guidance", "runs"] + [k for k, _ in HEADLINE]
    text = [
        f"# Text-to-3D vs ground truth ({steps} steps, {prompts} prompts, seeds {seeds}, "
        f"{views} views)", "",
        "Means over prompts and seeds with 95% intervals (two-level bootstrap: prompts, then "
        "seeds within a prompt). " + "; ".join(f"{k}: {BETTER[b]}" for k, b in HEADLINE) + ". "
        "`supervised` is the ceiling: the same pipeline trained from the true renders.", "",
        _table(summary, head, lambda r, k: _interval(r, k) if k in dict(HEADLINE)
               else _fmt(r.get(k, ""))), "",
        "## Secondary scores (means)", "",
        _table(summary, ["guidance", "seeds", "iou_held_out", "diversity"] + SECONDARY), "",
        f"chroma of the true objects' renders: {np.nanmean([r['chroma_true'] for r in rows]):.1f}",
    ]  # fmt: skip
    if diffs is not None:
        text += _paired_section(
            f"Paired differences to `{reference}`", diffs,
            f"Each guidance minus `{reference}` on the same prompt and seed: mean [95% "
            "interval]; * where the interval excludes 0 (a difference shown). Elsewhere no "
            "difference is shown.",
        )  # fmt: skip
    fractions = against_ceiling(rows)
    if fractions:
        keys = ["prompt", "guidance", "seeds", "detail_of_ceiling", "part_recall", "iou"]
        text += [
            "", "## Per prompt, against the ceiling", "",
            f"Each run's detail ratio over the ceiling's (`{CEILING}`) at the same seed, part "
            "recall and silhouette IoU: mean [95% interval over the prompt's seeds]; n/a where "
            "the object has no pattern or no parts.", "",
            _table(fractions, keys, lambda r, k: _interval(r, k) if k in keys[3:]
                   else _fmt(r.get(k, ""))),
        ]  # fmt: skip
    gains = stage_gains(rows)
    if gains:
        text += _paired_section(
            "Mesh stage minus its coarse stage", gains,
            "Each `<guidance>-refine` minus the coarse run it was refined from (same prompt and "
            "seed): mean [95% interval]; * where the interval excludes 0.",
        )  # fmt: skip
    return "\n".join(text) + "\n"


def write_results(rows: List[dict], out: Path, steps: int, views: int,
                  reference: Optional[str] = None, partial: Optional[str] = None) -> None:  # fmt: skip
    keys = ["prompt", "guidance", "seed", "held_out"] + METRICS
    with open(out / "per_prompt.csv", "w", newline="") as f:
        w = csv.DictWriter(f, keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    (out / "per_prompt.md").write_text(
        f"# Text-to-3D vs ground truth, per run ({steps} steps, {views} views)\n\n"
        + _table(rows, keys)
        + "\n"
    )
    summary = summarise(rows)
    skeys = list(summary[0])
    with open(out / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, skeys, extrasaction="ignore")
        w.writeheader()
        w.writerows(summary)
    diffs = None
    if reference and reference in {r["guidance"] for r in rows}:
        diffs = paired(rows, reference)
        with open(out / "paired.csv", "w", newline="") as f:
            w = csv.DictWriter(f, list(diffs[0]) if diffs else ["guidance"], extrasaction="ignore")
            w.writeheader()
            w.writerows(diffs)
    text = summary_markdown(rows, summary, diffs, steps, views, reference)
    if partial:  # under the title
        title, rest = text.split("\n", 1)
        text = f"{title}\n\n**{partial}.**\n{rest}"
    (out / "summary.md").write_text(text)
    plot_summary(summary, out / "summary.png")
    plot_iou_grid(rows, out / "iou.png")


def plot_summary(summary: List[dict], path: Path) -> None:
    """One panel per headline metric: mean and 95% interval per guidance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(HEADLINE), figsize=(2.6 * len(HEADLINE), 3.4))
    names = [s["guidance"] for s in summary]
    x = np.arange(len(names))
    for ax, (key, better) in zip(axes, HEADLINE):
        mean = np.array([s[key] for s in summary])
        err = np.array([[m - s[f"{key}_lo"], s[f"{key}_hi"] - m] for s, m in zip(summary, mean)]).T
        colours = ["C2" if n == "supervised" else "C0" for n in names]
        ax.bar(x, mean, color=colours, yerr=err, capsize=2, error_kw={"lw": 0.8})
        ax.set_xticks(x, names, rotation=75, fontsize=6)
        ax.set_title(f"{key} ({BETTER[better]})", fontsize=7)
        if better == "1":
            ax.axhline(1.0, color="k", lw=0.8, ls="--")
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
    ax.set_title("silhouette IoU vs the true object, mean over seeds (* caption never trained on)",
                 fontsize=9)  # fmt: skip
    fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def view_picks(views: int, columns: int = 8) -> np.ndarray:
    """The orbit views the renders figure shows: ``columns`` evenly spaced of ``views``."""
    return np.linspace(0, views, min(columns, views), endpoint=False).astype(int)


def save_renders(title: str, rows, path: Path, views: int) -> None:
    """One row per (label, rgb (C, 3, H, W)): the ``view_picks(views)`` views, truth first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    picks = view_picks(views)
    fig, axes = plt.subplots(len(rows), len(picks), squeeze=False,
                             figsize=(1.1 * len(picks) + 2.0, 1.15 * len(rows)))  # fmt: skip
    for r, (label, rgb) in enumerate(rows):
        for c, i in enumerate(picks):
            ax = axes[r, c]
            ax.imshow(rgb[c].permute(1, 2, 0).clamp(0, 1).numpy())
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(f"{i * 360 // views} deg", fontsize=7)
            if c == 0:
                ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)
    inch = 1 / fig.get_figheight()  # the title 0.1 in below the top, at any number of rows
    fig.suptitle(title, fontsize=8, y=1 - 0.1 * inch, va="top")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 * inch))
    fig.savefig(path, dpi=100)
    plt.close(fig)
