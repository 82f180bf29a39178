"""Save and load the corrective bhat_psi as safetensors with validated metadata."""

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from .atomic import atomic_write
from .corrective import CorrectiveConfig, CorrectiveUNet
from .gradients import parse_normalization
from .spectral_corrective import SpectralCorrective

FORMAT = "lmcsds-corrective"
FORMAT_VERSION = 1
PathLike = Union[str, os.PathLike]


class CorrectiveCheckpointError(ValueError):
    """A corrective checkpoint is missing, unreadable or does not match its use."""


def prior_id(name_or_path: str) -> str:
    """Identity of a prior: the last path component, so a hub id and a local copy agree.

    ``DeepFloyd/IF-I-XL-v1.0`` and ``/models/IF-I-XL-v1.0/`` are both ``IF-I-XL-v1.0``.
    """
    return Path(str(name_or_path).rstrip("/\\")).name


@dataclass(frozen=True)
class CorrectiveMeta:
    prior_id: str
    resolution: int
    normalization: str
    training_steps: int
    num_train_timesteps: int
    architecture: CorrectiveConfig
    format_version: int = FORMAT_VERSION

    def to_strings(self) -> Dict[str, str]:
        return {
            "format": FORMAT,
            "format_version": str(self.format_version),
            "prior_id": self.prior_id,
            "resolution": str(self.resolution),
            "normalization": self.normalization,
            "training_steps": str(self.training_steps),
            "num_train_timesteps": str(self.num_train_timesteps),
            "architecture": json.dumps(self.architecture.to_dict(), sort_keys=True),
        }

    @classmethod
    def from_strings(cls, meta: Dict[str, str], path: PathLike) -> "CorrectiveMeta":
        if meta.get("format") != FORMAT:
            raise CorrectiveCheckpointError(
                f"{path}: not an LMC-SDS corrective (metadata 'format' is "
                f"{meta.get('format')!r}, expected {FORMAT!r})"
            )
        try:
            version = int(meta["format_version"])
            if version > FORMAT_VERSION:
                raise CorrectiveCheckpointError(
                    f"{path}: format version {version} is newer than this lmcsds "
                    f"(reads up to {FORMAT_VERSION}); upgrade threestudio-lmcsds"
                )
            out = cls(
                prior_id=meta["prior_id"],
                resolution=int(meta["resolution"]),
                normalization=meta["normalization"],
                training_steps=int(meta["training_steps"]),
                num_train_timesteps=int(meta["num_train_timesteps"]),
                architecture=CorrectiveConfig(**json.loads(meta["architecture"])),
                format_version=version,
            )
        except (KeyError, ValueError, TypeError) as e:
            if isinstance(e, CorrectiveCheckpointError):
                raise
            raise CorrectiveCheckpointError(f"{path}: invalid metadata ({e!r})") from e
        try:
            parse_normalization(out.normalization)
        except ValueError as e:
            raise CorrectiveCheckpointError(
                f"{path}: unknown normalization {out.normalization!r} in metadata"
            ) from e
        return out


HUB_PREFIX = "hf://"
# org/repo/file.safetensors (no subfolders), optionally @revision: a hub reference when no such
# local file exists; "hf://org/repo/path/in/repo.safetensors[@revision]" always is one
_HUB_SHORT = re.compile(r"^[\w.-]+/[\w.-]+/[^/]+\.safetensors(@[\w./-]+)?$")


def hub_reference(ref: PathLike) -> Optional[Tuple[str, str, Optional[str]]]:
    """(repo_id, filename, revision) when ``ref`` names a file on the Hugging Face Hub, else None.

    ``hf://org/repo/sub/f.safetensors@v1`` -> ("org/repo", "sub/f.safetensors", "v1");
    ``org/repo/f.safetensors`` too, unless it exists locally or its first folder does.
    """
    text = str(ref)
    if text.startswith(HUB_PREFIX):
        text = text[len(HUB_PREFIX) :]
    elif not _HUB_SHORT.match(text) or Path(text).exists() or Path(text.split("/")[0]).exists():
        return None
    text, _, revision = text.partition("@")
    parts = text.split("/")
    if len(parts) < 3 or not all(parts):
        raise ValueError(f"{ref}: a hub reference is hf://ORG/REPO/PATH/IN/REPO[@REVISION]")
    return "/".join(parts[:2]), "/".join(parts[2:]), revision or None


