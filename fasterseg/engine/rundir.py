"""Run directories: resolved config, environment, metrics log and per-epoch summary.

Layout of a run: ``config.yaml`` (the fully resolved config), ``env.json`` (versions, device,
threads, git commit), ``metrics.jsonl`` (one JSON record per line), ``summary.csv`` (one row per
epoch), ``last.pt`` / ``best.pt``. Every file except the append-only ``metrics.jsonl`` is written
atomically, and on resume ``metrics.jsonl`` is cut back to the checkpoint's step so a killed run
leaves no duplicated records.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import platform
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Iterable

import yaml

from fasterseg.utils.io import atomic_write, write_json, write_text

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
    """Append one JSON line to ``metrics.jsonl`` (flushed and fsynced)."""
    path = Path(run_dir) / "metrics.jsonl"
    with open(path, "a") as f:
        f.write(json.dumps(record, default=float) + "\n")
        f.flush()
        os.fsync(f.fileno())


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
    text = "".join(json.dumps(r) + "\n" for r in records)
    write_text(Path(run_dir) / "metrics.jsonl", text)
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


def choose_run_dir(resume_dir: Path | None, out: str | None, default: Path, what: str) -> Path:
    """The run directory of a new or resumed run; never silently reuses a finished one."""
    from fasterseg.errors import UserError

    if resume_dir is not None:
        return resume_dir
    if out:
        run_dir = Path(out)
        if (run_dir / "last.pt").exists():
            raise UserError(f"{run_dir} already holds a {what} (last.pt); pass --resume to "
                            "continue it or choose another --out")
        return run_dir
    return default
