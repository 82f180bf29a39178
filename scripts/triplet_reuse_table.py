"""Markdown tables of the triplet-reuse study (scripts/study_triplet_reuse.sh) from its reports.

.venv/bin/python scripts/triplet_reuse_table.py build/reuse > docs/results/triplet-reuse/tables.md
"""

import json
import sys
from pathlib import Path

BUNDLED = Path("load/lmcsds/correctives/objects-if-32-report/report.json")
RUNS = [  # (label, distinct triplets, steps, report)
    ("fresh, seed 0 (bundled)", "96k", 1500, BUNDLED),
    ("fresh, seed 1", "96k", 1500, "fresh-seed1"),
    ("fresh, seed 0, 1000 steps", "64k", 1000, "fresh-1000"),
    ("fresh, seed 0, 500 steps", "32k", 500, "fresh-500"),
    ("cache 49,152 (2 passes)", "49k", 1500, "cache-49152"),
    ("cache 12,288 (8 passes)", "12k", 1500, "cache-12288"),
    ("cache 3,072 (32 passes)", "3k", 1500, "cache-3072"),
    ("cache 1,024 (94 passes)", "1k", 1500, "cache-1024"),
]


def load(root: Path, report) -> dict:
    path = report if isinstance(report, Path) else root / report / "report" / "report.json"
    return json.loads(path.read_text()) if path.exists() else {}


def main(root: Path) -> None:
    reports = [(label, n, steps, load(root, r)) for label, n, steps, r in RUNS]
    reports = [r for r in reports if r[3]]
    buckets = [b["t"] for b in reports[0][3]["buckets"]]
    print("Held-out relative error to the Monte-Carlo E[zhat_t] (identity bhat = z in brackets):\n")
    print(
        "| run | distinct triplets | steps | overall | "
        + " | ".join(f"t {b}" for b in buckets)
        + " |"
    )
    print("|---" * (4 + len(buckets)) + "|")
    for label, n, steps, rep in reports:
        cells = [f"{b['rel_err_mc']:.3f}" for b in rep["buckets"]]
        print(
            f"| {label} | {n} | {steps} | {rep['overall']['rel_err_mc']:.3f} | "
            + " | ".join(cells)
            + " |"
        )
    identity = reports[0][3]
    print(
        "| identity | - | - | "
        + f"{identity['overall']['rel_err_mc_identity']:.3f} | "
        + " | ".join(f"{b['rel_err_mc_identity']:.3f}" for b in identity["buckets"])
        + " |"
    )
    print(
        "\nOverall L_k, size of E[g_lmc] (bias) and stability gains of E[g_lmc] "
        "(> 0: a descent step shrinks the perturbation):\n"
    )
    keys = ["loss_k", "bias_lmc", "contrast_gain_lmc", "colour_gain_lmc", "brightness_gain_lmc"]
    print("| run | " + " | ".join(keys) + " | contrast gain, t >= 800 |")
    print("|---" * (len(keys) + 2) + "|")
    for label, _, _, rep in reports:
        high = rep["buckets"][-1]["contrast_gain_lmc"]
        print(
            f"| {label} | "
            + " | ".join(f"{rep['overall'][k]:.4f}" for k in keys)
            + f" | {high:.4f} |"
        )


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "build/reuse"))
