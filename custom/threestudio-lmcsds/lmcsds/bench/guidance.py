"""Cost of LMC-SDS against threestudio's built-in ``deep-floyd-guidance``, side by side.

1. Wall clock per guidance call (forward + backward) on a tiny IF-shaped prior (random
   weights, 64x64 like IF stage I) with the paper's corrective: LMC-SDS with shared noise and
   with fixed eps, and with the UNet compiled (``compile_unet``), each divided by the built-in
   guidance, measured interleaved in one run on this machine's device.
2. FLOPs per call for the full-size IF-I-XL UNet architecture and the paper's corrective,
   counted on the meta device (no weights), and UNet rows per image per step.
3. With CUDA: wall clock and peak GPU memory for the full-size architecture (random fp16).

    python -m lmcsds.bench.guidance --out bench-results/guidance.json
"""

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict

import torch
from tqdm import tqdm

from ..commands import module_main
from ..core import (
    CorrectiveConfig,
    CorrectiveMeta,
    CorrectiveUNet,
    IFPrior,
    StepConfig,
    lmc_sds_step,
    save_corrective,
)
from ..core.if_factory import (
    IF_I_XL_UNET,
    IF_TEXT_TOKENS,
    IFShape,
    build_if_pipeline,
    if_scheduler,
    if_unet,
)

PROMPTS = ["a photo of a sneaker", "a hamburger", "a zoomed out DSLR photo of a corgi"]


