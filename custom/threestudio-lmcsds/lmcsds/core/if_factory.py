"""Build DeepFloyd-IF-shaped diffusers pipelines of any size (random weights).

The same block types, scheduler and folder layout as IF stage I, so code written for
``DeepFloyd/IF-I-XL-v1.0`` loads them unchanged through ``IFPipeline.from_pretrained``.
Used for the small prior trained offline, for tests, and (on the meta device) to count the
FLOPs of the full-size architecture without its weights.
"""

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, List, Optional

# IF-I-XL-v1.0's published UNet configuration (diffusers' scripts/convert_if.py).
IF_I_XL_UNET = dict(
    sample_size=64,
    block_out_channels=(704, 1408, 2112, 2816),
    layers_per_block=3,
    attention_head_dim=64,
    cross_attention_dim=2816,
    encoder_hid_dim=4096,
    addition_embed_type_num_heads=64,
    down_block_types=(
        "ResnetDownsampleBlock2D",
        "SimpleCrossAttnDownBlock2D",
        "SimpleCrossAttnDownBlock2D",
        "SimpleCrossAttnDownBlock2D",
    ),
    up_block_types=(
        "SimpleCrossAttnUpBlock2D",
        "SimpleCrossAttnUpBlock2D",
        "SimpleCrossAttnUpBlock2D",
        "ResnetUpsampleBlock2D",
    ),
)
IF_TEXT_TOKENS = 77  # T5 sequence length DeepFloyd IF uses


@dataclass
class IFShape:
    """Size of an IF-shaped UNet; ``len(block_out_channels)`` levels, cross-attention below the first."""

    sample_size: int = 32
    block_out_channels: List[int] = field(default_factory=lambda: [32, 64, 64])
    layers_per_block: int = 1
    attention_head_dim: int = 16
    cross_attention_dim: Optional[int] = None  # default: last block width
    encoder_hid_dim: int = 64  # = T5 d_model
    norm_num_groups: int = 8

    def unet_kwargs(self) -> dict:
        n = len(self.block_out_channels)
        width = self.cross_attention_dim or self.block_out_channels[-1]
        return dict(
            sample_size=self.sample_size,
            block_out_channels=tuple(self.block_out_channels),
            layers_per_block=self.layers_per_block,
            attention_head_dim=self.attention_head_dim,
            cross_attention_dim=width,
            encoder_hid_dim=self.encoder_hid_dim,
            addition_embed_type_num_heads=max(1, width // self.attention_head_dim),
            norm_num_groups=self.norm_num_groups,
            down_block_types=("ResnetDownsampleBlock2D",)
            + ("SimpleCrossAttnDownBlock2D",) * (n - 1),
            up_block_types=("SimpleCrossAttnUpBlock2D",) * (n - 1) + ("ResnetUpsampleBlock2D",),
        )


def if_unet(**shape_kwargs):
    """An IF stage-I UNet2DConditionModel with the given size arguments (random weights)."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        in_channels=3,
        out_channels=6,  # noise + learned variance
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        addition_embed_type="text",
        cross_attention_norm="group_norm",
        resnet_time_scale_shift="scale_shift",
        act_fn="gelu",
        **shape_kwargs,
    )


def if_scheduler():
    """IF stage I's DDPM scheduler configuration."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        variance_type="learned_range",
        prediction_type="epsilon",
        thresholding=True,
        dynamic_thresholding_ratio=0.95,
        sample_max_value=1.5,
        clip_sample=True,
        clip_sample_range=1.0,
    )


def train_tokenizer(texts: Iterable[str], out_dir: str, vocab_size: int = 200):
    """A T5 tokenizer (pad 0, eos 1, unk 2, no bos, 100 extra ids) on a local sentencepiece model."""
    import sentencepiece as spm
    from transformers import T5Tokenizer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(texts))
        corpus = f.name
    try:
        spm.SentencePieceTrainer.train(
            input=corpus,
            model_prefix=str(out / "spiece"),
            vocab_size=vocab_size,
            pad_id=0,
            eos_id=1,
            unk_id=2,
            bos_id=-1,
            model_type="unigram",
            hard_vocab_limit=False,
            minloglevel=2,
        )
    finally:
        os.unlink(corpus)
    return T5Tokenizer(vocab_file=str(out / "spiece.model"), extra_ids=100)


def t5_encoder(vocab_size: int, d_model: int = 64, num_layers: int = 2, num_heads: int = 4):
    """A small T5 encoder with T5-v1.1's layout (gated GELU, untied)."""
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(
        T5Config(
            vocab_size=vocab_size,
            d_model=d_model,
            d_kv=d_model // num_heads,
            d_ff=2 * d_model,
            num_layers=num_layers,
            num_heads=num_heads,
            feed_forward_proj="gated-gelu",
            tie_word_embeddings=False,
        )
    )


def build_if_pipeline(texts: Iterable[str], shape: IFShape = IFShape(), t5_layers: int = 2):
    """A complete IF-shaped ``IFPipeline`` (random weights) ready for ``save_pretrained``."""
    from diffusers import IFPipeline

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = train_tokenizer(texts, tmp)
    encoder = t5_encoder(len(tokenizer), shape.encoder_hid_dim, t5_layers)
    return IFPipeline(
        tokenizer=tokenizer,
        text_encoder=encoder,
        unet=if_unet(**shape.unet_kwargs()),
        scheduler=if_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        watermarker=None,
        requires_safety_checker=False,
    )
