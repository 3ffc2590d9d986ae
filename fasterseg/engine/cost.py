"""Cost estimate: time a few steps after warm-up, project epoch/total time, report peak memory.

Training FasterSeg for the paper's 600 x 1000 iterations is days of GPU time; users asked how long
each stage takes (official issue #62). We print the answer after a few steps, before the bulk of
the work, so a run that would take too long can be stopped early.
"""

from __future__ import annotations

import logging
import resource
import sys
import time
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)


def peak_memory_mb(device: str | torch.device = "cpu") -> float:
    """Peak memory in MiB: ``max_memory_allocated`` on CUDA, peak RSS of this process otherwise."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


def format_duration(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    d, h = divmod(h, 24)
    if d:
        return f"{d}d{h:02d}h{m:02d}m"
    if h:
        return f"{h}h{m:02d}m"
    return f"{m}m{s:02d}s"


@dataclass
class CostEstimate:
    seconds_per_iter: float
    epoch_seconds: float
    total_seconds: float
    remaining_seconds: float
    peak_memory_mb: float
    measured_iters: int

    def describe(self) -> str:
        return (
            f"cost estimate: {self.seconds_per_iter:.3f} s/iter (over {self.measured_iters} iters) "
            f"-> {format_duration(self.epoch_seconds)}/epoch, "
            f"{format_duration(self.total_seconds)} total "
            f"({format_duration(self.remaining_seconds)} left, training only), "
            f"peak memory {self.peak_memory_mb:.0f} MiB"
        )

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class CostMeter:
    """Call ``tick()`` after every iteration; ``estimate`` is set once warm-up + measure is done.

    The first ``warmup`` iterations (allocator, autotuning, first-touch) are excluded.
    """

    def __init__(self, iters_per_epoch: int, total_iters: int, done_iters: int = 0,
                 warmup: int = 2, measure: int = 3, device: str | torch.device = "cpu"):
        self.iters_per_epoch = iters_per_epoch
        self.total_iters = total_iters
        self.done_iters = done_iters
        self.warmup = max(0, warmup)
        self.measure = max(1, measure)
        self.device = torch.device(device)
        self._n = 0
        self._t0: float | None = None
        self.estimate: CostEstimate | None = None

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def start(self) -> None:
        if self.warmup == 0:
            self._sync()
            self._t0 = time.perf_counter()

    def tick(self) -> CostEstimate | None:
        """Count one iteration; returns the estimate exactly once, when it becomes available."""
        self._n += 1
        if self.estimate is not None:
            return None
        if self._n == self.warmup:
            self._sync()
            self._t0 = time.perf_counter()
            return None
        if self._t0 is not None and self._n >= self.warmup + self.measure:
            self._sync()
            measured = self._n - self.warmup
            spi = (time.perf_counter() - self._t0) / measured
            left = max(0, self.total_iters - self.done_iters - self._n)
            self.estimate = CostEstimate(
                seconds_per_iter=spi,
                epoch_seconds=spi * self.iters_per_epoch,
                total_seconds=spi * self.total_iters,
                remaining_seconds=spi * left,
                peak_memory_mb=peak_memory_mb(self.device),
                measured_iters=measured,
            )
            return self.estimate
        return None
