"""The shape and pattern of one benchmark run over its training steps (docs/detail-3d.md): a
run of a ``bench3d`` config through threestudio's launch.py that keeps a checkpoint every
``--every`` steps, threestudio's test pass on each checkpoint, and the benchmark's silhouette
IoU (best turn), area over the truth's and interior detail per checkpoint; then a figure of
several such runs side by side. Resumable: finished trainings and test passes are kept.

    LMCSDS_DEVICE=cpu python scripts/shape_over_steps.py run --threestudio build/threestudio \\
        --config docs/results/bench3d-full/configs/lmc-sds-w10-linear.yaml \\
        --prompt "a photo of a red checkered mug" --seed 0 --out results/shape-over-steps
    python scripts/shape_over_steps.py plot OUT.png results/shape-over-steps/red-checkered-mug/*
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from lmcsds.evaluation import metrics3d as M3
from lmcsds.evaluation.bench3d.report import view_picks
from lmcsds.evaluation.bench3d.runs import slug
from lmcsds.evaluation.bench3d.scoring import detail_scores, pass_step, test_passes, test_views
from lmcsds.evaluation.bench3d.truth import ground_truth
from lmcsds.evaluation.compare import check_threestudio_dir, launch, object_of

VIEWS = 24  # the benchmark's test orbit (data.n_test_views = VIEWS + 1: threestudio repeats one)
STEPS = "steps.json"


def checkpoint_steps(trial: Path) -> list:
    return sorted(
        int(p.stem.split("step=")[1]) for p in (trial / "ckpts").glob("epoch=*-step=*.ckpt")
    )


def run(args) -> None:
    run_dir = check_threestudio_dir(Path(args.threestudio))
    spec = object_of(args.prompt)
    if spec is None:
        raise SystemExit(f"--prompt {args.prompt!r} is not an object of the objects prior")
    label = args.label or Path(args.config).stem
    out = Path(args.out).resolve()
    trial = out / slug(spec) / f"{label}-s{args.seed}"
    common = [f"exp_root_dir={out}", f"name={slug(spec)}", "use_timestamp=false",
              f"data.n_test_views={VIEWS + 1}"]  # fmt: skip
    if args.steps not in checkpoint_steps(trial):
        overrides = common + [f"tag={trial.name}", f"seed={args.seed}",
                              f"trainer.max_steps={args.steps}",
                              f"system.prompt_processor.prompt={args.prompt}",
                              f"trainer.val_check_interval={args.steps}",
                              "system.guidance_eval_every=0",
                              f"checkpoint.every_n_train_steps={args.every}"]  # fmt: skip
        trial.parent.mkdir(parents=True, exist_ok=True)
        log = trial.parent / f"{trial.name}.log"
        launch(run_dir, Path(args.config), overrides, log, args.steps, trial.name, trial)
    env = dict(os.environ, LMCSDS_DEVICE=os.environ.get("LMCSDS_DEVICE", "cpu"))
    for step in checkpoint_steps(trial):
        if (trial / "save" / f"it{step}-test").is_dir():
            continue
        ckpt = trial / "ckpts" / f"epoch=0-step={step}.ckpt"
        cmd = [sys.executable, "launch.py", "--config", str(trial / "configs" / "parsed.yaml"),
               "--test", f"resume={ckpt}", *common, f"tag={trial.name}"]  # fmt: skip
        with open(trial / f"test-{step}.log", "w") as log:
            subprocess.run(cmd, cwd=run_dir, env=env, stdout=log, stderr=subprocess.STDOUT,
                           check=True)  # fmt: skip
    data = OmegaConf.merge(OmegaConf.load(args.config),
                           OmegaConf.from_dotlist([f"data.n_test_views={VIEWS + 1}"])).data  # fmt: skip
    truth = ground_truth(spec, VIEWS, data)
    picks, rows = view_picks(VIEWS), []
    for folder in test_passes(trial):
        rgb, mask = test_views(folder, VIEWS)
        shift, ious = M3.best_turn(mask, truth.mask, rgb, truth.rgb)
        area = (mask > M3.THRESHOLD).float().mean() / (truth.mask > M3.THRESHOLD).float().mean()
        detail = detail_scores(rgb[picks], truth.rgb.roll(shift, 0)[picks], spec)["detail_ratio"]
        rows.append({"step": pass_step(folder), "iou": float(ious[shift]),
                     "area_ratio": float(area), "detail": detail})  # fmt: skip
        print(f"{trial.name} step {rows[-1]['step']:5d}: IoU {rows[-1]['iou']:.2f}, area "
              f"{rows[-1]['area_ratio']:.2f} x the truth's, detail {detail:.2f}")  # fmt: skip
    (trial / STEPS).write_text(json.dumps(rows, indent=1))


def plot(args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trials = [Path(t) for t in args.trials]
    n = len(trials)
    fig = plt.figure(figsize=(max(10, 3.3 * n), 9.5))
    grid = fig.add_gridspec(2, n, height_ratios=[1, 3.2])
    top = grid[0, :].subgridspec(1, 2)
    iou, area = fig.add_subplot(top[0, 0]), fig.add_subplot(top[0, 1])
    for i, trial in enumerate(trials):
        rows = json.loads((trial / STEPS).read_text())
        steps = [r["step"] for r in rows]
        iou.plot(steps, [r["iou"] for r in rows], f"C{i}-o", label=trial.name)
        area.plot(steps, [r["area_ratio"] for r in rows], f"C{i}-o", label=trial.name)
        strips = []
        for folder in test_passes(trial):
            rgb, _ = test_views(folder, VIEWS)
            views = rgb[view_picks(VIEWS)[::2]]  # 4 of the record's 8 views
            strips.append(np.concatenate(list(views.permute(0, 2, 3, 1).numpy()), 1))
        ax = fig.add_subplot(grid[1, i])
        ax.imshow(np.concatenate(strips, 0))
        h = strips[0].shape[0]
        ax.set_yticks([h * (k + 0.5) for k in range(len(strips))], [f"step {s}" for s in steps])
        ax.set_xticks([])
        ax.set_title(trial.name)
    iou.set(xlabel="step", ylabel="silhouette IoU (best turn)", ylim=(0, 1))
    area.set(xlabel="step", ylabel="area / the truth's", yscale="log")
    iou.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="train one run with checkpoints, test and score each")
    r.add_argument("--threestudio", required=True, help="threestudio folder (launch.py)")
    r.add_argument("--config", required=True, help="a bench3d config (OUT/configs/<label>.yaml)")
    r.add_argument("--prompt", required=True, help="an object caption, e.g. 'a photo of a red mug'")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--steps", type=int, default=1600, help="training steps (the benchmark's)")
    r.add_argument("--every", type=int, default=200, help="a checkpoint every N steps")
    r.add_argument("--label", default=None, help="run label (default: the config's name)")
    r.add_argument("--out", required=True, help="output folder (<object>/<label>-s<seed>)")
    q = sub.add_parser("plot", help="IoU per step and the views per step of scored runs")
    q.add_argument("out", help="the figure (.png)")
    q.add_argument("trials", nargs="+", help="run folders that `run` scored")
    args = p.parse_args()
    run(args) if args.command == "run" else plot(args)


if __name__ == "__main__":
    main()
