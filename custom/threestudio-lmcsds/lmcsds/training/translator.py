"""Train an image-to-image translation network with a guidance loss as its only prior (Sec. 5.2).

The network (the U-Net of ``core/unet.py``, the class id as a frequency encoding per pixel, tanh
output) maps a source image and a target class to an image; its loss is the guidance step of
``core/lmc_sds.py`` on the output under the target caption (any ``loss_type``: LMC-SDS, SDS,
NFSD, DDS with the source caption, ...) plus an L2 term to the input, the two weights moved by
a cosine schedule over the first ``warmup_steps`` (supplementary A: guidance 0.1 -> 1, L2
1 -> 0.1 over 20K of 200K steps of batch 32, lr 5e-5 x 0.9 every 50K, omega 15).

Checkpoints are written atomically; ``resume`` continues with the same data order, because the
batch and noise of step k are functions of (seed, k). A sample grid (source, exact target and
output per class) is written every ``sample_every`` steps, scalars go to TensorBoard. The task
and the command live in ``evaluation/translation.py`` (``lmcsds train-translator``).
"""

import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from ..core.atomic import atomic_write
from ..core.gradients import NFSD_NEGATIVE_PROMPT, loss_from_grad
from ..core.lmc_sds import LOSS_TYPES, StepConfig, lmc_sds_step
from ..core.noise import seeded_generator
from ..core.unet import ConditionedUNet


@dataclass
class TranslatorConfig:
    """Paper defaults (supplementary A); ``PRESETS["cpu"]`` is the small CPU version."""

    out: str
    loss_type: str = "lmc-sds"
    omega: float = 15.0
    steps: int = 200_000
    batch_size: int = 32
    lr: float = 5e-5
    lr_decay: float = 0.9
    lr_decay_every: int = 50_000
    warmup_steps: int = 20_000  # cosine ramp of both loss weights
    guidance_weight: Tuple[float, float] = (0.1, 1.0)  # start, end
    l2_weight: Tuple[float, float] = (1.0, 0.1)
    base_channels: int = 32
    depth: int = 5  # 5 encoder levels, bottleneck, 5 decoder levels: the paper's 11 layers
    max_channels: int = 256
    residual: bool = False  # x + U(x, c) instead of the paper's tanh(U(x, c))
    frequencies: int = 5  # 10-dimensional class encoding
    t_range: Tuple[float, float] = (0.02, 0.98)
    seed: int = 0
    checkpoint_every: int = 1000
    sample_every: int = 1000
    log_every: int = 50

    def __post_init__(self) -> None:
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {self.loss_type!r}")
        if self.warmup_steps < 0 or self.steps < 1:
            raise ValueError(f"need steps >= 1 and warmup_steps >= 0, got {self.steps}, "
                             f"{self.warmup_steps}")  # fmt: skip

    # settings that must not change when resuming (they change the result)
    FIXED_ON_RESUME = ("loss_type", "omega", "batch_size", "lr", "lr_decay", "lr_decay_every",
                       "warmup_steps", "guidance_weight", "l2_weight", "base_channels", "depth",
                       "max_channels", "residual", "frequencies", "t_range", "seed")  # fmt: skip


PRESETS: Dict[str, dict] = {
    "paper": {},
    # 32 px objects prior on 2 CPU cores: a 3-level residual network, batch 16, 3000 steps
    # (the paper's tanh network at lr 5e-4 saturated to a black image within 60 steps, where
    # tanh passes no gradient; the residual form starts as the identity, docs/translation.md)
    "cpu": dict(steps=3000, batch_size=16, lr=5e-4, lr_decay_every=1000, warmup_steps=600,
                base_channels=16, depth=3, residual=True, checkpoint_every=250, sample_every=500,
                log_every=25),
}  # fmt: skip


def loss_weights(step: int, cfg: TranslatorConfig) -> Tuple[float, float]:
    """(guidance weight, L2 weight) at ``step``: cosine from start to end over the warm-up."""
    frac = min(step / cfg.warmup_steps, 1.0) if cfg.warmup_steps else 1.0
    ramp = 0.5 * (1 - math.cos(math.pi * frac))
    (g0, g1), (l0, l1) = cfg.guidance_weight, cfg.l2_weight
    return g0 + (g1 - g0) * ramp, l0 + (l1 - l0) * ramp


def make_translator(cfg: TranslatorConfig) -> ConditionedUNet:
    return ConditionedUNet(3, cfg.base_channels, cfg.depth, cfg.frequencies, cfg.residual,
                           cfg.max_channels)  # fmt: skip


