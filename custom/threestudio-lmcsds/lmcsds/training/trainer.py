"""Train bhat_psi with L_k (Eq. 10) only: Lightning Fabric (one or many GPUs/nodes, or CPU).

Checkpoints are written atomically every N steps (a kill at any moment leaves the previous one
loadable); ``resume`` continues at the same step with the same data order, because the data
of each step is a function of (seed, step, rank). The result is exported as the safetensors
file the guidance loads.
"""

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional, Union

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..core import gradients as G
from ..core.atomic import atomic_write
from ..core.checkpoint import CorrectiveMeta, save_corrective
from ..core.corrective import CorrectiveConfig, CorrectiveUNet


@dataclass
class TrainConfig:
    """Paper defaults (supplementary A): Adam 1e-4, x0.9 every 100K steps, batch 128."""

    out: str
    steps: int = 750_000
    batch_size: int = 128
    lr: float = 1e-4
    lr_decay: float = 0.9
    lr_decay_every: int = 100_000
    seed: int = 0
    normalization: str = "global"
    base_channels: int = 32
    depth: int = 4
    residual: bool = False  # corrective predicts z + correction (see CorrectiveConfig)
    checkpoint_every: int = 1000
    log_every: int = 50
    workers: int = 2
    accelerator: str = "auto"
    devices: Union[int, str] = 1
    num_nodes: int = 1
    precision: str = "32-true"

    def __post_init__(self) -> None:
        G.parse_normalization(self.normalization)  # a clear error before any work

    # settings that must not change when resuming (they change the result)
    FIXED_ON_RESUME = (
        "batch_size",
        "lr",
        "lr_decay",
        "lr_decay_every",
        "seed",
        "normalization",
        "base_channels",
        "depth",
        "residual",
    )


class StepData(Dataset):
    """Map-style dataset whose item k is the prepared batch of step k (CPU work in workers)."""

    def __init__(self, prepare: Callable, rank: int):
        self.prepare, self.rank = prepare, rank  # only the CPU part: no prior in the workers

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, step: int):
        return self.prepare(step, self.rank)


def checkpoint_path(out: str) -> Path:
    return Path(out) / "checkpoints" / "last.ckpt"


def train_corrective(
    cfg: TrainConfig,
    make_source: Callable,
    prior_id: str,
    resolution: int,
    num_train_timesteps: int,
    resume: bool = False,
    export_path: Optional[str] = None,
) -> Optional[Path]:
    """Train, checkpoint, export; returns the exported file (None on ranks other than 0).

    ``make_source(device)`` is called on every rank after the processes are launched and
    returns an object with ``prepare(step, rank)`` (CPU, in DataLoader workers) and
    ``finish(prepared, step, rank, device) -> (z, zhat_t, t)``.
    """
    from lightning_fabric import Fabric

    fabric = Fabric(
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        precision=cfg.precision,
        strategy="ddp" if (cfg.num_nodes > 1 or cfg.devices not in (1, "1")) else "auto",
    )
    fabric.launch()
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    arch = CorrectiveConfig(base_channels=cfg.base_channels, depth=cfg.depth, residual=cfg.residual)
    model = CorrectiveUNet(arch, num_train_timesteps)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, cfg.lr_decay_every, cfg.lr_decay)
    start = 0
    ckpt = checkpoint_path(cfg.out)
    if resume:
        if not ckpt.exists():
            raise FileNotFoundError(f"--resume: no checkpoint at {ckpt}")
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        saved = {k: state["config"].get(k, getattr(TrainConfig, k)) for k in cfg.FIXED_ON_RESUME}
        changed = {k: (v, getattr(cfg, k)) for k, v in saved.items() if v != getattr(cfg, k)}
        if changed or state["prior_id"] != prior_id:
            raise ValueError(
                f"--resume {ckpt}: settings differ from the checkpoint's "
                f"{changed or {'prior_id': (state['prior_id'], prior_id)}} (checkpoint, now)"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        start = state["step"]
    model, optimizer = fabric.setup(model, optimizer)
    rank = fabric.global_rank
    source = make_source(fabric.device)
    loader = DataLoader(
        StepData(source.prepare, rank),
        batch_size=None,
        sampler=range(start, cfg.steps),
        num_workers=cfg.workers,
        persistent_workers=False,
        prefetch_factor=4 if cfg.workers else None,
    )
    writer = None
    if fabric.is_global_zero:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(Path(cfg.out) / "tensorboard"))
    bar = tqdm(
        total=cfg.steps,
        initial=start,
        desc="train b-hat",
        unit="step",
        disable=not fabric.is_global_zero,
    )

    def save(step: int) -> None:
        if fabric.is_global_zero:
            raw = model.module if hasattr(model, "module") else model
            state = {
                "model": raw.state_dict(),
                "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(),
                "step": step,
                "config": asdict(cfg),
                "prior_id": prior_id,
                "resolution": resolution,
                "num_train_timesteps": num_train_timesteps,
            }
            atomic_write(ckpt, lambda tmp: torch.save(state, tmp))
        fabric.barrier()

    step, t_last, running = start, time.perf_counter(), 0.0
    for step, prepared in zip(range(start, cfg.steps), loader):
        z, zhat, t = source.finish(prepared, step, rank, fabric.device)
        loss = G.loss_k(model(z, t).float(), zhat, cfg.normalization, t)
        optimizer.zero_grad(set_to_none=True)
        fabric.backward(loss)
        optimizer.step()
        schedule.step()
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"L_k is {loss.item()} at step {step}; lower --lr")
        running += loss.item()
        bar.update(1)
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            n = cfg.log_every if done % cfg.log_every == 0 else done % cfg.log_every
            bar.set_postfix(loss=f"{running / n:.5f}", lr=f"{schedule.get_last_lr()[0]:.2e}")
            if writer:
                elapsed = time.perf_counter() - t_last
                writer.add_scalar("train/loss_k", running / n, done)
                writer.add_scalar("train/lr", schedule.get_last_lr()[0], done)
                writer.add_scalar("train/steps_per_s", n / max(elapsed, 1e-9), done)
            running, t_last = 0.0, time.perf_counter()
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            save(done)
    bar.close()
    if writer:
        writer.close()
    if not fabric.is_global_zero:
        return None
    final = Path(export_path) if export_path else Path(cfg.out) / f"{prior_id}.safetensors"
    raw = model.module if hasattr(model, "module") else model
    meta = CorrectiveMeta(
        prior_id, resolution, cfg.normalization, cfg.steps, num_train_timesteps, arch
    )
    save_corrective(final, raw, meta)
    return final
