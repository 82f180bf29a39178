"""``lmcsds`` command line: train the corrective, make triplet caches, reports, benchmarks.

lmcsds train-corrective --prior DeepFloyd/IF-I-XL-v1.0 --images photos/ --out runs/bhat
lmcsds generate-triplets --prior ... --images photos/ --cache cache/ --num-triplets 1000000
lmcsds train-corrective --cache cache/ --out runs/bhat          # no prior in memory
lmcsds report-corrective --checkpoint runs/bhat/IF-I-XL-v1.0.safetensors --prior ... --images val/
lmcsds gather-photos --out data/photos                          # offline natural photos
lmcsds compare --threestudio TS --config configs/lmcsds-dreamfusion.yaml --prompt "..." --out o
lmcsds --help                                                   # every command (also python -m lmcsds.X)
"""

import argparse
import os
import sys
from pathlib import Path
from typing import List, Optional

import torch

from .commands import add_subcommand, missing_extra_message, register
from .core.compiled_unet import COMPILE_MODES

DEFAULT_PRIOR = "DeepFloyd/IF-I-XL-v1.0"


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def empty_embedding(prior: str, out_dir: Path, path: Optional[str], device: str) -> torch.Tensor:
    """The unconditional (empty-prompt) T5 embedding (1, 77, d): from ``path``, from the cache
    in ``out_dir``, or computed once with the prior's own text encoder (then freed)."""
    from .core.atomic import atomic_write
    from .core.text import encode_prompts

    cached = Path(path) if path else out_dir / "empty_embedding.pt"
    if cached.exists():
        emb = torch.load(cached, map_location="cpu", weights_only=True)
        return emb if emb.dim() == 3 else emb[None]
    if path:
        raise FileNotFoundError(f"--empty-embedding {path}: file not found")
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    print(f"computing the empty-prompt embedding with {prior}'s text encoder (once)")
    emb = encode_prompts(prior, [""], device=device, dtype=dtype)
    atomic_write(cached, lambda tmp: torch.save(emb, tmp))  # ranks may race here
    return emb


def _load_prior(args, device: str):
    from .core.prior import IFPrior

    prior = IFPrior.from_pretrained(args.prior, device=device, half_precision=args.half)
    if getattr(args, "compile", None):
        prior.compile(args.compile, log=print)
    return prior


def _scan(args, resolution: int, out_dir: Path, folder: Optional[str] = None):
    from .training.images import scan_images

    folder = folder or args.images
    index = out_dir / f"image-index-{resolution}.json"
    out_dir.mkdir(parents=True, exist_ok=True)
    report = scan_images(folder, resolution, index_path=str(index))
    print(report.summary())
    return report


def cmd_generate(args) -> None:
    from .training.images import CropSampler
    from .training.triplets import StepRange, generate_cache

    device = _default_device()
    prior = _load_prior(args, device)
    cache = Path(args.cache)
    scan = _scan(args, prior.resolution, cache)
    emb_0 = empty_embedding(args.prior, cache, args.empty_embedding, device)
    sampler = CropSampler(scan.usable, prior.resolution, seed=args.seed)
    generate_cache(
        str(cache),
        prior,
        sampler,
        emb_0,
        args.num_triplets,
        args.shard_size,
        args.seed,
        StepRange(args.min_step_percent, args.max_step_percent),
        args.gen_batch_size,
        getattr(args, "part", (0, 1)),
    )
    k, n = getattr(args, "part", (0, 1))
    print(f"triplet cache ready: {cache}" + (f" (part {k}/{n})" if n > 1 else ""))