def checkpoint_path(out: str) -> Path:
    return Path(out) / "checkpoints" / "last.ckpt"


def load_translator(out: str) -> Tuple[ConditionedUNet, TranslatorConfig, int]:
    """The network of a run folder's checkpoint, its config and step."""
    state = torch.load(checkpoint_path(out), map_location="cpu", weights_only=False)
    known = {f.name for f in fields(TranslatorConfig)}
    config = {k: tuple(v) if isinstance(v, list) else v for k, v in state["config"].items()
              if k in known}  # fmt: skip
    cfg = TranslatorConfig(**config)
    net = make_translator(cfg)
    net.load_state_dict(state["model"])
    return net.eval(), cfg, state["step"]


class Guidance:
    """The prior, its corrective and the task's prompt embeddings: the loss of one step.

    ``data`` is a task (e.g. ``priors.translation_task.TranslationData``): ``spec`` (N,) object
    index per image, ``specs`` with ``caption()`` (the source captions), ``caption_table()``
    ([object][class] target captions), ``condition(k)``, ``class_names``, ``pairs(split)`` and
    ``batch(pairs)``."""

    def __init__(self, prior, corrective, normalization: str, data, cfg: TranslatorConfig,
                 prior_path: str):  # fmt: skip
        from ..core.text import encode_prompts

        self.prior, self.corrective, self.data, self.cfg = prior, corrective, data, cfg
        table = data.caption_table()
        S, K = len(table), len(table[0])
        emb = encode_prompts(prior_path, [c for row in table for c in row]
                             + [s.caption() for s in data.specs] + ["", NFSD_NEGATIVE_PROMPT],
                             prior.device, prior.dtype)  # fmt: skip
        self.emb_target = emb[: S * K].unflatten(0, (S, K))  # (S, K, 77, d)
        self.emb_source, self.emb_0, self.emb_neg = emb[S * K : -2], emb[-2:-1], emb[-1:]
        self.step_cfg = StepConfig(loss_type=cfg.loss_type, omega=cfg.omega,
                                   normalization=normalization)  # fmt: skip

    def loss(self, y: Tensor, x: Tensor, pairs: Tensor, gen: torch.Generator) -> Tensor:
        """Reparameterised guidance loss on the outputs y of sources x for rows ``pairs``."""
        spec = self.data.spec[pairs[:, 0]]
        T, (lo, hi) = self.prior.num_train_timesteps, self.cfg.t_range
        t = torch.randint(int(T * lo), int(T * hi) + 1, (len(y),), generator=gen).to(y.device)
        eps = torch.randn(y.shape, generator=gen).to(y.device)
        b = len(y)
        out = lmc_sds_step(
            self.prior, self.corrective, y, t,
            self.emb_target[spec, pairs[:, 1]], self.emb_0.expand(b, -1, -1), eps, self.step_cfg,
            emb_neg=self.emb_neg.expand(b, -1, -1),
            source=(x, self.emb_source[spec]) if self.cfg.loss_type == "dds" else None,
        )  # fmt: skip
        return loss_from_grad(y, torch.nan_to_num(out.g))


