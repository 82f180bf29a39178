"""GPU check: what a guidance step and corrective training cost on this GPU, in minutes.

IF-I-XL's UNet architecture with random fp16 weights (nothing downloaded), channels-last, batch 1:

1. guidance step (UNet forward, our math, backward to the render): threestudio's built-in
   deep-floyd-guidance formula (one 2-row UNet call, w(t) = 1 - abar, no 1/omega) against
   LMC-SDS with shared noise (2 rows) and fixed eps (3 rows), eager, with peak memory;
2. the same with the UNet compiled in each ``--modes`` entry: one-off compile time per input
   shape, recompilations during the timed calls, and the gradient's distance to eager;
3. corrective training rates: triplets/s (prior passes) at ``--triplet-batches``, eager and with
   CUDA graphs, and corrective steps/s at batch 128 (fp32, bf16 autocast);
4. a 3D training step through threestudio's launch.py (only where threestudio imports).

Sections that would not finish inside ``--budget-s`` are skipped and say so. The JSON is
rewritten after every measurement, so an interrupted run keeps what it measured.

    python -m lmcsds gpu-check --out gpu-check.json
    scripts/gpu_check.sh            # a machine with only a CUDA PyTorch (installs carried wheels)
"""

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

from ..commands import module_main

DEFAULT_MODES = ["cudagraphs", "reduce-overhead", "default"]
INDUCTOR_COMPILE_GUESS_S = 150.0  # IF-I-XL on an H200, one input shape (before measuring)


class Budget:
    """Seconds left of the run; a section asks before it starts."""

    def __init__(self, seconds: float):
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()

    def allows(self, seconds: float) -> bool:
        return self.left() > seconds


class Report(dict):
    """The JSON result, written to disk after every change."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def put(self, key: str, value) -> None:
        self[key] = value
        self.path.write_text(json.dumps(self, indent=2))


def hide_modules(names: List[str]) -> None:
    """Make ``import name`` fail (diffusers 0.19 imports transformers / jax when present)."""
    for name in names:
        sys.modules[name] = None  # type: ignore[assignment]


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def build_prior(shape: str, device: torch.device):
    """IFPrior with random weights of IF-I-XL's architecture ("xl") or a tiny one ("tiny")."""
    from ..core.if_factory import IF_I_XL_UNET, IFShape, if_scheduler, if_unet
    from ..core.prior import IFPrior

    kwargs = IF_I_XL_UNET if shape == "xl" else IFShape(sample_size=64).unet_kwargs()
    torch.manual_seed(0)
    with torch.device(device):
        unet = if_unet(**kwargs)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    unet = unet.to(dtype=dtype, memory_format=torch.channels_last)
    return IFPrior(unet, if_scheduler(), f"IF-I-XL-v1.0-random-{shape}")


def guidance_variants(
    prior, corrective, batch: int, loss_types: bool = False
) -> Dict[str, Callable[[int], torch.Tensor]]:
    """name -> fn(seed) running one guidance call (forward + backward); returns d loss / d render.
    The built-in formula and LMC-SDS, or with ``loss_types`` every loss type (the baselines)."""
    import torch.nn.functional as F

    from ..core import StepConfig, lmc_sds_step
    from ..core.gradients import loss_from_grad

    res, device = prior.resolution, prior.device
    width = prior.unet.config.encoder_hid_dim
    gen = torch.Generator(device=device).manual_seed(0)
    emb_y, emb_0 = (torch.randn(batch, 77, width, device=device, generator=gen) for _ in "yo")
    eps_fixed = torch.randn(batch, 3, res, res, device=device, generator=gen)
    configs = {  # built-in: eps_0 + omega (eps_y - eps_0) - eps, times 1 - abar; omega = s + 1
        "builtin_sds_math": (StepConfig("sds", 20.0, scale_by_omega=False, weighting="sds"), {}),
        "lmc_sds_shared": (StepConfig("lmc-sds", 20.0, "global<700"), {}),
        "lmc_sds_fixed": (StepConfig("lmc-sds", 20.0, "global<700"), {"eps_cond": eps_fixed}),
    }
    if loss_types:
        from .guidance import loss_type_cases

        configs = loss_type_cases(batch, res, width, device, gen)

    def variant(cfg, kwargs) -> Callable[[int], torch.Tensor]:
        def call(seed: int) -> torch.Tensor:
            g = torch.Generator(device=device).manual_seed(seed)
            rgb = torch.rand(batch, res, res, 3, device=device, generator=g).requires_grad_()
            z = F.interpolate(rgb.permute(0, 3, 1, 2) * 2 - 1, (res, res), mode="bilinear")
            t = torch.randint(20, 981, (batch,), device=device, generator=g)
            eps = torch.randn(z.shape, device=device, generator=g)
            out = lmc_sds_step(prior, corrective, z, t, emb_y, emb_0, eps, cfg, **kwargs)
            loss_from_grad(z, out.g).backward()
            return rgb.grad

        return call

    return {name: variant(*c) for name, c in configs.items()}


