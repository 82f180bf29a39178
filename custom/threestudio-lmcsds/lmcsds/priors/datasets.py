"""The data sets an offline prior can be trained on, behind one small interface."""

from dataclasses import dataclass
from typing import Callable, List

import torch
from torch import Tensor

from ..core.if_factory import IFShape


@dataclass
class PriorData:
    """Training images and their prompts.

    ``batch(idx, gen)`` returns images in [-1, 1] and indices into ``prompts`` (whose last entry
    is the unconditional prompt ""); ``tokenizer_texts`` is the corpus of the tokenizer.
    """

    name: str
    size: int
    prompts: List[str]
    tokenizer_texts: List[str]
    batch: Callable[[Tensor, torch.Generator], tuple]
    shape: IFShape
    description: str


def fashion_mnist() -> PriorData:
    """Fashion-MNIST (60k training images), one of 4 prompt paraphrases per image."""
    from .fmnist_data import TEMPLATES, all_prompts, load_split

    images, labels = load_split("train")
    n_templates = len(TEMPLATES)

    def batch(idx: Tensor, gen: torch.Generator) -> tuple:
        template = torch.randint(0, n_templates, (len(idx),), generator=gen)
        return images[idx], labels[idx] * n_templates + template

    return PriorData(
        name="fmnist",
        size=len(images),
        prompts=all_prompts(),
        tokenizer_texts=all_prompts() * 8,
        batch=batch,
        shape=IFShape(sample_size=32, block_out_channels=[32, 64, 64], encoder_hid_dim=64),
        description="Fashion-MNIST (train split, 60k)",
    )


def objects3d(views_per_object: int = 512, p_no_view: float = 0.2) -> PriorData:
    """Renders of the procedural objects under threestudio's random cameras; the caption carries
    threestudio's view suffix for the camera, or none with probability ``p_no_view``."""
    from .cameras import VIEWS
    from .objects_data import all_prompt_texts, load_or_render, training_prompts

    data = load_or_render("train", views_per_object)
    n_variants = 1 + len(VIEWS)

    def batch(idx: Tensor, gen: torch.Generator) -> tuple:
        plain = torch.rand(len(idx), generator=gen) < p_no_view
        variant = torch.where(plain, 0, data.view[idx] + 1)
        return data.float_images(idx), data.spec[idx] * n_variants + variant

    return PriorData(
        name="objects3d",
        size=len(data),
        prompts=training_prompts(),
        tokenizer_texts=all_prompt_texts() * 4,
        batch=batch,
        shape=IFShape(sample_size=32, block_out_channels=[32, 64, 128], encoder_hid_dim=64),
        description=(
            f"procedural 3D objects ({len(data.specs)} training captions x {views_per_object} "
            f"random-camera renders = {len(data)} images, 32 px)"
        ),
    )


DATASETS = {"fmnist": fashion_mnist, "objects3d": objects3d}
