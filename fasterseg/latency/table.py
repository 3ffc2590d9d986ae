"""The latency lookup table: ``{key: milliseconds}`` plus metadata saying how it was measured.

File format (JSON, ``"schema": "fasterseg.latency/1"``)::

    {"schema": "fasterseg.latency/1",
     "meta": {"backend": "torch", "device": "cpu", "device_name": "...", "dtype": "fp32",
              "threads": 2, "batch": 1, "input_size": [256, 512], "num_classes": 19,
              "warmup": 10, "reps": 30, "versions": {...}, "date": "...", "space": {...}},
     "entries": {"conv/H32xW64/Cin32/Cout32/s1": 0.123, ...}}

A table is only valid for the hardware and software it was measured with: loading it for another
device or backend logs a warning. A key that is not in the table is an error that names the
nearest keys; nothing is ever measured silently on the fly (the authors' code did, and re-saved
the file as a side effect).
"""

from __future__ import annotations

import difflib
import json
import logging
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
        bad = [
            k for k, v in entries.items() if isinstance(v, bool) or not isinstance(v, (int, float))
        ]
        if bad:
            raise UserError(f"{source}: entry {bad[0]!r} is not a number of milliseconds")
        table = cls(entries, meta)
        pending = data.get("pending", {})
        if isinstance(pending, dict):
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
        issues = []
        m = self.meta
        if device is not None:
            from fasterseg.latency.backends import device_name

            want_type = str(device).split(":")[0]
            have_type = str(m.get("device", "?")).split(":")[0]
            if want_type != have_type:
                issues.append(f"measured on device {have_type!r}, used for {want_type!r}")
            else:
                here = device_name(device)
                if m.get("device_name") and m["device_name"] != here:
                    issues.append(f"measured on {m['device_name']!r}, this machine has {here!r}")
        for name, want in (("backend", backend), ("dtype", dtype), ("threads", threads)):
            if want is not None and m.get(name) is not None and m.get(name) != want:
                issues.append(f"measured with {name} {m.get(name)!r}, used with {want!r}")
        for msg in issues:
            logger.warning("%s: %s; its latencies may not apply here", source, msg)
        return issues


def load_table(path: str | Path, **expect: Any) -> LatencyTable:
    """Shortcut for ``LatencyTable.load``."""
    return LatencyTable.load(path, **expect)