def time_variants(fns: Dict[str, Callable], repeats: int, warmup: int) -> Dict[str, float]:
    """Median seconds per call, variants interleaved (machine noise hits all alike)."""
    from .guidance import interleaved_seconds

    return interleaved_seconds({k: (lambda f=f: f(1)) for k, f in fns.items()}, repeats, warmup)


def peak_memory_mib(fn: Callable) -> Optional[float]:
    if not torch.cuda.is_available():
        return None
    _sync()
    torch.cuda.reset_peak_memory_stats()
    fn(2)
    _sync()
    return torch.cuda.max_memory_allocated() / 2**20


def relative_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b| (inf when either is not finite)."""
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        return float("inf")
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


ROW_GROUPS = {2: ["builtin_sds_math", "lmc_sds_shared"], 3: ["lmc_sds_fixed"]}


def compiled_section(prior, fns, eager_grads, mode, rows, args, budget, guess_s, result) -> None:
    """One compile mode at one input shape (2 or 3 rows): compile time, timings, recompilations
    during the timed calls, distance of the gradient to eager. Updates ``result`` in place."""
    names = ROW_GROUPS[rows]
    if not budget.allows(guess_s * 1.2 + 15):
        result.setdefault("skipped", []).append(
            f"{rows} rows: {budget.left():.0f} s left, compiling takes ~{guess_s:.0f} s"
        )
        return
    torch._dynamo.reset()
    compiled = prior.compile(mode, log=lambda msg: print(f"  {msg}", flush=True))
    try:
        for name in names:  # the first call of a shape compiles it
            result.setdefault("grad_rel_distance_to_eager", {})[name] = relative_distance(
                fns[name](0), eager_grads[name]
            )
        result.setdefault("compile_seconds", {})[rows] = max(compiled.compile_seconds.values())
        warm = compiled.compiles
        seconds = time_variants({n: fns[n] for n in names}, args.repeats, args.warmup)
        result.setdefault("seconds_per_call", {}).update(seconds)
        result.setdefault("compiles_during_timing", {})[rows] = compiled.compiles - warm
    except Exception as e:  # noqa: BLE001  (a failing mode is a result, not a crash)
        result.setdefault("error", []).append(f"{rows} rows: {type(e).__name__}: {e}"[:500])
    finally:
        prior.compiled = None


def triplet_rates(prior, batches: List[int], mode: Optional[str], budget: Budget) -> dict:
    """Prior passes per second for corrective triplets (make_triplets), per batch size."""
    from ..training.triplets import make_triplets
    from .training import rate

    res, width = prior.resolution, prior.unet.config.encoder_hid_dim
    emb_0 = torch.zeros(1, 77, width, device=prior.device)
    gen = torch.Generator().manual_seed(0)
    out: dict = {}
    for b in batches:
        if not budget.allows(30):
            out[f"batch_{b}"] = "skipped: budget"
            continue
        z = torch.rand(b, 3, res, res) * 2 - 1
        try:
            fn = lambda: make_triplets(prior, z, emb_0, gen, 20, 980)  # noqa: E731
            out[f"batch_{b}"] = {"eager": rate(fn, b, seconds=4.0)}
            if mode is not None and budget.allows(40):
                torch._dynamo.reset()
                compiled = prior.compile(mode)
                out[f"batch_{b}"][mode] = rate(fn, b, seconds=4.0)
                out[f"batch_{b}"]["compile_seconds"] = max(compiled.compile_seconds.values())
        except torch.cuda.OutOfMemoryError:
            out[f"batch_{b}"] = "out of memory"
        finally:
            prior.compiled = None
            torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return out


def corrective_rates(device: torch.device, batch: int, res: int) -> dict:
    """Training steps per second of the paper's corrective (Adam, L_k), fp32 and bf16 autocast."""
    from ..core import gradients as G
    from ..core.corrective import CorrectiveConfig, CorrectiveUNet
    from .training import rate

    torch.manual_seed(0)
    model = CorrectiveUNet(CorrectiveConfig()).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    z = torch.rand(batch, 3, res, res, device=device) * 2 - 1
    zhat = (z + 0.3 * torch.randn_like(z)).clamp(-1, 1)
    t = torch.randint(20, 981, (batch,), device=device)
    out = {}
    for name, dtype in (("fp32", None), ("bf16_autocast", torch.bfloat16)):
        if dtype is not None and device.type != "cuda":
            continue

        def step() -> None:
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=bool(dtype)):
                loss = G.loss_k(model(z, t).float(), zhat, "global<700", t)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        out[name] = rate(step, 1, seconds=3.0)
    return out


