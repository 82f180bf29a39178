"""Opt-in CPU mode for threestudio, which otherwise assumes CUDA everywhere.

Asked for with the environment variable ``LMCSDS_DEVICE=cpu``; without it nothing here acts,
so GPU runs behave exactly as upstream threestudio. With it, threestudio's unmodified
``launch.py`` runs on the CPU:

    LMCSDS_DEVICE=cpu python launch.py --config configs/lmcsds-dreamfusion-cpu.yaml --train

- ``boot()`` runs at interpreter start (the ``lmcsds_cpu_mode.pth`` file that
  ``scripts/setup.sh`` writes), before launch.py imports threestudio: it installs the
  placeholders below.
- ``activate()`` runs when launch.py loads the extension: every threestudio ``get_device()``
  returns the CPU, and ``Trainer(accelerator="gpu", devices=-1)`` becomes ``accelerator="cpu",
  devices=1`` (launch.py hard-codes the former).

The building blocks:

- ``install_cuda_placeholders()``: threestudio imports tiny-cuda-nn and nvdiffrast at module
  level, and neither installs without CUDA. When (and only when) one is not installed, it is
  stood in for: tiny-cuda-nn by an import-only placeholder (using anything in it raises, so a
  CPU run must use pure-torch encodings, ``ProgressiveBandFrequency`` / ``VanillaMLP``), and
  nvdiffrast by the pure-torch rasteriser of ``rasterizer.py`` (rasterize, interpolate,
  antialias), so that threestudio's ``nvdiff-rasterizer`` and mesh stage run on the CPU.
- ``threestudio_device(device)``: threestudio's ``get_device()`` hard-codes ``cuda:<rank>``;
  inside this block it returns ``device``.
"""

import importlib.util
import os
import sys
import types
from contextlib import contextmanager
from typing import Iterator, Optional, Union

import torch

PLACEHOLDER_ATTR = "__lmcsds_placeholder__"
DEVICE_VARIABLE = "LMCSDS_DEVICE"
SUPPORTED_DEVICES = ("cpu",)


def requested_device() -> Optional[str]:
    """The device asked for with LMCSDS_DEVICE, or None (upstream behaviour)."""
    value = os.environ.get(DEVICE_VARIABLE, "").strip().lower()
    if not value:
        return None
    if value not in SUPPORTED_DEVICES:
        raise ValueError(
            f"{DEVICE_VARIABLE}={value!r} is not supported: use 'cpu', or unset it for GPU runs"
        )
    return value


def _raiser(what: str):
    def fail(*args, **kwargs):
        raise RuntimeError(
            f"{what} needs CUDA and is not installed; in CPU mode use pure-torch components "
            f"(encodings ProgressiveBandFrequency / VanillaMLP)"
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
    """Stand in for tinycudann / nvdiffrast where not installed; returns their names."""
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
        from . import rasterizer as dr  # pure torch, CPU mode only

        setattr(dr, PLACEHOLDER_ATTR, True)
        sys.modules["nvdiffrast"] = _module("nvdiffrast", torch=dr)
        sys.modules["nvdiffrast.torch"] = dr
        installed.append("nvdiffrast")
    return installed


def _patch_get_device(device: torch.device) -> list:
    patched = []
    for name, module in list(sys.modules.items()):
        if (name == "threestudio" or name.startswith("threestudio.")) and hasattr(
            module, "get_device"
        ):
            patched.append((module, module.get_device))
            module.get_device = lambda: device
    return patched


@contextmanager
def threestudio_device(device: Union[str, torch.device]) -> Iterator[torch.device]:
    """Within the block, every threestudio ``get_device()`` returns ``device``."""
    if torch.device(device).type == "cpu":
        install_cuda_placeholders()
    import threestudio  # noqa: F401  (loads the modules that import get_device)

    device = torch.device(device)
    patched = _patch_get_device(device)
    try:
        yield device
    finally:
        for module, original in patched:
            module.get_device = original


def boot() -> None:
    """Interpreter start-up hook: placeholders before anything imports threestudio."""
    if requested_device() == "cpu":
        install_cuda_placeholders()


def _cpu_trainer_init(original):
    def __init__(self, *args, **kwargs):
        if kwargs.get("accelerator") in ("gpu", "cuda", "auto"):
            kwargs["accelerator"] = "cpu"
            if kwargs.get("devices", 1) in (-1, "-1", "auto"):
                kwargs["devices"] = 1
        original(self, *args, **kwargs)

    __init__.__wrapped__ = original
    setattr(__init__, PLACEHOLDER_ATTR, True)
    return __init__


def activate() -> Optional[str]:
    """Apply the requested device to threestudio and Lightning's Trainer (idempotent)."""
    device = requested_device()
    if device is None:
        return None
    install_cuda_placeholders()
    import pytorch_lightning
    import threestudio  # noqa: F401

    _patch_get_device(torch.device(device))
    trainer = pytorch_lightning.Trainer
    if not hasattr(trainer.__init__, PLACEHOLDER_ATTR):
        trainer.__init__ = _cpu_trainer_init(trainer.__init__)
    return device