def cmd_train(args) -> None:
    from .training.images import CropSampler
    from .training.trainer import TrainConfig, train_corrective
    from .training.triplets import FromCache, OnTheFly, StepRange, read_manifest

    out = Path(args.out)
    cfg = TrainConfig(
        out=str(out),
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        lr_decay=args.lr_decay,
        lr_decay_every=args.lr_decay_every,
        seed=args.seed,
        normalization=args.normalization,
        base_channels=args.base_channels,
        depth=args.depth,
        residual=args.residual,
        checkpoint_every=args.checkpoint_every,
        log_every=args.log_every,
        workers=args.workers,
        accelerator=args.accelerator,
        devices=args.devices,
        num_nodes=args.num_nodes,
        precision=args.precision,
    )
    world = args.devices * args.num_nodes if isinstance(args.devices, int) else 1
    if args.cache_triplets is not None and not args.cache:
        sys.exit("train-corrective: --cache-triplets needs --cache DIR")
    if args.cache and args.images:  # make (or complete) the cache first, then train from it
        if args.cache_triplets is None:
            sys.exit(
                "train-corrective: --images with --cache generates the cache first: give its "
                "size with --cache-triplets N (or drop --images to train from a finished cache)"
            )
        args.num_triplets = args.cache_triplets
        cmd_generate(args)
    if args.cache:
        manifest = read_manifest(args.cache)
        prior_id, resolution, T = (
            manifest.prior_id,
            manifest.resolution,
            manifest.num_train_timesteps,
        )

        def make_source(device):
            return FromCache(args.cache, args.batch_size, args.seed, world, args.cache_triplets)

        shards = len(FromCache(args.cache, args.batch_size, 0, 1, args.cache_triplets).shards)
        epochs = args.steps * args.batch_size * world / (shards * manifest.shard_size)
        data = (f"triplet cache `{args.cache}` ({shards} shards of {manifest.shard_size}, from "
                f"images `{manifest.images}`, t in [{manifest.min_step}, {manifest.max_step}]; "
                f"{epochs:.1f} passes over it)")  # fmt: skip

    else:
        if not args.images:
            sys.exit("train-corrective: give --images DIR (on the fly) or --cache DIR (cached)")
        from .core.checkpoint import prior_id as _prior_id
        from .core.prior import IFPrior

        probe = IFPrior.from_pretrained(args.prior, device="cpu", half_precision=False)
        prior_id, resolution, T = _prior_id(args.prior), probe.resolution, probe.num_train_timesteps
        del probe
        scan = _scan(args, resolution, out)
        emb_0 = empty_embedding(args.prior, out, args.empty_embedding, "cpu")

        def make_source(device):
            prior = _load_prior(args, device)
            sampler = CropSampler(scan.usable, resolution, seed=args.seed)
            t_range = StepRange(args.min_step_percent, args.max_step_percent)
            return OnTheFly(prior, sampler, emb_0, args.batch_size, args.seed, t_range)

        data = (f"{len(scan.usable)} images under `{args.images}`, one fresh triplet per image "
                f"crop and step (t ~ U({args.min_step_percent:g}, {args.max_step_percent:g}) of "
                f"the schedule)")  # fmt: skip

    final = train_corrective(cfg, make_source, prior_id, resolution, T, args.resume, args.export)
    if final is None:  # not the global-zero process of a multi-process run
        return
    from .training.model_card import write_model_card

    card = write_model_card(final, cfg, data)
    print(f"\ncorrective written: {final} (model card: {card})")
    print("use it with threestudio:")
    print(f"  system.guidance.corrective_path={final.resolve()}")
    print(f"or copy it to load/lmcsds/correctives/{prior_id}.safetensors (the config's default)")
    if args.val_images:
        args.checkpoint, args.images, args.compile = str(final), args.val_images, None
        args.report_out = args.report_out or str(out / "report")
        if (out / "empty_embedding.pt").exists():
            args.empty_embedding = str(out / "empty_embedding.pt")
        cmd_report(args)
        write_model_card(final, cfg, data, Path(args.report_out))
    if args.check_threestudio:
        from .evaluation.check_corrective import run as run_check
        from .training.acceptance import DEFAULT_PROMPTS, Limits

        run_check(argparse.Namespace(
            corrective=str(final), threestudio=args.check_threestudio, config=args.check_config,
            out=str(out / "check"), prompts=";".join(DEFAULT_PROMPTS), steps=150, seed=0,
            omega=10.0, ratio_limit=Limits.ratio_limit, growth_limit=Limits.growth_limit,
            warn_ratio=Limits.warn_ratio, reseeds=Limits.reseeds,
            images=args.val_images, overrides=[], force=True,
        ))  # fmt: skip


