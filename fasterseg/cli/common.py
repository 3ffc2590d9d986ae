"""Helpers shared by CLI commands: sizes, devices, JSON output, model resolution."""

from __future__ import annotations

import argparse
import re
import sys

from fasterseg.errors import UserError


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``HxW`` (e.g. ``1024x2048``) into ``(H, W)``."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX*,]\s*(\d+)\s*", str(text))
    if not m:
        raise argparse.ArgumentTypeError(f"size must be HxW, e.g. 1024x2048 (got {text!r})")
    h, w = int(m.group(1)), int(m.group(2))
    if h <= 0 or w <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive (got {text!r})")
    return h, w


def add_device(p: argparse.ArgumentParser, default: str = "cpu") -> None:
    p.add_argument("--device", default=default, help=f"torch device, e.g. cpu, cuda, cuda:1 (default {default})")


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")


def resolve_device(name: str):
    """Return a ``torch.device``; a CUDA request without CUDA is a user error, not a crash."""
    import torch

    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise UserError(f"unknown device {name!r}: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} requested but CUDA is not available on this machine")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise UserError("device 'mps' requested but MPS is not available")
    return dev


def interrupted(run_dir, command: str, main: bool = True) -> int:
    """Ctrl-C during a resumable run: say what was saved and how to go on; exit code 130."""
    if main:
        print(f"interrupted: saved {run_dir / 'last.pt'}", flush=True)
        print(f"next: fasterseg {command} --resume {run_dir}", flush=True)
    return 130


def emit_json(obj: dict) -> None:
    """Print ``obj`` as a single JSON line (NaN/inf become null so any parser accepts it)."""
    from fasterseg.utils.io import json_dumps

    sys.stdout.flush()
    print(json_dumps(obj, default=str), flush=True)


def format_count(n: float, unit: str = "") -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.2f} {suffix}{unit}"
    return f"{n:.0f} {unit}".strip()


def merge_data_spec(data: dict, spec: str) -> dict:
    """``data`` settings with ``--data PRESET[:ROOT]`` applied: the same preset keeps every
    setting (e.g. a checkpoint's holdout), another one keeps only geometry-free defaults."""
    preset, _, root = spec.partition(":")
    if preset != data.get("preset"):
        data = {k: v for k, v in data.items() if k in ("mean", "std", "workers")}
    data = {**data, "preset": preset}
    if root:
        data["root"] = root
    return data
