"""A classifier of the procedural objects' renders: shape, colour, pattern and view.

It scores prompt faithfulness (the prior's samples, the 3D benchmark's renders) and multi-face
artefacts (its view prediction against the camera, on the asymmetric shapes, the only ones whose
view can be told). Trained on renders the prior never saw (seed 1, every object, held-out
captions included), tested on a third seed. Input: (B, 3, 32, 32) in [-1, 1].
Training augments the renders with what generated images and NeRF renders add to them (blur,
noise, small shifts, contrast changes, see ``augment``): without it, the classifier called most
of the prior's clearly drawn mugs, cones and snowmen "cube" or "sphere".

    python -m lmcsds.priors.objects_classifier --out load/lmcsds/priors/objects-classifier.safetensors
"""

import argparse
import json
from typing import Dict

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor

from ..commands import module_main
from .cameras import VIEWS
from .classifier_training import fit_epochs, save_classifier
from .objects3d import ASYMMETRIC, COLOURS, PATTERNS, SHAPES, all_specs
from .objects_data import ObjectRenders, load_or_render, render_views

HEADS = {"shape": len(SHAPES), "colour": len(COLOURS), "pattern": len(PATTERNS), "view": len(VIEWS)}
FEATURES = 128


class ObjectClassifier(nn.Module):
    def __init__(self):
        super().__init__()

        def block(i: int, o: int) -> list:
            return [nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU()]

        self.body = nn.Sequential(
            *block(3, 32), *block(32, 32), nn.MaxPool2d(2),
            *block(32, 64), *block(64, 64), nn.MaxPool2d(2),
            *block(64, 128), *block(128, FEATURES), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )  # fmt: skip
        self.heads = nn.ModuleDict({k: nn.Linear(FEATURES, n) for k, n in HEADS.items()})

    def features(self, x: Tensor) -> Tensor:
        """(B, 128) penultimate features of images in [-1, 1]."""
        return self.body(x)

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        f = self.features(x)
        return {k: head(f) for k, head in self.heads.items()}


def load_object_classifier(path: str) -> ObjectClassifier:
    model = ObjectClassifier()
    model.load_state_dict(load_file(path))
    return model.eval().requires_grad_(False)


@torch.no_grad()
def predict(model: ObjectClassifier, x: Tensor, batch: int = 512) -> Dict[str, Tensor]:
    """Arg-max labels per head for images in [-1, 1]."""
    outs = [model(x[i : i + batch]) for i in range(0, len(x), batch)]
    return {k: torch.cat([o[k] for o in outs]).argmax(1) for k in HEADS}


def augment(x: Tensor, gen: torch.Generator) -> Tensor:
    """Per image: a shift of up to 2 px, a blend towards a 3x3 box blur (weight 0-1), contrast
    and brightness changes of up to 10%, Gaussian noise of std 0-0.1 (images in [-1, 1])."""
    n = len(x)
    shift = torch.randint(-2, 3, (n, 2), generator=gen)
    x = torch.stack([xi.roll((int(a), int(b)), (1, 2)) for xi, (a, b) in zip(x, shift)])
    blurred = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, 1)
    w = torch.rand(n, 1, 1, 1, generator=gen)
    x = x + w * (blurred - x)
    contrast = 1 + (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * 0.1
    bright = (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * 0.1
    x = (x + 1) * contrast - 1 + bright
    noise = torch.randn(x.shape, generator=gen) * torch.rand(n, 1, 1, 1, generator=gen) * 0.1
    return (x + noise).clamp(-1, 1)


def _asymmetric(labels: Tensor) -> Tensor:
    return torch.isin(labels[:, 0], torch.tensor([SHAPES.index(s) for s in ASYMMETRIC]))


def accuracies(
    model: ObjectClassifier, data: ObjectRenders, augmented: bool = False
) -> Dict[str, float]:
    """Per-head accuracy (on ``augment``-ed images if asked); the view head on the asymmetric
    shapes only."""
    x = data.float_images()
    if augmented:
        x = augment(x, torch.Generator().manual_seed(1))
    pred, labels = predict(model, x), data.labels()
    out = {k: (pred[k] == labels[:, i]).float().mean().item() for i, k in enumerate(HEADS)}
    asym = _asymmetric(labels)
    out["view"] = (pred["view"][asym] == labels[asym, 3]).float().mean().item()
    out["shape_and_colour"] = (
        ((pred["shape"] == labels[:, 0]) & (pred["colour"] == labels[:, 1])).float().mean().item()
    )
    return out


def train_object_classifier(
    out: str, views_per_object: int = 128, epochs: int = 6, batch_size: int = 128, seed: int = 0
) -> dict:
    from .. import __version__

    torch.manual_seed(seed)
    data = load_or_render("heldout", views_per_object)
    test = render_views(all_specs(), 16, seed=2, progress=False)
    x, labels = data.float_images(), data.labels()
    asym = _asymmetric(labels)
    model = ObjectClassifier()
    gen = torch.Generator().manual_seed(seed)

    def loss_of(idx: Tensor) -> Tensor:
        logits = model(augment(x[idx], gen))
        loss = sum(
            F.cross_entropy(logits[k], labels[idx, j]) for j, k in enumerate(HEADS) if k != "view"
        )
        view_rows = asym[idx]  # the view of a symmetric shape cannot be told
        if view_rows.any():
            loss = loss + F.cross_entropy(logits["view"][view_rows], labels[idx][view_rows, 3])
        return loss

    opt = torch.optim.AdamW(model.parameters(), 1e-3, weight_decay=1e-4)
    fit_epochs(opt, loss_of, len(x), epochs, batch_size, "train object classifier")
    model.eval()
    result = {
        "test_accuracy": accuracies(model, test),
        "test_accuracy_augmented": accuracies(model, test, augmented=True),
        "train_accuracy": accuracies(model, data),
        "train_images": len(x),
        "test_images": len(test),
        "epochs": epochs,
        "seed": seed,
        "version": __version__,
    }
    save_classifier(out, model, result)
    print(f"classifier saved to {out}: test accuracy {json.dumps(result['test_accuracy'])}")
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="load/lmcsds/priors/objects-classifier.safetensors",
                        help="weights written here (.safetensors, with a .json beside)")  # fmt: skip
    parser.add_argument("--views", type=int, default=128, help="renders per object (training)")
    parser.add_argument("--epochs", type=int, default=6, help="passes over the renders")


def run(args: argparse.Namespace) -> None:
    train_object_classifier(args.out, args.views, args.epochs)


def main(argv=None) -> None:
    """Train the procedural-object classifier."""
    module_main(main.__doc__, add_arguments, run, argv)


if __name__ == "__main__":
    main()
