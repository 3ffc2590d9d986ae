"""Optional TensorBoard logging: every ``metrics.jsonl`` record also as scalars in ``RUN/tensorboard/``.

Off by default (``train.tensorboard`` / ``search.tensorboard``); needs the ``tensorboard`` extra
(``pip install 'fasterseg[tensorboard]'``). A run *starts* logging for its run directory,
:func:`fasterseg.engine.rundir.append_metrics` forwards each record here (a no-op when the run
directory is not logging) and the run *stops* it at the end. A record ``{"type": "epoch", "step":
40, "val_miou": 0.41, "per_class_iou": {"road": 0.9}}`` becomes the scalars ``epoch/val_miou``
and ``epoch/per_class_iou/road`` at global step 40.

Resumes stay consistent with ``metrics.jsonl``: :func:`truncate` (called where the metrics are
cut back to the checkpoint's step) makes TensorBoard drop the killed run's later events, and a
new run in a reused directory drops all earlier ones.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from fasterseg.errors import UserError

SUBDIR = "tensorboard"
INSTALL_HINT = "pip install 'fasterseg[tensorboard]'"


class RunLogger:
    """Scalars of one run directory; the event file is opened at the first record."""

    def __init__(self, run_dir: Path) -> None:
        self.log_dir = Path(run_dir) / SUBDIR
        self.purge_step: int | None = 0  # a new run: earlier events of this directory are stale
        self._writer = None

    def log(self, record: dict) -> None:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.log_dir), purge_step=self.purge_step)
        kind, step = str(record.get("type", "record")), int(record.get("step") or 0)
        for tag, value in scalars(record, kind):
            self._writer.add_scalar(tag, value, step)
        if kind != "iter":
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


_RUNS: dict[str, RunLogger] = {}


def _key(run_dir: str | os.PathLike) -> str:
    return str(Path(run_dir).resolve())


def check_available() -> None:
    """A ``UserError`` naming the extra when the ``tensorboard`` package is not installed."""
    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError as e:
        raise UserError(f"TensorBoard logging is on but the tensorboard package is not installed "
                        f"({e}): {INSTALL_HINT}, or set tensorboard: false") from None


def start(run_dir: str | os.PathLike, enabled: bool) -> None:
    """Log ``run_dir``'s metrics records to TensorBoard from now on (nothing when not enabled)."""
    if not enabled:
        return
    check_available()
    stop(run_dir)
    _RUNS[_key(run_dir)] = RunLogger(Path(run_dir))


def stop(run_dir: str | os.PathLike) -> None:
    """Close ``run_dir``'s event file (no-op when it was not logging)."""
    run = _RUNS.pop(_key(run_dir), None)
    if run is not None:
        run.close()


def log(run_dir: str | os.PathLike, record: dict) -> None:
    """Forward one metrics record (no-op unless ``run_dir`` is logging)."""
    if not _RUNS:
        return
    run = _RUNS.get(_key(run_dir))
    if run is not None:
        run.log(record)


def truncate(run_dir: str | os.PathLike, max_step: int) -> None:
    """A resume cut the metrics back to ``max_step``: TensorBoard drops later events too."""
    run = _RUNS.get(_key(run_dir)) if _RUNS else None
    if run is not None and run._writer is None:
        run.purge_step = int(max_step) + 1


def scalars(record: dict, prefix: str) -> list[tuple[str, float]]:
    """``(tag, value)`` for each finite number of ``record`` (one level of nested dicts)."""
    out = []
    for k, v in record.items():
        if k in ("type", "step", "epoch"):
            continue
        if isinstance(v, dict):
            out += scalars(v, f"{prefix}/{k}") if "/" not in prefix else []
        elif _is_number(v):
            out.append((f"{prefix}/{k}", float(v)))
    return out


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
