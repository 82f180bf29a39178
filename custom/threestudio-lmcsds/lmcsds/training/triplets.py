"""Training triplets (z, zhat_t, t) for the corrective, on the fly or from a sharded cache.

z: a random crop of a natural photo; t ~ U(0.02, 0.98) of the schedule; zhat_t: the
unconditional x0 prediction of ONE prior pass with fresh noise (supplementary A).
Everything a step uses is a function of (seed, step, rank), so resumed runs are identical.
"""

import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional, Tuple

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm import tqdm

from ..core import gradients as G
from ..core.atomic import atomic_write
from ..core.noise import seeded_generator
from ..core.prior import IFPrior
from .images import CropSampler

CACHE_FORMAT = "lmcsds-triplet-cache"
NOISE_STREAM = 1  # generator key separating t/eps draws from the crop draws


@torch.no_grad()
def make_triplets(
    prior: IFPrior, z: Tensor, emb_0: Tensor, gen: torch.Generator, min_step: int, max_step: int
) -> Tuple[Tensor, Tensor]:
    """zhat_t and t for clean images z, from one unconditional prior pass (CPU generator)."""
    b = z.shape[0]
    t = torch.randint(min_step, max_step + 1, (b,), generator=gen).to(prior.device)
    eps = torch.randn(z.shape, generator=gen).to(prior.device)
    z = z.to(prior.device)
    abar = prior.abar(t)
    zt = G.z_t(z, eps, abar)
    eps_0 = prior.eps(zt, t, emb_0.to(prior.device).expand(b, -1, -1))
    return G.zhat_t(zt, eps_0, abar), t


@dataclass
class StepRange:
    """t ~ U(min_percent, max_percent) of the schedule, as integers."""

    min_percent: float = 0.02
    max_percent: float = 0.98

    def steps(self, num_train_timesteps: int) -> Tuple[int, int]:
        return int(num_train_timesteps * self.min_percent), int(
            num_train_timesteps * self.max_percent
        )


@dataclass
class CropBatches:
    """prepare(step, rank) of the on-the-fly source: the crops of that step."""

    sampler: CropSampler
    batch_size: int

    def __call__(self, step: int, rank: int) -> Tensor:
        return self.sampler.batch(step, self.batch_size, rank)


class OnTheFly:
    """Crops (prepared in DataLoader workers) and the prior (in the training loop)."""

    def __init__(
        self,
        prior: IFPrior,
        sampler: CropSampler,
        emb_0: Tensor,
        batch_size: int,
        seed: int,
        t_range: StepRange = StepRange(),
    ):
        self.prior, self.emb_0, self.seed = prior, emb_0, seed
        self.prepare = CropBatches(sampler, batch_size)  # no prior inside: runs in workers
        self.min_step, self.max_step = t_range.steps(prior.num_train_timesteps)

    def finish(self, z: Tensor, step: int, rank: int, device) -> Tuple[Tensor, Tensor, Tensor]:
        gen = seeded_generator(self.seed, step, rank, NOISE_STREAM)
        zhat, t = make_triplets(self.prior, z, self.emb_0, gen, self.min_step, self.max_step)
        return z.to(device), zhat.to(device), t.to(device)


@dataclass
class CacheManifest:
    prior_id: str
    resolution: int
    num_train_timesteps: int
    shard_size: int
    seed: int
    min_step: int
    max_step: int
    images: str
    format: str = CACHE_FORMAT


def triplet_bytes(resolution: int) -> int:
    """Bytes one cached triplet takes: z and zhat_t in fp16, t in int32."""
    return 2 * 3 * resolution**2 * 2 + 4


def _size(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.1f} GiB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:.1f} MiB"


def _shard_path(cache_dir: Path, i: int) -> Path:
    return cache_dir / f"shard-{i:06d}.safetensors"


