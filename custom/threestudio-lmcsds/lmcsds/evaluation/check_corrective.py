"""Acceptance check of a corrective before a long 3D run: pass / warn / fail, with the reasons.

Trains one short LMC-SDS run per prompt through threestudio's own ``launch.py`` (the base
config with only the guidance's ``loss_type``, weight and ``corrective_path`` set) and judges
each from its logged guidance norms (``training/acceptance.py``): a corrective whose g_lmc
outgrows g_cond, grows geometrically, or makes steps non-finite before the scene emptied
fails. With ``--images``, it also measures the stability gains of E[g_lmc] at out-of-range
images (reported, not judged).

    LMCSDS_DEVICE=cpu python -m lmcsds check-corrective --threestudio build/threestudio \\
        --config configs/lmcsds-dreamfusion-cpu.yaml \\
        --corrective load/lmcsds/correctives/objects-if-32.safetensors

About 1 minute per prompt with the CPU config on 2 cores (4 prompts, 150 steps); on a GPU with
IF-I-XL, ``configs/lmcsds-dreamfusion.yaml`` and ``--steps 300``, minutes. Writes
``check.json``, ``check.md`` and ``norms.png`` (||g_lmc|| / ||g_cond|| per step) into ``--out``;
exits with status 1 on "fail".
"""

import json
import sys
from pathlib import Path
from typing import List, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..training import acceptance as A  # noqa: E402
from .compare import (  # noqa: E402
    RunSpec,
    check_threestudio_dir,
    launch,
    metric_rows,
    steps_done,
    write_config,
)


def guidance_traces(trial: Path) -> dict:
    """Per logged step: ||g_lmc||, ||g_cond|| and the sparsity loss; the count of skipped steps
    and the logged step of the first (None when none)."""
    by_step = {int(r["step"]): r for r in metric_rows(trial) if r.get("train/g_lmc_norm")}
    rows = [by_step[s] for s in sorted(by_step)]
    sparsity = {int(r["step"]): float(r["train/loss_sparsity"])
                for r in metric_rows(trial, "train/loss_sparsity")}  # fmt: skip
    skipped = [float(r.get("train/skipped_steps") or 0) for r in rows]  # a running count
    return {
        "g_lmc": [float(r["train/g_lmc_norm"]) for r in rows],
        "g_cond": [float(r["train/g_cond_norm"]) for r in rows],
        "skipped": max(skipped, default=0.0),
        "skipped_from": next((i for i, k in enumerate(skipped) if k > 0), None),
        "sparsity": [sparsity[s] for s in sorted(sparsity)],
    }


def reusable(
    trial: Path, prompt: str, seed: int, steps: int, corrective: str, omega: float,
    overrides: Sequence[str] = (),
) -> bool:  # fmt: skip
    """Whether ``trial`` holds a finished run of this prompt, seed, corrective and weight whose
    config has every ``key=value`` override (compared as text: a number written otherwise
    retrains, never the reverse)."""
    from omegaconf import OmegaConf

    parsed = trial / "configs" / "parsed.yaml"
    if not parsed.is_file() or steps_done(trial) < steps:
        return False
    cfg = OmegaConf.load(parsed)
    g = cfg.system.guidance
    same = (cfg.system.prompt_processor.prompt, cfg.seed, str(g.corrective_path),
            float(g.guidance_scale)) == (prompt, seed, corrective, float(omega))  # fmt: skip
    for item in overrides:
        key, _, value = item.partition("=")
        same = same and str(OmegaConf.select(cfg, key.lstrip("+"), default=None)) == value
    return same


def slug(prompt: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in prompt.lower()).strip("-")


