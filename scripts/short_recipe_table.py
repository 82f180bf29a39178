"""Table of the short-recipe study (scripts/short-recipe.sh): per corrective size and fraction
of the bundled recipe, its predicted IF-I-XL cost, offline error, check verdict and 3D quality.

    .venv/bin/python scripts/short_recipe_table.py docs/results/short-recipe --input clamped

The predicted cost of a fraction (steps f_s, distinct triplets f_t) of the paper's recipe on
one H100 is f_t x 4.9 h of prior passes (3M triplets at 169.3/s, compiled) plus f_s x 2.7 h of
corrective steps (750K at 78/s, the paper's size; a smaller corrective steps faster, so its
figure is an upper bound): docs/benchmark.md. A run ran away by the acceptance check's rules
over the whole 3D run (its record's ``runaway``). The 3D difference is paired per prompt and
3D seed against the full bundled recipe of the same study, or against ``--reference``.
"""

import argparse
import json
import re
import sys
from pathlib import Path

from corrective_seeds_table import ROOT, interval, records

sys.path.insert(0, str(ROOT / "custom" / "threestudio-lmcsds"))
from lmcsds.evaluation.stats import bootstrap_mean, excludes_zero  # noqa: E402

REFERENCE = "bundled-1"
FULL_STEPS, FULL_TRIPLETS = 1500, 3072
# paired beside the verdict's IoU (reported, not judged: the rule was fixed on IoU alone)
SECONDARY = ("iou", "delta_e_pixel", "detail_ratio")
PRIOR_HOURS, STEP_HOURS = 3_000_000 / 169.3 / 3600, 750_000 / 78.0 / 3600


def row(folder: Path, spec: dict, variant: str, reference: dict, ref_name: str) -> dict:
    report = json.loads((folder / "report" / "report.json").read_text())
    check_path = folder / f"check-{variant}" / "check.json"
    check = json.loads(check_path.read_text()) if check_path.exists() else {"verdict": "-"}
    runs = records(folder / f"bench-{variant}")
    groups, paired = {}, {m: {} for m in SECONDARY}
    for (prompt, s3), scores in runs.items():
        groups.setdefault(prompt, []).append(scores["iou"])
        if (prompt, s3) in reference and folder.name != ref_name:
            for m in SECONDARY:
                d = scores[m] - reference[(prompt, s3)][m]
                paired[m].setdefault(prompt, []).append(d)
    nan3 = (float("nan"),) * 3
    diffs = {m: bootstrap_mean(paired[m]) if paired[m] else nan3 for m in SECONDARY}
    diff = diffs["iou"]
    f_s, f_t = spec["steps"] / FULL_STEPS, spec["triplets"] / FULL_TRIPLETS
    return {
        "name": folder.name,
        **spec,
        # 0 steps is the untrained residual network, bhat(z) = z: it needs no triplets either
        "hours_if_xl": f_t * PRIOR_HOURS + f_s * STEP_HOURS if spec["steps"] else 0.0,
        "rel_err": report["overall"]["rel_err_mc"],
        "check": check["verdict"],
        "runs": len(runs),
        "iou": bootstrap_mean(groups),
        "diff": diff,
        "diffs": diffs,
        "worse": excludes_zero(diff[1], diff[2]) and diff[2] < 0,
        "runaway": sum(s.get("runaway", 0.0) > 0 for s in runs.values()),
        "empty": sum(s["empty"] > 0 for s in runs.values()),
    }


def specs(script: Path) -> dict:
    """name -> size, steps and triplets, read from the study script's RUNS."""
    out = {}
    for line in re.findall(r'^\s+"([\w-]+ \d+ \d+ \d+ \d+)"$', script.read_text(), re.M):
        name, channels, depth, steps, triplets = line.split()
        out[name] = dict(channels=int(channels), depth=int(depth), steps=int(steps),
                         triplets=int(triplets))  # fmt: skip
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("root", help="the study's folder")
    p.add_argument(
        "--input", required=True, help="corrective_input of the benchmark: raw | clamped"
    )
    p.add_argument("--reference", default=REFERENCE,
                   help=f"the corrective the paired differences are taken to (default {REFERENCE})")  # fmt: skip
    args = p.parse_args()
    root, ref = Path(args.root), args.reference
    if not (root / ref / f"bench-{args.input}").is_dir():
        p.error(f"--reference {ref}: no {root / ref / f'bench-{args.input}'}")
    reference = records(root / ref / f"bench-{args.input}")
    rows = [row(root / name, spec, args.input, reference, ref)
            for name, spec in specs(ROOT / "scripts" / "short-recipe.sh").items()
            if (root / name / "report" / "report.json").exists()]  # fmt: skip
    print(
        "| corrective | filters / levels | steps | distinct triplets | predicted IF-I-XL "
        f"H100-hours | rel. error | check | 3D runs | IoU | IoU - {ref} (paired) | "
        "ran away | emptied |"
    )
    print("|---" * 12 + "|")
    for r in rows:
        diff = "-" if r["name"] == ref else interval(r["diff"])
        print(f"| {r['name']} | {r['channels']} / {r['depth']} | {r['steps']} | {r['triplets']} | "
              f"{r['hours_if_xl']:.1f} | {r['rel_err']:.3f} | {r['check']} | {r['runs']} | "
              f"{interval(r['iou'])} | {diff} | {r['runaway']} | {r['empty']} |")  # fmt: skip
    print(
        f"\nPaired differences to {ref} in the other headline scores "
        "(Delta E per pixel: lower is better; detail ratio: 1 is the truth):\n"
    )
    print("| corrective | Delta E per pixel | detail ratio |\n|---|---|---|")
    for r in rows:
        if r["name"] != ref:
            print(f"| {r['name']} | {interval(r['diffs']['delta_e_pixel'])} | "
                  f"{interval(r['diffs']['detail_ratio'])} |")  # fmt: skip
    suffix = "" if ref == REFERENCE else f"-vs-{ref}"
    (root / f"table-{args.input}{suffix}.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
