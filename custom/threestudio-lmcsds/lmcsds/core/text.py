"""T5 text embeddings for an IF prior, tokenised exactly as threestudio's DeepFloyd processor."""

from typing import List, Union

import torch
from torch import Tensor

IF_MAX_LENGTH = 77


@torch.no_grad()
def encode_prompts(
    name_or_path: str,
    prompts: List[str],
    device: Union[str, torch.device] = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """(len(prompts), 77, d_model) embeddings from the prior's own T5; the encoder is freed after.

    The empty prompt "" gives the unconditional embedding eps_0 is evaluated with.
    """
    from transformers import T5EncoderModel, T5Tokenizer

    tokenizer = T5Tokenizer.from_pretrained(name_or_path, subfolder="tokenizer")
    encoder = T5EncoderModel.from_pretrained(
        name_or_path, subfolder="text_encoder", torch_dtype=dtype
    ).to(device)
    tokens = tokenizer(
        list(prompts),
        padding="max_length",
        max_length=IF_MAX_LENGTH,
        truncation=True,
        add_special_tokens=True,
        return_tensors="pt",
    )
    out = encoder(tokens.input_ids.to(device), attention_mask=tokens.attention_mask.to(device))[
        0
    ].float()
    del encoder
    return out.cpu()