def check(
    run_dir: Path, base_config: Path, corrective: str, out: Path, prompts: List[str],
    steps: int = 150, seed: int = 0, omega: float = 10.0, limits: A.Limits = A.Limits(),
    images: Optional[str] = None, overrides: List[str] = (), force: bool = False,
) -> dict:  # fmt: skip
    """Short runs into ``out/runs/check/<prompt>``, judged; a finished run of the same prompt,
    seed, corrective and weight is reused (``force``: retrain), so changing only the limits
    re-judges without training."""
    from omegaconf import OmegaConf

    run_dir, out = check_threestudio_dir(run_dir), out.resolve()  # launch.py runs in run_dir
    corrective = str(Path(corrective).resolve()) if Path(corrective).exists() else corrective
    base = OmegaConf.load(base_config)
    guidance = OmegaConf.to_container(base.system.guidance, resolve=False)
    guidance.update(loss_type="lmc-sds", guidance_scale=float(omega), corrective_path=corrective)
    spec = RunSpec("check", base.system.guidance_type, guidance)
    config = write_config(base_config, spec, out / "config.yaml")
    # the runs' checkpoints and logs stay out of version control; the verdict files are kept
    (out / ".gitignore").write_text("runs/\n*.log\n")
    runs, failures, warnings = [], [], []
    for prompt in prompts:
        for attempt in range(limits.reseeds + 1):
            run_seed = seed + attempt
            name = slug(prompt) if attempt == 0 else f"{slug(prompt)}-s{run_seed}"
            trial = out / "runs" / "check" / name
            if force or not reusable(trial, prompt, run_seed, steps, corrective, omega, overrides):
                launch(run_dir, config, [
                    f"exp_root_dir={out / 'runs'}", "name=check", f"tag={name}",
                    "use_timestamp=false", f"seed={run_seed}", f"trainer.max_steps={steps}",
                    f"system.prompt_processor.prompt={prompt}", *overrides,
                ], out / f"{name}.log", steps, name, trial)  # fmt: skip
            traces = guidance_traces(trial)
            row = dict(prompt=prompt, seed=run_seed, **A.trace_summary(**traces))
            label = f"'{prompt}'" + (f" (seed {run_seed})" if attempt else "")
            reasons = A.run_reasons(row, limits, label)
            failures += reasons
            warnings += A.run_warnings(row, limits, label)
            runs.append(dict(row, traces=traces))
            if row["emptied_at"] is None or reasons:
                break
        else:
            warnings.append(f"'{prompt}': the scene emptied at seeds {seed}-{run_seed}, so the "
                            f"corrective was not tested on it")  # fmt: skip
    gains = offline_gains(corrective, base, images) if images else []
    result = {
        "verdict": A.verdict(failures, warnings),
        "failures": failures,
        "warnings": warnings,
        "corrective": corrective,
        "config": str(base_config),
        "steps": steps,
        "seed": seed,
        "omega": omega,
        "limits": vars(limits),
        "runs": runs,
        "gains": gains,
    }
    (out / "check.json").write_text(json.dumps(result, indent=2))
    (out / "check.md").write_text(markdown(result))
    plot_norms(runs, out / "norms.png", limits)
    return result


def offline_gains(corrective: str, base, images: str, count: int = 16) -> List[dict]:
    """The out-of-range stability gains on ``count`` crops of the photos in ``images``."""
    import torch

    from ..core.checkpoint import load_corrective
    from ..core.prior import IFPrior
    from ..core.text import encode_prompts
    from ..training.images import CropSampler, scan_images

    name = base.system.guidance.pretrained_model_name_or_path
    device = "cuda" if torch.cuda.is_available() else "cpu"
    prior = IFPrior.from_pretrained(name, device=device, half_precision=device == "cuda")
    net, meta = load_corrective(corrective, prior.prior_id, prior.resolution, device)
    z = CropSampler(scan_images(images, 0).usable, prior.resolution, seed=1).batch(0, count)
    emb_0 = encode_prompts(name, [""], device=device).to(device)
    return A.out_of_range_gains(prior, net, meta.normalization, z.to(device), emb_0)


