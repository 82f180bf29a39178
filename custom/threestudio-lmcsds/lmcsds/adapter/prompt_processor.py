"""DeepFloyd prompt processor that loads T5 in full precision instead of 8-bit.

threestudio's ``deep-floyd-prompt-processor`` loads T5 with ``load_in_8bit`` (bitsandbytes, CUDA
only). This variant encodes with the same tokenisation (``lmcsds.core.text``) in float32, on the
GPU when one is used and on the CPU otherwise, and writes the same cache files, so everything
downstream (view-dependent prompts, negative prompts, the cache) is the built-in behaviour.
The encoder lives in this importable module, so ``spawn: true`` works as upstream.
"""

import os
from dataclasses import dataclass
from typing import List

import threestudio
import torch
from threestudio.models.prompt_processors.base import hash_prompt
from threestudio.models.prompt_processors.deepfloyd_prompt_processor import (
    DeepFloydPromptProcessor,
)

from ..core.atomic import atomic_write
from ..core.text import encode_prompts
from .cpu_mode import requested_device

CACHE_DIR = ".threestudio_cache/text_embeddings"  # threestudio's prompt processors' cache


def encode_to_cache(pretrained_model_name_or_path: str, prompts: List[str], cache_dir: str) -> None:
    """Encode ``prompts`` with the prior's T5 in float32 and save one cache file per prompt.
    Torch's random state is restored afterwards: loading T5 draws from it, and with ``spawn:
    false`` that would make a seeded run depend on whether its prompts were cached."""
    device = requested_device() or ("cuda" if torch.cuda.is_available() else "cpu")
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count()))):
        embeddings = encode_prompts(pretrained_model_name_or_path, prompts, device, torch.float32)
    for prompt, embedding in zip(prompts, embeddings):
        name = f"{hash_prompt(pretrained_model_name_or_path, prompt)}.pt"
        # parallel runs share the cache and skip a prompt whose file exists: it appears complete
        atomic_write(os.path.join(cache_dir, name), lambda tmp, e=embedding: torch.save(e, tmp))


def cached_embeddings(pretrained_model_name_or_path: str, prompts: List[str]) -> torch.Tensor:
    """(N, 77, d) embeddings of ``prompts`` from threestudio's prompt cache, encoding (in
    float32, as this processor) and caching the ones it lacks; e.g. the guidance's own prompts."""
    os.makedirs(CACHE_DIR, exist_ok=True)

    def path(prompt: str) -> str:
        return os.path.join(CACHE_DIR, f"{hash_prompt(pretrained_model_name_or_path, prompt)}.pt")

    missing = [p for p in dict.fromkeys(prompts) if not os.path.exists(path(p))]
    if missing:
        threestudio.info(f"Encoding {missing} with the prior's T5 into {CACHE_DIR}")
        encode_to_cache(pretrained_model_name_or_path, missing, CACHE_DIR)
    return torch.stack([torch.load(path(p), map_location="cpu") for p in prompts])


@threestudio.register("lmcsds-deep-floyd-prompt-processor")
class FullPrecisionDeepFloydPromptProcessor(DeepFloydPromptProcessor):
    @dataclass
    class Config(DeepFloydPromptProcessor.Config):
        pass

    cfg: Config

    @staticmethod
    def spawn_func(pretrained_model_name_or_path, prompts, cache_dir):
        encode_to_cache(pretrained_model_name_or_path, prompts, cache_dir)