def resolve_corrective_path(ref: PathLike, cache_dir: Optional[PathLike] = None) -> Path:
    """A local path for ``ref``: a local file as given, or a hub reference downloaded into (or,
    with HF_HUB_OFFLINE=1, found in) the Hugging Face cache."""
    hub = hub_reference(ref)
    if hub is None:
        return Path(ref)
    from huggingface_hub import hf_hub_download

    repo_id, filename, revision = hub
    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir))
    except Exception as e:  # offline and not cached, no such repo / file / revision, network
        raise FileNotFoundError(
            f"Corrective {ref}: could not get {filename} from the Hugging Face Hub repo "
            f"{repo_id}{'@' + revision if revision else ''} ({type(e).__name__}: "
            f"{' '.join(str(e).split())[:200]}). Offline (HF_HUB_OFFLINE=1) it must be in the "
            f"cache already; or download it and set corrective_path to the local file."
        ) from e


def save_corrective(
    path: PathLike, model: Union[CorrectiveUNet, SpectralCorrective], meta: CorrectiveMeta
) -> None:
    """Write atomically: a crash mid-write leaves any previous file at ``path`` intact."""
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta.to_strings()))


def read_meta(path: PathLike) -> CorrectiveMeta:
    """Metadata of a corrective file (local path or hub reference), validated; raises
    CorrectiveCheckpointError."""
    path = resolve_corrective_path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Corrective checkpoint not found: {path}. Train one against your prior with "
            f"`lmcsds train-corrective --prior <prior> --images <photos> --out <dir>` "
            f"(see README, 'Training the corrective') and point `corrective_path` at it, "
            f"or use `loss_type: sds` / `cond`, which need no corrective."
        )
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CorrectiveCheckpointError(f"{path}: not a readable safetensors file ({e})") from e
    return CorrectiveMeta.from_strings(meta, path)


def load_corrective(
    path: PathLike,
    expected_prior_id: Optional[str] = None,
    expected_resolution: Optional[int] = None,
    map_location: Union[str, torch.device] = "cpu",
) -> "tuple[Union[CorrectiveUNet, SpectralCorrective], CorrectiveMeta]":
    """Load bhat_psi (local path or hub reference) and check it was trained for this prior and
    resolution."""
    path = resolve_corrective_path(path)
    meta = read_meta(path)
    if expected_prior_id is not None and meta.prior_id != expected_prior_id:
        raise CorrectiveCheckpointError(
            f"{path}: trained for prior {meta.prior_id!r}, but the guidance uses "
            f"{expected_prior_id!r}. A corrective models one prior's denoiser; train one "
            f"for {expected_prior_id!r} with `lmcsds train-corrective`."
        )
    if expected_resolution is not None and meta.resolution != expected_resolution:
        raise CorrectiveCheckpointError(
            f"{path}: trained at {meta.resolution}x{meta.resolution}, but the prior works "
            f"at {expected_resolution}x{expected_resolution}"
        )
    arch = meta.architecture
    if arch.kind == "spectral":
        model = SpectralCorrective.empty(arch.t_bins, meta.resolution, meta.num_train_timesteps)
    else:
        model = CorrectiveUNet(arch, meta.num_train_timesteps)
    try:
        state = load_file(str(path), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as e:
        raise CorrectiveCheckpointError(f"{path}: not a readable safetensors file ({e})") from e
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or wrong:
        raise CorrectiveCheckpointError(
            f"{path}: weights do not match the architecture in its metadata "
            f"{meta.architecture}: missing {missing[:3]}, unexpected {unexpected[:3]}, "
            f"wrong shapes {wrong[:3]}"
        )
    model.load_state_dict(state)
    return model.to(map_location).eval().requires_grad_(False), meta
