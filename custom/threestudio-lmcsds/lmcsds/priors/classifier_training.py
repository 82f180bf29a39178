"""What the offline priors' metric classifiers share in training: the mini-batch loop (one-cycle
learning rate, a progress bar) and writing the weights with their scores beside them."""

import json
from pathlib import Path
from typing import Callable, Dict, Optional

import torch
import torch.nn as nn
from safetensors.torch import save_file
from torch import Tensor
from tqdm import tqdm

from ..core.atomic import atomic_write


def fit_epochs(
    opt: torch.optim.Optimizer,
    loss_of: Callable[[Tensor], Tensor],
    num_samples: int,
    epochs: int,
    batch_size: int,
    desc: str,
    max_lr: float = 3e-3,
) -> None:
    """``epochs`` shuffled passes of ``batch_size`` (a last partial batch is dropped), one Adam
    step on ``loss_of(indices)`` each, the learning rate on a one-cycle schedule to ``max_lr``."""
    steps = epochs * (num_samples // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr, total_steps=steps)
    bar = tqdm(total=steps, desc=desc)
    for _ in range(epochs):
        perm = torch.randperm(num_samples)
        for i in range(num_samples // batch_size):
            loss = loss_of(perm[i * batch_size : (i + 1) * batch_size])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()


def save_classifier(
    out: str, model: nn.Module, result: dict, metadata: Optional[Dict[str, str]] = None
) -> None:
    """The weights at ``out`` (atomically), ``result`` as JSON beside them (same stem)."""
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    atomic_write(out, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    Path(out).with_suffix(".json").write_text(json.dumps(result, indent=2))
