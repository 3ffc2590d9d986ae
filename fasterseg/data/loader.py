"""Loaders with a fixed number of iterations per epoch and resumable, worker-independent order.

The sample order of an epoch is a pure function of ``(seed, epoch)`` (and of rank and world size
when distributed): the dataset is permuted again and again until ``iters * batch * world``
positions are filled (as the authors' sampler repeats the file list). Every position also gets
its own augmentation seed, passed to the dataset with the index, so the batches do not depend on
the number of workers and a run resumed at ``start_iter=k`` sees exactly batches ``k..`` of the
uninterrupted run.
"""

from __future__ import annotations

import logging
import random
import re
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from fasterseg.errors import UserError

logger = logging.getLogger(__name__)


def _dist_info(distributed: bool, rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is not None or world_size is not None:
        r, w = int(rank or 0), int(world_size or 1)
    elif distributed:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise UserError("distributed=True but torch.distributed is not initialised")
        r, w = dist.get_rank(), dist.get_world_size()
    else:
        r, w = 0, 1
    if not 0 <= r < w:
        raise UserError(f"rank {r} is not within world size {w}")
    return r, w


def epoch_order(n: int, length: int, seed: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """(dataset indices, augmentation seeds) for ``length`` positions of one epoch."""
    if n <= 0:
        raise UserError("the dataset is empty")
    rng = np.random.default_rng([int(seed), int(epoch), 0x5EED])
    reps = -(-length // n)
    order = np.concatenate([rng.permutation(n) for _ in range(reps)])[:length]
    aug = np.random.default_rng([int(seed), int(epoch), 0xA06]).integers(0, 2**63, size=length)
    return order, aug


class IterationSampler(Sampler):
    """Yields ``(index, aug_seed)`` for this rank's share of an epoch, from ``start`` on."""

    def __init__(self, n: int, samples_per_rank: int, seed: int, epoch: int, rank: int = 0,
                 world_size: int = 1, start: int = 0):  # fmt: skip
        self.n, self.per_rank, self.seed, self.epoch = n, samples_per_rank, seed, epoch
        self.rank, self.world, self.start = rank, world_size, start

    def __len__(self) -> int:
        return max(0, self.per_rank - self.start)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order, aug = epoch_order(self.n, self.per_rank * self.world, self.seed, self.epoch)
        # Position p of rank r is global position p * world + r: ranks interleave, disjointly.
        pos = np.arange(self.start, self.per_rank) * self.world + self.rank
        for p in pos:
            yield int(order[p]), int(aug[p])


class ShardSampler(Sampler):
    """In-order indices ``rank, rank + world, ...``: disjoint shards covering the dataset once."""

    def __init__(self, n: int, rank: int = 0, world_size: int = 1):
        self.indices = list(range(rank, n, world_size))

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self):
        return iter(self.indices)


def seed_worker(worker_id: int) -> None:
    """Seed numpy/random in each worker from torch's per-worker seed (set by the DataLoader)."""
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


class Loader:
    """Thin wrapper around a DataLoader: knows its length, and turns a ``UserError`` raised in
    a worker process back into a one-line ``UserError`` (not a wrapped worker traceback)."""

    def __init__(self, loader: DataLoader):
        self.loader = loader
        self.dataset = loader.dataset
        self.sampler = loader.sampler
        self.batch_size = loader.batch_size

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        try:
            yield from self.loader
        except UserError as e:
            raise UserError(_original_message(str(e))) from None


def _original_message(msg: str) -> str:
    if "Original Traceback" not in msg:
        return msg
    lines = [ln for ln in msg.strip().splitlines() if ln.strip()]
    last = lines[-1] if lines else msg
    return re.sub(r"^[\w.]*UserError:\s*", "", last)


def _workers(ds: Dataset, workers: int | None) -> int:
    if workers is None:
        cfg = getattr(ds, "cfg", None)
        workers = getattr(cfg, "workers", 0) if cfg is not None else 0
    return max(0, int(workers))


def build_train_loader(
    ds: Dataset,
    batch_size: int,
    iters_per_epoch: int,
    *,
    seed: int,
    epoch: int,
    start_iter: int = 0,
    workers: int | None = None,
    distributed: bool = False,
    drop_last: bool = True,
    rank: int | None = None,
    world_size: int | None = None,
    pin_memory: bool = False,
) -> Loader:
    """Exactly ``iters_per_epoch - start_iter`` batches of ``batch_size`` (per rank).

    ``workers`` defaults to ``ds.cfg.workers``. ``distributed`` takes rank and world size from
    ``torch.distributed`` (or pass ``rank``/``world_size`` explicitly). ``drop_last`` is kept for
    API symmetry: batches are always full because the epoch length is fixed.
    """
    if batch_size < 1 or iters_per_epoch < 1:
        raise UserError(
            f"batch_size and iters_per_epoch must be >= 1, got {batch_size}, {iters_per_epoch}"
        )
    if not 0 <= start_iter <= iters_per_epoch:
        raise UserError(f"start_iter {start_iter} is outside 0..{iters_per_epoch}")
    r, w = _dist_info(distributed, rank, world_size)
    sampler = IterationSampler(
        len(ds), batch_size * iters_per_epoch, seed, epoch, r, w, start=start_iter * batch_size
    )
    nw = _workers(ds, workers)
    gen = torch.Generator()
    gen.manual_seed(int(np.random.SeedSequence([int(seed), int(epoch), r]).generate_state(1)[0]))
    dl = DataLoader(
        ds, batch_size=batch_size, sampler=sampler, num_workers=nw, drop_last=drop_last,
        worker_init_fn=seed_worker if nw else None, generator=gen, pin_memory=pin_memory,
        persistent_workers=False, prefetch_factor=4 if nw else None,
    )  # fmt: skip
    return Loader(dl)


def build_eval_loader(
    ds: Dataset,
    workers: int | None = None,
    distributed: bool = False,
    *,
    rank: int | None = None,
    world_size: int | None = None,
    pin_memory: bool = False,
) -> Loader:
    """Batch size 1, in order; distributed: rank ``r`` gets samples ``r, r + world, ...``."""
    r, w = _dist_info(distributed, rank, world_size)
    nw = _workers(ds, workers)
    dl = DataLoader(
        ds, batch_size=1, sampler=ShardSampler(len(ds), r, w), num_workers=nw,
        worker_init_fn=seed_worker if nw else None, pin_memory=pin_memory,
    )  # fmt: skip
    return Loader(dl)
