"""Train a small DeepFloyd-IF-shaped prior on an offline data set, on a CPU.

The prior has IF stage I's UNet block types, 6 output channels, IF's DDPM scheduler, a 2-layer
T5 encoder and a sentencepiece tokenizer trained on the prompts, and is saved in IF's folder
layout, so the guidance loads it with ``IFPipeline.from_pretrained`` like DeepFloyd's weights.

- epsilon loss on the first 3 output channels; the variance channels are trained towards -1,
  i.e. the posterior variance beta_tilde under IF's ``learned_range`` parameterisation;
- classifier-free guidance: the prompt is replaced by "" with probability ``p_uncond``;
- the T5 encoder keeps its random initialisation (frozen): it only has to tell prompts apart;
- an exponential moving average of the UNet weights is what gets saved;
- the learning rate warms up linearly over ``warmup`` steps;
- checkpoints are atomic and ``resume`` continues (a run can span several sittings).

    python -m lmcsds.priors.train --data fmnist --out load/lmcsds/priors/fmnist-if-32
    python -m lmcsds.priors.train --data objects3d --out load/lmcsds/priors/objects-if-32
"""

import argparse
import copy
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..commands import module_main
from ..core import gradients as G
from ..core.atomic import atomic_write
from ..core.if_factory import build_if_pipeline
from ..core.noise import seeded_generator
from .datasets import DATASETS, PriorData


@torch.no_grad()
def prompt_table(pipe, prompts: List[str], chunk: int = 256) -> torch.Tensor:
    """T5 embeddings of the prompts: (len(prompts), 77, d_model)."""
    from ..core.text import IF_MAX_LENGTH

    out = []
    for i in range(0, len(prompts), chunk):
        tokens = pipe.tokenizer(
            prompts[i : i + chunk], padding="max_length", max_length=IF_MAX_LENGTH,
            truncation=True, add_special_tokens=True, return_tensors="pt",
        )  # fmt: skip
        out.append(pipe.text_encoder(tokens.input_ids, attention_mask=tokens.attention_mask)[0])
    return torch.cat(out)


def _tokenizer_files(tokenizer) -> Dict[str, bytes]:
    """The tokenizer as {file name: bytes}, through ``save_pretrained`` (any transformers)."""
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        return {p.name: p.read_bytes() for p in Path(tmp).iterdir() if p.is_file()}


def _tokenizer_from_checkpoint(state: dict, folder: Path):
    """The T5 tokenizer saved in a checkpoint (older checkpoints hold the sentencepiece model)."""
    from transformers import T5Tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    if "tokenizer_files" not in state:
        (folder / "spiece.model").write_bytes(state["spiece_model"])
        return T5Tokenizer(vocab_file=str(folder / "spiece.model"), extra_ids=100)
    for name, data in state["tokenizer_files"].items():
        (folder / name).write_bytes(data)
    return T5Tokenizer.from_pretrained(str(folder))


def train_prior(
    out: str,
    minutes: float,
    steps: int,
    batch_size: int = 64,
    lr: float = 2e-4,
    p_uncond: float = 0.15,
    ema_decay: float = 0.999,
    seed: int = 0,
    checkpoint_every: int = 100,
    resume: bool = True,
    data: str = "fmnist",
    warmup: int = 0,
    dataset: Optional[PriorData] = None,
) -> Path:
    out_dir = Path(out)
    ckpt = Path("build") / f"{out_dir.name}-training.ckpt"  # large; not committed
    torch.manual_seed(seed)
    if dataset is None:
        if data not in DATASETS:
            raise ValueError(f"unknown data set {data!r}; choose one of {', '.join(DATASETS)}")
        dataset = DATASETS[data]()
    pipe = build_if_pipeline(dataset.tokenizer_texts, dataset.shape)
    state = None
    if resume and ckpt.exists():
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        pipe.text_encoder.load_state_dict(state["text_encoder"])
        pipe.tokenizer = _tokenizer_from_checkpoint(state, ckpt.with_suffix(".tokenizer"))
        pipe.unet.load_state_dict(state["unet"])
    unet, scheduler = pipe.unet.train(), pipe.scheduler
    ema = copy.deepcopy(unet).eval().requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.0)
    start = 0
    if state is not None:
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        start = state["step"]
    pipe.text_encoder.eval()
    table = prompt_table(pipe, dataset.prompts)
    abar_all = scheduler.alphas_cumprod.float()

    tokenizer_files = _tokenizer_files(pipe.tokenizer)

    def save(step: int) -> None:
        state = {
            "unet": unet.state_dict(), "ema": ema.state_dict(), "optimizer": opt.state_dict(),
            "text_encoder": pipe.text_encoder.state_dict(),
            "tokenizer_files": tokenizer_files,
            "step": step,
        }  # fmt: skip
        atomic_write(ckpt, lambda tmp: torch.save(state, tmp))

    deadline = time.time() + minutes * 60
    bar = tqdm(total=steps, initial=start, desc="train prior", unit="step")
    step = start
    for step in range(start, steps):
        gen = seeded_generator(seed, step)
        idx = torch.randint(0, dataset.size, (batch_size,), generator=gen)
        z, prompt = dataset.batch(idx, gen)
        drop = torch.rand(batch_size, generator=gen) < p_uncond
        prompt[drop] = len(table) - 1
        t = torch.randint(0, scheduler.config.num_train_timesteps, (batch_size,), generator=gen)
        eps = torch.randn(z.shape, generator=gen)
        zt = G.z_t(z, eps, abar_all[t].view(-1, 1, 1, 1))
        out_ = unet(zt, t, encoder_hidden_states=table[prompt]).sample
        loss = F.mse_loss(out_[:, :3], eps) + 0.1 * F.mse_loss(out_[:, 3:], -torch.ones_like(eps))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for group in opt.param_groups:  # linear warm-up
            group["lr"] = lr * min(1.0, (step + 1) / max(1, warmup))
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            decay = min(ema_decay, (1 + step) / (10 + step))
            for p_ema, p in zip(ema.parameters(), unet.parameters()):
                p_ema.lerp_(p, 1 - decay)
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if (step + 1) % checkpoint_every == 0:
            save(step + 1)
        if time.time() > deadline:
            step += 1
            break
    else:
        step = steps
    bar.close()
    save(step)
    pipe.unet = ema
    pipe.save_pretrained(out_dir, safe_serialization=True)
    (out_dir / "TRAINING.md").write_text(
        f"Small IF-shaped prior on {dataset.description}: {step} steps of batch {batch_size}, "
        f"AdamW lr {lr} (warm-up {warmup} steps), EMA {ema_decay}, prompt dropout {p_uncond}, "
        f"seed {seed}, UNet {dataset.shape.block_out_channels}. Trained with "
        f"`python -m lmcsds.priors.train --data {dataset.name}`.\n"
    )
    print(f"prior saved to {out_dir} after {step} steps")
    return out_dir


