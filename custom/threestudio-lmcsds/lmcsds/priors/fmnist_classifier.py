"""A Fashion-MNIST classifier: prompt faithfulness (the role of CLIP R-precision in the paper)
and the feature space of the distribution metrics (the role of Inception / LPIPS features).

Input: (B, 3, 32, 32) in [-1, 1] as the prior produces them (channels are averaged to grey).

    python -m lmcsds.priors.fmnist_classifier --out load/lmcsds/priors/fmnist-classifier.safetensors
"""

import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor

from ..commands import module_main
from .classifier_training import fit_epochs, save_classifier

FEATURES = 128


class FashionClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
            nn.Conv2d(64, FEATURES, 3, padding=1), nn.BatchNorm2d(FEATURES), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )  # fmt: skip
        self.head = nn.Linear(FEATURES, 10)

    def features(self, x: Tensor) -> Tensor:
        """(B, 128) penultimate features of images in [-1, 1]."""
        return self.body(x.mean(1, keepdim=True))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def load_classifier(path: str) -> FashionClassifier:
    model = FashionClassifier()
    model.load_state_dict(load_file(path))
    return model.eval().requires_grad_(False)


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor, batch: int = 1000) -> float:
    correct = sum(
        (model(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum().item()
        for i in range(0, len(x), batch)
    )
    return correct / len(x)


def train_classifier(out: str, epochs: int = 2, batch_size: int = 128, seed: int = 0) -> dict:
    from .. import __version__
    from .fmnist_data import load_split

    torch.manual_seed(seed)
    x, y = load_split("train")
    x_test, y_test = load_split("test")
    model = FashionClassifier()

    def loss_of(idx: Tensor) -> Tensor:
        shift = torch.randint(-2, 3, (2,))  # light augmentation: small translations
        xb = torch.roll(x[idx], shifts=(int(shift[0]), int(shift[1])), dims=(2, 3))
        return F.cross_entropy(model(xb), y[idx])

    opt = torch.optim.Adam(model.parameters(), 1e-3)
    fit_epochs(opt, loss_of, len(x), epochs, batch_size, "train classifier")
    model.eval()
    result = {
        "test_accuracy": accuracy(model, x_test, y_test),
        "train_accuracy": accuracy(model, x[:10000], y[:10000]),
        "epochs": epochs,
        "seed": seed,
        "version": __version__,
    }
    save_classifier(out, model, result, {"test_accuracy": str(result["test_accuracy"])})
    print(f"classifier saved to {out}: test accuracy {result['test_accuracy']:.4f}")
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="load/lmcsds/priors/fmnist-classifier.safetensors",
                        help="weights written here (.safetensors)")  # fmt: skip
    parser.add_argument("--epochs", type=int, default=2, help="passes over the training set")


def run(args: argparse.Namespace) -> None:
    train_classifier(args.out, args.epochs)


def main(argv=None) -> None:
    """Train the Fashion-MNIST metric classifier."""
    module_main(main.__doc__, add_arguments, run, argv)


if __name__ == "__main__":
    main()