def interleaved_seconds(fns: Dict[str, Callable[[], None]], repeats: int, warmup: int) -> dict:
    """Median seconds per call; variants run round-robin so machine noise hits all alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {k: [] for k in fns}
    for _ in tqdm(range(repeats), desc="timing", leave=False):
        for name, fn in fns.items():
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def _prompt_utils(dim: int, device: torch.device):
    from threestudio.models.prompt_processors.base import PromptProcessorOutput

    emb = lambda: torch.randn(1, IF_TEXT_TOKENS, dim, device=device)  # noqa: E731
    return PromptProcessorOutput(
        text_embeddings=emb(),
        uncond_text_embeddings=emb(),
        text_embeddings_vd=emb(),
        uncond_text_embeddings_vd=emb(),
        directions=[],
        direction2idx={},
        use_perp_neg=False,
        perp_neg_f_sb=(1, 0.5, -0.606),
        perp_neg_f_fsb=(1, 0.5, 0.967),
        perp_neg_f_fs=(4, 0.5, -2.426),
        perp_neg_f_sf=(4, 0.5, -2.426),
        prompt="",
        prompts_vd=[],
    )


def _write_prior_and_corrective(root: Path, shape: IFShape, half: bool) -> tuple:
    prior_dir = root / "bench-if"
    pipe = build_if_pipeline(PROMPTS * 4, shape)
    pipe.save_pretrained(prior_dir)
    if half:  # threestudio's built-in loads the fp16 variant when half precision is on
        pipe.save_pretrained(prior_dir, variant="fp16")
    arch = CorrectiveConfig()
    path = root / "bench-if.safetensors"
    meta = CorrectiveMeta("bench-if", shape.sample_size, "global", 0, 1000, arch)
    save_corrective(path, CorrectiveUNet(arch), meta)
    return prior_dir, path


def guidance_timings(
    device: torch.device, batch: int, repeats: int, warmup: int, shape: IFShape, half: bool
) -> dict:
    """Seconds per call through the real threestudio guidances (built-in vs ours)."""
    from ..adapter.cpu_mode import threestudio_device

    with tempfile.TemporaryDirectory() as tmp, threestudio_device(device):
        import threestudio

        import lmcsds.adapter.guidance  # noqa: F401  (registers ours)

        prior_dir, corrective = _write_prior_and_corrective(Path(tmp), shape, half)
        common = dict(pretrained_model_name_or_path=str(prior_dir), half_precision_weights=half)
        common["view_dependent_prompting"] = False
        ours = dict(common, corrective_path=str(corrective), guidance_scale=20.0)
        mode = "reduce-overhead" if device.type == "cuda" else "default"  # no CUDA graphs on CPU
        compiled = dict(ours, compile_unet=True, compile_mode=mode)
        configs = {
            "builtin_sds": ("deep-floyd-guidance", dict(common, guidance_scale=19.0)),
            "lmc_sds_shared": ("lmc-sds-deep-floyd-guidance", ours),
            "lmc_sds_fixed": ("lmc-sds-deep-floyd-guidance", dict(ours, fixed_noise=True)),
            "lmc_sds_shared_compiled": ("lmc-sds-deep-floyd-guidance", compiled),
        }  # threestudio scale 19 == omega 20
        prompt_utils = _prompt_utils(shape.encoder_hid_dim, device)
        angles = torch.zeros(batch, device=device)

        def call(guidance) -> Callable[[], None]:
            def run() -> None:
                rgb = torch.rand(batch, 64, 64, 3, device=device, requires_grad=True)
                out = guidance(rgb, prompt_utils, angles, angles, angles + 2.0)
                out["loss_sds"].backward()

            return run

        guidances = {k: threestudio.find(name)(cfg) for k, (name, cfg) in configs.items()}
        calls = {k: call(g) for k, g in guidances.items()}
        calls["lmc_sds_shared_compiled"]()  # compiles (once per run; not timed)
        compile_s = max(
            guidances["lmc_sds_shared_compiled"].prior.compiled.compile_seconds.values()
        )
        seconds = interleaved_seconds(calls, repeats, warmup)
        del guidances, calls
        peak = {}
        if device.type == "cuda":  # one guidance resident at a time: load + one call
            for k, (name, cfg) in configs.items():
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
                guidance = threestudio.find(name)(cfg)
                call(guidance)()
                torch.cuda.synchronize()
                peak[k] = torch.cuda.max_memory_allocated() / 2**20
                del guidance
    base = seconds["builtin_sds"]
    result = {
        "seconds_per_call": seconds,
        "ratio_to_builtin": {k: v / base for k, v in seconds.items() if k != "builtin_sds"},
        "compiled": {
            "mode": mode,
            "compile_seconds": compile_s,
            "ratio_to_eager": seconds["lmc_sds_shared_compiled"] / seconds["lmc_sds_shared"],
        },
    }
    if peak:
        result["peak_memory_mib"] = peak
        result["peak_memory_ratio_to_builtin"] = {
            k: v / peak["builtin_sds"] for k, v in peak.items() if k != "builtin_sds"
        }
    return result


def loss_type_cases(batch: int, res: int, width: int, device, gen=None) -> Dict[str, tuple]:
    """name -> (StepConfig, extra lmc_sds_step kwargs) of every loss type at its default
    settings (omega 20), for cost tables: the inputs each needs beyond the prompt pair."""

    def randn(*shape):
        return torch.randn(*shape, device=device, generator=gen)

    emb = lambda n=batch: randn(n, IF_TEXT_TOKENS, width)  # noqa: E731
    negative = {"emb_neg": emb()}
    perp = {"perp_neg": (emb(2 * batch).unflatten(0, (batch, 2)), randn(batch, 2))}
    return {
        "sds": (StepConfig("sds", 20.0), {}),
        "cond": (StepConfig("cond", 20.0), {}),
        "lmc-sds": (StepConfig("lmc-sds", 20.0), {}),
        "lmc-sds fixed eps": (StepConfig("lmc-sds", 20.0), {"eps_cond": randn(batch, 3, res, res)}),
        "lmc-sds perp-neg (K=2)": (StepConfig("lmc-sds", 20.0), perp),
        "nfsd": (StepConfig("nfsd", 20.0), negative),
        "dds": (StepConfig("dds", 20.0), {"source": (randn(batch, 3, res, res), emb())}),
        "ms-sds (5 steps)": (StepConfig("ms-sds", 20.0), {}),
        "csd": (StepConfig("csd", 20.0), {}),
        "csd negative prompt": (StepConfig("csd", 20.0, csd_negative_weight=0.5), negative),
    }


def full_size_flops(batch: int) -> dict:
    """FLOPs of one guidance step with IF-I-XL's UNet and the paper's corrective (meta device)."""
    from accelerate import init_empty_weights
    from torch.utils.flop_counter import FlopCounterMode

    with init_empty_weights():
        unet = if_unet(**IF_I_XL_UNET)
    prior = IFPrior(unet.to(torch.float16), if_scheduler(), "IF-I-XL-v1.0")
    corrective = CorrectiveUNet().to("meta")
    meta = dict(device="meta")
    z = torch.randn(batch, 3, 64, 64, **meta)
    t = torch.full((batch,), 500, dtype=torch.long, **meta)
    emb = torch.randn(batch, IF_TEXT_TOKENS, 4096, **meta)

    def count(fn) -> int:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            fn()
        return counter.get_total_flops()

    def ours(fixed: bool):
        return lambda: lmc_sds_step(
            prior, corrective, z, t, emb, emb, z, StepConfig(), eps_cond=z if fixed else None
        )

    cases = loss_type_cases(batch, 64, 4096, "meta")
    per_loss = {
        name: count(lambda: lmc_sds_step(prior, corrective, z, t, emb, emb, z, cfg, **kw))
        for name, (cfg, kw) in cases.items()
    }
    flops = {
        # threestudio's deep-floyd-guidance: one UNet call on [z_t; z_t] with [y; empty]
        "builtin_sds": count(
            lambda: prior.eps(torch.cat([z, z]), torch.cat([t, t]), emb.repeat(2, 1, 1))
        ),
        "lmc_sds_shared": count(ours(False)),
        "lmc_sds_fixed": count(ours(True)),
        "unet_one_row": count(lambda: prior.eps(z[:1], t[:1], emb[:1])),
        "corrective_one_row": count(lambda: corrective(z[:1].float(), t[:1])),
    }
    base = flops["builtin_sds"]
    return {
        "flops_per_call": flops,
        "ratio_to_builtin": {k: flops[k] / base for k in ("lmc_sds_shared", "lmc_sds_fixed")},
        "unet_rows_per_image": {"builtin_sds": 2, "lmc_sds_shared": 2, "lmc_sds_fixed": 3},
        "unet_parameters": sum(p.numel() for p in unet.parameters()),
        "corrective_parameters": sum(p.numel() for p in corrective.parameters()),
        "targets": {"lmc_sds_shared": 1.05, "lmc_sds_fixed": 1.5},
        "loss_types": {name: {"tflops": f / 1e12, "ratio_to_sds": f / per_loss["sds"]}
                       for name, f in per_loss.items()},
    }  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="bench-results/guidance.json", help="JSON written here")
    parser.add_argument("--batch", type=int, default=1, help="renders per call (dreamfusion-if: 1)")
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per guidance")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls first")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="torch device")  # fmt: skip
    parser.add_argument(
        "--skip-full-size-gpu", action="store_true", help="skip the CUDA IF-I-XL run"
    )


def main(argv=None) -> dict:
    return module_main(__doc__, add_arguments, run, argv)


def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    torch.manual_seed(0)

    tiny = IFShape(sample_size=64, encoder_hid_dim=64)
    report = {"device": str(device), "batch": args.batch, "repeats": args.repeats}
    report["tiny_prior"] = guidance_timings(
        device, args.batch, args.repeats, args.warmup, tiny, half=device.type == "cuda"
    )
    report["if_i_xl_flops"] = full_size_flops(args.batch)
    if device.type == "cuda" and not args.skip_full_size_gpu:
        xl = IFShape(
            sample_size=64,
            block_out_channels=list(IF_I_XL_UNET["block_out_channels"]),
            layers_per_block=IF_I_XL_UNET["layers_per_block"],
            attention_head_dim=IF_I_XL_UNET["attention_head_dim"],
            encoder_hid_dim=IF_I_XL_UNET["encoder_hid_dim"],
            norm_num_groups=32,
        )
        report["if_i_xl_gpu"] = guidance_timings(
            device, args.batch, max(5, args.repeats // 3), args.warmup, xl, half=True
        )
    else:
        report["if_i_xl_gpu"] = "not measured: needs CUDA"

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print_report(report)
    print(f"\nwritten: {out}")
    return report


def print_report(report: dict) -> None:
    tiny = report["tiny_prior"]
    print(
        f"\nTiny IF-shaped prior, {report['device']}, batch {report['batch']}, median of "
        f"{report['repeats']} interleaved calls (forward + backward):"
    )
    for name, s in tiny["seconds_per_call"].items():
        ratio = tiny["ratio_to_builtin"].get(name, 1.0)
        print(f"  {name:24s} {s * 1e3:8.2f} ms   x{ratio:.3f} of built-in")
    c = tiny["compiled"]
    print(
        f"  compiled ({c['mode']}) / eager LMC-SDS: x{c['ratio_to_eager']:.3f}, after "
        f"{c['compile_seconds']:.0f} s of compiling (on a CPU inductor gains little; the GPU "
        f"numbers come from `lmcsds gpu-check`: docs/benchmark.md)"
    )
    flops = report["if_i_xl_flops"]
    print("\nIF-I-XL UNet + paper corrective, FLOPs per call (meta device):")
    for name, f in flops["flops_per_call"].items():
        extra = ""
        if name in flops["ratio_to_builtin"]:
            extra = (
                f"   x{flops['ratio_to_builtin'][name]:.4f} of built-in "
                f"(target <= {flops['targets'][name]})"
            )
        print(f"  {name:18s} {f / 1e12:9.4f} TFLOP{extra}")
    print(f"  UNet rows per image: {flops['unet_rows_per_image']}")
    print("\nEvery loss type (omega 20, batch 1), IF-I-XL + corrective, FLOPs per step:")
    for name, f in flops["loss_types"].items():
        print(f"  {name:24s} {f['tflops']:9.4f} TFLOP   x{f['ratio_to_sds']:.3f} of sds")
    gpu = report["if_i_xl_gpu"]
    if isinstance(gpu, dict):
        print("\nIF-I-XL architecture on GPU (random fp16 weights):")
        for name, s in gpu["seconds_per_call"].items():
            print(f"  {name:16s} {s * 1e3:8.2f} ms   x{gpu['ratio_to_builtin'].get(name, 1.0):.3f}")
        for name, mib in gpu.get("peak_memory_mib", {}).items():
            ratio = gpu["peak_memory_ratio_to_builtin"].get(name, 1.0)
            print(f"  peak memory {name:16s} {mib:9.0f} MiB   x{ratio:.3f} (target <= 1.05)")
    else:
        print(f"\nIF-I-XL on GPU: {gpu}")


if __name__ == "__main__":
    main()
