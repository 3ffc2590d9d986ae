"""The architecture file (``"schema": "fasterseg.arch/1"``): a derived FasterSeg network as JSON.

A network is a stem, ``b`` branches of sequential cells that start at downsample rate 8, and a
head that aggregates the branches. Each cell names its operator, its input rate, its stride
(2 = this cell downsamples) and its output expansion ratio chi: a feature at rate ``s`` with ratio
``chi`` has ``s * chi`` channels (paper appendix I). The last cell of every branch outputs the
head's ratio. Branches that begin with identical cells share them (computed once, one module);
the file lists every branch in full so it reads on its own.

Optional ``"detail_channels": N`` (absent or 0 = the paper's network) adds a detail head at 1/4
of the input: the stem's 1/4 feature and the head's 1/8 feature, each projected to N channels,
are fused by a depthwise-separable 3x3 conv and add a 1/4-resolution correction to the logits.
Thin classes (poles, signs) are one or two pixels wide at 1/8 of a 360x480 image; at 1/4 they are
resolvable, for 1.5 % more MACs at N = 16. Optional ``"detail_rate": 2`` (written only when it
is not the default 4) moves that head to 1/2 of the input, on the stem's first feature: CamVid's
poles are a median 2 pixels wide, under one cell even at 1/4.

Every number is bounded (``LIMITS``): the paper's space (16 layers, ratios 4..12, 19 classes)
with a generous margin, so a typo such as ``"ratio": 2000`` or a runaway generator is refused in
one line that names the field and the allowed range, instead of allocating gigabytes or failing
deep inside torch. JSON's non-standard ``NaN``/``Infinity`` are refused anywhere in the file.

Example (one branch, two cells)::

    {"schema": "fasterseg.arch/1", "name": "tiny", "num_classes": 19,
     "stem_ratio": 8, "head_ratio": 8,
     "branches": [{"output_rate": 16, "cells": [
        {"op": "conv", "rate": 8, "stride": 2, "ratio": 4},
        {"op": "zoomed_conv", "rate": 16, "stride": 1, "ratio": 8}]}],
     "provenance": {"source": "hand-written"}}
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from fasterseg.config.search_space import (  # LIMITS, RATES re-exported
    DETAIL_RATES,
    LIMITS,
    OPERATORS,
    RATES,
)
from fasterseg.errors import UserError

SCHEMA_ID = "fasterseg.arch/1"
# LIMITS (allowed ranges, inclusive) and RATES live with the search space, which is bounded the
# same way: fasterseg.config.search_space.
MAX_PROVENANCE_CHARS = 1 << 20  # provenance is free-form, but not a place for megabytes
MAX_FILE_BYTES = 4 << 20


class ArchError(UserError):
    """An architecture file that does not follow the schema (names the offending field)."""


@dataclass(frozen=True)
class Cell:
    op: str
    rate: int  # input downsample rate
    stride: int  # 1 keeps the rate, 2 halves the resolution
    ratio: int  # output expansion ratio chi

    @property
    def out_rate(self) -> int:
        return self.rate * self.stride

    @property
    def out_channels(self) -> int:
        return self.out_rate * self.ratio

    def to_dict(self) -> dict:
        return {"op": self.op, "rate": self.rate, "stride": self.stride, "ratio": self.ratio}


@dataclass(frozen=True)
class Branch:
    output_rate: int
    cells: tuple[Cell, ...]

    def to_dict(self) -> dict:
        return {"output_rate": self.output_rate, "cells": [c.to_dict() for c in self.cells]}


@dataclass(frozen=True)
class Arch:
    name: str
    num_classes: int
    stem_ratio: int
    head_ratio: int
    branches: tuple[Branch, ...]
    provenance: dict = field(default_factory=dict, compare=False, hash=False)
    detail_channels: int = 0  # 0: the paper's head only; N > 0: 1/4-resolution detail head
    detail_rate: int = 4  # the detail head's downsample rate: 4 (stem's 1/4 feature) or 2

    def with_detail(self, channels: int, rate: int = 4) -> "Arch":
        """The same network with a detail head of ``channels`` at 1/``rate`` (0 removes it)."""
        _check_range("detail_channels", channels, *LIMITS["detail_channels"])
        _check_detail_rate(rate)
        return Arch(self.name, self.num_classes, self.stem_ratio, self.head_ratio, self.branches,
                    dict(self.provenance), channels, rate if channels else 4)

    @property
    def stem_channels(self) -> int:
        return 8 * self.stem_ratio

    def shared_prefix(self) -> int:
        """Number of leading cells that all branches have in common (computed once)."""
        if len(self.branches) < 2:
            return len(self.branches[0].cells) if self.branches else 0
        n = 0
        for cells in zip(*(b.cells for b in self.branches)):
            if any(c != cells[0] for c in cells[1:]):
                break
            n += 1
        return n

    def with_num_classes(self, num_classes: int) -> "Arch":
        _check_range("num_classes", num_classes, *LIMITS["num_classes"])
        return Arch(self.name, num_classes, self.stem_ratio, self.head_ratio, self.branches,
                    dict(self.provenance), self.detail_channels, self.detail_rate)

    def to_dict(self) -> dict:
        d = {
            "schema": SCHEMA_ID,
            "name": self.name,
            "num_classes": self.num_classes,
            "stem_ratio": self.stem_ratio,
            "head_ratio": self.head_ratio,
        }
        if self.detail_channels:  # written only when used: paper networks' files are unchanged
            d["detail_channels"] = self.detail_channels
            if self.detail_rate != 4:
                d["detail_rate"] = self.detail_rate
        d["branches"] = [b.to_dict() for b in self.branches]
        d["provenance"] = dict(self.provenance)
        return d

    def to_json(self) -> str:
        """Human-readable JSON: one line per cell."""
        d = self.to_dict()
        lines = ["{"]
        for key in ("schema", "name", "num_classes", "stem_ratio", "head_ratio", "detail_channels",
                    "detail_rate"):
            if key in d:
                lines.append(f"  {json.dumps(key)}: {json.dumps(d[key])},")
        lines.append('  "branches": [')
        for i, b in enumerate(d["branches"]):
            lines.append(f'    {{"output_rate": {b["output_rate"]}, "cells": [')
            cells = [f"      {json.dumps(c)}" for c in b["cells"]]
            lines.append(",\n".join(cells))
            lines.append("    ]}" + ("," if i < len(d["branches"]) - 1 else ""))
        lines.append("  ],")
        lines.append(f'  "provenance": {json.dumps(d["provenance"], sort_keys=True)}')
        lines.append("}")
        return "\n".join(lines) + "\n"

    def save(self, path: str | Path) -> Path:
        from fasterseg.utils.io import write_text

        return write_text(path, self.to_json())

    @classmethod
    def from_dict(cls, d: Any) -> "Arch":
        return _parse(d)

    @classmethod
    def load(cls, path: str | Path) -> "Arch":
        return load_arch(path)


def _short(v: Any) -> str:
    """``repr`` of a bad value, cut so that a huge number or string stays on one short line."""
    try:
        r = repr(v)
    except ValueError:  # an int too long to print (Python's 4300-digit limit)
        return f"an integer of about {int(v.bit_length() * 0.30103)} digits"
    return r if len(r) <= 40 else f"{r[:20]}...{r[-8:]} ({len(r)} characters)"


def _check_range(field: str, v: Any, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ArchError(f"architecture: {field} must be an integer in {lo}..{hi}, got {_short(v)}")
    return v


def _check_detail_rate(rate: Any) -> int:
    if isinstance(rate, bool) or rate not in DETAIL_RATES:
        raise ArchError(f"architecture: detail_rate must be one of {DETAIL_RATES}, got {_short(rate)}")
    return rate


def _int(d: dict, key: str, where: str, minimum: int = 1, maximum: int | None = None) -> int:
    if key not in d:
        raise ArchError(f"architecture: missing field {where}{key}")
    v = d[key]
    if maximum is not None:
        return _check_range(f"{where}{key}", v, minimum, maximum)
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ArchError(
            f"architecture: {where}{key} must be an integer >= {minimum}, got {_short(v)}"
        )
    return v


def _non_finite(obj: Any, where: str) -> str | None:
    """Path of the first NaN/inf float inside ``obj`` (None when all numbers are finite)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return where
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return None
    for k, v in items:
        found = _non_finite(v, f"{where}.{k}" if isinstance(k, str) else f"{where}[{k}]")
        if found:
            return found
    return None


