"""Run directories: resolved config, environment, metrics log and per-epoch summary.

Layout of a run: ``config.yaml`` (the fully resolved config), ``env.json`` (versions, device,
threads, git commit), ``metrics.jsonl`` (one JSON record per line), ``summary.csv`` (one row per
epoch), ``last.pt`` / ``best.pt``. Every file except the append-only ``metrics.jsonl`` is written
atomically, and on resume ``metrics.jsonl`` is cut back to the checkpoint's step so a killed run
leaves no duplicated records.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import platform
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Iterable

import yaml

from fasterseg.engine import tensorboard
from fasterseg.utils.io import TEMP_NAME, atomic_write, json_dumps, write_json, write_text

logger = logging.getLogger(__name__)


def default_run_dir(root: str | os.PathLike, *parts: str) -> Path:
    """``root/<parts joined by '-'>-<YYYYmmdd-HHMMSS>`` (a new, unused name)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = "-".join([p for p in parts if p] + [stamp])
    path = Path(root) / name
    i = 1
    while path.exists():
        path = Path(root) / f"{name}-{i}"
        i += 1
    return path


def latest_run(root: str | os.PathLike) -> Path | None:
    """Most recently modified run under ``root`` that holds a ``last.pt``."""
    root = Path(root)
    if not root.is_dir():
        return None
    runs = [p for p in root.iterdir() if (p / "last.pt").is_file()]
    return max(runs, key=lambda p: (p / "last.pt").stat().st_mtime) if runs else None


def write_config(run_dir: str | os.PathLike, config: dict) -> Path:
    return write_text(Path(run_dir) / "config.yaml", yaml.safe_dump(config, sort_keys=False))


def read_config(run_dir: str | os.PathLike) -> dict:
    return yaml.safe_load((Path(run_dir) / "config.yaml").read_text()) or {}


def git_commit(cwd: str | os.PathLike | None = None) -> str | None:
    """HEAD of the source checkout (plus ``-dirty``), or None outside git."""
    here = Path(cwd) if cwd else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: Any = None, extra: dict | None = None) -> dict:
    """Versions, device, threads and git commit: enough to tell two runs' setups apart."""
    import numpy as np
    import torch

    import fasterseg

    env: dict[str, Any] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "fasterseg": fasterseg.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "device": str(device) if device is not None else None,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "git_commit": git_commit(),
    }
    if device is not None and str(device).startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
    env.update(extra or {})
    return env


def write_env(run_dir: str | os.PathLike, device: Any = None, extra: dict | None = None) -> Path:
    return write_json(Path(run_dir) / "env.json", environment(device, extra))


def append_metrics(run_dir: str | os.PathLike, record: dict) -> None:
    """Append one JSON line to ``metrics.jsonl`` (flushed and fsynced; NaN/inf become null)."""
    path = Path(run_dir) / "metrics.jsonl"
    line = json_dumps(record, default=float)  # strict: NaN/inf become null
    with open(path, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())
    tensorboard.log(run_dir, record)  # no-op unless the run logs to TensorBoard


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a kill: drop it
            continue
    return out


def truncate_metrics(run_dir: str | os.PathLike, max_step: int) -> list[dict]:
    """Keep only records with ``step <= max_step`` (resume after a kill); returns them."""
    records = [r for r in read_metrics(run_dir) if int(r.get("step", 0)) <= max_step]
    text = "".join(json_dumps(r) + "\n" for r in records)
    write_text(Path(run_dir) / "metrics.jsonl", text)
    tensorboard.truncate(run_dir, max_step)
    return records


def write_summary(run_dir: str | os.PathLike, rows: Iterable[dict]) -> Path:
    """Rewrite ``summary.csv`` (one row per epoch; columns = union of keys, in first-seen order)."""
    rows = list(rows)
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: _fmt(v) for k, v in r.items()})
    return atomic_write(Path(run_dir) / "summary.csv", lambda f: f.write(buf.getvalue()))


def _fmt(v: Any) -> Any:
    return f"{v:.6g}" if isinstance(v, float) else v