def sample_grid(net: ConditionedUNet, data, rows: Tensor, path: Path, title: str) -> None:
    """PNG: per source image (a column), the source, then per class the exact target and the
    network's output."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with torch.no_grad():
        src = data.source[rows].float() / 127.5 - 1
        cells = [src]
        for k in range(len(data.class_names)):
            kk = torch.full((len(rows),), k)
            cells += [data.target[rows, k].float() / 127.5 - 1, net(src, data.condition(kk))]
    fig, axes = plt.subplots(len(cells), len(rows), figsize=(1.1 * len(rows), 1.1 * len(cells)),
                             squeeze=False)  # fmt: skip
    names = ["source"] + [f"{c} {w}" for c in data.class_names for w in ("target", "output")]
    for r, (cell, name) in enumerate(zip(cells, names)):
        for c in range(len(rows)):
            ax = axes[r, c]
            ax.imshow(((cell[c].clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy())
            ax.set_xticks([]), ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name, fontsize=6)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def train_translator(
    cfg: TranslatorConfig, data, guidance: Guidance, resume: bool = False,
    progress: bool = True,
) -> ConditionedUNet:  # fmt: skip
    """Train on ``data.pairs("train")``; returns the network (also in the checkpoint)."""
    from torch.utils.tensorboard import SummaryWriter

    device = guidance.prior.device
    torch.manual_seed(cfg.seed)
    net = make_translator(cfg).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    schedule = torch.optim.lr_scheduler.StepLR(opt, cfg.lr_decay_every, cfg.lr_decay)
    ckpt, start = checkpoint_path(cfg.out), 0
    if resume:
        if not ckpt.exists():
            raise FileNotFoundError(f"--resume: no checkpoint at {ckpt}")
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        saved = {k: state["config"][k] for k in cfg.FIXED_ON_RESUME}
        saved = {k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()}
        changed = {k: (v, getattr(cfg, k)) for k, v in saved.items() if v != getattr(cfg, k)}
        if changed:
            raise ValueError(f"--resume {ckpt}: settings differ from the checkpoint's {changed} "
                             f"(checkpoint, now)")  # fmt: skip
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        start = state["step"]
    train = data.pairs("train")
    shown = torch.linspace(0, len(data) - 1, 8).round().long()  # sample-grid images
    writer = SummaryWriter(str(Path(cfg.out) / "tensorboard"))

    def save(step: int) -> None:
        state = dict(model=net.state_dict(), optimizer=opt.state_dict(),
                     schedule=schedule.state_dict(), step=step, config=asdict(cfg))  # fmt: skip
        atomic_write(ckpt, lambda tmp: torch.save(state, tmp))

    bar = tqdm(total=cfg.steps, initial=start, desc=f"translator {cfg.loss_type}", unit="step",
               disable=not progress)  # fmt: skip
    sums, t_last = {"guidance": 0.0, "l2": 0.0}, time.perf_counter()
    for step in range(start, cfg.steps):
        gen = seeded_generator(cfg.seed, step)
        pairs = train[torch.randint(len(train), (cfg.batch_size,), generator=gen)]
        x, _, _ = data.batch(pairs)
        x = x.to(device)
        y = net(x, data.condition(pairs[:, 1]).to(device))
        w_g, w_l2 = loss_weights(step, cfg)
        loss_g = guidance.loss(y, x, pairs, gen)
        loss_l2 = F.mse_loss(y, x, reduction="sum") / len(y)
        loss = w_g * loss_g + w_l2 * loss_l2
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"translator loss is {loss.item()} at step {step}; lower --lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
        sums["guidance"] += loss_g.item()
        sums["l2"] += loss_l2.item()
        bar.update(1)
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            n = cfg.log_every if done % cfg.log_every == 0 else done % cfg.log_every
            for k, v in sums.items():
                writer.add_scalar(f"train/loss_{k}", v / n, done)
            writer.add_scalar("train/weight_guidance", w_g, done)
            writer.add_scalar("train/weight_l2", w_l2, done)
            writer.add_scalar("train/lr", schedule.get_last_lr()[0], done)
            writer.add_scalar(
                "train/steps_per_s", n / max(time.perf_counter() - t_last, 1e-9), done
            )
            bar.set_postfix(l2=f"{sums['l2'] / n:.3f}", w_g=f"{w_g:.2f}")
            sums, t_last = {k: 0.0 for k in sums}, time.perf_counter()
        if done % cfg.sample_every == 0 or done == cfg.steps:
            net.eval()
            sample_grid(net.cpu(), data, shown, Path(cfg.out) / "samples" / f"step{done:07d}.png",
                        f"{cfg.loss_type}, omega {cfg.omega:g}, step {done}")  # fmt: skip
            net.to(device).train()
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            save(done)
    bar.close()
    writer.close()
    return net.eval()


def setup(prior_path: str, corrective_path: Optional[str], loss_type: str, device: str):
    """(prior, corrective or None, its Eq. 10 normalization): fp32 on the CPU, fp16 on a GPU;
    the corrective only where LMC-SDS needs it."""
    from ..core.checkpoint import load_corrective
    from ..core.prior import IFPrior

    prior = IFPrior.from_pretrained(prior_path, device=device, half_precision=device == "cuda")
    if loss_type != "lmc-sds":
        return prior, None, "global"
    if not corrective_path or not Path(corrective_path).exists():
        raise FileNotFoundError(f"--corrective {corrective_path!r}: loss type lmc-sds needs a "
                                f"corrective trained for {prior_path} (lmcsds train-corrective)")  # fmt: skip
    net, meta = load_corrective(corrective_path, prior.prior_id, prior.resolution, device)
    return prior, net, meta.normalization
