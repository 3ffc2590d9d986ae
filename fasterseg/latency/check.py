"""Validate a latency table (paper appendix E, Fig. 3): table estimate vs real network latency.

Random derived architectures of the table's space are built as whole networks, timed with the
table's own back end, device, dtype and threads, and compared with the sum of their entries.
"""

from __future__ import annotations

import logging
import math
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

from fasterseg.arch.sample import sample_archs
from fasterseg.config.core import from_dict
from fasterseg.config.search_space import SearchSpaceConfig
from fasterseg.errors import UserError
from fasterseg.latency.build import round_plan
from fasterseg.latency.model import discrete_latency
from fasterseg.latency.table import LatencyTable

logger = logging.getLogger(__name__)


@dataclass
class CheckResult:
    estimated_ms: list[float]
    measured_ms: list[float]
    names: list[str]
    meta: dict = field(default_factory=dict)

    @property
    def pearson_r(self) -> float:
        return pearson(self.estimated_ms, self.measured_ms)

    @property
    def mean_rel_error(self) -> float:
        """Mean of |estimate - measured| / measured."""
        errs = [abs(e - m) / m for e, m in zip(self.estimated_ms, self.measured_ms) if m > 0]
        return sum(errs) / len(errs) if errs else float("nan")

    @property
    def offset_ms(self) -> float:
        """Median of measured - estimated: the per-network cost that blocks alone do not see."""
        d = [m - e for e, m in zip(self.estimated_ms, self.measured_ms)]
        return statistics.median(d) if d else float("nan")

    def to_dict(self) -> dict:
        return {
            "pearson_r": self.pearson_r,
            "mean_rel_error": self.mean_rel_error,
            "offset_ms": self.offset_ms,
            "samples": len(self.names),
            "points": [
                {"name": n, "estimated_ms": e, "measured_ms": m}
                for n, e, m in zip(self.names, self.estimated_ms, self.measured_ms)
            ],
            "method": self.meta,
        }


def pearson(x: list[float], y: list[float]) -> float:
    """Pearson correlation coefficient (nan for fewer than 2 points or zero variance)."""
    n = len(x)
    if n < 2:
        return float("nan")
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    if sxx == 0 or syy == 0:
        return float("nan")
    return sxy / math.sqrt(sxx * syy)


def table_space(table: LatencyTable) -> SearchSpaceConfig:
    """The search space recorded in the table metadata."""
    space = table.meta.get("space")
    if not isinstance(space, dict):
        raise UserError(
            "latency table has no 'space' in its metadata (build it with `fasterseg latency build`)"
        )
    return from_dict(SearchSpaceConfig, space, "meta.space")


def ensure_measurable(table: LatencyTable, source: str = "latency table") -> None:
    """Refuse (one line) a table whose device or back end this machine cannot time.

    ``latency check`` re-times whole networks with the table's own settings, so a CUDA table
    can only be checked on a machine with that GPU, a TensorRT table only with TensorRT.
    """
    import torch

    m = table.meta
    device = str(m.get("device", "cpu"))
    where = f"{source} was measured on {device}"
    if m.get("device_name"):
        where += f" ({m['device_name']})"
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UserError(f"{source}: meta.device {device!r} is not a torch device") from None
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise UserError(f"{where}; this machine has no CUDA device, so it cannot be checked "
                            "here: run `fasterseg latency check` on the machine it was built on")
        if dev.index is not None and dev.index >= n:
            raise UserError(f"{where}; this machine has {n} CUDA device(s), so {device} does not "
                            "exist here: run the check on the machine it was built on")
    elif dev.type != "cpu":
        raise UserError(f"{where}; `latency check` times on cpu or cuda only")
    backend = m.get("backend", "torch")
    if backend == "tensorrt":
        try:
            import tensorrt  # type: ignore[import-not-found]  # noqa: F401
        except ImportError:
            raise UserError(f"{source} was measured with backend tensorrt, which is not "
                            "installed here (pip install tensorrt)") from None
    size = m.get("input_size")
    if not size:
        raise UserError(f"{source}: meta.input_size is missing (build it with "
                        "`fasterseg latency build`)")


def check_table(
    table: LatencyTable,
    samples: int = 30,
    seed: int = 0,
    warmup: int = 5,
    reps: int = 20,
    rounds: int = 4,
    role: str = "student",
    progress: bool | None = None,
) -> CheckResult:
    """Sample ``samples`` architectures, estimate each from ``table`` and time the whole network."""
    import torch
    from tqdm import tqdm

    from fasterseg.latency.backends import measure_module, set_threads
    from fasterseg.models import build_model

    if samples < 2:
        raise UserError("--samples must be >= 2 to compute a correlation")
    ensure_measurable(table)
    m = table.meta
    space = table_space(table)
    size = tuple(m["input_size"])
    backend, device = m.get("backend", "torch"), m.get("device", "cpu")
    dtype = m.get("dtype", "fp32")
    threads = m.get("threads") if str(device).startswith("cpu") else None
    clock = m.get("clock", "wall")
    set_threads(threads)
    ncls = int(m.get("num_classes", 19))
    archs = sample_archs(space, samples, seed=seed, role=role, num_classes=ncls)
    est = [discrete_latency(a, table, size) for a in archs]
    # Round-robin over the networks (like the table build) so load bursts from other processes
    # spread over all samples instead of inflating a few of them.
    warm, cumulative = round_plan(warmup, reps, rounds)
    times: list[list[float]] = [[] for _ in archs]
    models = [build_model(a).eval() for a in archs]
    disable = (not sys.stderr.isatty()) if progress is None else not progress
    with torch.inference_mode(), tqdm(total=len(archs) * len(cumulative), desc="latency check",
                                      unit="net", disable=disable) as bar:
        for target in cumulative:
            for i, model in enumerate(models):
                times[i] += measure_module(model, [(1, 3, *size)], backend, device, dtype, threads,
                                           warmup=warm, reps=target - len(times[i]), clock=clock)
                bar.update(1)
    meas = [statistics.median(t) for t in times]
    names = [a.name for a in archs]
    keys = ("backend", "device", "device_name", "dtype", "threads", "input_size")
    meta = {k: m.get(k) for k in keys}
    meta["clock"] = clock
    meta.update(warmup=warmup, reps=reps, rounds=rounds, statistic="median", seed=seed, role=role)
    return CheckResult(est, meas, names, meta)


def plot_check(result: CheckResult, path: str | Path, title: str | None = None) -> Path:
    """Scatter of measured vs estimated latency with the y = x line (paper Fig. 3)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fasterseg.utils.io import atomic_write

    x, y = result.estimated_ms, result.measured_ms
    lo, hi = min(x + y), max(x + y)
    pad = 0.05 * (hi - lo or 1.0)
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="red", lw=1, label="y = x")
    ax.scatter(x, y, s=14, alpha=0.8)
    ax.set_xlabel("estimated latency (ms, lookup table)")
    ax.set_ylabel("measured latency (ms)")
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(lo - pad, hi + pad)
    err = 100 * result.mean_rel_error
    ax.set_title(title or f"r = {result.pearson_r:.3f}, mean rel. error {err:.1f}%")
    ax.legend(loc="upper left")
    fig.tight_layout()
    p = Path(path)
    atomic_write(p, lambda f: fig.savefig(f, format=p.suffix.lstrip(".") or "png"), mode="wb")
    plt.close(fig)
    return p