@torch.no_grad()
def sample_grid(
    prior_dir: str,
    out_png: str,
    guidance_scale: float = 4.0,
    steps: int = 100,
    per_prompt: int = 6,
    seed: int = 0,
) -> torch.Tensor:
    """Samples of the prior's own IF sampler (DDPM, ``steps`` steps, classifier-free guidance
    ``guidance_scale`` in diffusers' = the paper's convention), one row per class prompt."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from diffusers import IFPipeline

    from ..core.text import encode_prompts
    from .fmnist_data import CLASS_NAMES, class_prompt

    pipe = IFPipeline.from_pretrained(
        prior_dir, text_encoder=None, safety_checker=None, watermarker=None,
        feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    prompts = [class_prompt(c) for c in range(len(CLASS_NAMES))]
    emb = encode_prompts(prior_dir, prompts + [""])
    emb_y = emb[:-1].repeat_interleave(per_prompt, 0)
    images = pipe(
        prompt_embeds=emb_y, negative_prompt_embeds=emb[-1:].expand(len(emb_y), -1, -1),
        num_inference_steps=steps, guidance_scale=guidance_scale, output_type="pt",
        generator=torch.Generator().manual_seed(seed),
    ).images.clamp(-1, 1)  # fmt: skip
    fig, axes = plt.subplots(
        len(prompts), per_prompt, figsize=(per_prompt * 0.9 + 1.8, len(prompts) * 0.95)
    )
    for i, ax in enumerate(axes.flat):
        ax.imshow((images[i].permute(1, 2, 0).numpy() * 0.5 + 0.5).clip(0, 1))
        ax.set_xticks([]), ax.set_yticks([])
        if i % per_prompt == 0:
            ax.set_ylabel(
                prompts[i // per_prompt].replace("a photo of ", ""),
                rotation=0,
                ha="right",
                va="center",
                fontsize=7,
            )
    fig.suptitle(
        f"{Path(prior_dir).name}: IF sampler, {steps} steps, guidance {guidance_scale:g}",
        fontsize=8,
    )
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return images


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default="fmnist", choices=sorted(DATASETS), help="data set")
    parser.add_argument("--out", default="load/lmcsds/priors/fmnist-if-32",
                        help="prior folder (diffusers layout; the checkpoint resumes from it)")  # fmt: skip
    parser.add_argument("--minutes", type=float, default=60.0, help="stop (and save) after this")
    parser.add_argument("--steps", type=int, default=20_000, help="total training steps")
    parser.add_argument("--batch-size", type=int, default=64, help="images per step")
    parser.add_argument("--lr", type=float, default=2e-4, help="AdamW learning rate")
    parser.add_argument("--warmup", type=int, default=0, help="linear warm-up steps")
    parser.add_argument("--ema", type=float, default=0.999, help="EMA decay of the saved UNet")
    parser.add_argument("--seed", type=int, default=0, help="data order and initialisation")
    parser.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint")
    parser.add_argument("--samples-only", action="store_true", help="only draw the sample grid")


def main(argv=None) -> None:
    module_main(__doc__, add_arguments, run, argv)


def run(args: argparse.Namespace) -> None:
    if args.samples_only:
        sample_grid(args.out, str(Path(args.out) / "samples.png"))
        return
    train_prior(
        args.out,
        args.minutes,
        args.steps,
        args.batch_size,
        args.lr,
        ema_decay=args.ema,
        seed=args.seed,
        resume=not args.fresh,
        data=args.data,
        warmup=args.warmup,
    )


if __name__ == "__main__":
    main()