def markdown(result: dict) -> str:
    lines = [
        f"# Corrective check: **{result['verdict']}**",
        "",
        f"`{result['corrective']}`, LMC-SDS omega {result['omega']:g}, {result['steps']} steps, "
        f"seed {result['seed']}, base config `{result['config']}`.",
        "",
        "| prompt | seed | steps logged | median g_lmc / g_cond (2nd half) | g_lmc growth | "
        "peak g_lmc (x median) | skipped steps | emptied from step |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        empty = "-" if r.get("emptied_at") is None else r["emptied_at"]
        late = r.get("skipped_when_empty", 0)
        skips = f"{r['skipped']:.0f}" + (f" (+{late:.0f} when empty)" if late else "")
        lines.append(f"| {r['prompt']} | {r.get('seed', result['seed'])} | {r['steps']} | "
                     f"{r['ratio']:.3g} | {r['growth']:.3g} | {r['peak_g_lmc']:.3g} "
                     f"({r['spike']:.3g}) | "
                     f"{skips} | {empty} |")  # fmt: skip
    lim = result["limits"]
    lines += ["", f"Fails above a ratio of {lim['ratio_limit']:g}, a growth of "
              f"{lim['growth_limit']:g} or a peak of {lim['spike_limit']:g}x the median, "
              f"or on any step skipped before the scene emptied; warns above a ratio of "
              f"{lim['warn_ratio']:g}. A run whose scene emptied (sparsity loss at its floor) "
              f"is tried again at the next seed, up to {lim.get('reseeds', 0)} times.", ""]  # fmt: skip
    lines += [f"- **fail**: {r}" for r in result["failures"]]
    lines += [f"- warn: {w}" for w in result["warnings"]]
    if result["gains"]:
        lines += [
            "",
            "Stability gains of E[g_lmc] at out-of-range images (positive: "
            "restoring; reported, not judged):",
            "",
            "| out-of-range case | t | stability gain of E[g_lmc] |",
            "|---|---|---|",
        ]
        lines += [f"| {g['case']} | {g['t']} | {g['gain']:+.3f} |" for g in result["gains"]]
    lines += ["", "![norms](norms.png)", ""]
    return "\n".join(lines)


def plot_norms(runs: List[dict], path: Path, limits: A.Limits) -> None:
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for r in runs:
        g, c = r["traces"]["g_lmc"], r["traces"]["g_cond"]
        label = r["prompt"] + (f" (seed {r['seed']})" if r.get("seed", 0) else "")
        label += ", emptied" if r.get("emptied_at") is not None else ""
        ax.semilogy([a / max(b, 1e-12) for a, b in zip(g, c)], label=label, lw=0.8)
    ax.axhline(limits.ratio_limit, color="k", ls="--", lw=0.8, label="fail above (median)")
    ax.set_xlabel("logged step")
    ax.set_ylabel("||g_lmc|| / ||g_cond||")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def add_arguments(p) -> None:
    p.add_argument("--corrective", required=True, help="corrective .safetensors (or hf:// ref)")
    p.add_argument("--threestudio", default=".", help="threestudio folder with the extension")
    p.add_argument("--config", default="configs/lmcsds-dreamfusion-cpu.yaml",
                   help="base config (relative to --threestudio or absolute)")  # fmt: skip
    p.add_argument("--out", default=None, help="output folder (default: CORRECTIVE-check)")
    p.add_argument("--prompts", default=";".join(A.DEFAULT_PROMPTS),
                   help="';'-separated prompts, one short run each")  # fmt: skip
    p.add_argument("--steps", type=int, default=150, help="training steps per run")
    p.add_argument("--seed", type=int, default=0, help="threestudio seed of every run")
    p.add_argument("--omega", type=float, default=10.0, help="LMC-SDS guidance weight")
    p.add_argument(
        "--ratio-limit",
        type=float,
        default=A.Limits.ratio_limit,
        help="fail: median ||g_lmc|| / ||g_cond|| over a run's second half above",
    )
    p.add_argument(
        "--growth-limit",
        type=float,
        default=A.Limits.growth_limit,
        help="fail: ||g_lmc|| growth from a run's second quarter to its last above",
    )
    p.add_argument(
        "--spike-limit",
        type=float,
        default=A.Limits.spike_limit,
        help="fail: a run's peak ||g_lmc|| above this many times its median",
    )
    p.add_argument(
        "--warn-ratio",
        type=float,
        default=A.Limits.warn_ratio,
        help="warn: median ||g_lmc|| / ||g_cond|| over a run's second half above",
    )
    p.add_argument("--reseeds", type=int, default=A.Limits.reseeds,
                   help="a prompt whose scene emptied is run again at up to this many next seeds")  # fmt: skip
    p.add_argument("--images", default=None,
                   help="held-out photos: also report out-of-range stability gains")  # fmt: skip
    p.add_argument("--force", action="store_true", help="retrain runs that could be reused")
    p.add_argument("overrides", nargs="*", help="extra threestudio overrides, key=value")  # fmt: skip


def run(args) -> None:
    run_dir = Path(args.threestudio)
    config = Path(args.config)
    if not config.is_absolute() and not config.exists():
        config = run_dir / config
    if not config.is_file():
        raise SystemExit(f"--config {args.config}: no such file (here or under {run_dir})")
    out = Path(args.out or Path(args.corrective).with_suffix("").as_posix() + "-check")
    prompts = [p.strip() for p in args.prompts.split(";") if p.strip()]
    limits = A.Limits(ratio_limit=args.ratio_limit, growth_limit=args.growth_limit,
                      spike_limit=args.spike_limit, warn_ratio=args.warn_ratio,
                      reseeds=args.reseeds)  # fmt: skip
    result = check(run_dir, config, args.corrective, out, prompts, args.steps, args.seed,
                   args.omega, limits, args.images, args.overrides, args.force)  # fmt: skip
    print(f"check: {result['verdict']} ({out / 'check.md'})")
    for line in result["failures"] + result["warnings"]:
        print(f"  {line}")
    if result["verdict"] == "fail":
        sys.exit(1)


def main(argv=None) -> None:
    from ..commands import module_main

    module_main(__doc__, add_arguments, run, argv)


if __name__ == "__main__":
    main()