def generate_cache(
    cache_dir: str,
    prior: IFPrior,
    sampler: CropSampler,
    emb_0: Tensor,
    num_triplets: int,
    shard_size: int = 1024,
    seed: int = 0,
    t_range: StepRange = StepRange(),
    batch_size: int = 64,
    part: Tuple[int, int] = (0, 1),
) -> CacheManifest:
    """Write ceil(num_triplets / shard_size) shards; resumable, shards written atomically.

    Shard i depends only on (seed, i): an interrupted run continues where it stopped and
    produces the same cache as an uninterrupted one. A half-written shard is never visible.
    ``part=(k, n)`` writes only the shards i with i % n == k, so n processes (one per GPU)
    fill one cache together.
    """
    k, n_parts = part
    if not 0 <= k < n_parts:
        raise ValueError(f"part {k}/{n_parts}: need 0 <= K < N in --part K/N")
    root = Path(cache_dir)
    root.mkdir(parents=True, exist_ok=True)
    min_step, max_step = t_range.steps(prior.num_train_timesteps)
    manifest = CacheManifest(
        prior.prior_id,
        prior.resolution,
        prior.num_train_timesteps,
        shard_size,
        seed,
        min_step,
        max_step,
        os.path.commonpath([str(p) for p in sampler.paths]) if sampler.paths else "",
    )
    manifest_path = root / "manifest.json"
    if manifest_path.exists():
        old = read_manifest(root)
        different = {
            k: (v, getattr(manifest, k))
            for k, v in asdict(old).items()
            if k != "images" and v != getattr(manifest, k)
        }
        if different:
            raise ValueError(
                f"{manifest_path}: the cache was made with other settings {different} "
                f"(cache value, requested value); use another --cache folder"
            )
    else:
        text = json.dumps(asdict(manifest), indent=2)  # parts may race here: same content
        atomic_write(manifest_path, lambda tmp: Path(tmp).write_text(text))
    n_shards = -(-num_triplets // shard_size)
    mine = [i for i in range(n_shards) if i % n_parts == k]
    done = [i for i in mine if _shard_path(root, i).exists()]
    needed = (len(mine) - len(done)) * shard_size * triplet_bytes(prior.resolution)
    free = shutil.disk_usage(root).free
    if needed > free:
        raise OSError(
            f"{root}: the cache needs {_size(needed)} more and the disk has {_size(free)} "
            f"free; free space, pick another --cache or fewer triplets"
        )
    total = n_shards * shard_size
    print(
        f"triplet cache {root}: {total} triplets, {_size(total * triplet_bytes(prior.resolution))}"
    )
    bar = tqdm(
        total=len(mine) * shard_size, initial=len(done) * shard_size, desc="triplets", unit="trip"
    )
    starts = range(0, shard_size, batch_size)
    todo = [(i, j, min(batch_size, shard_size - b)) for i in mine if i not in done
            for j, b in enumerate(starts)]  # fmt: skip
    crops = lambda i, j, n: sampler.batch(i * 100_003 + j, n, rank=0)  # noqa: E731
    # crops are cut one batch ahead and shards written behind: the prior never waits for either
    with ThreadPoolExecutor(max_workers=1) as reader, ThreadPoolExecutor(max_workers=1) as writer:
        ahead = reader.submit(crops, *todo[0]) if todo else None
        pending, parts = None, []
        for k, (i, j, n) in enumerate(todo):
            z = ahead.result()
            if k + 1 < len(todo):
                ahead = reader.submit(crops, *todo[k + 1])
            zhat, t = make_triplets(
                prior, z, emb_0, seeded_generator(seed, i, j, NOISE_STREAM), min_step, max_step
            )
            parts.append((z.half(), zhat.cpu().half(), t.cpu().int()))
            bar.update(n)
            if j == len(starts) - 1:  # the shard is complete
                shard = {key: torch.cat(p) for key, p in zip(("z", "zhat", "t"), zip(*parts))}
                if pending is not None:
                    pending.result()  # at most one shard waits for the disk
                pending = writer.submit(
                    atomic_write, _shard_path(root, i), lambda tmp, s=shard: save_file(s, tmp)
                )
                parts = []
        if pending is not None:
            pending.result()
    bar.close()
    return manifest


def read_manifest(cache_dir) -> CacheManifest:
    path = Path(cache_dir) / "manifest.json"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: {cache_dir} is not a triplet cache; make one with "
            f"`lmcsds generate-triplets --prior ... --images ... --cache {cache_dir}`"
        )
    data = json.loads(path.read_text())
    if data.get("format") != CACHE_FORMAT:
        raise ValueError(f"{path}: not an lmcsds triplet cache")
    return CacheManifest(**data)


class FromCache:
    """Triplets read from shards; batch(step, rank) is a function of (seed, step, rank).

    Each epoch visits the shards in a seeded random order and each shard's triplets in a
    seeded random order; one shard is in memory at a time per process. ``max_triplets`` uses
    only the first shards that hold them, re-used over epochs (a smaller cache, same order).
    """

    def __init__(
        self,
        cache_dir: str,
        batch_size: int,
        seed: int = 0,
        world_size: int = 1,
        max_triplets: Optional[int] = None,
    ):
        self.root = Path(cache_dir)
        self.manifest = read_manifest(self.root)
        self.shards = sorted(self.root.glob("shard-*.safetensors"))
        if not self.shards:
            raise FileNotFoundError(f"{self.root}: the triplet cache has no complete shard yet")
        if max_triplets is not None:  # the first shards only: one cache serves every size
            wanted = -(-max_triplets // self.manifest.shard_size)
            if wanted > len(self.shards):
                raise ValueError(
                    f"{self.root} holds {len(self.shards)} shards of {self.manifest.shard_size}; "
                    f"{max_triplets} triplets need {wanted}: generate more or ask for fewer"
                )
            self.shards = self.shards[:wanted]
        if batch_size > self.manifest.shard_size:
            raise ValueError(f"batch size {batch_size} > shard size {self.manifest.shard_size}")
        self.batch_size, self.seed, self.world_size = batch_size, seed, world_size
        self.per_shard = self.manifest.shard_size // batch_size
        self.per_epoch = len(self.shards) * self.per_shard

    @lru_cache(maxsize=2)
    def _shard(self, i: int) -> dict:
        return load_file(str(self.shards[i]))

    def prepare(self, step: int, rank: int) -> Tuple[Tensor, Tensor, Tensor]:
        g = step * self.world_size + rank
        epoch, k = divmod(g, self.per_epoch)
        shard_pos, b = divmod(k, self.per_shard)
        order = torch.randperm(len(self.shards), generator=seeded_generator(self.seed, epoch))
        shard = int(order[shard_pos])
        rows = torch.randperm(
            self.manifest.shard_size, generator=seeded_generator(self.seed, epoch, shard)
        )[b * self.batch_size : (b + 1) * self.batch_size]
        data = self._shard(shard)
        return data["z"][rows], data["zhat"][rows], data["t"][rows]

    def finish(self, prepared, step: int, rank: int, device) -> Tuple[Tensor, Tensor, Tensor]:
        z, zhat, t = prepared
        return z.float().to(device), zhat.float().to(device), t.long().to(device)