def resolve_resume_dir(resume: str | None, out: str | None, runs_root: str) -> Path:
    """The run to resume: ``--resume RUN``, else ``--out``, else the latest under ``runs_root``."""
    from fasterseg.errors import UserError

    if resume:
        run_dir = Path(resume)
    elif out:
        run_dir = Path(out)
    else:
        found = latest_run(runs_root)
        if found is None:
            raise UserError(f"--resume: no run with a last.pt under {runs_root}; pass its directory")
        run_dir = found
    if run_dir.is_file() and run_dir.suffix == ".pt":
        run_dir = run_dir.parent
    if not (run_dir / "last.pt").is_file():
        raise UserError(f"--resume: {run_dir} has no last.pt to resume from")
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"--resume: {run_dir} has no config.yaml")
    return run_dir


# Files a train or search run writes into its directory (``--force`` removes exactly these).
RUN_FILES = ("last.pt", "best.pt", "best.json", "config.yaml", "env.json", "metrics.jsonl",
             "summary.csv", "arch_params.json", "search.png")
# Folders a run writes, each removed only if every file in it is one of ours.
RUN_DIRS = {"arch_history": lambda name: name.endswith(".json"),
            "tensorboard": lambda name: name.startswith("events.out.tfevents.")}
# What a run that stopped before its first checkpoint leaves: nothing worth keeping.
_START_FILES = {"config.yaml", "env.json", "metrics.jsonl", "summary.csv", "tensorboard"}


def stale_temp_files(run_dir: str | os.PathLike) -> list[Path]:
    """Temp files of writes that were killed (``atomic_write``'s naming pattern only)."""
    d = Path(run_dir)
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if p.is_file() and TEMP_NAME.match(p.name))


def _contents(run_dir: Path) -> list[Path]:
    """Entries of ``run_dir`` except killed writes' temp files."""
    if not run_dir.is_dir():
        return []
    temps = set(stale_temp_files(run_dir))
    return sorted(p for p in run_dir.iterdir() if p not in temps)


def _never_saved(run_dir: Path, entries: list[Path]) -> bool:
    """True for a run of ours that stopped before its first checkpoint or epoch result.

    Such a directory (config.yaml, env.json, maybe iteration records) holds nothing to lose, so
    running the same command again starts over in it instead of demanding ``--force``. env.json
    tells our run apart from a folder where the user keeps a hand-written config.yaml.
    """
    names = {p.name for p in entries}
    if "env.json" not in names or not names <= _START_FILES:
        return False
    return not any(r.get("type") == "epoch" for r in read_metrics(run_dir))


def choose_run_dir(
    resume_dir: Path | None, out: str | None, default: Path, what: str, force: bool = False
) -> Path:
    """The run directory of a new or resumed run; never silently reuses an earlier one.

    A new run into a non-empty ``--out`` is refused (its checkpoints, best.json and metrics would
    be overwritten or mixed) unless ``force`` is set: then ``prepare_run_dir`` removes the old
    run's files first. Only a run that never saved anything is restarted in place.
    """
    from fasterseg.errors import UserError

    if resume_dir is not None:
        return resume_dir
    if not out:
        return default
    run_dir = Path(out)
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--out {run_dir} is a file, not a directory")
    entries = _contents(run_dir)
    if entries and not force and not _never_saved(run_dir, entries):
        names = [p.name for p in entries]
        shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
        held = f"already holds a {what} (last.pt)" if "last.pt" in names else "is not empty"
        raise UserError(f"{run_dir} {held}: {shown}; pass --resume to continue it, --force to "
                        "replace it, or choose another --out")
    return run_dir


