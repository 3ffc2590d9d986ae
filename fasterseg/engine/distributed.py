"""torch.distributed helpers: start from torchrun's environment, rank queries, all-reduce.

Everything works unchanged in a single process (world size 1, rank 0, no process group), so the
training loop is one code path for 1 or N processes.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from fasterseg.errors import UserError

logger = logging.getLogger(__name__)


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # we created the process group (so we destroy it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main() -> bool:
    return get_rank() == 0


def init_from_env(device: str | torch.device = "cpu", timeout_s: float = 600) -> DistInfo:
    """Join the process group described by torchrun's env vars (``WORLD_SIZE`` > 1), if any.

    Backend: NCCL for CUDA devices (each process takes ``cuda:LOCAL_RANK``), gloo otherwise.
    Without torchrun variables this returns a single-process ``DistInfo`` for ``device``.
    """
    device = torch.device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(device=device)
    if not dist.is_available():
        raise UserError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise UserError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} CUDA devices")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
        owns = True
    info = DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local,
                    device=device, owns_group=owns)
    logger.debug("distributed: rank %d/%d on %s", info.rank, info.world_size, device)
    return info


def cleanup(info: DistInfo) -> None:
    if info.owns_group and is_dist():
        dist.destroy_process_group()


def barrier() -> None:
    if is_dist():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """In-place sum over processes (identity in a single process); returns ``t``."""
    if is_dist() and get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """In-place mean over processes; returns ``t``."""
    if is_dist() and get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= get_world_size()
    return t


def all_reduce_max(t: torch.Tensor) -> torch.Tensor:
    if is_dist() and get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t


def broadcast_str(text: str | None, device: str | torch.device = "cpu", src: int = 0) -> str:
    """Send a string from ``src`` to every process (as bytes in tensors, no pickle)."""
    if not (is_dist() and get_world_size() > 1):
        return text or ""
    data = (text or "").encode() if get_rank() == src else b""
    n = torch.tensor([len(data)], dtype=torch.int64, device=device)
    dist.broadcast(n, src)
    buf = torch.zeros(int(n.item()), dtype=torch.uint8, device=device)
    if get_rank() == src and len(data):
        buf.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    dist.broadcast(buf, src)
    return bytes(buf.cpu().tolist()).decode()