def threestudio_step(args, device: torch.device, budget: Budget) -> dict:
    """Seconds per training step of the CPU config (dense renderer, small prior) via launch.py:
    the wall time of a 60-step run minus a 10-step run, over 50."""
    import os
    import subprocess
    import tempfile

    root = Path(__file__).resolve().parents[4]
    ts = Path(args.threestudio).resolve()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ts), os.environ.get("PYTHONPATH", "")]))
    if device.type == "cpu":
        env["LMCSDS_DEVICE"] = "cpu"
    if not (ts / "launch.py").is_file():
        return {"skipped": f"no threestudio checkout at {ts} (--threestudio)"}
    probe = subprocess.run(
        [sys.executable, "-c", "import threestudio"],
        cwd=ts,
        env=env,
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        return {"skipped": "threestudio does not import here: " + probe.stderr.strip()[-300:]}
    if not budget.allows(120):
        return {"skipped": f"budget: {budget.left():.0f} s left"}
    config = root / "configs" / "lmcsds-dreamfusion-cpu.yaml"
    wall = {}
    with tempfile.TemporaryDirectory() as tmp:
        for steps in (10, 60):
            cmd = [sys.executable, "launch.py", "--config", str(config), "--train"]
            cmd += ["--gpu", "0"] if device.type == "cuda" else []
            cmd += [
                f"trainer.max_steps={steps}",
                f"exp_root_dir={tmp}",
                "system.guidance_eval_every=0",
            ]
            start = time.perf_counter()
            run = subprocess.run(cmd, cwd=ts, env=env, capture_output=True, text=True)
            if run.returncode != 0:
                return {"error": (run.stdout + run.stderr).strip()[-500:]}
            wall[steps] = time.perf_counter() - start
    return {"seconds_per_step": (wall[60] - wall[10]) / 50, "wall_s": wall}


def loss_type_timings(prior, corrective, args, budget: Budget) -> dict:
    """Every loss type, eager, batch 1, interleaved: ms per call, ratio to sds, UNet rows."""
    if not budget.allows(60):
        return {"skipped": f"budget: {budget.left():.0f} s left"}
    from ..core.lmc_sds import lmc_sds_step

    fns = guidance_variants(prior, corrective, batch=1, loss_types=True)
    rows = {}
    for name, fn in fns.items():  # one call each also checks that it runs
        grad = fn(0)
        rows[name] = bool(torch.isfinite(grad).all())
    seconds = time_variants(fns, args.repeats, args.warmup)
    from .guidance import loss_type_cases

    res, width = prior.resolution, prior.unet.config.encoder_hid_dim
    cases = loss_type_cases(1, res, width, prior.device)
    z = torch.zeros(1, 3, res, res, device=prior.device)
    t = torch.tensor([500], device=prior.device)
    emb = torch.zeros(1, 77, width, device=prior.device)
    unet_rows = {n: lmc_sds_step(prior, corrective, z, t, emb, emb, z, c, **kw).unet_rows
                 for n, (c, kw) in cases.items()}  # fmt: skip
    return {
        "seconds_per_call": seconds,
        "ratio_to_sds": {k: v / seconds["sds"] for k, v in seconds.items()},
        "unet_rows_per_image": unet_rows,
        "grad_finite": rows,
    }


def print_loss_types(report: dict) -> None:
    section = report.get("loss_types_eager")
    if not isinstance(section, dict) or "seconds_per_call" not in section:
        print(f"loss types: {section}")
        return
    print("\nEvery loss type, eager, batch 1 (forward + backward to the render):")
    for name, sec in section["seconds_per_call"].items():
        print(f"  {name:24s} {sec * 1e3:8.2f} ms   x{section['ratio_to_sds'][name]:.2f} of sds"
              f"   {section['unet_rows_per_image'][name]} UNet rows")  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="bench-results/gpu-check.json", help="JSON written here")
    parser.add_argument("--budget-s", type=float, default=330.0,
                        help="stop starting sections after this many seconds")  # fmt: skip
    parser.add_argument("--shape", choices=["xl", "tiny"], default="xl",
                        help="xl: IF-I-XL's architecture; tiny: a 64x64 test-sized UNet")  # fmt: skip
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="torch device")  # fmt: skip
    parser.add_argument("--modes", nargs="*", default=DEFAULT_MODES,
                        help="compile modes, in order (see lmcsds.core.compiled_unet)")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per variant")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls first")
    parser.add_argument("--triplet-batches", type=int, nargs="*", default=[128, 256],
                        help="prior batch sizes for triplets/s")  # fmt: skip
    parser.add_argument("--triplet-mode", default="cudagraphs",
                        help="compile mode for triplets/s besides eager ('' for none)")  # fmt: skip
    parser.add_argument("--corrective-batch", type=int, default=128, help="corrective batch")
    parser.add_argument("--threestudio", default="build/threestudio",
                        help="threestudio checkout for the 3D step (skipped where it fails)")  # fmt: skip
    parser.add_argument("--loss-types", action="store_true",
                        help="also time every loss type (the baselines) eager")  # fmt: skip
    parser.add_argument("--only-loss-types", action="store_true",
                        help="time every loss type and stop (a short run)")  # fmt: skip
    parser.add_argument("--hide-modules", nargs="*", default=[],
                        help="modules made unimportable first (e.g. transformers jax flax "
                             "onnxruntime beside a carried diffusers 0.19)")  # fmt: skip


