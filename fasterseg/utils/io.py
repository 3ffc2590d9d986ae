"""Atomic file writes, so an interrupted run never leaves a half-written file behind."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from fasterseg.errors import UserError

# atomic_write's temp files: ".<target name>.<8 random chars from mkstemp>.tmp" in the target folder
TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp$")
# what torch's zip writer raises when a write comes up short (a full disk, a quota)
_ZIP_WRITE_ERRORS = ("unexpected pos", "file write failed", "inline_container")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def cache_dir() -> Path:
    """Per-user cache for what belongs to this machine (the bf16-vs-fp32 choice, deploy choices
    of published networks): ``$FASTERSEG_CACHE``, else ``$XDG_CACHE_HOME/fasterseg``
    (``~/.cache/fasterseg``)."""
    root = os.environ.get("FASTERSEG_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "fasterseg")
    return Path(root)


def atomic_write(
    path: str | os.PathLike, write: Callable[[Any], None], mode: str = "w", fsync: bool = True
) -> Path:
    """Call ``write(fileobj)`` on a temp file in the target folder, then rename it over ``path``.

    On any failure the temp file is removed and ``path`` is left as it was. A full disk is a
    ``UserError`` that says so and names ``path`` (torch's zip writer reports it only as
    ``unexpected pos``). ``fsync=False`` skips flushing to the disk before the rename: still never
    a half-written file after an error or Ctrl-C, only not after a power cut; for many small
    files where the fsync (~10 ms each) would dominate, e.g. per-frame predictions.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results must be readable like any file
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        full = _disk_full_message(e, path)
        if full:
            raise UserError(full) from None
        raise
    return path


def _disk_full_message(e: BaseException, path: Path) -> str | None:
    """One line for a write that failed for lack of space, else None (other errors pass as-is)."""
    try:
        free = f"{shutil.disk_usage(path.parent).free / 2**20:.0f} MiB free there now"
    except OSError:
        free = "free space unknown"
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"no space left on device while writing {path} ({free}); the previous file, if "
                "any, is unchanged: free some space and run again")
    text = str(e)
    if isinstance(e, RuntimeError) and any(k in text for k in _ZIP_WRITE_ERRORS):
        first = text.strip().splitlines()[0][:120] if text.strip() else type(e).__name__
        return (f"no space left on device while writing {path} (most likely: torch's writer "
                f"stopped short, {first!r}; {free}); the previous file, if any, is unchanged: "
                "free some space and run again")
    return None


def json_safe(obj: Any) -> Any:
    """``obj`` with every NaN/inf float replaced by ``None`` (recursively; tuples become lists).

    JSON has no NaN or Infinity: Python writes them as bare ``NaN`` tokens that strict parsers
    (``jq``, browsers, other languages) reject, so a diverged metric would make the whole file
    unreadable. ``null`` keeps it valid and says "no value".
    """
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def json_dumps(obj: Any, **kw: Any) -> str:
    """Strict ``json.dumps``: non-finite floats become ``null``, never ``NaN``/``Infinity``.

    A ``default=`` converter (e.g. ``float`` for numpy scalars) is made safe the same way.
    """
    default = kw.pop("default", None)
    if default is not None:
        kw["default"] = lambda o: json_safe(default(o))
    return json.dumps(json_safe(obj), allow_nan=False, **kw)


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    """Atomically write ``obj`` as strict JSON (NaN/inf become ``null``, see ``json_safe``)."""
    text = json_dumps(obj, indent=indent) + "\n"  # serialise first: a failure writes nothing
    return atomic_write(path, lambda f: f.write(text))


def write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text))


def torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """Atomically ``torch.save`` (tensors and plain types only, so weights_only loading works)."""
    import torch

    return atomic_write(path, lambda f: torch.save(obj, f), mode="wb")


def save_figure(fig: Any, path: str | os.PathLike, **savefig_kw: Any) -> Path:
    """Atomically ``fig.savefig``: a kill or an error mid-save never leaves a truncated image.

    The format comes from the file suffix (``png`` when there is none), since matplotlib cannot
    infer it from the temp file object; ``savefig_kw`` (``dpi=...``) pass through.
    """
    path = Path(path)
    fmt = savefig_kw.pop("format", None) or path.suffix.lstrip(".").lower() or "png"
    return atomic_write(path, lambda f: fig.savefig(f, format=fmt, **savefig_kw), mode="wb")
