"""Fixed epsilon (paper Sec. 4, "Increasing Sample Diversity"): one noise per batch slot."""

from typing import Dict, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor


def seeded_generator(*keys: int, device: str = "cpu") -> torch.Generator:
    """A torch Generator whose stream is a function of the integer keys only (no collisions
    between e.g. (seed=1, slot=0) and (seed=0, slot=1))."""
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(1, np.uint64)[0]
    return torch.Generator(device).manual_seed(int(state) & 0x7FFF_FFFF_FFFF_FFFF)


def slot_noise(seed: int, slot: int, shape: Sequence[int]) -> Tensor:
    """Standard normal noise for one batch slot, a function of (seed, slot) only (CPU, fp32)."""
    return torch.randn(tuple(shape), generator=seeded_generator(seed, slot))


class FixedNoise:
    """Returns the same eps for batch slot i at every call; identical after a restart.

    Slot i's noise does not depend on the batch size, so changing it keeps earlier slots.
    """

    def __init__(self, seed: int):
        self.seed = int(seed)
        self._cache: Dict[Tuple[int, Tuple[int, ...]], Tensor] = {}

    def __call__(self, like: Tensor) -> Tensor:
        """Noise shaped like ``like`` (B, C, H, W), on its device and dtype."""
        shape = tuple(like.shape[1:])
        slots = []
        for i in range(like.shape[0]):
            key = (i, shape)
            if key not in self._cache:
                self._cache[key] = slot_noise(self.seed, i, shape)
            slots.append(self._cache[key])
        return torch.stack(slots).to(like.device, like.dtype)
