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
from torch import nn

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


def allreduce_grads(params: list[nn.Parameter]) -> None:
    """Average gradients over processes (DDP semantics, one flat buffer per chunk)."""
    if not is_dist() or get_world_size() < 2:
        return
    # A parameter may have a gradient on one rank only (e.g. a width that only one rank's Gumbel
    # sample used): agree on the set first, so the flat buffers line up, and average with zeros.
    present = torch.tensor([p.grad is not None for p in params], dtype=torch.float32,
                           device=params[0].device if params else "cpu")
    all_reduce_sum(present)
    grads = []
    for p, n in zip(params, present.tolist()):
        if n > 0:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
    world = get_world_size()
    chunk: list[torch.Tensor] = []
    size = 0
    for g in grads + [None]:
        if g is not None:
            chunk.append(g)
            size += g.numel()
        if chunk and (g is None or size >= 2**24):
            flat = torch.cat([c.reshape(-1) for c in chunk])
            all_reduce_sum(flat)
            flat /= world
            off = 0
            for c in chunk:
                c.copy_(flat[off: off + c.numel()].view_as(c))
                off += c.numel()
            chunk, size = [], 0


def broadcast_state(model: nn.Module) -> None:
    """Rank 0's parameters and buffers on every process (identical start)."""
    if not is_dist() or get_world_size() < 2:
        return
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(t.data, 0)