def cmd_report(args) -> None:
    from .training.report import corrective_report, negative_gains

    device = _default_device()
    prior = _load_prior(args, device)
    out = Path(args.report_out or Path(args.checkpoint).with_suffix("").as_posix() + "-report")
    scan = _scan(args, prior.resolution, out)
    emb_0 = empty_embedding(args.prior, out, args.empty_embedding, device)
    report = corrective_report(
        args.checkpoint, prior, emb_0, scan.usable, str(out), args.report_images, args.mc_samples
    )
    o = report["overall"]
    print(f"report: {out / 'report.md'}")
    print(
        f"  L_k {o['loss_k']:.5f} (identity {o['loss_k_identity']:.5f}); relative error to "
        f"E[zhat_t] {o['rel_err_mc']:.3f} (identity {o['rel_err_mc_identity']:.3f})"
    )
    negative = negative_gains(report)
    if negative:
        print(
            f"warning: negative stability gains of E[g_lmc]: {', '.join(negative)}. Guidance with "
            f"this corrective tends to run away along them (docs/results/triplet-reuse); train "
            f"again with another --seed (from a cache: no new prior passes) and keep a corrective "
            f"whose gains are all positive"
        )


def cmd_gather(args) -> None:
    from .training.photos import gather_photos

    gather_photos(args.out, heldout_fraction=args.heldout_fraction, fetch=args.fetch)


def _part(value: str):
    k, _, n = value.partition("/")
    if not (k.isdigit() and n.isdigit() and int(k) < int(n)):
        raise argparse.ArgumentTypeError(f"{value!r}: give K/N with 0 <= K < N, e.g. 0/8")
    return int(k), int(n)


