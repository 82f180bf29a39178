"""Image-to-image translation with exact targets on the procedural objects (paper Sec. 5.2).

The paper trains a cats-to-others network from real cat photos with the target named only by a
caption, and can measure the result only against the caption and the source. Here the source
kind is one colour (``SOURCE_COLOUR`` objects of every shape and pattern) and the K target kinds
are other colours: "a photo of a blue striped mug" from a red striped mug. Because the objects
are procedural, the true target exists: the same object in the target colour under the same
camera, light and shading. Splits: training cameras (seed 0) with every (shape, target) pair
but ``HELD_OUT_PAIRS``; held-out cameras (seed 1) on the training pairs; held-out cameras on the
held-out pairs (shape/colour combinations the network never translated to).
"""

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Tuple

import torch
from torch import Tensor
from tqdm import tqdm

from ..core.atomic import atomic_write
from ..core.noise import seeded_generator
from .cameras import CameraDistribution, sample_cameras, view_index
from .objects3d import PATTERNS, SHAPES, ObjectSpec
from .objects_data import ALBEDO_PROB, CACHE_DIR
from .sdf_render import render

SOURCE_COLOUR = "red"
TARGET_COLOURS = ("blue", "green", "yellow", "purple")  # the K classes, as the paper's four
HELD_OUT_PAIRS = (("mug", "blue"), ("chair", "green"), ("snowman", "yellow"), ("torus", "purple"),
                  ("cone", "green"), ("cube", "blue"))  # fmt: skip
SPLITS = {"train": 0, "heldout-cameras": 1, "heldout-pairs": 1}  # split -> camera seed


def source_specs() -> List[ObjectSpec]:
    """Every shape and pattern in the source colour, shape-major."""
    return [ObjectSpec(s, SOURCE_COLOUR, p) for s in SHAPES for p in PATTERNS]


def target_spec(source: ObjectSpec, k: int) -> ObjectSpec:
    """The source object in target colour k."""
    return ObjectSpec(source.shape, TARGET_COLOURS[k], source.pattern)


def class_condition(k: Tensor) -> Tensor:
    """The class id as the scalar the translator's frequency encoding takes: k / K in [0, 1)."""
    return k.float() / len(TARGET_COLOURS)


@dataclass
class TranslationData:
    """Renders of the source objects and of each in every target colour, same cameras."""

    source: Tensor  # (N, 3, H, W) uint8
    target: Tensor  # (N, K, 3, H, W) uint8
    mask: Tensor  # (N, 1, H, W) uint8 object coverage (the same in every colour)
    spec: Tensor  # (N,) index into ``specs``
    view: Tensor  # (N,) threestudio view label of the camera
    specs: List[ObjectSpec] = field(default_factory=source_specs)

    def __len__(self) -> int:
        return len(self.source)

    class_names = TARGET_COLOURS

    @staticmethod
    def condition(k: Tensor) -> Tensor:
        return class_condition(k)

    def caption_table(self) -> List[List[str]]:
        """[object][class] target captions."""
        return [[target_spec(s, k).caption() for k in range(len(TARGET_COLOURS))]
                for s in self.specs]  # fmt: skip

    def pairs(self, split: str) -> Tensor:
        """(M, 2) rows (image index, target class) of ``split``: the held-out pairs in
        "heldout-pairs", every other pair in the two other splits."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
        shapes = [self.specs[int(i)].shape for i in self.spec]
        rows = [(i, k) for i, s in enumerate(shapes) for k, c in enumerate(TARGET_COLOURS)
                if ((s, c) in HELD_OUT_PAIRS) == (split == "heldout-pairs")]  # fmt: skip
        return torch.tensor(rows, dtype=torch.long)

    def captions(self, pairs: Tensor) -> List[str]:
        """The target caption of each (image, class) row, e.g. "a photo of a blue striped mug"."""
        return [target_spec(self.specs[int(self.spec[i])], int(k)).caption() for i, k in pairs]

    def batch(self, pairs: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """(source, exact target, mask) of the rows, images in [-1, 1], mask in [0, 1]."""
        i, k = pairs[:, 0], pairs[:, 1]
        to_float = lambda x: x.float() / 127.5 - 1.0  # noqa: E731
        return to_float(self.source[i]), to_float(self.target[i, k]), self.mask[i].float() / 255


def render_translation(
    views_per_object: int,
    seed: int,
    resolution: int = 32,
    dist: CameraDistribution = CameraDistribution(),
    progress: bool = True,
) -> TranslationData:
    """``views_per_object`` random-camera renders of every source object and of the same object
    in each target colour (the prior's camera and shading distribution); a function of the seed."""
    specs, parts = source_specs(), []
    for i, spec in enumerate(tqdm(specs, desc=f"render {resolution}px", disable=not progress)):
        gen = seeded_generator(seed, i)
        rng = random.Random(int(torch.randint(0, 2**31, (1,), generator=gen)))
        cams = sample_cameras(dist, views_per_object, gen, rng)
        diffuse = torch.rand(views_per_object, generator=gen) >= ALBEDO_PROB
        shading = ["diffuse" if d else "albedo" for d in diffuse]
        to_uint8 = lambda x: (x * 255).round().clamp(0, 255).to(torch.uint8)  # noqa: E731
        src = render(spec, cams, resolution, shading=shading)
        targets = [render(target_spec(spec, k), cams, resolution, shading=shading).rgb
                   for k in range(len(TARGET_COLOURS))]  # fmt: skip
        parts.append(dict(
            source=to_uint8(src.rgb), target=to_uint8(torch.stack(targets, 1)),
            mask=to_uint8(src.mask), spec=torch.full((views_per_object,), i),
            view=view_index(cams.elevation_deg, cams.azimuth_deg),
        ))  # fmt: skip
    return TranslationData(**{k: torch.cat([p[k] for p in parts]) for k in parts[0]})


def load_or_render_translation(
    split: str, views_per_object: int, resolution: int = 32
) -> TranslationData:
    """Cached renders for ``split`` (its camera seed), under ``data/objects3d/``."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    seed = SPLITS[split]
    path = Path(CACHE_DIR) / f"translation-{resolution}px-{views_per_object}v-seed{seed}.pt"
    if path.exists():
        return TranslationData(**torch.load(path, weights_only=False))
    data = render_translation(views_per_object, seed, resolution)
    payload = {k: v for k, v in vars(data).items() if k != "specs"}
    atomic_write(path, lambda tmp: torch.save(payload, tmp))
    return data