def _check_provenance(provenance: Any) -> dict:
    if not isinstance(provenance, dict):
        raise ArchError("architecture: provenance must be an object")
    bad = _non_finite(provenance, "provenance")
    if bad:
        raise ArchError(f"architecture: {bad} is not a finite number (JSON has no NaN/Infinity)")
    try:
        size = len(json.dumps(provenance))
    except (TypeError, ValueError) as e:
        raise ArchError(f"architecture: provenance must hold plain JSON values ({e})") from None
    if size > MAX_PROVENANCE_CHARS:
        raise ArchError(
            f"architecture: provenance is {size} characters as JSON; at most "
            f"{MAX_PROVENANCE_CHARS} are allowed"
        )
    return provenance


def _parse(d: Any) -> Arch:
    if not isinstance(d, dict):
        raise ArchError("architecture: the file must contain a JSON object")
    schema = d.get("schema")
    if schema is None:
        raise ArchError(f"architecture: missing field schema (expected {SCHEMA_ID!r})")
    if schema != SCHEMA_ID:
        raise ArchError(f"architecture: unsupported schema {schema!r} (this version reads {SCHEMA_ID!r})")
    known = {"schema", "name", "num_classes", "stem_ratio", "head_ratio", "detail_channels",
             "detail_rate", "branches", "provenance"}
    extra = sorted(set(d) - known)
    if extra:
        raise ArchError(f"architecture: unknown field {extra[0]} (fields: {', '.join(sorted(known))})")
    name = d.get("name", "custom")
    lo, hi = LIMITS["name"]
    if not isinstance(name, str) or not lo <= len(name) <= hi or not name.isprintable():
        raise ArchError(
            f"architecture: name must be a printable string of {lo}..{hi} characters, "
            f"got {_short(name)}"
        )
    num_classes = _int(d, "num_classes", "", *LIMITS["num_classes"])
    stem_ratio = _int(d, "stem_ratio", "", *LIMITS["stem_ratio"])
    head_ratio = _int(d, "head_ratio", "", *LIMITS["head_ratio"])
    detail = _int(d, "detail_channels", "", *LIMITS["detail_channels"]) if "detail_channels" in d else 0
    detail_rate = _check_detail_rate(d["detail_rate"]) if "detail_rate" in d else 4
    if detail_rate != 4 and not detail:
        raise ArchError("architecture: detail_rate needs detail_channels > 0 (there is no detail head)")
    provenance = _check_provenance(d.get("provenance", {}))
    raw_branches = d.get("branches")
    if not isinstance(raw_branches, list) or not raw_branches:
        raise ArchError("architecture: branches must be a non-empty list")
    if len(raw_branches) > len(RATES):
        raise ArchError(f"architecture: at most {len(RATES)} branches, got {len(raw_branches)}")
    branches = []
    for bi, rb in enumerate(raw_branches):
        where = f"branches[{bi}]."
        if not isinstance(rb, dict):
            raise ArchError(f"architecture: {where[:-1]} must be an object")
        extra = sorted(set(rb) - {"output_rate", "cells"})
        if extra:
            raise ArchError(f"architecture: unknown field {where}{extra[0]}")
        out_rate = _int(rb, "output_rate", where, RATES[0], RATES[-1])
        if out_rate not in RATES:
            raise ArchError(f"architecture: {where}output_rate must be one of {RATES}, got {out_rate}")
        raw_cells = rb.get("cells")
        if not isinstance(raw_cells, list) or not raw_cells:
            raise ArchError(f"architecture: {where}cells must be a non-empty list")
        lo, hi = LIMITS["cells"]
        if not lo <= len(raw_cells) <= hi:
            raise ArchError(
                f"architecture: {where}cells must hold {lo}..{hi} cells, got {len(raw_cells)}"
            )
        cells = []
        rate = 8
        for ci, rc in enumerate(raw_cells):
            cw = f"{where}cells[{ci}]."
            if not isinstance(rc, dict):
                raise ArchError(f"architecture: {cw[:-1]} must be an object")
            extra = sorted(set(rc) - {"op", "rate", "stride", "ratio"})
            if extra:
                raise ArchError(f"architecture: unknown field {cw}{extra[0]}")
            op = rc.get("op")
            if op not in OPERATORS:
                raise ArchError(f"architecture: {cw}op must be one of {', '.join(OPERATORS)}, got {op!r}")
            cell_rate = _int(rc, "rate", cw, RATES[0], RATES[-1])
            if cell_rate != rate:
                raise ArchError(
                    f"architecture: {cw}rate is {cell_rate} but the previous cell outputs rate {rate}"
                )
            stride = _int(rc, "stride", cw, 1, 2)
            if stride not in (1, 2):
                raise ArchError(f"architecture: {cw}stride must be 1 or 2, got {stride}")
            ratio = _int(rc, "ratio", cw, *LIMITS["ratio"])
            cell = Cell(op, cell_rate, stride, ratio)
            if cell.out_rate > RATES[-1]:
                raise ArchError(f"architecture: {cw}stride 2 would go beyond rate {RATES[-1]}")
            if op == "skip" and stride == 2 and cell.out_channels % 2:
                raise ArchError(f"architecture: {cw}a stride-2 skip needs an even channel count")
            cells.append(cell)
            rate = cell.out_rate
        if rate != out_rate:
            raise ArchError(f"architecture: {where}output_rate is {out_rate} but its cells end at rate {rate}")
        if cells[-1].ratio != head_ratio:
            raise ArchError(
                f"architecture: {where}cells[{len(cells) - 1}].ratio must equal head_ratio "
                f"({head_ratio}): the last cell feeds the head"
            )
        branches.append(Branch(out_rate, tuple(cells)))
    rates = [b.output_rate for b in branches]
    if len(set(rates)) != len(rates):
        raise ArchError(f"architecture: branches must have distinct output rates, got {rates}")
    return Arch(name, num_classes, stem_ratio, head_ratio, tuple(branches), provenance, detail,
                detail_rate)


