"""What a derivation records: each role's provenance (stored in the derived file) and report.

Kept apart from the rules in :mod:`fasterseg.arch.derive` so that the derivation reads as the
paper's steps; the report only assembles what those steps computed.
"""

from __future__ import annotations

from typing import Any

from fasterseg.arch.official import derive_compat
from fasterseg.arch.schema import Arch
from fasterseg.config.search_space import SearchSpaceConfig


def role_provenance(
    params: dict,
    role: str,
    src: str,
    rules: dict[str, Any],
    rows: list[dict],
    latency: dict[str, Any],
    table: Any = None,
) -> dict[str, Any]:
    """The provenance of one derived role.

    ``rules``: the rules plus the run's choices (branches, target, latency kind); ``rows``: the
    evaluated candidates; ``latency``: kind, unit and value of the chosen net; ``table``: the
    latency table used, whose device is recorded.
    """
    prov: dict[str, Any] = {
        "source": src,
        "role": role,
        "epoch": params.get("epoch"),
        "stage": params.get("stage"),
        "rules": rules,
        "branch_scores": {r["key"]: r.get("miou") for r in rows if "key" in r},
        "candidates": rows,
        "latency": latency,
    }
    if table is not None:
        keys = ("backend", "device_name", "dtype", "input_size")
        prov["lut"] = {k: table.meta.get(k) for k in keys}
    return prov


def derive_official_params(
    params: dict, space: SearchSpaceConfig, num_classes: int, src: str
) -> tuple[Arch | None, Arch | None, dict]:
    """``compat="official"``: the authors' derivation of every role present, and its report."""
    out: dict[str, Arch | None] = {"teacher": None, "student": None}
    report: dict[str, Any] = {"compat": "official", "source": src}
    scores_all = params.get("branch_scores") or {}
    for role in ("teacher", "student"):
        if params.get(role) is None:
            continue
        arch, rep = derive_compat(params[role], role, scores_all.get(role) or {}, space,
                                  num_classes, provenance={"source": src, "compat": "official"})
        out[role] = arch
        report[role] = {"branches": rep["branches"], "objectives": rep["objectives"]}
    return out["teacher"], out["student"], report
