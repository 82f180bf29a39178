"""Time per training step of threestudio's ``launch.py`` on the CPU config, variants side by
side: each variant trains ``--short`` and ``--long`` steps, the two interleaved with every other
variant's and repeated, and its time per step is (long - short) / (long - short steps), which
cancels start-up, prompt encoding and the final test pass. Ratios are to the first variant.

    LMCSDS_DEVICE=cpu python -m lmcsds.bench.step3d --threestudio build/threestudio \\
        --out bench-results/step3d.json
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

from ..commands import module_main

# name -> launch.py overrides (explicit, so the rows stay what they say whatever the config)
VARIANTS: Dict[str, List[str]] = {
    "dense, 64 samples (every one evaluated)": [
        "system.renderer.grid_prune=false", "system.renderer.num_samples_per_ray=64"],
    "grid_prune, 64 samples (threestudio's occupancy grid)": [
        "system.renderer.grid_prune=true", "system.renderer.num_samples_per_ray=64"],
    "grid_prune, 32 samples (the CPU config)": [
        "system.renderer.grid_prune=true", "system.renderer.num_samples_per_ray=32"],
}  # fmt: skip


def timed_run(
    run_dir: Path, config: str, steps: int, overrides: List[str], out: Path, threads: int
) -> float:
    """Wall seconds of one ``launch.py --train`` of ``steps`` steps (validation off, 1 test view)."""
    import os

    env = dict(os.environ, LMCSDS_DEVICE="cpu", OMP_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads))  # fmt: skip
    cmd = [sys.executable, "launch.py", "--config", config, "--train", f"exp_root_dir={out}",
           "name=bench", f"tag=s{steps}", "use_timestamp=false", f"trainer.max_steps={steps}",
           f"trainer.val_check_interval={steps + 1}", "data.n_test_views=1",
           "system.guidance_eval_every=0", *overrides]  # fmt: skip
    start = time.time()
    done = subprocess.run(cmd, cwd=run_dir, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"launch.py failed ({' '.join(overrides)}):\n{done.stderr[-2000:]}")
    return time.time() - start


def bench(run_dir: Path, config: str, prompt: str, short: int, long: int, repeats: int,
          threads: int, variants: Dict[str, List[str]] = VARIANTS) -> dict:  # fmt: skip
    times: Dict[str, List[float]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            for name, overrides in variants.items():
                args = [f"system.prompt_processor.prompt={prompt}", *overrides]
                out = Path(tmp) / f"{r}-{len(times[name])}"
                t_short = timed_run(run_dir, config, short, args, out / "short", threads)
                t_long = timed_run(run_dir, config, long, args, out / "long", threads)
                times[name].append((t_long - t_short) / (long - short))
                print(f"repeat {r}: {name}: {times[name][-1]:.3f} s/step", flush=True)
    first = statistics.median(next(iter(times.values())))
    rows = {name: {"s_per_step": statistics.median(t), "all": t,
                   "ratio_to_first": statistics.median(t) / first} for name, t in times.items()}  # fmt: skip
    return {"config": config, "prompt": prompt, "short": short, "long": long,
            "repeats": repeats, "threads": threads, "variants": rows}  # fmt: skip


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threestudio", default="build/threestudio", help="threestudio folder")
    p.add_argument("--config", default="configs/lmcsds-dreamfusion-cpu.yaml", help="base config")
    p.add_argument("--prompt", default="a photo of a red checkered mug", help="the prompt")
    p.add_argument("--short", type=int, default=20, help="steps of the short run")
    p.add_argument("--long", type=int, default=120, help="steps of the long run")
    p.add_argument("--repeats", type=int, default=2, help="interleaved repetitions")
    p.add_argument("--threads", type=int, default=1, help="CPU threads per run")
    p.add_argument("--out", default="bench-results/step3d.json", help="JSON results")


def run(args: argparse.Namespace) -> dict:
    result = bench(Path(args.threestudio).resolve(), str(Path(args.config).resolve()), args.prompt,
                   args.short, args.long, args.repeats, args.threads)  # fmt: skip
    print(f"{'variant':<55} s/step  x first")
    for name, row in result["variants"].items():
        print(f"{name:<55} {row['s_per_step']:.3f}  {row['ratio_to_first']:.2f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    return result


def main(argv=None) -> dict:
    return module_main(__doc__, add_arguments, run, argv)


if __name__ == "__main__":
    main()
