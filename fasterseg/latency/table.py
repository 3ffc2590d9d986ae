"""The latency lookup table: ``{key: milliseconds}`` plus metadata saying how it was measured.

File format (JSON, ``"schema": "fasterseg.latency/1"``)::

    {"schema": "fasterseg.latency/1",
     "meta": {"backend": "torch", "device": "cpu", "device_name": "...", "dtype": "fp32",
              "threads": 2, "batch": 1, "input_size": [256, 512], "num_classes": 19,
              "warmup": 10, "reps": 30, "versions": {...}, "date": "...", "space": {...}},
     "entries": {"conv/H32xW64/Cin32/Cout32/s1": 0.123, ...}}

Every entry must be a finite number of milliseconds >= 0: a NaN, infinite or negative entry
(hand edits, a broken measurement) is refused on load with one line naming the entry, since it
would turn every latency estimate into ``nan`` or reward the search for using that block.

A table is only valid for the hardware and software it was measured with: loading it for another
device or backend logs a warning (``check_table_matches`` returns the mismatches). A key that is
not in the table is an error that names the nearest keys; nothing is ever measured silently on
the fly (the authors' code did, and re-saved the file as a side effect).
"""

from __future__ import annotations

import difflib
import json
import logging
import math
from pathlib import Path
from typing import Any, Iterable, Mapping

from fasterseg.errors import UserError

logger = logging.getLogger(__name__)

SCHEMA_ID = "fasterseg.latency/1"


class MissingKeyError(UserError):
    """A block the table does not cover (names the nearest keys and how to fix it)."""


class LatencyTable:
    """Latency lookup table in milliseconds, keyed by ``fasterseg.latency.signature`` keys."""

    def __init__(
        self, entries: Mapping[str, float] | None = None, meta: Mapping[str, Any] | None = None
    ) -> None:
        self.entries: dict[str, float] = {str(k): float(v) for k, v in (entries or {}).items()}
        self.meta: dict[str, Any] = dict(meta or {})
        # Timings of entries still being measured (a partial, resumable build); not lookups.
        self.pending: dict[str, list[float]] = {}

    # -- lookup -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, key: object) -> bool:
        return key in self.entries

    def keys(self) -> list[str]:
        return list(self.entries)

    def nearest(self, key: str, n: int = 3) -> list[str]:
        """The ``n`` keys most similar to ``key`` (same block kind first)."""
        kind = key.split("/", 1)[0]
        same = [k for k in self.entries if k.split("/", 1)[0] == kind]
        pool = same or list(self.entries)
        return difflib.get_close_matches(key, pool, n=n, cutoff=0.0)

    def __getitem__(self, key: str) -> float:
        try:
            return self.entries[key]
        except KeyError:
            pass
        near = self.nearest(key)
        size = self.meta.get("input_size")
        where = f" (table measured at input {size[0]}x{size[1]})" if size else ""
        hint = f"; nearest keys: {', '.join(near)}" if near else "; the table is empty"
        raise MissingKeyError(
            f"latency table has no entry {key!r}{where}{hint}. Rebuild the table for this "
            "space and input size with `fasterseg latency build`"
        )

    lookup = __getitem__

    def total(self, keys: Iterable[str]) -> float:
        """Sum of the entries of ``keys`` (each must exist)."""
        return float(sum(self[k] for k in keys))

    # -- files ------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = {"schema": SCHEMA_ID, "meta": self.meta, "entries": dict(sorted(self.entries.items()))}
        if self.pending:
            d["pending"] = self.pending
        return d

    def save(self, path: str | Path) -> Path:
        """Atomic write (an interrupted build never leaves a truncated table)."""
        from fasterseg.utils.io import write_json

        return write_json(path, self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, data: Any, source: str = "latency table") -> "LatencyTable":
        if not isinstance(data, dict):
            raise UserError(f"{source}: expected a JSON object")
        schema = data.get("schema")
        if schema != SCHEMA_ID:
            raise UserError(
                f"{source}: unsupported schema {schema!r} (this version reads {SCHEMA_ID!r})"
            )
        entries, meta = data.get("entries", {}), data.get("meta", {})
        if not isinstance(entries, dict) or not isinstance(meta, dict):
            raise UserError(f"{source}: 'entries' and 'meta' must be JSON objects")
        for k, v in entries.items():
            _check_ms(v, f"{source}: entry {k!r}")
        size = meta.get("input_size")
        if size is not None and not (
            isinstance(size, list) and len(size) == 2
            and all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in size)
        ):  # fmt: skip
            raise UserError(f"{source}: meta.input_size must be [H, W] (positive integers), "
                            f"got {size!r}")
        table = cls(entries, meta)
        pending = data.get("pending", {})
        if isinstance(pending, dict):
            for k, v in pending.items():
                if isinstance(v, list):
                    for x in v:
                        _check_ms(x, f"{source}: pending timing of {k!r}")
            table.pending = {
                str(k): [float(x) for x in v] for k, v in pending.items() if isinstance(v, list)
            }
        return table

    @classmethod
    def load(
        cls,
        path: str | Path,
        device: str | None = None,
        backend: str | None = None,
        dtype: str | None = None,
        threads: int | None = None,
    ) -> "LatencyTable":
        """Read a table; warn when it was measured on another device/backend/dtype/threads.

        Pass the setting you are about to use the table for; ``None`` skips that check. For
        ``device`` the physical device name is compared too (a CPU table from another host).
        """
        p = Path(path)
        if not p.is_file():
            raise UserError(f"latency table not found: {p}")
        try:
            data = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UserError(f"latency table {p} is not valid JSON: {e}") from None
        except (ValueError, RecursionError) as e:  # e.g. an integer of more than 4300 digits
            raise UserError(f"latency table {p} holds an unreadable value ({str(e)[:80]})") from None
        table = cls.from_dict(data, source=str(p))
        table.check_compatible(
            device=device, backend=backend, dtype=dtype, threads=threads, source=str(p)
        )
        return table

    def check_compatible(
        self,
        device: str | None = None,
        backend: str | None = None,
        dtype: str | None = None,
        threads: int | None = None,
        source: str = "latency table",
    ) -> list[str]:
        """Log a warning per mismatching setting; returns the mismatch messages."""
        issues = check_table_matches(self, device, backend, dtype, threads)
        for msg in issues:
            logger.warning("%s: %s; its latencies may not apply here", source, msg)
        return issues


