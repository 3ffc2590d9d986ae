"""Learning-rate schedules of the train stage, evaluated per optimiser step.

The paper's schedule (``exp``: lr x 0.992 per epoch over 600 epochs) barely decays over a short
CPU schedule, which leaves accuracy on the table; ``poly`` and ``cosine`` decay to ``min_lr``
over the real number of steps, and a linear warm-up protects the first steps at a high lr.
The value is a pure function of the step, so resume is exact.
"""

from __future__ import annotations

import math
from typing import Any


def lr_at(tc: Any, step: int) -> float:
    """Learning rate for optimiser step ``step`` (0-based) of ``tc.epochs * tc.iters_per_epoch``."""
    total = max(1, tc.epochs * tc.iters_per_epoch)
    epoch = step // max(1, tc.iters_per_epoch)
    if tc.lr_schedule == "exp":
        lr = tc.lr * tc.lr_decay**epoch
    else:
        progress = min(1.0, step / total)
        if tc.lr_schedule == "poly":
            factor = (1.0 - progress) ** tc.lr_power
        else:  # cosine
            factor = 0.5 * (1.0 + math.cos(math.pi * progress))
        lr = tc.min_lr + (tc.lr - tc.min_lr) * factor
    if tc.warmup_iters and step < tc.warmup_iters:
        start = tc.warmup_ratio
        lr *= start + (1.0 - start) * step / tc.warmup_iters
    return lr


def describe(tc: Any) -> dict:
    """What a checkpoint records about the schedule (for humans and ``info``)."""
    return {"type": tc.lr_schedule, "lr": tc.lr, "decay": tc.lr_decay, "power": tc.lr_power,
            "min_lr": tc.min_lr, "warmup_iters": tc.warmup_iters,
            "warmup_ratio": tc.warmup_ratio}
