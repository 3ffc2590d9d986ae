"""Preset lookup for the pipeline stages: a thin front of :mod:`fasterseg.config.presets`."""

from __future__ import annotations

from pathlib import Path

from fasterseg.config.presets import resolve_preset as _resolve


def config_path(rel: str) -> Path:
    """A shipped preset by its path under ``configs/`` (e.g. ``pipeline/demo.yaml``)."""
    return _resolve(f"configs/{rel}")


def resolve_preset(path: str, kind: str | None = None) -> str:
    """A config named in a pipeline YAML (file, ``configs/...`` path or preset name) -> its file."""
    return str(_resolve(path, kind))
