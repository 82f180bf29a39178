"""Opt-in CPU mode for threestudio, which otherwise assumes CUDA everywhere.

Nothing here acts unless called, so GPU runs behave exactly as upstream threestudio:

- ``install_cuda_placeholders()``: threestudio imports tiny-cuda-nn and nvdiffrast at module
  level, and neither installs without CUDA. When (and only when) one is not installed, an
  import-only placeholder is registered; using anything in it raises, so a CPU run must use
  pure-torch encodings (``ProgressiveBandFrequency`` / ``VanillaMLP``).
- ``threestudio_device(device)``: threestudio's ``get_device()`` hard-codes ``cuda:<rank>``;
  inside this block it returns ``device``.
"""

import importlib.util
import sys
import types
from contextlib import contextmanager
from typing import Iterator, Union

import torch

PLACEHOLDER_ATTR = "__lmcsds_placeholder__"


def _raiser(what: str):
    def fail(*args, **kwargs):
        raise RuntimeError(
            f"{what} needs CUDA and is not installed; in CPU mode use pure-torch components "
            f"(encodings ProgressiveBandFrequency / VanillaMLP, no nvdiff rasterizer)"
        )

    return fail


def _placeholder_class(what: str) -> type:
    return type(what.rsplit(".", 1)[-1], (), {"__init__": _raiser(what)})


def _module(name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name, f"Import-only placeholder for {name} (lmcsds CPU mode).")
    setattr(module, PLACEHOLDER_ATTR, True)
    for key, value in attrs.items():
        setattr(module, key, value)
    return module


def install_cuda_placeholders() -> list:
    """Register placeholders for tinycudann / nvdiffrast where not installed; returns their names."""
    installed = []
    if "tinycudann" not in sys.modules and importlib.util.find_spec("tinycudann") is None:
        sys.modules["tinycudann"] = _module(
            "tinycudann",
            Encoding=_placeholder_class("tinycudann.Encoding"),
            Network=_placeholder_class("tinycudann.Network"),
            NetworkWithInputEncoding=_placeholder_class("tinycudann.NetworkWithInputEncoding"),
            free_temporary_memory=lambda: None,  # no CUDA memory to free
        )
        installed.append("tinycudann")
    if "nvdiffrast" not in sys.modules and importlib.util.find_spec("nvdiffrast") is None:
        dr = _module(
            "nvdiffrast.torch",
            RasterizeGLContext=_placeholder_class("nvdiffrast.torch.RasterizeGLContext"),
            RasterizeCudaContext=_placeholder_class("nvdiffrast.torch.RasterizeCudaContext"),
            **{
                f: _raiser(f"nvdiffrast.torch.{f}")
                for f in ("rasterize", "interpolate", "antialias", "texture")
            },
        )
        sys.modules["nvdiffrast"] = _module("nvdiffrast", torch=dr)
        sys.modules["nvdiffrast.torch"] = dr
        installed.append("nvdiffrast")
    return installed


@contextmanager
def threestudio_device(device: Union[str, torch.device]) -> Iterator[torch.device]:
    """Within the block, every threestudio ``get_device()`` returns ``device``."""
    if torch.device(device).type == "cpu":
        install_cuda_placeholders()
    import threestudio  # noqa: F401  (loads the modules that import get_device)

    device = torch.device(device)
    patched = []
    for name, module in list(sys.modules.items()):
        if (name == "threestudio" or name.startswith("threestudio.")) and hasattr(
            module, "get_device"
        ):
            patched.append((module, module.get_device))
            module.get_device = lambda: device
    try:
        yield device
    finally:
        for module, original in patched:
            module.get_device = original
