"""Natural photos in, random crops at the prior's resolution out.

``scan_images`` finds and validates every photo once (decoding it fully, so corrupt, truncated,
unreadable and too-small files are skipped and counted, never crash training later).
``CropSampler`` cuts the crops for one training step as a pure function of (seed, step, rank):
a resumed run sees exactly the data an uninterrupted one would have seen. Each step decodes a
few photos and cuts many crops from each; small collections stay decoded in memory.
"""

import json
import os
from collections import Counter, OrderedDict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor
from tqdm import tqdm

from ..core.atomic import atomic_write
from ..core.noise import seeded_generator

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".ppm"}
Image.MAX_IMAGE_PIXELS = 200_000_000  # large wallpapers are fine; decompression bombs are not


class NoImagesError(ValueError):
    """No usable photo under the given folder."""


def decode_rgb(path: str) -> Tuple[np.ndarray, Optional[str]]:
    """Fully decode a photo to uint8 RGB (H, W, 3); returns the conversion applied, if any.

    Grey-scale (8 or 16 bit), palette, CMYK and transparent images are converted; transparent
    pixels are composited on white. EXIF orientation is applied. Raises on unreadable files.
    """
    with Image.open(path) as im:
        im.load()  # raises on truncated / corrupt data
        im = ImageOps.exif_transpose(im)
        mode, converted = im.mode, None
        if mode in ("I", "I;16", "I;16B", "F"):
            arr = np.asarray(im, dtype=np.float32)
            arr = arr / max(float(arr.max()), 1.0) * 255.0
            im, converted = Image.fromarray(arr.astype(np.uint8), "L"), "grey-16bit"
            mode = "L"
        if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            im, converted = Image.alpha_composite(white, rgba), "transparent"
        elif mode in ("L", "1"):
            converted = converted or "grey"
        elif mode != "RGB":
            converted = mode.lower()
        return np.asarray(im.convert("RGB")), converted


@dataclass
class ScanReport:
    """What ``scan_images`` found: usable photos, conversions and skips by reason."""

    root: str
    usable: List[str] = field(default_factory=list)
    converted: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    examples: Dict[str, str] = field(default_factory=dict)  # reason -> one example file

    def summary(self) -> str:
        lines = [f"{len(self.usable)} usable photos under {self.root}"]
        if self.converted:
            lines.append("  converted: " + ", ".join(f"{k} {v}" for k, v in self.converted.items()))
        for reason, n in self.skipped.items():
            lines.append(f"  skipped {n} {reason} (e.g. {self.examples[reason]})")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "root": self.root,
            "usable": len(self.usable),
            "converted": dict(self.converted),
            "skipped": dict(self.skipped),
            "examples": self.examples,
        }


def _check(args: Tuple[str, int]) -> Tuple[str, str, Optional[str]]:
    path, min_side = args
    try:
        arr, converted = decode_rgb(path)
    except (UnidentifiedImageError, Image.DecompressionBombError) as e:
        return path, "skip", f"unreadable ({type(e).__name__})"
    except (OSError, SyntaxError, ValueError) as e:
        reason = "truncated" if "truncated" in str(e) else f"corrupt ({type(e).__name__})"
        return path, "skip", reason
    if min(arr.shape[:2]) < min_side:
        return path, "skip", f"smaller than {min_side}px"
    return path, "ok", converted