def load_arch(path: str | Path) -> Arch:
    """Load and validate an architecture JSON file (errors name the bad field)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"architecture file not found: {p}")
    size = p.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ArchError(
            f"architecture: {p} is {size / 2**20:.1f} MiB; an architecture file is at most "
            f"{MAX_FILE_BYTES >> 20} MiB (a few KB is usual)"
        )

    def no_constant(token: str) -> Any:
        raise ArchError(f"architecture: {p} contains {token}, which is not a JSON number")

    try:
        data = json.loads(p.read_text(), parse_constant=no_constant)
    except json.JSONDecodeError as e:
        raise ArchError(f"architecture: {p} is not valid JSON ({e.msg} at line {e.lineno})") from None
    except (UnicodeDecodeError, RecursionError) as e:
        raise ArchError(f"architecture: {p} is not valid JSON ({type(e).__name__})") from None
    except ValueError as e:  # e.g. an integer of more than 4300 digits
        raise ArchError(f"architecture: {p} holds an unreadable value ({str(e)[:80]})") from None
    try:
        return _parse(data)
    except ArchError as e:
        raise ArchError(f"{p}: {e}") from None


def published_arch_path(name: str) -> Path:
    """Path of a shipped architecture file (package data)."""
    return Path(str(resources.files("fasterseg.arch") / "published" / f"{name}.json"))
