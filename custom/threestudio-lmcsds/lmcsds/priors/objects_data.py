"""Rendered data sets of the procedural objects: training images for the prior, held-out
renders for the classifier. Deterministic from a seed; cached under ``data/objects3d/``.

Every image is one object under one camera of threestudio's random-camera distribution
(``cameras.CameraDistribution``), in the material's "diffuse" mode or, with probability
``ALBEDO_PROB`` (threestudio's 1 - diffuse_prob), its "albedo" mode, on a black backdrop.
The captions of ``HELD_OUT`` objects are never used in training: the benchmark prompts them.
"""

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import torch
from torch import Tensor
from tqdm import tqdm

from ..commands import module_main
from ..core.atomic import atomic_write
from ..core.noise import seeded_generator
from .cameras import VIEWS, CameraDistribution, sample_cameras, view_index, with_view
from .objects3d import ObjectSpec, all_specs
from .sdf_render import render

ALBEDO_PROB = 0.25
CACHE_DIR = Path("data/objects3d")
HELD_OUT = [
    ObjectSpec("sphere", "green", "striped"),
    ObjectSpec("cube", "purple", "plain"),
    ObjectSpec("cylinder", "orange", "checkered"),
    ObjectSpec("cone", "blue", "striped"),
    ObjectSpec("torus", "yellow", "checkered"),
    ObjectSpec("mug", "red", "checkered"),
    ObjectSpec("mug", "purple", "striped"),
    ObjectSpec("chair", "green", "plain"),
    ObjectSpec("chair", "orange", "striped"),
    ObjectSpec("snowman", "blue", "checkered"),
    ObjectSpec("snowman", "yellow", "plain"),
    ObjectSpec("sphere", "red", "checkered"),
]


def training_specs() -> List[ObjectSpec]:
    """The objects whose captions the prior is trained on (all but ``HELD_OUT``)."""
    return [s for s in all_specs() if s not in HELD_OUT]


@dataclass
class ObjectRenders:
    images: Tensor  # (N, 3, H, W) uint8
    spec: Tensor  # (N,) index into ``specs``
    view: Tensor  # (N,) index into cameras.VIEWS (threestudio's rule)
    diffuse: Tensor  # (N,) bool shading mode
    elevation_deg: Tensor
    azimuth_deg: Tensor
    specs: List[ObjectSpec] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    def labels(self) -> Tensor:
        """(N, 4): shape, colour, pattern, view."""
        table = torch.tensor([s.labels for s in self.specs])
        return torch.cat([table[self.spec], self.view[:, None]], 1)

    def float_images(self, idx: Optional[Tensor] = None) -> Tensor:
        """Images in [-1, 1] (as the prior sees them)."""
        x = self.images if idx is None else self.images[idx]
        return x.float() / 127.5 - 1.0


def render_views(
    specs: List[ObjectSpec],
    views_per_object: int,
    seed: int,
    resolution: int = 32,
    dist: CameraDistribution = CameraDistribution(),
    chunk: int = 64,
    progress: bool = True,
) -> ObjectRenders:
    """``views_per_object`` random-camera renders of each object, a function of the seed only."""
    parts = []
    jobs = [(i, j) for i in range(len(specs)) for j in range(0, views_per_object, chunk)]
    for i, j in tqdm(jobs, desc=f"render {resolution}px", disable=not progress, unit="chunk"):
        n = min(chunk, views_per_object - j)
        gen = seeded_generator(seed, i, j)
        rng = random.Random(int(torch.randint(0, 2**31, (1,), generator=gen)))
        cams = sample_cameras(dist, n, gen, rng)
        diffuse = torch.rand(n, generator=gen) >= ALBEDO_PROB
        shading = ["diffuse" if d else "albedo" for d in diffuse]
        rgb = render(specs[i], cams, resolution, shading=shading).rgb
        parts.append(
            dict(
                images=(rgb * 255).round().clamp(0, 255).to(torch.uint8),
                spec=torch.full((n,), i),
                view=view_index(cams.elevation_deg, cams.azimuth_deg),
                diffuse=diffuse,
                elevation_deg=cams.elevation_deg,
                azimuth_deg=cams.azimuth_deg,
            )
        )
    return ObjectRenders(
        **{k: torch.cat([p[k] for p in parts]) for k in parts[0]}, specs=list(specs)
    )


def load_or_render(
    split: str, views_per_object: int, resolution: int = 32, seed: Optional[int] = None
) -> ObjectRenders:
    """Cached renders: split "train" (training captions, seed 0) or "heldout" (all objects,
    seed 1, for the classifier and evaluation)."""
    specs = {"train": training_specs, "heldout": all_specs}[split]()
    seed = {"train": 0, "heldout": 1}[split] if seed is None else seed
    path = CACHE_DIR / f"{split}-{resolution}px-{views_per_object}v-seed{seed}.pt"
    if path.exists():
        d = torch.load(path, weights_only=False)
        return ObjectRenders(**d, specs=specs)
    data = render_views(specs, views_per_object, seed, resolution)
    payload = {k: v for k, v in vars(data).items() if k != "specs"}
    atomic_write(path, lambda tmp: torch.save(payload, tmp))
    return data


def prompt_variants(spec: ObjectSpec) -> List[str]:
    """The caption without a view suffix, then with each of threestudio's view suffixes."""
    return [spec.caption()] + [with_view(spec.caption(), v) for v in range(len(VIEWS))]


def training_prompts() -> List[str]:
    """Prompt table of the prior: ``prompt_variants`` of every training object, then ""."""
    return [p for s in training_specs() for p in prompt_variants(s)] + [""]


def all_prompt_texts() -> List[str]:
    """Every caption (held-out ones too) with every suffix: the tokenizer's corpus."""
    return [p for s in all_specs() for p in prompt_variants(s)]


def export_pngs(split: str, views_per_object: int, out: str) -> int:
    """Write cached renders as PNG files (<caption>/<index>.png), e.g. for
    ``lmcsds train-corrective --images``; returns the count."""
    from PIL import Image

    data = load_or_render(split, views_per_object)
    for i in range(len(data)):
        spec = data.specs[int(data.spec[i])]
        path = (
            Path(out) / spec.caption().replace("a photo of ", "").replace(" ", "-") / f"{i:06d}.png"
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(data.images[i].permute(1, 2, 0).numpy()).save(path)
    return len(data)


def add_arguments(parser) -> None:
    parser.add_argument("--split", default="train", choices=["train", "heldout"],
                        help="training objects (seed 0) or all objects, held-out seed 1")  # fmt: skip
    parser.add_argument("--views", type=int, default=512, help="renders per object")
    parser.add_argument("--out", required=True, help="output folder (one subfolder per caption)")


def run(args) -> None:
    print(f"{export_pngs(args.split, args.views, args.out)} images written to {args.out}")


def main(argv=None) -> None:
    """Export procedural-object renders as PNG files."""
    module_main(main.__doc__, add_arguments, run, argv)


if __name__ == "__main__":
    main()
