"""Procedural 3D objects with exact geometry: the ground truth of the text-to-3D benchmark.

An object is (shape, colour, pattern). Shapes are signed distance functions in threestudio's
world frame (z up, inside the unit bounding sphere), with their front facing +x (threestudio's
azimuth 0, the "front view"); mug, chair and snowman look different from the front, the back
and the sides, so multi-face (Janus) artefacts can be measured. Patterns are solid textures in
the object's frame (stripes along z, a 3D checkerboard), in the prompted colour and white.
Everything is a pure function of the point: no randomness, one canonical object per caption.
"""

from dataclasses import dataclass
from typing import Callable, Dict, List, Tuple

import torch
from torch import Tensor

SHAPES = ["sphere", "cube", "cylinder", "cone", "torus", "mug", "chair", "snowman"]
ASYMMETRIC = ["mug", "chair", "snowman"]  # front differs from back and sides
COLOURS: Dict[str, Tuple[float, float, float]] = {
    "red": (0.90, 0.10, 0.10),
    "orange": (1.00, 0.50, 0.05),
    "yellow": (0.95, 0.85, 0.10),
    "green": (0.10, 0.70, 0.15),
    "blue": (0.10, 0.25, 0.90),
    "purple": (0.55, 0.15, 0.75),
}
PATTERNS = ["plain", "striped", "checkered"]
WHITE = (0.95, 0.95, 0.95)  # second colour of the patterns
EYE = (0.05, 0.05, 0.05)  # the snowman's eyes
STRIPE_PERIOD = 0.3  # world units (about 4 px at 32 px and the CPU config's cameras)
CHECK_SIZE = 0.2
FRONT = (1.0, 0.0, 0.0)  # every object's front direction


@dataclass(frozen=True)
class ObjectSpec:
    shape: str
    colour: str
    pattern: str

    def __post_init__(self):
        for value, allowed, what in [
            (self.shape, SHAPES, "shape"),
            (self.colour, list(COLOURS), "colour"),
            (self.pattern, PATTERNS, "pattern"),
        ]:
            if value not in allowed:
                raise ValueError(f"unknown {what} {value!r}; choose one of {', '.join(allowed)}")

    @property
    def labels(self) -> Tuple[int, int, int]:
        """(shape, colour, pattern) indices."""
        return (
            SHAPES.index(self.shape),
            list(COLOURS).index(self.colour),
            PATTERNS.index(self.pattern),
        )

    def caption(self) -> str:
        """threestudio-style prompt, e.g. "a photo of a red striped mug"."""
        words = [self.colour] + ([] if self.pattern == "plain" else [self.pattern]) + [self.shape]
        article = "an" if words[0][0] in "aeiou" else "a"
        return f"a photo of {article} {' '.join(words)}"

    def ground_truth(self) -> dict:
        return {
            "shape": self.shape,
            "colour": self.colour,
            "rgb": COLOURS[self.colour],
            "pattern": self.pattern,
            "front": FRONT,
            "asymmetric": self.shape in ASYMMETRIC,
        }


def all_specs() -> List[ObjectSpec]:
    """Every combination, shape-major."""
    return [ObjectSpec(s, c, p) for s in SHAPES for c in COLOURS for p in PATTERNS]


def parse_caption(prompt: str) -> ObjectSpec:
    """The object a caption names (view suffix allowed); ValueError if it names none."""
    text = prompt.split(",")[0].strip()
    for spec in all_specs():
        if spec.caption() == text:
            return spec
    raise ValueError(
        f"{prompt!r} names no procedural object; captions look like "
        f"{ObjectSpec('mug', 'red', 'striped').caption()!r}"
    )


# --- signed distance functions (points: (..., 3)) ---------------------------------------------


def sd_sphere(p: Tensor, radius: float, center=(0.0, 0.0, 0.0)) -> Tensor:
    return (p - p.new_tensor(center)).norm(dim=-1) - radius


def sd_box(p: Tensor, half: Tuple[float, float, float], center=(0.0, 0.0, 0.0), round_=0.0):
    q = (p - p.new_tensor(center)).abs() - p.new_tensor(half) + round_
    return q.clamp(min=0).norm(dim=-1) + q.max(dim=-1).values.clamp(max=0) - round_


def sd_cylinder_z(p: Tensor, radius: float, half_height: float, z0: float = 0.0) -> Tensor:
    d = torch.stack([p[..., :2].norm(dim=-1) - radius, (p[..., 2] - z0).abs() - half_height], -1)
    return d.clamp(min=0).norm(dim=-1) + d.max(dim=-1).values.clamp(max=0)


def sd_cone_z(p: Tensor, radius: float, z_base: float, z_apex: float) -> Tensor:
    """Solid cone along +z: base disc of ``radius`` at ``z_base``, apex at ``z_apex`` (exact)."""
    h = z_apex - z_base
    q = torch.stack([p[..., :2].norm(dim=-1), p[..., 2] - z_base], -1)  # (r, z) half-plane
    # distance to the slanted side segment from (radius, 0) to (0, h) and to the base segment
    a, b = q.new_tensor([radius, 0.0]), q.new_tensor([0.0, h])
    ab = b - a
    s = ((q - a) @ ab / (ab @ ab)).clamp(0, 1)
    d_side = (q - a - s[..., None] * ab).norm(dim=-1)
    d_base = torch.stack([(q[..., 0] - radius).clamp(min=0), q[..., 1]], -1).norm(dim=-1)
    inside = (q[..., 1] > 0) & (q[..., 1] < h) & (q[..., 0] < radius * (1 - q[..., 1] / h))
    d = torch.minimum(d_side, d_base)
    return torch.where(inside, -d, d)


