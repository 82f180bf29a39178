"""The offline demo: SDS vs LMC-SDS image synthesis on the committed Fashion-MNIST prior.

A short version of the synthesis experiment (all 10 class prompts, 2 seeds, omega 5 and 20,
100 steps) on a CPU; writes a PNG grid with the real class images beside, the metric table
(markdown + CSV) and the statistics plots. The full comparison is
``python -m lmcsds.evaluation.experiments synthesis``.

    make demo-2d     # or: python -m lmcsds.evaluation.demo --out results/demo-2d
"""

import argparse
import time
from pathlib import Path

import torch

from ..commands import module_main
from .experiments import CLASSIFIER, CORRECTIVE, PRIOR, fashion_mnist_setup, synthesis
from .optimise import OptimConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="results/demo-2d", help="output folder")
    parser.add_argument("--steps", type=int, default=100, help="optimisation steps per image")
    parser.add_argument("--seeds", type=int, default=2, help="images per prompt and setting")
    parser.add_argument("--omegas", default="5,20", help="comma-separated guidance weights")


def main(argv=None) -> None:
    module_main(__doc__, add_arguments, run, argv)


def run(args: argparse.Namespace) -> None:
    start = time.time()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    for path in (PRIOR, CORRECTIVE, CLASSIFIER):
        if not Path(path).exists():
            raise SystemExit(f"{path} is missing: run the demo from the repository root")
    setup = fashion_mnist_setup()
    scale = args.steps / 500  # the paper's schedule (lr decay over 300 of 500 steps), shortened
    cfg = OptimConfig(steps=args.steps, decay_steps=round(300 * scale))
    out = Path(args.out)
    synthesis(
        setup,
        out,
        ("sds", "lmc-sds"),
        [float(w) for w in args.omegas.split(",")],
        args.seeds,
        (False,),
        cfg,
    )
    print((out / "metrics.md").read_text())
    print(f"grid: {out / 'grid.png'}   plots: {out / 'statistics.png'}, {out / 'vs_omega.png'}")
    print(f"demo took {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
