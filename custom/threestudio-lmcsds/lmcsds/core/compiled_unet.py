"""The prior's UNet through ``torch.compile``: each input shape compiled once, compiles counted.

A guidance run calls the UNet with one input shape (2 rows per image, 3 with fixed eps), so
after the first call of that shape nothing should ever compile again; ``compiles`` counts the
graphs compiled for this UNet so that a recompilation shows in the logs instead of as a slowdown.
"""

import logging
import time
from typing import Callable, Dict, Optional, Tuple

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

# inductor's modes, or "cudagraphs": the eager kernels replayed as CUDA graphs (no inductor)
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "cudagraphs")


def compiled_graphs() -> int:
    """Graphs TorchDynamo has compiled so far in this process (all compiled callables)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def check_compile_mode(mode: str) -> str:
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile mode must be one of {COMPILE_MODES}, got {mode!r}")
    return mode


class CompiledUNet:
    """``unet(z_t, t, embeddings) -> output`` compiled with ``mode`` for fixed input shapes.

    The first call of each input shape compiles (its cost goes to ``compile_seconds`` and to
    ``log``); a later compile for a known shape is a recompilation and is logged as a warning.
    """

    def __init__(
        self,
        unet: torch.nn.Module,
        mode: str = "default",
        log: Optional[Callable[[str], None]] = None,
    ):
        self.mode = check_compile_mode(mode)
        if not hasattr(getattr(torch, "compiler", None), "cudagraph_mark_step_begin"):
            raise RuntimeError(
                f"compiling the prior's UNet needs torch >= 2.1 (found {torch.__version__}); "
                f"upgrade torch or set system.guidance.compile_unet=false"
            )
        backend = "cudagraphs" if mode == "cudagraphs" else "inductor"
        inductor_mode = None if mode in ("default", "cudagraphs") else mode
        self.fn = torch.compile(unet, backend=backend, mode=inductor_mode, dynamic=False)
        self.log = log or logger.info
        self.compile_seconds: Dict[Tuple[int, ...], float] = {}
        self.compiles = 0
        self.recompiles = 0

    def __call__(self, zt: Tensor, t: Tensor, embeddings: Tensor) -> Tensor:
        shape, before, start = tuple(zt.shape), compiled_graphs(), time.perf_counter()
        if zt.is_cuda:  # outputs of the last replay are dead: let CUDA graphs reuse them
            torch.compiler.cudagraph_mark_step_begin()
        out = self.fn(zt, t, encoder_hidden_states=embeddings, return_dict=False)[0]
        if zt.is_cuda and self.mode != "default":
            out = out.clone()  # a CUDA graph's output is overwritten by its next replay
        new = compiled_graphs() - before
        self.compiles += new
        if shape not in self.compile_seconds:
            if zt.is_cuda:
                torch.cuda.synchronize()
            self.compile_seconds[shape] = seconds = time.perf_counter() - start
            self.log(f"compiled the prior's UNet ({self.mode}) for input {shape}: {seconds:.1f} s")
        elif new:
            self.recompiles += new
            logger.warning(
                f"the prior's UNet recompiled for input {shape} ({self.recompiles} so far): "
                f"an input changed dtype, device or stride; every recompilation costs seconds"
            )
        return out