def sd_torus(p: Tensor, major: float, minor: float, axis: str = "z", center=(0.0, 0.0, 0.0)):
    """Torus around an axis through ``center``."""
    q = p - p.new_tensor(center)
    k = "xyz".index(axis)
    along = q[..., k]
    across = torch.cat([q[..., :k], q[..., k + 1 :]], -1).norm(dim=-1)
    return torch.stack([across - major, along], -1).norm(dim=-1) - minor


def _union(*ds: Tensor) -> Tensor:
    return torch.stack(ds, 0).min(0).values


def _cup(p: Tensor) -> Tensor:
    outer = sd_cylinder_z(p, 0.42, 0.45)
    inner = sd_cylinder_z(p, 0.34, 0.45, z0=0.09)  # open top, 0.09-thick bottom
    return torch.maximum(outer, -inner)


def _handle(p: Tensor) -> Tensor:
    # on the +y side (the object's left seen from the front), a ring in the yz-plane
    handle = sd_torus(p, 0.22, 0.065, axis="x", center=(0.0, 0.45, 0.0))
    return torch.maximum(handle, -(p[..., 1] - 0.40))  # only the part outside the cup


def _leg(x: float, y: float) -> Callable[[Tensor], Tensor]:
    return lambda p: sd_box(p, (0.06, 0.06, 0.27), (x, y, -0.38))


def _nose(p: Tensor) -> Tensor:
    """A cone along +x from the snowman's head."""
    q = torch.stack([p[..., 1], p[..., 2] - 0.33, p[..., 0]], -1)  # x becomes the cone axis
    return sd_cone_z(q, 0.08, 0.20, 0.52)


EYES = [(0.22, 0.11, 0.45), (0.22, -0.11, 0.45)]  # on the head, facing +x
# The objects built from parts (their SDF is the union of the parts'), for part-level scores.
PARTS: Dict[str, Dict[str, Callable[[Tensor], Tensor]]] = {
    "mug": {"cup": _cup, "handle": _handle},
    "chair": {
        "seat": lambda p: sd_box(p, (0.40, 0.40, 0.06), (0.0, 0.0, -0.05)),
        "backrest": lambda p: sd_box(p, (0.06, 0.40, 0.34), (-0.34, 0.0, 0.35)),  # front open
        **{f"leg{i}": _leg(x, y) for i, (x, y) in
           enumerate([(x, y) for x in (-0.33, 0.33) for y in (-0.33, 0.33)])},
    },  # fmt: skip
    "snowman": {
        "body": lambda p: sd_sphere(p, 0.42, (0.0, 0.0, -0.30)),
        "head": lambda p: sd_sphere(p, 0.30, (0.0, 0.0, 0.33)),
        "nose": _nose,
    },
}


def _from_parts(shape: str, without: Tuple[str, ...] = ()) -> Callable[[Tensor], Tensor]:
    parts = [f for name, f in PARTS[shape].items() if name not in without]
    return lambda p: _union(*[f(p) for f in parts])


SDFS: Dict[str, Callable[[Tensor], Tensor]] = {
    "sphere": lambda p: sd_sphere(p, 0.6),
    "cube": lambda p: sd_box(p, (0.45, 0.45, 0.45), round_=0.03),
    "cylinder": lambda p: sd_cylinder_z(p, 0.45, 0.55),
    "cone": lambda p: sd_cone_z(p, 0.55, -0.5, 0.6),
    "torus": lambda p: sd_torus(p, 0.45, 0.22),
    **{shape: _from_parts(shape) for shape in PARTS},
}


def sdf(shape: str, p: Tensor, without: Tuple[str, ...] = ()) -> Tensor:
    """Signed distance (negative inside) of ``shape`` at points ``p`` (..., 3); ``without``
    names parts of ``PARTS[shape]`` to leave out (an object with a missing part)."""
    if not without:
        return SDFS[shape](p)
    unknown = set(without) - set(PARTS.get(shape, {}))
    if unknown:
        raise ValueError(f"{shape} has no part(s) {sorted(unknown)}; "
                         f"its parts: {sorted(PARTS.get(shape, {}))}")  # fmt: skip
    return _from_parts(shape, tuple(without))(p)


def pattern_mask(pattern: str, p: Tensor) -> Tensor:
    """True where the pattern shows its second colour (white), at surface points ``p``."""
    if pattern == "plain":
        return torch.zeros(p.shape[:-1], dtype=torch.bool, device=p.device)
    if pattern == "striped":
        return torch.frac(p[..., 2] / STRIPE_PERIOD + 100.0) >= 0.5
    if pattern == "checkered":
        cells = torch.floor(p / CHECK_SIZE).long().sum(-1)
        return cells % 2 == 1
    raise ValueError(f"unknown pattern {pattern!r}")


def albedo(spec: ObjectSpec, p: Tensor) -> Tensor:
    """(..., 3) surface colour in [0, 1] at surface points ``p``."""
    colour = p.new_tensor(COLOURS[spec.colour]).expand(*p.shape[:-1], 3)
    out = torch.where(pattern_mask(spec.pattern, p)[..., None], p.new_tensor(WHITE), colour)
    if spec.shape == "snowman":
        eye = _union(*[sd_sphere(p, 0.065, c) for c in EYES]) < 0
        out = torch.where(eye[..., None], p.new_tensor(EYE), out)
    return out