def main(argv=None) -> dict:
    return module_main(__doc__, add_arguments, run, argv)


def run(args: argparse.Namespace) -> dict:
    hide_modules(args.hide_modules)
    budget = Budget(args.budget_s)
    device = torch.device(args.device)
    report = Report(Path(args.out))
    import diffusers

    report.put(
        "environment",
        {
            "date": time.strftime("%Y-%m-%d"),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "python": platform.python_version(),
            "shape": args.shape,
        },
    )
    from ..core.corrective import CorrectiveConfig, CorrectiveUNet

    start = time.perf_counter()
    prior = build_prior(args.shape, device)
    corrective = CorrectiveUNet(CorrectiveConfig()).to(device)
    report.put("build_seconds", time.perf_counter() - start)
    print(f"built {args.shape} prior in {report['build_seconds']:.1f} s", flush=True)

    if args.loss_types or args.only_loss_types:
        report.put("loss_types_eager", loss_type_timings(prior, corrective, args, budget))
        print_loss_types(report)
        if args.only_loss_types:
            return report
    fns = guidance_variants(prior, corrective, batch=1)
    eager_grads = {name: fn(0).clone() for name, fn in fns.items()}
    eager = {"seconds_per_call": time_variants(fns, args.repeats, args.warmup)}
    eager["peak_memory_mib"] = {n: peak_memory_mib(f) for n, f in fns.items()}
    eager["grad_finite"] = {n: bool(torch.isfinite(g).all()) for n, g in eager_grads.items()}
    report.put("eager", eager)
    print_table(report)

    # each mode at 2 rows (shared noise, built-in), then 3 rows (fixed eps), in --modes order
    compiled = {mode: {"mode": mode} for mode in args.modes}
    guess = INDUCTOR_COMPILE_GUESS_S
    for mode, section in compiled.items():
        for rows in (2, 3):
            if device.type != "cuda" and mode != "default":
                section["skipped"] = ["CUDA graphs need a GPU"]
                continue
            print(f"compiling: {mode}, {rows} rows", flush=True)
            mode_guess = 20.0 if mode == "cudagraphs" else guess
            compiled_section(prior, fns, eager_grads, mode, rows, args, budget, mode_guess, section)
            if mode != "cudagraphs" and rows in section.get("compile_seconds", {}):
                guess = section["compile_seconds"][rows]
            report.put("compiled", list(compiled.values()))
        print_table(report)

    mode = args.triplet_mode or None
    if mode and device.type != "cuda" and mode != "default":
        mode = None
    report.put("triplets_per_s", triplet_rates(prior, args.triplet_batches, mode, budget))
    del prior
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    report.put(
        "corrective_steps_per_s",
        (
            corrective_rates(device, args.corrective_batch, 64)
            if budget.allows(15)
            else "skipped: budget"
        ),
    )
    report.put("threestudio_3d_step", threestudio_step(args, device, budget))
    report.put("total_seconds", args.budget_s - budget.left())
    print_table(report)
    print(f"\nwritten: {args.out}")
    return report


def print_table(report: dict) -> None:
    """Milliseconds per guidance call and ratios to the eager built-in formula."""
    eager = report.get("eager", {}).get("seconds_per_call")
    if not eager:
        return
    base = eager["builtin_sds_math"]
    env = report["environment"]
    print(f"\n{env['device']}, torch {env['torch']}, {env['shape']} UNet, batch 1")
    print(f"{'variant':18s} {'mode':16s} {'ms/call':>8s} {'x eager built-in':>17s}")
    rows = [("eager", eager)] + [
        (c["mode"], c.get("seconds_per_call", {})) for c in report.get("compiled", [])
    ]
    for mode, seconds in rows:
        for name, s in seconds.items():
            print(f"{name:18s} {mode:16s} {s * 1e3:8.2f} {s / base:17.3f}")
    for c in report.get("compiled", []):
        notes = {k: c[k] for k in ("compile_seconds", "skipped", "error") if k in c}
        if notes:
            print(f"  {c['mode']}: {notes}")
    for key in ("triplets_per_s", "corrective_steps_per_s", "threestudio_3d_step"):
        if key in report:
            print(f"{key}: {report[key]}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
