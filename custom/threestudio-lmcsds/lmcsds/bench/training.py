"""Throughput of the corrective trainer's parts, measured side by side in one run.

(a) data path alone (decode, crop, batch) in samples/s, target >= 500/s;
(b) the prior's bare forward in samples/s;
(c) end-to-end triplets/s (crops in DataLoader workers + prior), target (c)/(b) >= 0.9;
(d) b-hat training steps/s from a triplet cache.
With CUDA, (b) and (c) also for the full-size IF-I-XL architecture (random fp16 weights).

    python -m lmcsds.bench.training --images data/photos/train
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ..commands import module_main
from ..core.if_factory import IF_I_XL_UNET, IF_TEXT_TOKENS, IFShape, build_if_pipeline
from ..core.prior import IFPrior
from ..training.images import CropSampler, scan_images
from ..training.trainer import StepData, TrainConfig, train_corrective
from ..training.triplets import FromCache, OnTheFly, generate_cache


def _sample_photos(folder: Path) -> Path:
    import skimage.data as skd
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for name in ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "cat"):
        Image.fromarray(getattr(skd, name)()).save(folder / f"{name}.png")
    return folder


def rate(fn, items_per_call: int, seconds: float = 5.0, min_calls: int = 3) -> float:
    """Items per second of ``fn`` over at least ``seconds`` (after one warm-up call)."""
    fn()
    calls, start = 0, time.perf_counter()
    while calls < min_calls or time.perf_counter() - start < seconds:
        fn()
        calls += 1
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return calls * items_per_call / (time.perf_counter() - start)


def measure(prior: IFPrior, paths, batch: int, workers: int, seconds: float) -> dict:
    res = prior.resolution
    emb_0 = torch.zeros(1, IF_TEXT_TOKENS, prior.unet.config.encoder_hid_dim)
    step = iter(range(10**9))

    fresh = CropSampler(paths, res, seed=0)
    data_rate = rate(lambda: fresh.batch(next(step), batch), batch, seconds)

    z = torch.rand(batch, 3, res, res, device=prior.device) * 2 - 1
    t = torch.randint(20, 981, (batch,), device=prior.device)
    emb = emb_0.to(prior.device).expand(batch, -1, -1)
    prior_rate = rate(lambda: prior.eps(z, t, emb), batch, seconds)

    source = OnTheFly(prior, CropSampler(paths, res, seed=1), emb_0, batch, seed=0)
    loader = iter(
        DataLoader(
            StepData(source.prepare, 0),
            batch_size=None,
            sampler=range(10**9),
            num_workers=workers,
            prefetch_factor=4 if workers else None,
        )
    )
    counter = iter(range(10**9))
    e2e_rate = rate(
        lambda: source.finish(next(loader), next(counter), 0, prior.device), batch, seconds
    )
    return {
        "a_data_samples_per_s": data_rate,
        "b_prior_forward_samples_per_s": prior_rate,
        "c_end_to_end_triplets_per_s": e2e_rate,
        "c_over_b": e2e_rate / prior_rate,
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", help="photo folder (default: scikit-image sample photos)")
    parser.add_argument("--batch", type=int, default=128, help="paper batch size")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--train-steps", type=int, default=10, help="(d): steps timed")
    parser.add_argument("--out", default="bench-results/training.json", help="JSON written here")


def main(argv=None) -> dict:
    return module_main(__doc__, add_arguments, run, argv)


def run(args: argparse.Namespace) -> dict:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    report = {
        "device": device,
        "batch": args.batch,
        "workers": args.workers,
        "cpu_threads": torch.get_num_threads(),
    }
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        images = Path(args.images) if args.images else _sample_photos(tmp / "photos")
        paths = scan_images(str(images), 64).usable
        report["photos"] = len(paths)
        shape = IFShape(sample_size=64, encoder_hid_dim=64)
        pipe = build_if_pipeline(["a photo", "a photo of a cat"] * 8, shape)
        pipe.save_pretrained(tmp / "bench-if")
        prior = IFPrior.from_pretrained(
            str(tmp / "bench-if"), device, half_precision=device == "cuda"
        )
        report["tiny_prior"] = measure(prior, paths, args.batch, args.workers, args.seconds)

        # (d) training steps/s from a cache, paper corrective, paper batch
        emb_0 = torch.zeros(1, IF_TEXT_TOKENS, 64)
        cache = tmp / "cache"
        generate_cache(
            str(cache),
            prior,
            CropSampler(paths, 64),
            emb_0,
            2 * args.batch,
            shard_size=args.batch,
            batch_size=args.batch,
        )
        cfg = TrainConfig(
            out=str(tmp / "run"),
            steps=args.train_steps,
            batch_size=args.batch,
            workers=args.workers,
            checkpoint_every=10**9,
            log_every=10**9,
        )
        start = time.perf_counter()
        train_corrective(cfg, lambda d: FromCache(str(cache), args.batch), "bench-if", 64, 1000)
        report["d_train_steps_per_s_from_cache"] = args.train_steps / (time.perf_counter() - start)

        if device == "cuda":
            from diffusers import UNet2DConditionModel

            xl = UNet2DConditionModel.from_config(
                dict(prior.unet.config, **IF_I_XL_UNET, norm_num_groups=32)
            ).to(device, torch.float16)
            xl_prior = IFPrior(xl, prior.scheduler, "IF-I-XL-v1.0")
            report["if_i_xl"] = measure(
                xl_prior, paths, args.batch // 4, args.workers, args.seconds
            )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    _print(report)
    print(f"\nwritten: {out}")
    return report


def _print(report: dict) -> None:
    print(
        f"\n{report['device']}, {report['cpu_threads']} threads, batch {report['batch']}, "
        f"{report['workers']} DataLoader workers, {report['photos']} photos"
    )
    for name in ("tiny_prior", "if_i_xl"):
        if name not in report:
            continue
        r = report[name]
        print(f"{name}:")
        print(f"  (a) data path        {r['a_data_samples_per_s']:9.0f} samples/s  (target >= 500)")
        print(f"  (b) prior forward    {r['b_prior_forward_samples_per_s']:9.0f} samples/s")
        print(
            f"  (c) end to end       {r['c_end_to_end_triplets_per_s']:9.0f} triplets/s "
            f"(c)/(b) = {r['c_over_b']:.2f}  (target >= 0.9)"
        )
    print(f"(d) b-hat training from cache: {report['d_train_steps_per_s_from_cache']:.2f} steps/s")


if __name__ == "__main__":
    main()