def scan_images(
    root: str, min_side: int, workers: int = 0, index_path: Optional[str] = None
) -> ScanReport:
    """Find photos under ``root`` (recursive) and validate each by decoding it once.

    Results are cached in ``index_path`` (keyed by path, size and mtime) so a re-run or a
    resume does not decode everything again.
    """
    root_path = Path(root)
    if not root_path.is_dir():
        raise NoImagesError(f"--images {root}: not a folder")
    files = sorted(
        str(p) for p in root_path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )
    cache: dict = {}
    if index_path and os.path.exists(index_path):
        with open(index_path) as f:
            cache = json.load(f)
    key = lambda p: f"{p}|{os.path.getsize(p)}|{os.path.getmtime(p)}|{min_side}"  # noqa: E731
    todo = [p for p in files if key(p) not in cache]
    results = {}
    if todo:
        jobs = [(p, min_side) for p in todo]
        workers = workers or min(4, os.cpu_count() or 1)
        desc = f"checking {len(todo)} photos"
        if workers > 1 and len(todo) > 8:
            with ProcessPoolExecutor(workers) as pool:
                it = pool.map(_check, jobs, chunksize=4)
                results = {p: (s, r) for p, s, r in tqdm(it, total=len(jobs), desc=desc)}
        else:
            results = {p: (s, r) for p, s, r in map(_check, tqdm(jobs, desc=desc))}
    report = ScanReport(str(root))
    for p in files:
        status, reason = results[p] if p in results else cache[key(p)]
        cache[key(p)] = (status, reason)
        if status == "ok":
            report.usable.append(p)
            if reason:
                report.converted[reason] += 1
        else:
            report.skipped[reason] += 1
            report.examples.setdefault(reason, p)
    if index_path and todo:
        atomic_write(index_path, lambda tmp: Path(tmp).write_text(json.dumps(cache)))
    if not report.usable:
        raise NoImagesError(
            f"--images {root}: no usable photo among {len(files)} files "
            f"({dict(report.skipped) or 'no jpg/png/webp/bmp/tif/gif files'}); photos must be at "
            f"least {min_side}px on their short side"
        )
    return report


class CropSampler:
    """Random crops at ``resolution`` in [-1, 1]; batch of a step = f(seed, step, rank).

    Each photo is kept with its short side at most ``keep_side`` pixels; a crop covers between
    ``min_scale`` and all of the short side, is resized (antialiased) to ``resolution`` and
    flipped horizontally with probability 1/2.
    """

    def __init__(
        self,
        paths: List[str],
        resolution: int,
        seed: int = 0,
        photos_per_batch: int = 8,
        min_scale: float = 0.25,
        keep_side: Optional[int] = None,
        cache_photos: int = 4096,
    ):
        self.paths, self.resolution, self.seed = list(paths), resolution, seed
        self.photos_per_batch, self.min_scale = photos_per_batch, min_scale
        self.keep_side = keep_side or 4 * resolution
        self.cache_photos = cache_photos
        self._cache: "OrderedDict[int, Tensor]" = OrderedDict()

    def photo(self, i: int) -> Tensor:
        """Photo i as uint8 (3, H, W), short side <= keep_side; decoded once while cached."""
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        arr, _ = decode_rgb(self.paths[i])
        x = torch.from_numpy(arr.copy()).permute(2, 0, 1)
        short = min(x.shape[1:])
        if short > self.keep_side:
            size = [round(s * self.keep_side / short) for s in x.shape[1:]]
            x = F.interpolate(x[None].float(), size, mode="bilinear", antialias=True)[0]
            x = x.round().clamp(0, 255).to(torch.uint8)
        self._cache[i] = x
        if len(self._cache) > self.cache_photos:
            self._cache.popitem(last=False)
        return x

    def crop(self, photo: Tensor, gen: torch.Generator) -> Tensor:
        _, h, w = photo.shape
        short = min(h, w)
        lo = min(1.0, max(self.min_scale, self.resolution / short))
        scale = lo + (1 - lo) * torch.rand((), generator=gen).item()
        side = max(1, min(short, round(short * scale)))
        y = int(torch.randint(0, h - side + 1, (), generator=gen))
        x = int(torch.randint(0, w - side + 1, (), generator=gen))
        patch = photo[None, :, y : y + side, x : x + side].float()
        patch = F.interpolate(
            patch,
            (self.resolution, self.resolution),
            mode="bilinear",
            antialias=side > self.resolution,
        )[0]
        if torch.rand((), generator=gen) < 0.5:
            patch = patch.flip(-1)
        return patch / 127.5 - 1.0

    def batch(self, step: int, batch_size: int, rank: int = 0) -> Tensor:
        """(batch_size, 3, res, res) crops in [-1, 1] for this step and rank."""
        gen = seeded_generator(self.seed, step, rank)
        n_photos = max(1, min(self.photos_per_batch, batch_size))
        chosen = torch.randint(0, len(self.paths), (n_photos,), generator=gen).tolist()
        crops = [self.crop(self.photo(chosen[k % n_photos]), gen) for k in range(batch_size)]
        return torch.stack(crops).clamp(-1, 1)