def _devices(value: str):
    return value if value == "auto" else int(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmcsds", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def prior_args(p, images_required=False):
        p.add_argument("--prior", default=DEFAULT_PRIOR, help="hub id or local diffusers folder")
        p.add_argument("--images", required=images_required, help="folder of photos (recursive)")
        p.add_argument("--half", action="store_true", help="fp16 prior weights (GPU)")
        p.add_argument("--empty-embedding", help="cached empty-prompt embedding (.pt)")
        p.add_argument("--seed", type=int, default=0, help="image order, timesteps and noise")
        p.add_argument("--min-step-percent", type=float, default=0.02,
                       help="t ~ U(min, max) of the schedule (the paper: 0.02-0.98)")  # fmt: skip
        p.add_argument("--max-step-percent", type=float, default=0.98, help="see above")

    g = add_subcommand(sub, "generate-triplets", "write a resumable sharded triplet cache")
    prior_args(g, images_required=True)

    def generation_args(p):
        p.add_argument("--shard-size", type=int, default=1024, help="triplets per shard file")
        p.add_argument("--gen-batch-size", type=int, default=64,
                       help="prior batch while generating (GPU: 128; a divisor of --shard-size)")  # fmt: skip
        p.add_argument("--compile", choices=COMPILE_MODES, default=None,
                       help="torch.compile the prior's UNet (GPU: default, 1.6x triplets/s on an "
                            "H100 at batch 128); eager when not given")  # fmt: skip

    g.add_argument("--cache", required=True, help="cache folder")
    g.add_argument("--num-triplets", type=int, required=True, help="(z, zhat_t, t) triplets")
    g.add_argument("--part", type=_part, default=(0, 1),
                   help="K/N: write only shards i with i %% N == K (one process per GPU, "
                        "CUDA_VISIBLE_DEVICES=K, all filling one cache)")  # fmt: skip
    generation_args(g)
    g.set_defaults(func=cmd_generate)

    t = add_subcommand(sub, "train-corrective", "train b-hat-psi against a prior")
    prior_args(t)
    t.add_argument("--cache", help="train from this triplet cache (no prior in memory); with "
                                   "--images, generate it first (resumable)")  # fmt: skip
    t.add_argument("--cache-triplets", type=int, default=None,
                   help="use only the cache's first shards holding this many triplets, re-used "
                        "over epochs (default: all); with --images, the triplets to generate")  # fmt: skip
    generation_args(t)
    t.add_argument("--out", required=True, help="run folder: checkpoints, logs, export, report")
    t.add_argument("--steps", type=int, default=750_000, help="training steps (the paper's)")
    t.add_argument("--batch-size", type=int, default=128, help="triplets per step")
    t.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate")
    t.add_argument("--lr-decay", type=float, default=0.9, help="lr factor every --lr-decay-every")
    t.add_argument("--lr-decay-every", type=int, default=100_000, help="steps")
    t.add_argument("--normalization", default="global",
                   help="Eq. 10 statistics: global (the paper's), per_channel, none (bhat = B), or "
                        "e.g. global<700 (Eq. 10 below t 700 only); see docs/objects3d.md")  # fmt: skip
    t.add_argument("--base-channels", type=int, default=32, help="U-Net filters at level 1")
    t.add_argument("--depth", type=int, default=4, help="U-Net encoder levels")
    t.add_argument(
        "--residual",
        action="store_true",
        help="corrective = z + U(z, t), identity at start (not the paper's; see docs/results-2d.md)",
    )
    t.add_argument("--checkpoint-every", type=int, default=1000, help="steps between checkpoints")
    t.add_argument("--log-every", type=int, default=50, help="steps between log lines")
    t.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    t.add_argument("--accelerator", default="auto", help="Lightning Fabric accelerator")
    t.add_argument("--devices", type=_devices, default=1, help="devices (number or list)")
    t.add_argument("--num-nodes", type=int, default=1, help="machines (multi-node training)")
    t.add_argument("--precision", default="32-true", help="32-true | 16-mixed | bf16-mixed")
    t.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.ckpt")
    t.add_argument("--export", help="also write the corrective here")
    t.add_argument("--val-images", help="held-out photos: write the report after training")
    t.add_argument("--report-images", type=int, default=32, help="held-out images in the report")
    t.add_argument("--mc-samples", type=int, default=8,
                   help="prior passes per image and t for the Monte-Carlo E[zhat_t]")  # fmt: skip
    t.add_argument("--report-out", default=None, help="report folder (default: OUT/report)")
    t.add_argument(
        "--check-threestudio",
        default=None,
        help="threestudio folder: run check-corrective on the result (OUT/check)",
    )
    t.add_argument("--check-config", default="configs/lmcsds-dreamfusion-cpu.yaml",
                   help="base config of the check's short 3D runs")  # fmt: skip
    t.set_defaults(func=cmd_train)

    r = add_subcommand(sub, "report-corrective", "evaluate a corrective on held-out photos")
    prior_args(r, images_required=True)
    r.add_argument("--checkpoint", required=True, help="corrective (.safetensors)")
    r.add_argument(
        "--report-out", default=None, help="default: CHECKPOINT without .safetensors + -report"
    )
    r.add_argument("--report-images", type=int, default=32, help="held-out images")
    r.add_argument("--mc-samples", type=int, default=8,
                   help="prior passes per image and t for the Monte-Carlo E[zhat_t]")  # fmt: skip
    r.set_defaults(func=cmd_report)

    p = add_subcommand(sub, "gather-photos", "collect offline natural photos (train / held-out)")
    p.add_argument("--out", default="data/photos", help="output folder (train/ and heldout/)")
    p.add_argument("--heldout-fraction", type=float, default=0.15, help="share held out")
    p.add_argument("--fetch", action="store_true",
                   help="pip-install scikit-learn and apt-get download the Debian photo packages "
                        "(network; without it only what is installed is used)")  # fmt: skip
    p.set_defaults(func=cmd_gather)

    register(sub)
    return parser


# bad input (a missing file, a wrong value, a corrective for another prior): one line, exit 2
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, PermissionError)


def main(argv: Optional[List[str]] = None) -> None:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "unavailable", False):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        args.func(args)
    except ModuleNotFoundError as e:  # an optional package (pip extra) is not installed
        if os.environ.get("LMCSDS_DEBUG"):
            raise
        print(missing_extra_message(args.command, e), file=sys.stderr)
        sys.exit(2)
    except USER_ERRORS as e:
        if os.environ.get("LMCSDS_DEBUG"):
            raise
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"lmcsds {args.command}: error: {message}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
