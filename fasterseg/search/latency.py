"""The latency side of the search: loading the table, and lambda adaptation to a latency window.

Lambda adaptation (``search.latency_range_ms: [lo, hi]``) follows the authors' schedule (facts
section 5): after every search epoch the student's *derived candidate networks* (one per branch
set that ``fasterseg derive`` would consider) are built from the current architecture parameters
and their latency is looked up in the table; if any candidate is faster than ``lo`` lambda is
halved, else if any is slower than ``hi`` it is doubled. The window is therefore in the units of
a derived network's table latency (e.g. the published student's), not of the relaxed supernet
latency, which counts all three full-depth paths and is several times larger. Lambda never
exceeds ``search.latency_weight_max``.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import torch

from fasterseg.arch.archparams import combo_key, make_archparams
from fasterseg.arch.derive import derive_from_params
from fasterseg.arch.schema import Arch
from fasterseg.config.search import SearchRunConfig
from fasterseg.errors import UserError
from fasterseg.latency import LatencyTable, RelaxedLatency, load_table
from fasterseg.latency.model import discrete_latency
from fasterseg.supernet import Supernet

logger = logging.getLogger(__name__)


@dataclass
class LatencyModels:
    """The table and the relaxed latency of both architectures (student: the penalised one)."""

    table: LatencyTable
    path: str
    student: RelaxedLatency
    teacher: RelaxedLatency


def load_latency_models(
    cfg: SearchRunConfig, lut: str | None, device: torch.device
) -> LatencyModels | None:
    """The configured table as relaxed latency models, or ``None`` when the search needs none.

    A table measured on another kind of device than the one the search runs on gets a one-line
    warning (the penalty then optimises for the table's device: fine when that is the deployment
    target, a mistake when the wrong table was passed).
    """
    s = cfg.search
    path = lut or s.lut
    if not path:
        if s.latency_weight > 0 and s.search_epochs > 0:
            raise UserError(
                "search.latency_weight > 0 needs a latency table: run `fasterseg latency build "
                "--space CONFIG --size 1024x2048 -o lut.json` (CONFIG = this search config) and pass "
                "--lut lut.json, or set search.latency_weight=0"
            )
        return None
    table = load_table(path)
    check_table(table, device, str(path))
    size = tuple(s.latency_size) if s.latency_size else None
    sp = cfg.space
    try:
        student = RelaxedLatency(table, sp, size, sp.student_stem_ratio, sp.student_head_ratio)
        teacher = RelaxedLatency(table, sp, size, sp.teacher_stem_ratio, sp.teacher_head_ratio)
    except KeyError as e:
        raise UserError(f"latency table {path} does not cover this search space: {e}") from None
    return LatencyModels(table, str(path), student.to(device), teacher.to(device))


def check_table(table: LatencyTable, device: torch.device, source: str) -> list[str]:
    """Warn (one line per mismatch, at most one here) when the table's device differs from ours."""
    m = table.meta
    logger.info("latency table %s: backend %s, device %s (%s), dtype %s, input %s", source,
                m.get("backend", "?"), m.get("device", "?"), m.get("device_name", "?"),
                m.get("dtype", "?"), m.get("input_size", "?"))
    return table.check_compatible(device=str(device), source=f"latency table {source}")


def candidate_latencies(model: Supernet, table: LatencyTable) -> dict[str, float]:
    """Table latency (ms) of the student's derived candidate networks, keyed by branch set.

    The candidates are those of ``fasterseg derive`` (default rules) at the current parameters.
    """
    space = model.space
    combos = [c for n in range(1, len(space.rates) + 1)
              for c in itertools.combinations(space.rates, n)]
    scores = {"student": {combo_key(c): {"miou": 1.0} for c in combos}}
    params = make_archparams(space, None, model.arch["student"].to_lists(),
                             num_classes=model.num_classes, branch_scores=scores)
    ncls = table.meta.get("num_classes")

    def lat(arch: Arch) -> float:  # head entries are keyed by the table's class count
        return float(discrete_latency(arch.with_num_classes(ncls) if ncls else arch, table))

    _, _, report = derive_from_params(params, target_ms=1.0, latency_fn=lat)
    return {r["key"]: float(r["latency"]) for r in report["student"]["candidates"]
            if r.get("latency") is not None}


def adapt_latency_weight(
    lam: float, latencies: dict[str, float], window: tuple[float, float], cap: float
) -> float:
    """The authors' rule: halve when a candidate is below ``lo``, else double when one is above
    ``hi``; never above ``cap``."""
    lo, hi = window
    if not latencies:
        return lam
    if min(latencies.values()) < lo:
        return lam / 2.0
    if max(latencies.values()) > hi:
        return min(lam * 2.0, cap)
    return lam