def _check_ms(v: Any, what: str) -> None:
    """A latency in milliseconds must be a finite number >= 0 (``what`` names it in the error)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise UserError(f"{what} is {v!r}, not a number of milliseconds")
    if not math.isfinite(v) or v < 0:
        raise UserError(f"{what} is {v!r} ms; latencies must be finite and >= 0 (rebuild the "
                        "table with `fasterseg latency build`, or fix or delete that entry)")


def check_table_matches(
    table: LatencyTable,
    device: str | None = None,
    backend: str | None = None,
    dtype: str | None = None,
    threads: int | None = None,
) -> list[str]:
    """Mismatches between how ``table`` was measured and the run that is about to use it.

    Returns one short message per mismatching setting (empty when everything matches or is
    unknown); logs nothing, so the caller decides whether to warn or refuse. ``None`` skips a
    setting. ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``) is compared by type, then by the
    physical device name recorded in the table (a CPU table from another host, another GPU
    model). Example message: ``"measured on device 'cuda', used for 'cpu'"``.
    """
    issues: list[str] = []
    m = table.meta
    if device is not None:
        from fasterseg.latency.backends import device_name

        want_type = str(device).split(":")[0]
        have_type = str(m.get("device", "?")).split(":")[0]
        if want_type != have_type:
            issues.append(f"measured on device {have_type!r}, used for {want_type!r}")
        else:
            try:
                here = device_name(device)
            except (AssertionError, RuntimeError, ValueError):  # no CUDA here: no name to compare
                here = None
            if here and m.get("device_name") and m["device_name"] != here:
                issues.append(f"measured on {m['device_name']!r}, this machine has {here!r}")
    for name, want in (("backend", backend), ("dtype", dtype), ("threads", threads)):
        if want is not None and m.get(name) is not None and m.get(name) != want:
            issues.append(f"measured with {name} {m.get(name)!r}, used with {want!r}")
    return issues


def load_table(path: str | Path, **expect: Any) -> LatencyTable:
    """Shortcut for ``LatencyTable.load``."""
    return LatencyTable.load(path, **expect)
