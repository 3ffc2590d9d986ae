"""The deploy choice file that ``bench --auto`` writes and ``--fast``/``predict --deploy`` read:
where it lives, its validation (every problem one line, never a traceback) and its printed table.

Kept apart from the chooser (``fasterseg.deploy.auto``) so that reading a choice needs none of the
measuring machinery.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

from fasterseg.deploy import paths
from fasterseg.errors import UserError
from fasterseg.utils.io import cache_dir

SCHEMA = "fasterseg.deploy-choice"
VERSION = 1
ROW_KEYS = ("name", "backend", "dtype", "latency_ms", "agreement", "rejected")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:300]


def choice_cache_dir() -> Path:
    """Where choices for published names are kept (they have no folder of their own, and a
    choice belongs to this machine): ``$FASTERSEG_CACHE/choices``, by default
    ``$XDG_CACHE_HOME/fasterseg/choices`` (``~/.cache/fasterseg/choices``)."""
    return cache_dir() / "choices"


def default_choice_path(model: str, size: Sequence[int], out: str | Path | None = None) -> Path:
    """Where ``bench --auto`` keeps the choice (and ``--fast`` looks for it): beside ``out``
    (``res.json`` -> ``res.choice.json``), else beside the model file (``best.pt`` ->
    ``best.384x480.choice.json``), inside a run directory, or in ``choice_cache_dir()`` for a
    published name (never the current folder); the size is in the name because the best path
    depends on it."""
    tag = f"{int(size[0])}x{int(size[1])}"
    if out is not None:
        o = Path(out)
        return o.with_name(f"{o.stem}.choice.json")
    p = Path(model)
    if p.is_dir():
        return p / f"deploy.{tag}.choice.json"
    if p.is_file():
        return p.with_name(f"{p.stem}.{tag}.choice.json")
    return choice_cache_dir() / f"{p.name}.{tag}.choice.json"


def save_choice(path: str | Path, choice: dict[str, Any]) -> Path:
    """Write ``choice`` as strict JSON, atomically (validated first, so a bad one never lands)."""
    from fasterseg.utils.io import write_json

    validate_choice(choice, str(path))
    return write_json(path, choice)


def _fail(where: str, what: str) -> UserError:
    return UserError(f"{where}: not a valid deploy choice file ({what}); "
                     "make a new one with `fasterseg bench MODEL --auto`")


def validate_choice(data: Any, where: str = "choice") -> dict[str, Any]:
    """Check the fields ``build_from_choice`` and the CLI rely on; one-line ``UserError``."""
    if not isinstance(data, dict):
        raise _fail(where, "not a JSON object")
    if data.get("schema") != SCHEMA:
        raise _fail(where, f"schema is {data.get('schema')!r}, expected {SCHEMA!r}")
    if data.get("version") != VERSION:
        raise _fail(where, f"version {data.get('version')!r} (this fasterseg reads {VERSION})")
    chosen = data.get("chosen")
    if not isinstance(chosen, dict) or chosen.get("name") not in paths.CANDIDATES:
        raise _fail(where, f"'chosen.name' must be one of {', '.join(paths.CANDIDATES)}")
    size = data.get("size")
    if not (isinstance(size, list) and len(size) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
        raise _fail(where, "'size' must be [H, W] with positive integers")
    threads = data.get("threads")
    if threads is not None and not (isinstance(threads, int) and threads >= 1):
        raise _fail(where, "'threads' must be an integer >= 1")
    if not isinstance(data.get("device"), str):
        raise _fail(where, "'device' must be a string")
    ma = data.get("min_agreement")
    if not (isinstance(ma, (int, float)) and 0 < ma <= 1):
        raise _fail(where, "'min_agreement' must be a number in (0, 1]")
    cal = data.get("calibration")
    if not (isinstance(cal, dict) and isinstance(cal.get("split"), str)
            and (cal.get("spec") is None or isinstance(cal.get("spec"), str))
            and isinstance(cal.get("images"), int) and cal["images"] >= 0):
        raise _fail(where, "'calibration' must hold spec, split and images")
    if chosen["name"] in paths.NEEDS_CALIBRATION and cal["images"] < 1:
        raise _fail(where, f"'calibration.images' must be >= 1 for {chosen['name']}")
    rows = data.get("candidates")
    if not (isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows)):
        raise _fail(where, "'candidates' must be a non-empty list of objects")
    for i, r in enumerate(rows):
        missing = [k for k in ROW_KEYS if k not in r]
        if missing:
            raise _fail(where, f"candidates[{i}] has no {missing[0]!r}")
    if not isinstance(data.get("machine"), dict):
        raise _fail(where, "'machine' must be an object")
    return data


def load_choice(path: str | Path) -> dict[str, Any]:
    """Read and validate a choice file; every problem is a one-line ``UserError``."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise UserError(f"deploy choice file not found: {p}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read deploy choice file {p}: {_first_line(e)}") from None

    def no_constant(c: str) -> float:
        raise ValueError(f"{c} is not JSON")

    try:
        data = json.loads(text, parse_constant=no_constant)
    except ValueError as e:
        raise _fail(str(p), f"invalid JSON: {_first_line(e)}") from None
    return validate_choice(data, str(p))


def format_table(choice: dict[str, Any]) -> list[str]:
    """The measured table as printable lines (candidate, median, IQR, agreement, verdict)."""

    def num(v: float | None, fmt: str) -> str:
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)

    lines = [f"  {'candidate':<18}{'median ms':>11}{'IQR ms':>10}{'agreement':>11}  verdict"]
    for r in choice["candidates"]:
        agree = None if r["agreement"] is None else 100 * r["agreement"]
        if r.get("chosen"):
            verdict = "chosen"
        elif r["rejected"]:
            failed = r["rejected"].startswith(("failed", "unavailable"))
            verdict = r["rejected"] if failed else f"rejected: {r['rejected']}"
        else:
            verdict = "ok (reference)" if r["name"] == paths.REFERENCE else "ok"
        lines.append(f"  {r['name']:<18}{num(r['latency_ms'], '.1f'):>11}"
                     f"{num(r.get('iqr_ms'), '.1f'):>10}"
                     f"{num(agree, '.2f') + ('%' if agree is not None else ''):>11}  {verdict}")
    return lines
