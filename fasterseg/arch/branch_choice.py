"""Branch selection (paper appendix B): the objective ``ACC x (LAT / T) ** w`` and its LAT.

LAT comes from a latency table (the sum of the blocks one forward runs) or, without one, from a
MAC count of the built network; T is 8.3 ms scaled to the table's device by the published
student's latency on it. Kept apart from the derivation rules in :mod:`fasterseg.arch.derive`
because this is the only part of the derivation that needs the latency model and the network
builder (a floor above the architecture format), imported here at the top, not hidden in
functions.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch

from fasterseg.arch.archparams import combo_key
from fasterseg.arch.schema import Arch, load_arch, published_arch_path
from fasterseg.errors import UserError
from fasterseg.latency.model import discrete_latency
from fasterseg.latency.table import LatencyTable, MissingKeyError
from fasterseg.models import build_model
from fasterseg.utils.complexity import count_macs

if TYPE_CHECKING:  # derive imports this module; the rules are only a type here
    from fasterseg.arch.derive import DeriveRules

__all__ = [
    "MNAS_W",
    "PAPER_TARGET_MS",
    "PUBLISHED_STUDENT_MS",
    "MissingKeyError",
    "cached_latency",
    "choose_branches",
    "latency_target",
    "load_lut",
    "mac_proxy_fn",
    "objective",
    "published_student",
    "table_latency_fn",
]

logger = logging.getLogger(__name__)

PAPER_TARGET_MS = 8.3  # paper appendix B, 1080Ti + TensorRT
PUBLISHED_STUDENT_MS = 6.26  # the authors' LUT latency of the published student on that device
MNAS_W = -0.07  # the objective's exponent below and above T (paper alpha = beta)


def objective(acc: float, lat: float, target: float, rules: DeriveRules | None = None) -> float:
    """MnasNet objective ``ACC x (LAT / T) ** w`` (paper appendix B; w: ``rules`` or -0.07)."""
    if rules is None:
        w = MNAS_W
    else:
        w = rules.w_below if lat <= target else rules.w_above
    return float(acc) * (float(lat) / float(target)) ** w


def choose_branches(
    candidates: dict[tuple[int, ...], Arch],
    scores: dict[str, Any],
    latency: Callable[[Arch], float],
    target: float,
    rules: DeriveRules | None = None,
) -> tuple[tuple[int, ...], list[dict]]:
    """The candidate rate set with the best objective; also a table of all evaluated candidates.

    Candidates without a supernet score are not eligible (noted in the table).
    """
    rows, best, best_key = [], -math.inf, None
    for rates, arch in candidates.items():
        key = combo_key(rates)
        sc = scores.get(key)
        row: dict[str, Any] = {"branches": list(rates), "key": key}
        if not sc or sc.get("miou") is None or not math.isfinite(sc["miou"]):  # null: unknown
            row["note"] = "no supernet score for this combination"
            rows.append(row)
            continue
        lat = float(latency(arch))
        obj = objective(sc["miou"], lat, target, rules)
        row.update(miou=float(sc["miou"]), latency=lat, objective=obj)
        rows.append(row)
        if obj > best:
            best, best_key = obj, rates
    if best_key is None:
        raise UserError(
            "no branch combination has a supernet score (branch_scores needs entries like "
            f"{', '.join(repr(combo_key(r)) for r in candidates)})"
        )
    return best_key, rows


def load_lut(lut: Any) -> Any:
    """A path / ``LatencyTable`` / None -> ``LatencyTable`` or None."""
    if lut is None or not isinstance(lut, (str, Path)):
        return lut
    return LatencyTable.load(lut)


def table_latency_fn(table: Any) -> Callable[[Arch], float]:
    """Discrete latency (ms) of an ``Arch`` from a latency table at the table's input size."""
    ncls = table.meta.get("num_classes")

    def lat(arch: Arch) -> float:
        # the head's entries are keyed by the class count the table was measured with
        return float(discrete_latency(arch.with_num_classes(ncls) if ncls else arch, table))

    return lat


def mac_proxy_fn(size: tuple[int, int] = (256, 512)) -> Callable[[Arch], float]:
    """MAC count (GMACs at ``size``) of the built network: a hardware-free latency proxy."""

    def macs(arch: Arch) -> float:
        with torch.device("meta"):  # no weight allocation or init: counting only needs shapes
            model = build_model(arch)
        return count_macs(model, size)[0] / 1e9

    return macs


def published_student() -> Arch:
    return load_arch(published_arch_path("fasterseg_student"))


def cached_latency(fn: Callable[[Arch], float]) -> Callable[[Arch], float]:
    """Memoise a latency function on the network structure (names/provenance ignored)."""
    memo: dict[tuple, float] = {}

    def wrapped(arch: Arch) -> float:
        key = (arch.num_classes, arch.stem_ratio, arch.head_ratio, arch.branches)
        if key not in memo:
            memo[key] = fn(arch)
        return memo[key]

    return wrapped


def latency_target(
    target_ms: float | None, lat_fn: Callable[[Arch], float], kind: str, params: dict
) -> tuple[float, str]:
    """T of the objective and how it was obtained (given, scaled, or unscaled fallback)."""
    if target_ms is not None:
        if target_ms <= 0:
            raise UserError(f"--target-ms must be positive, got {target_ms}")
        return float(target_ms), "given"
    try:
        ref = float(lat_fn(published_student()))
    except UserError:  # table does not cover the published student (e.g. a tiny space)
        fallback = float(params.get("latency_target_ms") or PAPER_TARGET_MS)
        logger.warning(
            "the latency table does not cover the published student, so the 8.3 ms target cannot "
            "be scaled to its device; using T = %.3g (pass --target-ms to set it)", fallback
        )
        return fallback, "unscaled (table does not cover the published student)"
    if kind == "mac_proxy":
        note = "MAC proxy: published student x 8.3/6.26"
    else:
        note = f"8.3 ms x {ref:.3f} / 6.26 (published student here)"
    return ref * PAPER_TARGET_MS / PUBLISHED_STUDENT_MS, note
