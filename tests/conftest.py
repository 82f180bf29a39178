"""Shared fixtures: threestudio on sys.path, a tiny IF-shaped prior saved to disk, a corrective."""

import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
THREESTUDIO_DIR = Path(
    os.environ.get("THREESTUDIO_DIR", ROOT.parent / "shared" / "threestudio")
).resolve()

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
if str(THREESTUDIO_DIR) not in sys.path:
    sys.path.insert(0, str(THREESTUDIO_DIR))
# tiny-cuda-nn and nvdiffrast need CUDA: an import-only placeholder (raises when used) and the
# pure-torch rasteriser stand in for them
from lmcsds.adapter.cpu_mode import install_cuda_placeholders, threestudio_device  # noqa: E402

install_cuda_placeholders()

WITHOUT_THREESTUDIO = os.environ.get("LMCSDS_WITHOUT_THREESTUDIO") == "1"


def pytest_collection_modifyitems(config, items):
    """On a stack without threestudio (today's releases), skip what needs it, and only that."""
    if not WITHOUT_THREESTUDIO:
        return
    skip = pytest.mark.skip(reason="LMCSDS_WITHOUT_THREESTUDIO=1: this stack has no threestudio")
    for item in items:
        if item.get_closest_marker("threestudio"):
            item.add_marker(skip)


TINY_PROMPTS = [
    "a photo of a sneaker",
    "a photo of a shirt",
    "a hamburger",
    "side view of a hamburger",
    "front view of a hamburger",
    "backside view of a hamburger",
    "overhead view of a hamburger",
    "an ankle boot on a white background",
]


@pytest.fixture(scope="session")
def tiny_if_dir(tmp_path_factory) -> Path:
    """A DeepFloyd-IF-shaped pipeline (1.5M-parameter UNet, 32x32) saved with save_pretrained."""
    from lmcsds.core.if_factory import build_if_pipeline

    torch.manual_seed(0)
    pipe = build_if_pipeline(TINY_PROMPTS * 4)
    out = tmp_path_factory.mktemp("priors") / "tiny-if"
    pipe.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_prior(tiny_if_dir):
    from lmcsds.core import IFPrior

    return IFPrior.from_pretrained(str(tiny_if_dir), device="cpu", half_precision=False)


@pytest.fixture(scope="session")
def encode(tiny_if_dir):
    """Prompt -> T5 embedding (77, d), tokenised exactly as threestudio's DeepFloyd processor."""
    from transformers import T5EncoderModel, T5Tokenizer

    tokenizer = T5Tokenizer.from_pretrained(tiny_if_dir, subfolder="tokenizer")
    encoder = T5EncoderModel.from_pretrained(tiny_if_dir, subfolder="text_encoder").eval()

    @torch.no_grad()
    def _encode(prompts):
        tok = tokenizer(
            list(prompts),
            padding="max_length",
            max_length=77,
            truncation=True,
            add_special_tokens=True,
            return_tensors="pt",
        )
        return encoder(tok.input_ids, attention_mask=tok.attention_mask)[0]

    return _encode


@pytest.fixture(scope="session")
def tiny_corrective_path(tiny_prior, tmp_path_factory) -> Path:
    """An (untrained) corrective with valid metadata for the tiny prior."""
    from lmcsds.core import CorrectiveConfig, CorrectiveMeta, CorrectiveUNet, save_corrective

    torch.manual_seed(1)
    arch = CorrectiveConfig(base_channels=8, depth=2)
    model = CorrectiveUNet(arch, tiny_prior.num_train_timesteps)
    path = tmp_path_factory.mktemp("correctives") / "tiny-if.safetensors"
    meta = CorrectiveMeta(
        prior_id=tiny_prior.prior_id,
        resolution=tiny_prior.resolution,
        normalization="global",
        training_steps=0,
        num_train_timesteps=tiny_prior.num_train_timesteps,
        architecture=arch,
    )
    save_corrective(path, model, meta)
    return path


@pytest.fixture
def cpu_threestudio():
    """threestudio with its device pinned to the CPU (it hard-codes cuda:<rank>)."""
    import threestudio

    with threestudio_device("cpu"):
        yield threestudio