def prepare_run_dir(run_dir: str | os.PathLike, *, resume: bool, force: bool = False) -> list[str]:
    """Clean ``run_dir`` before a run starts or resumes (main process only); returns what it did.

    Removes the temp files of writes that a kill interrupted (they are never completed), and for
    a new run the previous run's files (``--force``, or a run that never saved anything), so the
    new run's ``metrics.jsonl`` is not mixed with the old one's. Files we did not write are kept.
    """
    run_dir = Path(run_dir)
    notes: list[str] = []
    temps = stale_temp_files(run_dir)
    for p in temps:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    if temps:
        shown = ", ".join(p.name for p in temps[:3]) + (" ..." if len(temps) > 3 else "")
        notes.append(f"removed {len(temps)} temp file(s) of interrupted writes from {run_dir}: "
                     f"{shown}")
    if resume or not run_dir.is_dir():
        return notes
    entries = _contents(run_dir)
    if not entries:
        return notes
    unsaved = _never_saved(run_dir, entries)
    if not (force or unsaved):
        return notes
    removed: list[str] = []
    for p in entries:
        if p.name in RUN_FILES and p.is_file():
            p.unlink()
            removed.append(p.name)
        elif p.name in RUN_DIRS and p.is_dir() and all(
                RUN_DIRS[p.name](q.name) for q in p.rglob("*") if q.is_file()):
            shutil.rmtree(p)
            removed.append(p.name + "/")
    kept = len(entries) - len(removed)
    if removed:
        why = "--force" if force and not unsaved else "it never saved a checkpoint"
        notes.append(f"{why}: removed the previous run's {', '.join(removed)} from {run_dir}"
                     + (f" (kept {kept} other entries)" if kept else ""))
    return notes


def reconcile_best(run_dir: str | os.PathLike, best: dict | None) -> tuple[dict | None, str | None]:
    """Make ``last.pt``'s record of the best epoch agree with ``best.pt`` on disk (resume).

    A kill between the two writes can leave ``last.pt`` naming a best epoch whose ``best.pt`` was
    never written (or was replaced by a newer one). ``best.pt`` is the truth: its own ``metric``
    becomes the run's best (and ``best.json`` is rewritten); a missing or unreadable ``best.pt``
    means no best yet, so the next evaluated epoch writes one. Returns (best, note or None).
    """
    from fasterseg.engine.checkpoint import load_checkpoint
    from fasterseg.errors import UserError

    run_dir = Path(run_dir)
    path = run_dir / "best.pt"
    if not path.is_file():
        if best is None:
            return None, None
        return None, (f"last.pt names a best epoch ({_describe(best)}) but {path} does not exist "
                      "(killed between the two writes): the next evaluated epoch writes best.pt")
    try:
        on_disk = load_checkpoint(path).get("metric")
    except UserError as e:
        return None, f"{path} is unreadable ({e}): the next evaluated epoch replaces it"
    if on_disk is not None and not isinstance(on_disk, dict):
        on_disk = None
    if _same_metric(on_disk, best):
        return best, None
    note = (f"last.pt names the best epoch as {_describe(best)} but {path} holds "
            f"{_describe(on_disk)} (a kill between the two writes): using best.pt's")
    if on_disk is not None:
        write_json(run_dir / "best.json", on_disk)
    else:
        with contextlib.suppress(FileNotFoundError):
            (run_dir / "best.json").unlink()
    return on_disk, note


def _same_metric(a: dict | None, b: dict | None) -> bool:
    if a is None or b is None:
        return a is b
    return all(a.get(k) == b.get(k) for k in ("name", "epoch", "step"))


def _describe(metric: dict | None) -> str:
    if not metric:
        return "none"
    value = metric.get("value")
    shown = f"{value:.4f}" if isinstance(value, float) else str(value)
    return f"{metric.get('name')} {shown} at epoch {metric.get('epoch')}"


def ensure_epoch_record(run_dir: str | os.PathLike, record: dict | None,
                        records: list[dict]) -> list[dict]:
    """Append the last completed epoch's row if a kill lost it; returns the (updated) records.

    ``last.pt`` carries the row of the epoch it ends, so a kill between saving the checkpoint and
    appending the row cannot leave that epoch out of ``metrics.jsonl`` and ``summary.csv``.
    """
    if not record:
        return records
    have = any(r.get("type") == "epoch" and r.get("epoch") == record.get("epoch")
               and r.get("step") == record.get("step") for r in records)
    if have:
        return records
    append_metrics(run_dir, record)
    logger.info("restored the metrics row of epoch %s (lost by a kill after its checkpoint)",
                record.get("epoch"))
    return [*records, record]
