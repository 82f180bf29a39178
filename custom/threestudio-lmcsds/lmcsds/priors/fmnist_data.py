"""Fashion-MNIST (Debian's ``dataset-fashion-mnist``) as images and prompts for the small prior.

Images are 28x28 grey-scale, padded to 32x32 on black and repeated to 3 channels, in [-1, 1].
Each class has a few prompt paraphrases; the empty prompt "" is the unconditional one.
"""

import gzip
import os
from pathlib import Path
from typing import List, Tuple

import numpy as np
import torch
from torch import Tensor

from ..commands import module_main

FMNIST_DIR = os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist")
CLASS_NAMES = [
    "t-shirt", "pair of trousers", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
]  # fmt: skip
TEMPLATES = ["a photo of {}", "{}", "a black and white photo of {}", "a picture of {}"]
RESOLUTION = 32


def class_prompt(label: int, template: int = 0) -> str:
    """E.g. class 9, template 0: "a photo of an ankle boot"."""
    name = CLASS_NAMES[label]
    return TEMPLATES[template].format(("an " if name[0] in "aeiou" else "a ") + name)


def all_prompts() -> List[str]:
    """Every (class, template) prompt, class-major, then the empty prompt."""
    return [class_prompt(c, k) for c in range(len(CLASS_NAMES)) for k in range(len(TEMPLATES))] + [
        ""
    ]


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_split(split: str = "train", root: str = FMNIST_DIR) -> Tuple[Tensor, Tensor]:
    """(N, 3, 32, 32) float images in [-1, 1] and (N,) labels; split 'train' (60k) or 'test'."""
    prefix = {"train": "train", "test": "t10k"}[split]
    folder = Path(root)
    images = folder / f"{prefix}-images-idx3-ubyte.gz"
    if not images.exists():
        raise FileNotFoundError(
            f"{images} not found: install Debian's Fashion-MNIST with "
            f"`apt-get install dataset-fashion-mnist` (make setup does this as root), or set "
            f"FASHION_MNIST_DIR to a folder holding the idx .gz files"
        )
    x = torch.from_numpy(_read_idx(images).copy()).float() / 127.5 - 1.0
    y = torch.from_numpy(_read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz").copy()).long()
    pad = (RESOLUTION - x.shape[-1]) // 2
    x = torch.nn.functional.pad(x, (pad, pad, pad, pad), value=-1.0)
    return x[:, None].expand(-1, 3, -1, -1).contiguous(), y


def export_pngs(split: str, out: str, limit: int = 0) -> int:
    """Write a split as grey PNG files (class/index.png), padded to 32x32 on black like the
    prior's training images, e.g. for ``lmcsds train-corrective --images``; returns the count."""
    from PIL import Image

    folder = Path(FMNIST_DIR)
    prefix = {"train": "train", "test": "t10k"}[split]
    images = _read_idx(folder / f"{prefix}-images-idx3-ubyte.gz")
    labels = _read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz")
    n = len(images) if limit <= 0 else min(limit, len(images))
    for i in range(n):
        path = Path(out) / f"{labels[i]}" / f"{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        pad = (RESOLUTION - images.shape[-1]) // 2
        Image.fromarray(np.pad(images[i], pad)).save(path)
    return n


def add_arguments(parser) -> None:
    parser.add_argument("--split", default="train", choices=["train", "test"], help="data split")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--limit", type=int, default=0, help="at most this many images (0: all)")


def run(args) -> None:
    print(f"{export_pngs(args.split, args.out, args.limit)} images written to {args.out}")


def main(argv=None) -> None:
    """Export Fashion-MNIST as PNG files."""
    module_main(main.__doc__, add_arguments, run, argv)


if __name__ == "__main__":
    main()
